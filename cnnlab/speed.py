"""The precision and memory format a run trains in, chosen by trial where they are left to cnnlab.

``--amp auto`` and an unset ``--channels-last`` leave several placements that compute the same
training (within seed-to-seed noise: tests/test_train.py) at different speeds, and which is
fastest depends on the model and the batch as much as on the device (on a 2-core CPU with bf16
in hardware: LeNet at batch 256 2.5 times faster in bf16, at batch 64 about as fast in either;
VGG-11, whose step is mostly its large classifier's weights, faster or slower in bf16 from one
measurement to the next). So, as cuDNN's benchmark mode picks a convolution
algorithm, the run times a few training steps of each candidate on its own model and batch
and keeps the fastest. The choice and its figures are printed, recorded in config.json
(``speed_trial``) and cached per machine, model, input, batch and optimiser beside the device
peaks, so the same command on the same machine trains the same way (and pays the trial once);
delete the cache file or give ``--amp``/``--channels-last`` to decide otherwise.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cnnlab.devices import Placement, cached_figure, device_name, native_bf16

SPEED_CACHE_FILE = "speed_choices.json"
TRIAL_WARMUP_STEPS = 2  # the first steps choose kernels and allocate memory: not timed
TRIAL_TIMED_STEPS = 3
TRIAL_SECONDS = 1.0  # a slow model's candidate stops timing after this long (one step at least)
# a fast model's candidate is timed over at least this long: a median of many steps of a few
# milliseconds, where three of them had chosen LeNet's precision by noise (fp32 first by 15,609
# against 13,733 images/s, then last)
TRIAL_STEADY_SECONDS = 0.3
# in each cache key: figures measured by an earlier way of training are measured again (before 2:
# freed host memory returned to the system every step; before 3: channels-last weights copied by
# the optimiser, padding-only kernel taps computed)
TRIAL_VERSION = 3


def candidates(device: torch.device, amp: str, channels_last: bool | None) -> list[Placement]:
    """The placements worth timing: every precision the hardware computes natively for ``auto``
    (emulated bf16 is always slower; fp16 needs loss scaling, so only when asked for) and both
    memory formats for None where channels-last exists; the given choice alone otherwise."""
    amps = [amp] if amp != "auto" else ["bf16", "off"] if native_bf16(device) else ["off"]
    layouts = [True, False] if channels_last is None and device.type in ("cpu", "cuda") else [channels_last]
    return [Placement.choose(device, a, c) for a in amps for c in layouts]


def label(placement: Placement) -> str:
    """'bf16, channels-last' / 'fp32, contiguous'."""
    precision = "fp32" if placement.amp == "off" else placement.amp
    return f"{precision}, {'channels-last' if placement.channels_last else 'contiguous'}"


@dataclass(frozen=True)
class SpeedTrial:
    """What the trial measured: images/s of each candidate (by ``label``) and the one chosen."""

    chosen: str
    images_per_second: dict[str, float]
    source: str  # "measured" or where the figures were cached

    def record(self) -> dict:
        """For config.json (where the figures came from is said in the start line only: the same
        command, measured or read from the cache, records the same run)."""
        return dict(chosen=self.chosen, images_per_second=self.images_per_second)

    def describe(self) -> str:
        """The start line's note: 'speed trial: bf16, channels-last (812 images/s; fp32, contiguous 640 ...)'."""
        others = "; ".join(f"{name} {rate:,.0f}" for name, rate in self.images_per_second.items()
                           if name != self.chosen)
        cached = "" if self.source == "measured" else ", figures from an earlier trial on this machine"
        return (f"speed trial: {self.chosen} ({self.images_per_second[self.chosen]:,.0f} images/s; "
                f"{others}{cached}; give --amp and --channels-last to choose)")


def choose(options: list[Placement], images_per_second: Callable[[Placement], float], cache_dir,
           key: str) -> tuple[Placement, SpeedTrial | None]:
    """The fastest of ``options`` by ``images_per_second`` (timing a few training steps), and the
    trial; with a single option, that option and no trial. Figures are cached under ``key``."""
    if len(options) == 1:
        return options[0], None
    cache = Path(cache_dir) / SPEED_CACHE_FILE
    measured = []

    def trial() -> dict:
        measured.append(True)
        return {label(placement): round(images_per_second(placement), 1) for placement in options}

    figures = cached_figure(cache, f"{device_name(options[0].device)} | trial {TRIAL_VERSION} | {key}", trial,
                            valid=lambda v: isinstance(v, dict) and set(v) == {label(p) for p in options}
                            and all(isinstance(r, (int, float)) and r >= 0 for r in v.values()) and max(v.values()) > 0)
    chosen = max(options, key=lambda placement: figures[label(placement)])
    return chosen, SpeedTrial(label(chosen), figures, "measured" if measured else str(cache))


def timed_steps(step: Callable[[], torch.Tensor], images: int) -> float:
    """Images per second of the median of the timed calls of ``step`` (one training step on
    ``images`` images, returning its loss), after up to TRIAL_WARMUP_STEPS untimed ones: at least
    TRIAL_TIMED_STEPS or TRIAL_STEADY_SECONDS of them, whichever is more, except that a slow step
    stops at TRIAL_SECONDS (one over it warms up once and is timed once), so that a large model's
    trial stays a few of its steps. Reading the loss waits for the device."""
    def seconds_of_one() -> float:
        started = time.perf_counter()
        step().item()
        return time.perf_counter() - started

    first = seconds_of_one()
    for _ in range(TRIAL_WARMUP_STEPS - 1 if first < TRIAL_SECONDS else 0):
        seconds_of_one()
    seconds = [seconds_of_one()]
    while sum(seconds) < TRIAL_STEADY_SECONDS or (len(seconds) < TRIAL_TIMED_STEPS and sum(seconds) < TRIAL_SECONDS):
        seconds.append(seconds_of_one())
    return images / statistics.median(seconds)
