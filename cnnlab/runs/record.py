"""A run's config.json as a typed value: the options it trains with and what readers need to know
about it. Every field read back is type-checked and checked against the others, so that a
hand-edited or damaged file is one line, never a run trained or evaluated with wrong values."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError, NotARun, first_line

CONFIG_FILE = "config.json"
OPTIMIZER_KERNELS = ("fused", "default")
# what may differ between a run's config.json and the record in its checkpoints: a resume may raise
# the epochs and move the run to another device (which decides the precision and memory format)
CHANGED_BY_RESUME = ("epochs", "device", "amp", "channels_last", "extended", "world_size", "device_peak",
                     "optimizer_kernel")


@dataclass
class RunRecord:
    """A run's config.json: the options it trains with (every one resolved) and what readers
    need to know about it. Written and read only through this type."""

    options: TrainConfig
    set_by_recipe: dict = field(default_factory=dict)  # the options options.recipe chose (not given explicitly)
    input_size: tuple[int, int, int] | None = None  # (channels, height, width) the model trains at
    num_classes: int | None = None
    classes: list[str] | None = None
    train_images: int | None = None
    test_images: int | None = None
    mean: list[float] | None = None  # the normalisation the model was trained with
    std: list[float] | None = None
    model_stats: dict | None = None  # params, trainable_params, macs at input_size
    world_size: int = 1
    versions: dict = field(default_factory=dict)
    git_commit: str | None = None
    created: str | None = None
    extended: list[dict] = field(default_factory=list)  # each resume that raised the epochs: from, to, when
    # a user's network (options.model is FILE.py:Name): reference, file, sha256, copy (cnnlab.models.user)
    model_source: dict | None = None
    # the device's peak FLOP/s that metrics.csv's utilisation divides by (cnnlab.devices.peak_flops)
    device_peak: dict | None = None
    # how --amp auto and channels-last were decided: each candidate's images/s (cnnlab.speed)
    speed_trial: dict | None = None
    # "fused" (PyTorch's one-kernel optimiser step, where the device has it) or "default"
    optimizer_kernel: str | None = None

    def to_json(self) -> dict:
        """The flat layout of config.json: the options, then the rest."""
        described = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**self.options.to_dict(), **described,
                "input_size": None if self.input_size is None else list(self.input_size)}

    @classmethod
    def from_json(cls, saved, source: str = CONFIG_FILE) -> "RunRecord":
        """The record in ``saved`` (config.json's object), every value checked; NotARun naming
        ``source`` and the key otherwise."""
        try:
            options = TrainConfig.from_dict(saved, source)  # type-checked and validated
        except CnnlabError as e:
            raise NotARun(str(e)) from None
        for name, check in _CHECKS.items():
            if saved.get(name) is not None and not check(saved[name]):
                raise NotARun(f"{source}: {name} is {_shown(saved[name])}, not {_EXPECTED[name]}")
        described = {f.name: saved[f.name] for f in fields(cls)
                     if f.name != "options" and saved.get(f.name) is not None}
        record = cls(options, **described)
        if record.input_size is not None:
            record.input_size = tuple(record.input_size)
        record._check_agreement(source)
        return record

    def _check_agreement(self, source: str) -> None:
        """The values that must agree with each other: one class name per class, one mean and
        one std per input channel."""
        if self.classes is not None and self.num_classes is not None and len(self.classes) != self.num_classes:
            raise NotARun(f"{source}: num_classes is {self.num_classes} but classes names {len(self.classes)}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and self.input_size is not None and len(values) != self.input_size[0]:
                raise NotARun(f"{source}: {name} has {len(values)} value(s) for {self.input_size[0]} channel(s)")

    def differences(self, other: "RunRecord", ignore=CHANGED_BY_RESUME) -> list[str]:
        """The keys of config.json on which two records disagree, less ``ignore``."""
        mine, theirs = self.to_json(), other.to_json()
        return [key for key in mine if key not in ignore and _comparable(mine[key]) != _comparable(theirs.get(key))]

    # shorthands for what every reader asks
    @property
    def model(self) -> str:
        return self.options.model

    @property
    def data(self) -> str:
        return self.options.data


def read_record(path: Path) -> RunRecord:
    """The record in a config.json file; NotARun (one line) when it cannot be read or checked."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise NotARun(f"{path} cannot be read: {first_line(e)}") from None
    if not isinstance(saved, dict):
        raise NotARun(f"{path} does not hold a JSON object")
    return RunRecord.from_json(saved, str(path))


def _is_count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _finite_numbers(values, positive: bool = False) -> bool:
    return isinstance(values, list) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in values)


_CHECKS = {
    "set_by_recipe": lambda v: isinstance(v, dict),
    "input_size": lambda v: isinstance(v, list) and len(v) == 3 and all(_is_count(n, 1) for n in v),
    "num_classes": lambda v: _is_count(v, 1),
    "classes": lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v),
    "train_images": _is_count,
    "test_images": _is_count,
    "mean": _finite_numbers,
    "std": lambda v: _finite_numbers(v, positive=True),
    "model_stats": lambda v: isinstance(v, dict) and all(_is_count(n) for n in v.values()),
    "world_size": lambda v: _is_count(v, 1),
    "versions": lambda v: isinstance(v, dict),
    "git_commit": lambda v: isinstance(v, str),
    "created": lambda v: isinstance(v, str),
    "extended": lambda v: isinstance(v, list) and all(isinstance(note, dict) for note in v),
    "model_source": lambda v: isinstance(v, dict) and all(isinstance(value, str) for value in v.values()),
    "device_peak": lambda v: isinstance(v, dict) and isinstance(v.get("flops_per_second"), (int, float))
    and v["flops_per_second"] > 0,
    "optimizer_kernel": lambda v: v in OPTIMIZER_KERNELS,
    "speed_trial": lambda v: isinstance(v, dict) and isinstance(v.get("images_per_second"), dict)
    and v.get("chosen") in v["images_per_second"],
}
_EXPECTED = {
    "set_by_recipe": "an object", "input_size": "[channels, height, width]", "num_classes": "a positive integer",
    "classes": "a list of names", "train_images": "a count", "test_images": "a count",
    "mean": "a list of finite numbers", "std": "a list of positive finite numbers",
    "model_stats": "an object of counts", "world_size": "a positive integer", "versions": "an object",
    "git_commit": "a string", "created": "a string", "extended": "a list of objects",
    "model_source": "an object of strings", "device_peak": "an object with a positive flops_per_second",
    "speed_trial": "an object whose chosen names one of its images_per_second",
    "optimizer_kernel": " or ".join(OPTIMIZER_KERNELS),
}


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _comparable(value):
    """Lists and tuples alike, floats to the precision JSON keeps them."""
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value
