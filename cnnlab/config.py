"""The training options: one dataclass, written once, that the CLI, the Python API and the run
store all read. torch-free, so ``cnnlab --help`` builds the ``train`` options from it instantly.

    config = TrainConfig(model="alexnet", lr=1e-3)
    config.validate()                       # one line per bad value, before anything is written

Each field carries its command-line description in its metadata (``option``): the help text,
the help panel, a short flag, the values it accepts and its bounds. ``cnnlab train`` turns every
field into an option (cli.py), so a new option is one field here and nothing else.

The resume rule: a resumed run keeps every option it was started with, except those marked
``resumable`` (the number of epochs, which may only grow, and the device).
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, get_type_hints

from cnnlab.errors import UsageError

DATA, OPTIMISATION, DEVICE, STORE = "Data", "Optimisation", "Device and speed", "Run store"
DEFAULT_RUNS_DIR = "runs"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one path component, never "..", never hidden


def option(default, help: str, *, panel: str, short: str | None = None, choices: tuple = (),
           low: float | None = None, high: float | None = None, open_low: bool = False,
           resumable: bool = False, flag: str | None = None):
    """A TrainConfig field and how the command line shows it.

    ``low``/``high`` bound numbers (``open_low``: the bound itself is refused); ``flag`` is the
    on/off pair of a boolean (``--flip/--no-flip``); ``resumable`` options may change on resume.
    """
    return field(default=default, metadata=dict(help=help, panel=panel, short=short, choices=choices,
                                                low=low, high=high, open_low=open_low,
                                                resumable=resumable, flag=flag))


@dataclass
class TrainConfig:
    """Every option of a training run. Defaults train LeNet on the embedded digits to ~98 %."""

    # -- what to train, on what
    model: str = option("lenet", "Model name (see 'cnnlab models') or torchvision:<name>.", panel=DATA)
    data: str = option("digits", "digits (embedded, no download), mnist, fashion-mnist, kmnist, cifar10, "
                       "cifar100, svhn, or an ImageFolder directory. Its test split is reported as val_*.",
                       panel=DATA, short="-d")
    data_dir: str | None = option(None, "Where downloads go (default: $CNNLAB_DATA_DIR or ~/.cache/cnnlab).",
                                  panel=DATA)
    resize: int | None = option(None, "Input side in pixels (default: the model's natural size, e.g. 28 for "
                                "lenet, 224 for alexnet).", panel=DATA, low=1, high=4096)
    normalize: bool = option(True, "Normalise with the training images' channel mean and std.", panel=DATA,
                             flag="--normalize/--no-normalize")
    flip: bool | None = option(None, "Random horizontal flips (default: on, except for digit and character "
                               "sets).", panel=DATA, flag="--flip/--no-flip")
    permute_pixels: int | None = option(None, "Shuffle the pixel positions of every image (train and test) by "
                                        "one fixed permutation drawn with this seed, at the data's own "
                                        "resolution before any resize.", panel=DATA, low=0, high=2 ** 31 - 1)
    crop_padding: int = option(0, "Random crops of the image padded by this many pixels (0: off).",
                               panel=DATA, low=0, high=1024)
    # -- optimisation
    epochs: int = option(30, "Epochs to train (with --resume: the new total, at least the epochs finished).",
                         panel=OPTIMISATION, short="-e", low=1, high=1_000_000, resumable=True)
    batch_size: int = option(64, "Images per optimiser step (under torchrun: the global batch).",
                             panel=OPTIMISATION, short="-b", low=1, high=1 << 20)
    optimizer: str = option("adamw", "Optimiser.", panel=OPTIMISATION, choices=("sgd", "adam", "adamw"))
    lr: float = option(0.01, "Peak learning rate.", panel=OPTIMISATION, low=0, open_low=True)
    momentum: float = option(0.9, "SGD momentum.", panel=OPTIMISATION, low=0, high=1)
    nesterov: bool = option(False, "Nesterov momentum (sgd).", panel=OPTIMISATION, flag="--nesterov")
    weight_decay: float = option(0.05, "Weight decay.", panel=OPTIMISATION, low=0, high=1e3)
    schedule: str = option("cosine", "Learning-rate schedule, updated every step.", panel=OPTIMISATION,
                           choices=("constant", "step", "cosine", "onecycle"))
    warmup_epochs: float = option(2.0, "Linear warm-up before the schedule (not with onecycle).",
                                  panel=OPTIMISATION, low=0, high=1_000_000)
    step_every: int = option(10, "step schedule: multiply the lr by --step-gamma every N epochs.",
                             panel=OPTIMISATION, low=1, high=1_000_000)
    step_gamma: float = option(0.1, "step schedule: the factor.", panel=OPTIMISATION, low=0, high=1)
    label_smoothing: float = option(0.1, "Label smoothing of the training loss (val_loss is plain "
                                    "cross-entropy).", panel=OPTIMISATION, low=0, high=0.999)
    clip_grad: float | None = option(None, "Clip the gradient norm to this.", panel=OPTIMISATION,
                                     low=0, high=1e9, open_low=True)
    init: str = option("default", "Weights: PyTorch's default or xavier (d2l's).", panel=OPTIMISATION,
                       choices=("default", "xavier"))
    seed: int = option(0, "Random seed: the same seed gives the same run on the CPU.", panel=OPTIMISATION,
                       low=0, high=2 ** 31 - 1)
    # -- device and speed
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.", panel=DEVICE, resumable=True)
    amp: str = option("auto", "Mixed precision (fp16 needs a GPU); auto: bf16 on GPUs since Ampere and CPUs "
                      "with AVX512-BF16 or AMX, else off.", panel=DEVICE, choices=("auto", "off", "bf16", "fp16"))
    channels_last: bool | None = option(None, "Channels-last memory format (default: on for CPU and CUDA).",
                                        panel=DEVICE, flag="--channels-last/--no-channels-last")
    compile: bool = option(False, "torch.compile the model.", panel=DEVICE, flag="--compile")
    sync_bn: bool = option(False, "With several GPUs: batch norm over the global batch, not each GPU's share.",
                           panel=DEVICE, flag="--sync-bn")
    # -- the run store
    name: str | None = option(None, "Run name (default: <model>-<data>-<timestamp>); never overwritten.",
                              panel=STORE)
    runs_dir: str = option(DEFAULT_RUNS_DIR, "Where runs are stored.", panel=STORE)

    # -- reading and checking ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, saved: dict, source: str = "config.json") -> "TrainConfig":
        """The options recorded in a run's config.json, type-checked: a hand-edited file with a
        missing option or a value of the wrong type is one line naming it."""
        if not isinstance(saved, dict):
            raise UsageError(f"{source} does not hold a JSON object")
        missing = [f.name for f in fields(cls) if f.name not in saved]
        if missing:
            raise UsageError(f"{source} has no {', '.join(missing)} (not written by this version of cnnlab)")
        hints = get_type_hints(cls)
        for f in fields(cls):
            if not _has_type(saved[f.name], hints[f.name]):
                raise UsageError(f"{source}: {f.name} is {saved[f.name]!r}, not {_type_name(hints[f.name])}")
        config = cls(**{f.name: saved[f.name] for f in fields(cls)})
        config.validate()
        return config

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Every value within its choices and bounds, and the combinations that make sense."""
        hints = get_type_hints(type(self))
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if not _has_type(value, hints[f.name]):
                raise UsageError(f"{flag_name(f.name)} must be {_type_name(hints[f.name])}, not {value!r}")
            if meta["choices"] and value not in meta["choices"]:
                raise UsageError(f"{flag_name(f.name)} must be one of {', '.join(meta['choices'])}, not {value!r}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                check_bounds(flag_name(f.name), value, meta["low"], meta["high"], meta["open_low"])
        if self.name is not None and not RUN_NAME.fullmatch(self.name):
            raise UsageError(f"--name must be one plain name (letters, digits, '.', '_', '-', not starting "
                             f"with '.' or '-'), not {self.name!r}: runs stay inside --runs-dir")
        if not self.model:
            raise UsageError("give the model to train")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise UsageError("--nesterov needs --optimizer sgd and a positive --momentum")

    # -- the resume rule -----------------------------------------------------------------------
    def resumed(self, epochs_finished: int, **changes) -> "TrainConfig":
        """This (a run's own) configuration continued with ``changes``: only resumable options may
        change, and a run's epochs may grow but never shrink below what it has finished."""
        refused = [name for name in changes if name not in RESUMABLE]
        if refused:
            raise UsageError(f"a resumed run keeps its options; {flag_name(refused[0])} cannot change "
                             f"(only {' and '.join(map(flag_name, RESUMABLE))} can)")
        epochs = changes.get("epochs", self.epochs)
        if epochs < epochs_finished:
            raise UsageError(f"--epochs {epochs} is fewer than the {epochs_finished} epoch(s) the run has "
                             f"finished; a run is never shortened")
        config = TrainConfig(**{**self.to_dict(), **changes})
        config.validate()
        return config


RESUMABLE = tuple(f.name for f in fields(TrainConfig) if f.metadata["resumable"])


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def check_bounds(name: str, value, low=None, high=None, open_low: bool = False) -> None:
    """One line for NaN, infinity or a number outside [low, high] (or (low, high])."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, not {value}")
    if low is not None and (value < low or (open_low and value == low)):
        raise UsageError(f"{name} must be {'above' if open_low else 'at least'} {low:g}, not {value:g}")
    if high is not None and value > high:
        raise UsageError(f"{name} must be at most {high:g}, not {value:g}")


def _has_type(value: Any, hint) -> bool:
    """Whether a JSON value fits a field's annotation (int, float, bool, str, or X | None)."""
    allowed = getattr(hint, "__args__", (hint,))
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    return any(isinstance(value, t) for t in allowed if t is not type(None) and t is not int)


def _type_name(hint) -> str:
    names = [t.__name__ for t in getattr(hint, "__args__", (hint,)) if t is not type(None)]
    optional = type(None) in getattr(hint, "__args__", ())
    return " or ".join(names) + (" (or null)" if optional else "")


def option_fields():
    """The fields the command line offers, in order, with their defaults."""
    return [f for f in fields(TrainConfig) if f.default is not MISSING]
