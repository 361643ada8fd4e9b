"""Data that does not fit on the device streams: same batches, same metrics, its own choice."""

import threading

import pytest
import torch

from cnnlab.runs.metrics import TIMING_COLUMNS
from cnnlab.data import StreamedImages, batches, load_dataset, placement
from cnnlab.errors import UsageError
from cnnlab.training import TrainConfig, train

DIGITS_BYTES = 1797 * 64  # the embedded digits, train and test, uint8 8x8


def simulate_free_memory(monkeypatch, free_bytes):
    monkeypatch.setattr(placement, "free_memory", lambda device: free_bytes)


def test_a_set_that_fits_goes_to_the_device_and_one_that_does_not_streams(monkeypatch):
    simulate_free_memory(monkeypatch, 2 * DIGITS_BYTES)  # exactly the share the images may take
    assert not load_dataset("digits").streamed
    simulate_free_memory(monkeypatch, 2 * DIGITS_BYTES - 1)
    data = load_dataset("digits")
    assert data.streamed and isinstance(data.test_images, StreamedImages)
    assert data.train_images.shape == (1438, 1, 8, 8) and data.train_labels.device.type == "cpu"
    simulate_free_memory(monkeypatch, 0)
    monkeypatch.setenv(placement.PLACEMENT_ENV, "device")  # the override wins over the figures
    assert not load_dataset("digits").streamed
    monkeypatch.setenv(placement.PLACEMENT_ENV, "sometimes")
    with pytest.raises(UsageError, match="CNNLAB_DATA_PLACEMENT must be one of auto, device, stream"):
        load_dataset("digits")


def test_streamed_batches_are_the_in_memory_batches():
    images = torch.randint(0, 256, (103, 3, 5, 5), dtype=torch.uint8)
    labels = torch.arange(103)
    streamed = StreamedImages(images.clone(), "cpu")
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    for kwargs in (dict(order=order), dict(order=order, steps=3), {}):  # shuffled full batches; in order
        expected = [(images[order[i * 16:(i + 1) * 16]], labels[order[i * 16:(i + 1) * 16]])
                    for i in range(kwargs.get("steps", 6))] if kwargs else \
                   [(images[s:s + 16], labels[s:s + 16]) for s in range(0, 103, 16)]
        for source in (images, streamed):
            got = list(batches(source, labels, 16, **kwargs))
            assert len(got) == len(expected) and all(
                torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, expected))
    # a process's shard (rows rank::world_size) is a view of the mapping: nothing is read
    shard = streamed[1::4]
    assert shard.host.data_ptr() == streamed.host[1].data_ptr() and len(shard) == 26
    assert torch.equal(next(batches(shard, None, 30))[0], images[1::4])


def test_a_stream_left_early_or_failing_stops_its_thread():
    images = StreamedImages(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), "cpu")
    for batch, _ in batches(images, None, 10):
        break
    del batch
    assert not [t for t in threading.enumerate() if t.name == "cnnlab-prefetch"]
    with pytest.raises(IndexError):  # an error in the background thread reaches the loop
        list(batches(images, None, 10, order=torch.tensor([0, 5000] * 10)))
    assert not [t for t in threading.enumerate() if t.name == "cnnlab-prefetch"]


def train_digits(tmp_path, name):
    config = TrainConfig(model="lenet", data="digits", epochs=2, batch_size=64, crop_padding=1,
                         device="cpu", runs_dir=str(tmp_path), name=name)
    return train(config, progress="none")


@pytest.mark.slow
def test_streaming_and_in_memory_training_give_identical_metrics(tmp_path, monkeypatch):
    in_memory = train_digits(tmp_path, "in-memory")
    streamed_sets = []
    real_load = load_dataset

    def load_and_remember(*args, **kwargs):
        streamed_sets.append(real_load(*args, **kwargs))
        return streamed_sets[-1]

    simulate_free_memory(monkeypatch, 1000)  # far less than the digits' 115 kB
    monkeypatch.setattr("cnnlab.training.load_dataset", load_and_remember)
    streamed = train_digits(tmp_path, "streamed")
    assert streamed_sets[0].streamed
    timing = TIMING_COLUMNS
    rows = [[{k: v for k, v in row.items() if k not in timing} for row in run.metrics.rows()]
            for run in (in_memory, streamed)]
    assert len(rows[0]) == 2 and rows[0] == rows[1]
    from cnnlab.evaluation import evaluate

    results = [evaluate(run.path, device="cpu", write=False) for run in (in_memory, streamed)]
    assert results[0].loss == results[1].loss and torch.equal(results[0].confusion, results[1].confusion)
