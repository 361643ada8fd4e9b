import functools
import gzip
import time
from importlib import resources
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import (BatchTransform, default_data_dir, load_dataset, random_crop,
                         stratified_split)
from cnnlab.errors import DataMissing, UnknownDataset


def raw_digits():
    with resources.files("cnnlab").joinpath("embedded/digits.csv.gz").open("rb") as f:
        return [list(map(int, line.split(b","))) for line in gzip.decompress(f.read()).splitlines()]


def test_digits_are_the_embedded_file_scaled_to_uint8_in_a_fixed_stratified_split():
    data = load_dataset("digits")
    rows = raw_digits()
    assert len(rows) == 1797 and data.classes == [str(d) for d in range(10)]
    assert data.train_images.shape == (1438, 1, 8, 8) and data.test_images.shape == (359, 1, 8, 8)
    assert data.train_images.dtype == torch.uint8 and data.channels == 1 and not data.flip_safe
    # every image of the file appears once, 0..16 scaled to 0..255
    expected = sorted(tuple(round(v * 255 / 16) for v in row[:64]) + (row[64],) for row in rows)
    images = torch.cat([data.train_images, data.test_images]).flatten(1)
    labels = torch.cat([data.train_labels, data.test_labels])
    assert sorted(tuple(im) + (lab,) for im, lab in zip(images.tolist(), labels.tolist())) == expected
    # 20 % of each class is test data, and the split never changes
    per_class = torch.bincount(labels, minlength=10)
    assert torch.all((torch.bincount(data.test_labels, minlength=10) - 0.2 * per_class).abs() <= 0.5)
    again = load_dataset("digits")
    assert torch.equal(again.test_images, data.test_images) and torch.equal(again.test_labels, data.test_labels)


def test_stratified_split_is_disjoint_and_complete():
    labels = [0] * 10 + [1] * 5 + [2] * 7
    train, test = stratified_split(labels, test_fraction=0.2, seed=3)
    assert sorted(train + test) == list(range(len(labels)))
    assert [sum(labels[i] == k for i in test) for k in range(3)] == [2, 1, 1]


def test_resize_matches_torchvision_and_antialiases_when_shrinking():
    from torchvision.transforms.v2.functional import resize

    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    unit = BatchTransform((16, 16), [0.0] * 3, [1.0] * 3)
    expected = resize(images.float() / 255, [16, 16], antialias=True)
    torch.testing.assert_close(unit(images), expected)
    up = BatchTransform((28, 28), [0.0] * 3, [1.0] * 3)
    torch.testing.assert_close(up(images[:, :, :8, :8]),
                               F.interpolate(images[:, :, :8, :8].float() / 255, size=(28, 28), mode="bilinear"))


def test_normalisation_uses_the_training_channel_statistics():
    data = load_dataset("digits")
    mean, std = data.channel_stats()
    pixels = data.train_images.double() / 255
    assert mean[0] == pytest.approx(pixels.mean().item()) and std[0] == pytest.approx(pixels.std().item(), rel=1e-3)
    x = BatchTransform((8, 8), mean, std)(data.train_images)
    assert x.mean().item() == pytest.approx(0, abs=1e-5) and x.std().item() == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("stored, size", [(8, 28), (40, 16), (28, 28)])
def test_images_resized_once_give_the_batches_resizing_each_batch_gives(stored, size):
    """train() resizes a small training set once (BatchTransform.resized_once); every batch it
    then makes, augmented with the same random numbers, is the per-batch resize's, bit for bit."""
    images = torch.randint(0, 256, (300, 3, stored, stored), dtype=torch.uint8)
    transform = BatchTransform((size, size), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], crop_padding=2, flip=True)
    once = transform.resized_once(images)
    assert once.shape == (300, 3, size, size) and (once is images) == (stored == size)
    for rows in (torch.arange(64), torch.randperm(300)[:37]):
        each, ahead = (transform(source[rows], augment=True, generator=torch.Generator().manual_seed(3))
                       for source in (images, once))
        assert torch.equal(each, ahead)


def test_a_large_training_set_is_resized_batch_by_batch():
    images = torch.zeros(40, 3, 8, 8, dtype=torch.uint8)
    transform = BatchTransform((224, 224), [0.5] * 3, [0.25] * 3)
    assert transform.resized_once(images) is not images
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cnnlab.data.transforms.RESIZE_ONCE_BYTES", 40 * 3 * 224 * 224 * 4 - 1)  # one byte short
        assert transform.resized_once(images) is images


def test_augmentation_flips_and_shifts_each_image_reproducibly():
    images = torch.randint(0, 256, (64, 1, 6, 6), dtype=torch.uint8)
    flip = BatchTransform((6, 6), [0.0], [1.0], flip=True)
    x = images.float() / 255
    out = flip(images, augment=True, generator=torch.Generator().manual_seed(0))
    same = functools.partial(torch.allclose, rtol=0, atol=1e-6)  # normalised by one multiply-add
    flipped = torch.tensor([same(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([same(o, i) for o, i in zip(out, x)])
    assert torch.all(flipped | kept) and 10 < flipped.sum() < 54
    assert same(flip(images), x)  # evaluation batches are never augmented

    crop = random_crop(x, 2, torch.Generator().manual_seed(1))
    padded = F.pad(x, (2, 2, 2, 2))
    windows = [[padded[n, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)] for n in range(64)]
    assert all(any(torch.equal(crop[n], w) for w in windows[n]) for n in range(64))
    assert sum(not torch.equal(crop[n], x[n]) for n in range(64)) > 32  # most images moved
    assert torch.equal(crop, random_crop(x, 2, torch.Generator().manual_seed(1)))


def test_unknown_data_set_suggests_close_names():
    with pytest.raises(UnknownDataset, match="did you mean mnist"):
        load_dataset("mnsit")


def test_data_dir_defaults_to_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_offline_download_names_the_missing_files_and_where_to_put_them(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)  # no test ever downloads
    started = time.monotonic()
    with pytest.raises(DataMissing) as error:
        load_dataset("fashion-mnist", tmp_path)
    message = str(error.value)
    assert time.monotonic() - started < 5
    assert "\n" not in message and "no network" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in message
    with pytest.raises(DataMissing, match=f"into {tmp_path}: cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)


def write_image_tree(root, colours, per_class):
    from PIL import Image

    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12 + i, 10), colour).save(root / name / f"{i}.png")


def test_image_folder_is_decoded_once_at_the_requested_size(tmp_path):
    write_image_tree(tmp_path / "tree", {"red": (255, 0, 0), "blue": (0, 0, 255)}, per_class=5)
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=16)
    assert data.classes == ["blue", "red"] and data.flip_safe
    assert data.train_images.shape == (8, 3, 16, 16) and data.test_images.shape == (2, 3, 16, 16)
    assert sorted(data.test_labels.tolist()) == [0, 1]
    red = data.train_images[data.train_labels == 1]
    assert torch.all(red[:, 0] == 255) and torch.all(red[:, 2] == 0)


def test_image_folder_with_train_and_test_trees_keeps_them(tmp_path):
    colours = {"cat": (10, 20, 30), "dog": (200, 100, 0)}
    write_image_tree(tmp_path / "train", colours, per_class=3)
    write_image_tree(tmp_path / "test", colours, per_class=2)
    data = load_dataset(str(tmp_path), tmp_path / "data", image_size=8)
    assert (len(data.train_labels), len(data.test_labels)) == (6, 4)


def test_an_empty_directory_is_not_an_image_folder(tmp_path):
    with pytest.raises(UnknownDataset, match="not an ImageFolder"):
        load_dataset(str(tmp_path))
