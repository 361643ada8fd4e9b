"""Reading an ImageFolder tree: its splits, its classes, each file once, and every image mode
decoded to the right 8-bit picture (or refused by name)."""

import os
import struct
import zlib

import numpy as np
import pytest
import torch

from cnnlab.data import folder, load_dataset
from cnnlab.errors import DataMissing, UnknownDataset

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}


def write_class_folders(root, per_class: dict[str, int]):
    """``per_class[name]`` PNGs of the class's own flat colour under ``root/name``."""
    from PIL import Image

    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (10 + i, 9), COLOURS[name]).save(root / name / f"{i}.png")


def labels_match_colours(data):
    """Every decoded image shows its label's class colour."""
    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        for image, label in zip(images, labels):
            colour = torch.tensor(COLOURS[data.classes[label]], dtype=torch.uint8).view(3, 1, 1)
            if not torch.equal(image, colour.expand_as(image)):
                return False
    return True


# -- splits and classes --------------------------------------------------------------------------

@pytest.mark.parametrize("test_name", ["valid", "validation", "val", "test", "testing", "Valid"])
def test_conventional_split_folders_are_the_splits_not_classes(tmp_path, test_name):
    write_class_folders(tmp_path / "tree" / "train", {"cat": 4, "dog": 3, "eel": 2})
    write_class_folders(tmp_path / "tree" / test_name, {"cat": 2, "dog": 1})  # no eel to test on: fine
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert data.classes == ["cat", "dog", "eel"]
    assert sorted(data.train_labels.tolist()) == [0] * 4 + [1] * 3 + [2] * 2
    assert sorted(data.test_labels.tolist()) == [0, 0, 1]
    assert labels_match_colours(data)


def test_the_classes_are_the_union_of_both_sides_in_one_order(tmp_path):
    write_class_folders(tmp_path / "tree" / "train", {"dog": 3, "eel": 3})
    write_class_folders(tmp_path / "tree" / "valid", {"cat": 1, "eel": 2})  # cat only here
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert data.classes == ["cat", "dog", "eel"]
    assert sorted(data.train_labels.tolist()) == [1, 1, 1, 2, 2, 2] and sorted(data.test_labels.tolist()) == [0, 2, 2]
    assert labels_match_colours(data)


def test_test_folder_wins_over_a_validation_folder(tmp_path):
    write_class_folders(tmp_path / "tree" / "train", {"cat": 3, "dog": 3})
    write_class_folders(tmp_path / "tree" / "val", {"cat": 2, "dog": 2})
    write_class_folders(tmp_path / "tree" / "test", {"cat": 1, "dog": 1})
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert data.classes == ["cat", "dog"] and len(data.train_labels) == 6 and len(data.test_labels) == 2


def test_a_train_folder_alone_is_split_like_a_plain_tree(tmp_path):
    write_class_folders(tmp_path / "tree" / "train", {"cat": 5, "dog": 10})
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert data.classes == ["cat", "dog"]
    assert sorted(data.test_labels.tolist()) == [0, 1, 1]  # 20 % of each class
    assert labels_match_colours(data)


def test_a_validation_folder_without_a_train_folder_is_refused(tmp_path):
    write_class_folders(tmp_path / "tree" / "valid", {"cat": 3, "dog": 3})
    with pytest.raises(UnknownDataset, match="has valid/ but no train/") as error:
        load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("layout", ["plain", "split"])
def test_a_tree_with_one_class_is_refused(tmp_path, layout):
    if layout == "plain":
        write_class_folders(tmp_path / "tree", {"cat": 10})
    else:
        write_class_folders(tmp_path / "tree" / "train", {"cat": 10})
        write_class_folders(tmp_path / "tree" / "test", {"cat": 3})
    with pytest.raises(UnknownDataset, match=r"one class \(cat\): a classifier needs at least two") as error:
        load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "data").exists()  # refused before anything is written


def test_a_tree_whose_test_split_would_be_empty_is_refused_with_the_counts(tmp_path):
    write_class_folders(tmp_path / "tree", {"cat": 1, "dog": 1})  # 20 % of one image rounds to none
    with pytest.raises(UnknownDataset) as error:
        load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    message = str(error.value)
    assert "\n" not in message and "2 image(s) give 2 to train on and 0 to test on" in message
    assert "at least 3 images" in message and not (tmp_path / "data").exists()
    write_class_folders(tmp_path / "tree", {"cat": 3})  # the advice works
    data = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    assert data.test_labels.tolist() == [0]


@pytest.mark.parametrize("empty_side", ["train", "test"])
def test_a_split_folder_without_images_is_refused_with_the_counts(tmp_path, empty_side):
    full = "test" if empty_side == "train" else "train"
    write_class_folders(tmp_path / "tree" / full, {"cat": 2, "dog": 2})
    for name in ("cat", "dog"):
        (tmp_path / "tree" / empty_side / name).mkdir(parents=True)
    with pytest.raises(UnknownDataset) as error:
        load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    counts = (0, 4) if empty_side == "train" else (4, 0)
    assert f"give {counts[0]} to train on and {counts[1]} to test on" in str(error.value)


# -- each image file counts once ----------------------------------------------------------------

def every_file_identity(root):
    """(device, inode) of every image file the tree's paths reach, as the reference, and how many paths reach them."""
    identities = []
    for here, _, names in os.walk(root, followlinks=True):
        if here.count(os.sep) - str(root).count(os.sep) > 6:  # a link loop: deep enough
            continue
        identities += [(os.stat(os.path.join(here, n)).st_dev, os.stat(os.path.join(here, n)).st_ino)
                       for n in names if n.endswith(".png")]
    return identities


def test_links_make_no_file_count_twice_nor_land_on_both_sides(tmp_path):
    tree = tmp_path / "tree"
    write_class_folders(tree, {"cat": 6, "dog": 6})
    os.symlink(tree / "cat" / "0.png", tree / "cat" / "copy-of-0.png")  # a symbolic link
    os.link(tree / "dog" / "1.png", tree / "dog" / "hard-1.png")  # a hard link
    (tree / "cat" / "more").mkdir()
    os.link(tree / "cat" / "2.png", tree / "cat" / "more" / "2.png")
    os.symlink(tree / "dog", tree / "dog" / "again")  # a folder linked into itself: a loop
    os.symlink("../cat/3.png", tree / "dog" / "not-a-dog.png")  # the same file under another class
    identities = every_file_identity(tree)
    assert len(identities) > len(set(identities)) == 12  # the links reach each of the 12 files many times
    samples, classes, train_count = folder.list_tree(tree)
    seen = [(os.stat(path).st_dev, os.stat(path).st_ino) for path, _ in samples]
    assert len(seen) == len(set(seen)) == 12 and classes == ["cat", "dog"]
    assert sorted(label for _, label in samples) == [0] * 6 + [1] * 6  # each file in its first class
    data = load_dataset(str(tree), tmp_path / "data", image_size=8)
    assert len(data.train_labels) + len(data.test_labels) == 12 and labels_match_colours(data)


def test_a_test_image_linked_from_the_training_side_counts_once_for_training(tmp_path):
    tree = tmp_path / "tree"
    write_class_folders(tree / "train", {"cat": 3, "dog": 3})
    write_class_folders(tree / "test", {"cat": 1, "dog": 1})
    os.link(tree / "train" / "cat" / "0.png", tree / "test" / "cat" / "leaked.png")
    os.symlink(tree / "train" / "dog" / "2.png", tree / "test" / "dog" / "leaked.png")
    samples, _, train_count = folder.list_tree(tree)
    train = {os.stat(path).st_ino for path, _ in samples[:train_count]}
    test = {os.stat(path).st_ino for path, _ in samples[train_count:]}
    assert (len(train), len(test), train & test) == (6, 2, set())
    assert all("leaked" not in path for path, _ in samples)


# -- every image mode: the right picture, or refused by name ------------------------------------

SIDE = 8
rng = np.random.default_rng(0)


def over_white(colour, alpha):
    """The reference for a transparent pixel: its colour laid over white by its opacity."""
    a = alpha[..., None].astype(np.float64) / 255
    return np.round(colour * a + 255 * (1 - a))


def grey(values):
    return np.repeat(values[..., None], 3, axis=2).astype(np.float64)


def srgb_to_lab_bytes(rgb):
    """An independent CIELAB (D50, as ICC and TIFF use) of 8-bit sRGB: linearise, to XYZ (D65),
    Bradford-adapt to D50, then L*a*b*; stored as PIL's LAB mode holds it (L scaled to 0..255,
    a* and b* as signed bytes)."""
    c = rgb / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    bradford = np.array([[1.0478, 0.0229, -0.0501], [0.0295, 0.9905, -0.0171], [-0.0092, 0.0151, 0.7519]])
    xyz = linear @ to_xyz.T @ bradford.T / np.array([0.9642, 1.0, 0.8249])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness, a, b = 116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])
    return np.stack([np.round(lightness * 255 / 100), np.round(a) % 256, np.round(b) % 256], -1).astype(np.uint8)


def mode_case(mode, path):
    """Write an image of PIL mode ``mode`` to ``path``; return the reference 8-bit RGB picture
    (computed here from the pixels written, not by PIL) and the tolerance in levels."""
    from PIL import Image

    shape = (SIDE, SIDE)
    if mode == "1":
        bits = rng.integers(0, 2, shape).astype(bool)
        Image.fromarray(bits).save(path)
        return grey(bits * 255), 0
    if mode == "L":
        values = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(values).save(path)
        return grey(values), 0
    if mode.startswith("P"):
        palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
        index = rng.integers(0, 256, shape, dtype=np.uint8)
        image = Image.frombytes("P", shape, index.tobytes())
        image.putpalette(palette.tobytes())
        if mode == "P":
            image.save(path)
            return palette[index].astype(np.float64), 0
        if mode == "P, one colour transparent":
            image.save(path, transparency=int(index[0, 0]))
            return np.where((index == index[0, 0])[..., None], 255.0, palette[index]), 0
        alpha = rng.integers(0, 256, 256, dtype=np.uint8)  # "P, alpha per colour"
        image.save(path, transparency=alpha.tobytes())
        return over_white(palette[index], alpha[index]), 1
    if mode == "LA":
        values = rng.integers(0, 256, (*shape, 2), dtype=np.uint8)
        Image.frombytes("LA", shape, values.tobytes()).save(path)
        return over_white(grey(values[..., 0]), values[..., 1]), 1
    if mode == "RGB":
        values = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        Image.fromarray(values).save(path)
        return values.astype(np.float64), 0
    if mode == "RGBA":
        values = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
        Image.fromarray(values).save(path)
        return over_white(values[..., :3].astype(np.float64), values[..., 3]), 1
    if mode in ("I;16", "I;16B", "I"):  # 16-bit grey: 65535 is white, so a level is 257 units
        values = rng.integers(0, 65536, shape)
        values[0, :3] = (0, 65535, 128)
        dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
        raw = {"I;16": "I;16", "I;16B": "I;16B", "I": "I;32S"}[mode]
        Image.frombytes(mode, shape, values.astype(dtype).tobytes(), "raw", raw).save(path)
        return grey(np.round(values / 257)), 0
    if mode == "CMYK":
        values = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
        Image.frombytes("CMYK", shape, values.tobytes()).save(path)
        ink, black = values[..., :3].astype(np.float64) / 255, values[..., 3:].astype(np.float64) / 255
        return np.round(255 * (1 - ink) * (1 - black)), 1
    if mode == "YCbCr":  # JPEG's full-range ITU-R BT.601
        values = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        Image.frombytes("YCbCr", shape, values.tobytes()).save(path)
        y, cb, cr = (values[..., k].astype(np.float64) for k in range(3))
        rgb = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                        y + 1.772 * (cb - 128)], -1)
        return np.clip(np.round(rgb), 0, 255), 1
    if mode == "LAB":  # colours well inside sRGB; 8-bit L*a*b* itself is coarse: a few levels
        rgb = rng.integers(60, 190, (*shape, 3)).astype(np.float64)
        Image.frombytes("LAB", shape, srgb_to_lab_bytes(rgb).tobytes()).save(path)
        return rgb, 6  # measured: 4
    raise AssertionError(mode)


MODES = {"1": "png", "L": "png", "P": "png", "P, one colour transparent": "png", "P, alpha per colour": "png",
         "LA": "png", "RGB": "png", "RGBA": "png", "I;16": "png", "I;16B": "tif", "I": "tif", "CMYK": "tif",
         "YCbCr": "tif", "LAB": "tif"}  # HSV: no format PIL writes holds it


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_decodes_to_the_right_8_bit_picture(tmp_path, mode):
    from PIL import Image

    path = tmp_path / f"image.{MODES[mode]}"
    expected, tolerance = mode_case(mode, path)
    with Image.open(path) as image:
        assert image.mode == mode.split(",")[0]  # the file really is in that mode
    decoded = folder.decode_image(str(path), SIDE).transpose(1, 2, 0).astype(np.float64)
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).max() <= tolerance


def test_modes_without_a_certain_8_bit_picture_are_refused_by_name(tmp_path):
    from PIL import Image

    floats = rng.random((SIDE, SIDE)).astype(np.float32)
    Image.fromarray(floats).save(tmp_path / "float.tif")
    with pytest.raises(DataMissing, match=r"float\.tif: PIL opens it in mode F \(32-bit floating-point") as error:
        folder.decode_image(str(tmp_path / "float.tif"), SIDE)
    assert "\n" not in str(error.value)
    wide = np.full((SIDE, SIDE), 70000, dtype="<i4")  # mode I, beyond 16 bits
    Image.frombytes("I", (SIDE, SIDE), wide.tobytes(), "raw", "I;32S").save(tmp_path / "wide.tif")
    with pytest.raises(DataMissing, match=r"wide\.tif: its 32-bit integer pixels \(PIL mode I\) reach 70000"):
        folder.decode_image(str(tmp_path / "wide.tif"), SIDE)


def test_an_image_over_the_decompression_bomb_limit_is_one_line_naming_it(tmp_path):
    from PIL import Image

    write_class_folders(tmp_path / "tree", {"cat": 3, "dog": 3})
    # a real PNG header that declares 30,000 x 30,000 pixels (over twice PIL's limit of 89,478,485)
    png = bytearray((tmp_path / "tree" / "dog" / "1.png").read_bytes())
    header = struct.pack(">II", 30000, 30000) + png[24:29]
    png[16:29] = header
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    (tmp_path / "tree" / "dog" / "1.png").write_bytes(bytes(png))
    assert 30000 ** 2 > 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataMissing) as error:
        load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    message = str(error.value)
    assert "\n" not in message and f"cannot read image {tmp_path / 'tree' / 'dog' / '1.png'}: " in message
    assert "900000000 pixels" in message and "MAX_IMAGE_PIXELS" in message
    assert list((tmp_path / "data" / "imagefolder").iterdir()) == []  # nothing kept


# -- the decode cache: bytes changed in place are noticed, not read -----------------------------

@pytest.mark.parametrize("size_class, where, keep_time", [
    ("small", "middle", True),   # checked whole at every open, even with its old modification time
    ("large", "middle", False),  # checked whole because writing changed its modification time
    ("large", "last", True),     # its first and last blocks are checked at every open
])
def test_a_cache_changed_in_place_is_rebuilt_with_a_note(tmp_path, monkeypatch, capsys, size_class, where,
                                                         keep_time):
    monkeypatch.setattr(folder, "CHECK_BLOCK", 256)  # 10 images at 8x8: 1,920 bytes, 8 blocks
    if size_class == "large":
        monkeypatch.setattr(folder, "FULL_CHECK_BYTES", 1000)
    write_class_folders(tmp_path / "tree", {"cat": 5, "dog": 5})
    load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    (cache,) = (tmp_path / "data" / "imagefolder").iterdir()
    images = cache / folder.IMAGES_FILE
    length, written = images.stat().st_size, images.stat().st_mtime_ns
    offset = {"middle": length // 2, "last": length - 10}[where]
    with open(images, "r+b") as file:  # the same length, other bytes
        file.seek(offset)
        inverted = bytes(255 - b for b in file.read(8))
        file.seek(offset)
        file.write(inverted)
    assert images.stat().st_size == length
    if keep_time:
        os.utime(images, ns=(written, written))
    capsys.readouterr()
    again = load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    fresh = load_dataset(str(tmp_path / "tree"), tmp_path / "fresh", image_size=8)
    for split in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(again, split), getattr(fresh, split)), split
    assert labels_match_colours(again)
    note = capsys.readouterr().err.strip()
    first = offset // 256 * 256
    assert note == (f"note: rebuilding the decode cache {cache}: images.u8 changed since it was written "
                    f"(its bytes {first:,} to {min(length, first + 256) - 1:,} fail their checksum)")


def test_a_cache_with_a_new_modification_time_is_checked_whole_once(tmp_path, monkeypatch, capsys):
    """A large cache copied without its times: checked whole, and its new time recorded, so the
    next open checks its first and last blocks only."""
    monkeypatch.setattr(folder, "CHECK_BLOCK", 256)
    monkeypatch.setattr(folder, "FULL_CHECK_BYTES", 1000)
    write_class_folders(tmp_path / "tree", {"cat": 5, "dog": 5})
    load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8)
    (cache,) = (tmp_path / "data" / "imagefolder").iterdir()
    images = cache / folder.IMAGES_FILE
    os.utime(images, ns=(images.stat().st_atime_ns, images.stat().st_mtime_ns + 10**9))
    checked = []
    real = folder.block_checksums
    monkeypatch.setattr(folder, "block_checksums", lambda path, blocks: checked.append(list(blocks)) or real(path, blocks))
    for _ in range(2):
        assert labels_match_colours(load_dataset(str(tmp_path / "tree"), tmp_path / "data", image_size=8))
    assert checked == [list(range(8)), [0, 7]]
    assert capsys.readouterr().err == ""
