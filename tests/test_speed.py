"""--amp auto and channels-last decided by a timed trial (cnnlab.speed)."""

import json

import pytest
import torch

from cnnlab.devices import Placement
from cnnlab.speed import SPEED_CACHE_FILE, candidates, choose, label
from cnnlab.training import TrainConfig, train

CPU = torch.device("cpu")


def test_candidates_are_the_native_precisions_and_both_layouts_unless_given(monkeypatch):
    monkeypatch.setattr("cnnlab.speed.native_bf16", lambda device: True)
    assert {label(p) for p in candidates(CPU, "auto", None)} == {
        "bf16, channels-last", "bf16, contiguous", "fp32, channels-last", "fp32, contiguous"}
    assert [label(p) for p in candidates(CPU, "auto", False)] == ["bf16, contiguous", "fp32, contiguous"]
    assert [label(p) for p in candidates(CPU, "off", True)] == ["fp32, channels-last"]
    monkeypatch.setattr("cnnlab.speed.native_bf16", lambda device: False)  # emulated bf16 is never faster
    assert [label(p) for p in candidates(CPU, "auto", None)] == ["fp32, channels-last", "fp32, contiguous"]
    assert [label(p) for p in candidates(torch.device("mps"), "auto", None)] == ["fp32, contiguous"]


def test_the_fastest_candidate_is_chosen_and_the_figures_are_kept_for_next_time(tmp_path):
    options = [Placement.choose(CPU, amp, layout) for amp in ("bf16", "off") for layout in (True, False)]
    rates = {"bf16, channels-last": 700.0, "bf16, contiguous": 650.0, "fp32, channels-last": 400.0,
             "fp32, contiguous": 900.0}
    timed = []

    def images_per_second(placement):
        timed.append(label(placement))
        return rates[label(placement)]

    chosen, trial = choose(options, images_per_second, tmp_path, "vgg11 | 1x32x32 | batch 32 | adamw")
    assert (chosen.amp, chosen.channels_last) == ("off", False) and trial.chosen == "fp32, contiguous"
    assert trial.images_per_second == rates and trial.source == "measured" and len(timed) == 4
    assert "speed trial: fp32, contiguous (900 images/s; bf16, channels-last 700" in trial.describe()
    again, cached = choose(options, lambda p: pytest.fail("timed again"), tmp_path, "vgg11 | 1x32x32 | batch 32 | adamw")
    assert again == chosen and cached.images_per_second == rates and cached.source.endswith(SPEED_CACHE_FILE)
    other, _ = choose(options, images_per_second, tmp_path, "resnet18 | 1x32x32 | batch 32 | sgd")  # its own trial
    assert len(timed) == 8 and other == chosen
    (tmp_path / SPEED_CACHE_FILE).write_text("{not json")  # a damaged cache: measured again
    choose(options, images_per_second, tmp_path, "vgg11 | 1x32x32 | batch 32 | adamw")
    assert len(timed) == 12 and len(json.loads((tmp_path / SPEED_CACHE_FILE).read_text())) == 1


def test_a_single_candidate_needs_no_trial():
    only = [Placement.choose(CPU, "off", False)]
    assert choose(only, lambda p: pytest.fail("timed"), "/nonexistent", "key") == (only[0], None)


def test_the_trial_leaves_the_run_as_the_same_options_given_explicitly_train_it(tmp_path):
    """The trial steps copies of the model under forked random numbers: the run it chose for
    trains bit for bit as the run given its choice does, and records the trial."""
    def run(**options):
        return train(TrainConfig(model="lenet", epochs=1, runs_dir=str(tmp_path), **options), progress="none")

    auto = run()
    record = auto.read_record()
    chosen = record.speed_trial["chosen"]
    explicit = run(amp=record.options.amp, channels_last=record.options.channels_last)
    assert explicit.read_record().speed_trial is None
    assert chosen == label(Placement.choose(CPU, record.options.amp, record.options.channels_last))
    assert [row["train_loss"] for row in auto.metrics.rows()] == [row["train_loss"] for row in explicit.metrics.rows()]
    assert [row["val_loss"] for row in auto.metrics.rows()] == [row["val_loss"] for row in explicit.metrics.rows()]


@pytest.mark.parametrize("step_seconds, calls", [(1 / 16, 2 + 5), (0.125, 2 + 3), (0.6, 4), (2.0, 2)])
def test_a_slow_step_is_warmed_up_and_timed_fewer_times(monkeypatch, step_seconds, calls):
    """2 warm-up steps, then timed ones until 3 of them and 0.3 s (a fast step: 5 of 1/16 s);
    a step over a second warms up once and is timed once; timing stops once the timed steps add
    up to a second. A fake clock: no real time is measured."""
    import cnnlab.speed

    clock, made = [0.0], []

    def step():
        made.append(True)
        clock[0] += step_seconds
        return torch.tensor(0.0)

    monkeypatch.setattr(cnnlab.speed.time, "perf_counter", lambda: clock[0])
    assert cnnlab.speed.timed_steps(step, images=32) == pytest.approx(32 / step_seconds)
    assert len(made) == calls
