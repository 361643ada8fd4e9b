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
from typing import Any, Literal, get_args, get_origin, get_type_hints

from cnnlab.errors import UsageError

MODEL, DATA, OPTIMISATION, DEVICE, STORE = "Model", "Data", "Optimisation", "Device and speed", "Run store"
DEFAULT_RUNS_DIR = "runs"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one path component, never "..", never hidden


def option(default, help: str, *, panel: str, short: str | None = None,
           low: float | None = None, high: float | None = None, open_low: bool = False,
           resumable: bool = False, flag: str | None = None, recipe: bool = False, multiple: bool = False):
    """A TrainConfig field and how the command line shows it (its type, a ``Literal`` for a
    choice among names, is the field's annotation).

    ``low``/``high`` bound numbers (``open_low``: the bound itself is refused); ``flag`` is the
    on/off pair of a boolean (``--flip/--no-flip``); ``resumable`` options may change on resume;
    ``recipe`` options default to None, "the recipe's value" (see Recipe); ``multiple`` options
    are lists, one value per use of the flag.
    """
    return field(default=default, metadata=dict(help=help, panel=panel, short=short,
                                                low=low, high=high, open_low=open_low, resumable=resumable,
                                                flag=flag, recipe=recipe, multiple=multiple))


@dataclass(frozen=True)
class Recipe:
    """A named, documented set of training options. ``values`` apply to every model;
    ``by_family`` adds values for the models of one family (as d2l gives each chapter's network
    its own learning rate, batch and input size), ``by_model`` for one model. An option given
    explicitly overrides all three.

    Besides options, a recipe may set ``min_steps``: where the data set is so small that the
    recipe's epochs give fewer optimiser steps than that, the epochs are raised to reach it (a
    deep net needs steps, not epochs; on a large data set its epochs already give them)."""

    description: str
    values: dict
    by_family: dict = field(default_factory=dict)
    by_model: dict = field(default_factory=dict)

    def settings(self, family: str, model: str) -> dict:
        return {**self.values, **self.by_family.get(family, {}), **self.by_model.get(model, {})}


# measured on the embedded digits by benchmarks/zoo_learns.py (the README has the table)
RECIPES = {
    "small": Recipe(
        "small networks at their natural input (LeNet, the MLP, the course nets): AdamW at a high rate, "
        "warm-up and cosine decay, label smoothing; ~98 % on digits",
        dict(optimizer="adamw", lr=0.01, momentum=0.9, weight_decay=0.05, schedule="cosine", warmup_epochs=2.0,
             label_smoothing=0.1, batch_size=64, epochs=30, init="default", normalize=True)),
    "batchnorm": Recipe(
        "deep networks with batch normalisation (ResNets, DenseNets, VGG-BN, torchvision's GoogLeNet): "
        "AdamW 2e-3, one warm-up epoch, cosine decay, 10 epochs of batches of 32 (twice the steps of 64, "
        "which the deepest need on a small data set)",
        dict(optimizer="adamw", lr=2e-3, momentum=0.9, weight_decay=0.05, schedule="cosine", warmup_epochs=1.0,
             label_smoothing=0.1, batch_size=32, epochs=10, init="default", normalize=True),
        # measured on the digits (1,438 images, 44 full batches an epoch) at width 1/2 and 32 px: 0.86
        # after 10 epochs with training accuracy still rising (0.79), 0.98-0.997 after 20-21
        by_model={"vgg19_bn": dict(min_steps=900)}),
    "plain": Recipe(
        "deep networks without batch normalisation (AlexNet, ZFNet, VGG, NiN, the paper's GoogLeNet): He "
        "init, without which VGG-16/19 stay at chance, and AdamW 1e-3, ten times gentler than the small "
        "nets' rate, at which AlexNet diverges to chance; batches of 32 as in batchnorm",
        dict(optimizer="adamw", lr=1e-3, momentum=0.9, weight_decay=0.05, schedule="cosine", warmup_epochs=1.0,
             label_smoothing=0.1, batch_size=32, epochs=10, init="kaiming", normalize=True)),
    "d2l": Recipe(
        "the textbook's settings (Dive into Deep Learning, ch. 7-8, Fashion-MNIST): plain SGD without momentum "
        "or weight decay, constant rate, Xavier init, unnormalised images, 10 epochs; lr / batch / resize per "
        "chapter network",
        dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, schedule="constant", warmup_epochs=0.0,
             label_smoothing=0.0, init="xavier", normalize=False, flip=False, epochs=10, lr=0.1, batch_size=256),
        by_family={
            "LeNet": dict(lr=0.9, batch_size=256, resize=28),
            "MLP": dict(lr=0.1, batch_size=256, resize=28),
            "AlexNet": dict(lr=0.01, batch_size=128, resize=224),
            "ZFNet": dict(lr=0.01, batch_size=128, resize=224),
            "VGG": dict(lr=0.05, batch_size=128, resize=224),
            "NiN": dict(lr=0.1, batch_size=128, resize=224),
            "GoogLeNet": dict(lr=0.1, batch_size=128, resize=96),
            "ResNet": dict(lr=0.05, batch_size=256, resize=96),
            "DenseNet": dict(lr=0.1, batch_size=256, resize=96),
        }),
}
RecipeName = Literal["small", "batchnorm", "plain", "d2l"]  # RECIPES' names (a test keeps the two in step)
DEFAULTS_OUTSIDE_RECIPES = dict(flip=None, resize=None)  # None here: decided by the data and the model


def describe_recipes() -> list[dict]:
    """One row per recipe and, where it differs by family or model, per family or model: what
    ``models --recipes`` lists."""
    rows = []
    for name, recipe in RECIPES.items():
        rows.append(dict(recipe=name, applies_to="(all)", settings=_settings_text(recipe.values),
                         description=recipe.description))
        rows += [dict(recipe=name, applies_to=which, settings=_settings_text(extra), description="")
                 for which, extra in {**recipe.by_family, **recipe.by_model}.items()]
    return rows


def _settings_text(values: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items())


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run. Defaults train LeNet on the embedded digits to ~98 %.
    Frozen: a run's options are settled by making new values (``with_recipe``, ``resumed``,
    ``dataclasses.replace``), never by changing one in place."""

    # -- what to train, on what
    model: str = option("lenet", "Model name (see 'cnnlab models') or torchvision:<name>.", panel=MODEL)
    model_args: list[str] | None = option(None, "A model option KEY=VALUE, e.g. width=0.25 or aux_logits=true "
                                          "(repeat for several; 'cnnlab models NAME' lists them).",
                                          panel=MODEL, flag="--model-arg", multiple=True)
    recipe: RecipeName | None = option(None, "Training recipe: its optimiser, schedule, batch, epochs ... (default: "
                                       "the model's; see 'cnnlab models --recipes'). Explicit options override it.",
                                       panel=OPTIMISATION)
    data: str = option("digits", "digits (embedded, no download), mnist, fashion-mnist, kmnist, cifar10, "
                       "cifar100, svhn, or an ImageFolder directory. Its test split is reported as val_*.",
                       panel=DATA, short="-d")
    data_dir: str | None = option(None, "Where downloads go (default: $CNNLAB_DATA_DIR or ~/.cache/cnnlab).",
                                  panel=DATA)
    resize: int | None = option(None, "Input side in pixels (default: the recipe's, else the model's natural "
                                "size, e.g. 28 for lenet, 224 for alexnet).", panel=DATA, low=1, high=4096, recipe=True)
    normalize: bool | None = option(None, "Normalise with the training images' channel mean and std "
                                    "(default: the recipe's).", panel=DATA, flag="--normalize/--no-normalize",
                                    recipe=True)
    flip: bool | None = option(None, "Random horizontal flips (default: the recipe's, else on except for digit "
                               "and character sets).", panel=DATA, flag="--flip/--no-flip", recipe=True)
    permute_pixels: int | None = option(None, "Shuffle the pixel positions of every image (train and test) by "
                                        "one fixed permutation drawn with this seed, at the data's own "
                                        "resolution before any resize.", panel=DATA, low=0, high=2 ** 31 - 1)
    crop_padding: int = option(0, "Random crops of the image padded by this many pixels (0: off).",
                               panel=DATA, low=0, high=1024)
    # -- optimisation
    epochs: int | None = option(None, "Epochs to train (default: the recipe's, more on a data set too small to "
                                "give its minimum of optimiser steps; with --resume: the new total, at least "
                                "the epochs finished).", panel=OPTIMISATION, short="-e", low=1, high=1_000_000,
                                resumable=True, recipe=True)
    batch_size: int | None = option(None, "Images per optimiser step (under torchrun: the global batch).",
                                    panel=OPTIMISATION, short="-b", low=1, high=1 << 20, recipe=True)
    optimizer: Literal["sgd", "adam", "adamw"] | None = option(None, "Optimiser.", panel=OPTIMISATION, recipe=True)
    lr: float | None = option(None, "Peak learning rate.", panel=OPTIMISATION, low=0, open_low=True, recipe=True)
    momentum: float | None = option(None, "SGD momentum.", panel=OPTIMISATION, low=0, high=1, recipe=True)
    nesterov: bool = option(False, "Nesterov momentum (sgd).", panel=OPTIMISATION, flag="--nesterov")
    weight_decay: float | None = option(None, "Weight decay.", panel=OPTIMISATION, low=0, high=1e3, recipe=True)
    schedule: Literal["constant", "step", "cosine", "onecycle"] | None = option(
        None, "Learning-rate schedule, updated every step.", panel=OPTIMISATION, recipe=True)
    warmup_epochs: float | None = option(None, "Linear warm-up before the schedule (not with onecycle).",
                                         panel=OPTIMISATION, low=0, high=1_000_000, recipe=True)
    step_every: int = option(10, "step schedule: multiply the lr by --step-gamma every N epochs.",
                             panel=OPTIMISATION, low=1, high=1_000_000)
    step_gamma: float = option(0.1, "step schedule: the factor.", panel=OPTIMISATION, low=0, high=1)
    label_smoothing: float | None = option(None, "Label smoothing of the training loss (val_loss is plain "
                                           "cross-entropy).", panel=OPTIMISATION, low=0, high=0.999, recipe=True)
    clip_grad: float | None = option(None, "Clip the gradient norm to this.", panel=OPTIMISATION,
                                     low=0, high=1e9, open_low=True)
    init: Literal["default", "xavier", "kaiming"] | None = option(None, "Weights: default (the model's own: PyTorch's, or torchvision's for VGG, "
                              "ResNet, DenseNet, GoogLeNet), xavier (d2l's) or kaiming (He et al.'s, for deep nets "
                              "without batch norm).", panel=OPTIMISATION, recipe=True)
    seed: int = option(0, "Random seed: the same seed gives the same run on the CPU.", panel=OPTIMISATION,
                       low=0, high=2 ** 31 - 1)
    # -- device and speed
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.", panel=DEVICE, resumable=True)
    amp: Literal["auto", "off", "bf16", "fp16"] = option(
        "auto", "Mixed precision (fp16 needs a GPU); auto: bf16 or off, whichever trains this model faster in a "
        "few timed steps, where the hardware has bf16 (GPUs since Ampere, CPUs with AVX512-BF16 or AMX); else off.",
        panel=DEVICE)
    channels_last: bool | None = option(None, "Channels-last memory format (default: on CPU and CUDA, whichever of "
                                        "the two formats a few timed steps find faster).",
                                        panel=DEVICE, flag="--channels-last/--no-channels-last")
    compile: bool = option(False, "torch.compile the model.", panel=DEVICE, flag="--compile")
    fit_check: bool | None = option(None, "Before training, stop when the estimated peak memory of a step does not "
                                    "fit the device's free memory, naming a batch or --resize that would (default: on; "
                                    "--no-fit-check tries anyway).", panel=DEVICE, flag="--fit-check/--no-fit-check")
    sync_bn: bool = option(False, "With several GPUs: batch norm over the global batch, not each GPU's share.",
                           panel=DEVICE, flag="--sync-bn")
    # -- the run store
    name: str | None = option(None, "Run name (default: <model>-<data>-<timestamp>); never overwritten.",
                              panel=STORE)
    runs_dir: str = option(DEFAULT_RUNS_DIR, "Where runs are stored.", panel=STORE)
    log: Literal["tensorboard"] | None = option(None, "Also log to TensorBoard event files in the run's "
                                                "tensorboard/ folder (needs the cnnlab[tensorboard] extra).",
                                                panel=STORE)

    # -- reading and checking ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, saved: dict, source: str = "config.json") -> "TrainConfig":
        """The options recorded in a run's config.json, type-checked: a hand-edited file with a
        missing option or a value of the wrong type is one line naming it."""
        if not isinstance(saved, dict):
            raise UsageError(f"{source} does not hold a JSON object")
        # an option added since the run was written takes its default where that means "none" or "decided
        # elsewhere" (model_args, recipe, permute_pixels): such a run trained exactly as that default does
        missing = [f.name for f in fields(cls) if f.name not in saved and (f.default is not None or f.metadata["recipe"])]
        if missing:
            raise UsageError(f"{source} has no {', '.join(missing)} (not written by this version of cnnlab)")
        saved = {f.name: saved.get(f.name) for f in fields(cls)}
        hints = get_type_hints(cls)
        for f in fields(cls):
            if not has_type(saved[f.name], hints[f.name]):
                raise UsageError(f"{source}: {f.name} is {saved[f.name]!r}, not {type_name(hints[f.name])}")
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
            allowed = choices(hints[f.name])
            if allowed and value is not None and value not in allowed:
                raise UsageError(f"{flag_name(f.name)} must be one of {', '.join(allowed)}, not {value!r}")
            if not has_type(value, hints[f.name]):
                raise UsageError(f"{flag_name(f.name)} must be {type_name(hints[f.name])}, not {value!r}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                check_bounds(flag_name(f.name), value, meta["low"], meta["high"], meta["open_low"])
        if self.name is not None and not RUN_NAME.fullmatch(self.name):
            raise UsageError(f"--name must be one plain name (letters, digits, '.', '_', '-', not starting "
                             f"with '.' or '-'), not {self.name!r}: runs stay inside --runs-dir")
        if not self.model:
            raise UsageError("give the model to train")
        if self.nesterov and (self.optimizer not in ("sgd", None) or (self.momentum is not None and self.momentum <= 0)):
            raise UsageError("--nesterov needs --optimizer sgd and a positive --momentum")

    # -- recipes ---------------------------------------------------------------------------------
    def with_recipe(self, family: str, default_recipe: str) -> "TrainConfig":
        """Every option the recipe sets that was not given (None) filled in from it: this config's
        ``recipe``, else the model's ``default_recipe``. Options no recipe sets keep None where
        the data or the model decides them (flip, resize)."""
        name = self.recipe or default_recipe
        values = {**DEFAULTS_OUTSIDE_RECIPES, **RECIPES[name].settings(family, self.model)}
        filled = {f.name: values[f.name] for f in fields(self)
                  if f.metadata["recipe"] and getattr(self, f.name) is None and f.name in values}
        config = TrainConfig(**{**self.to_dict(), **filled, "recipe": name})
        config.validate()
        return config

    def recipe_values(self, family: str) -> dict:
        """What this run's recipe says for its model: options and ``min_steps``."""
        return RECIPES[self.recipe].settings(family, self.model) if self.recipe else {}

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


def choices(hint) -> tuple[str, ...]:
    """The names a ``Literal[...]`` (or ``Literal[...] | None``) annotation allows; () for any other."""
    literal = next((t for t in _alternatives(hint) if get_origin(t) is Literal), None)
    return get_args(literal) if literal is not None else ()


def base_type(hint):
    """An annotation less its ``| None``."""
    return next(t for t in _alternatives(hint) if t is not type(None))


def _alternatives(hint) -> tuple:
    return get_args(hint) if get_origin(hint) is not Literal and get_args(hint) else (hint,)


def has_type(value: Any, hint) -> bool:
    """Whether a JSON value fits a field's annotation (int, float, bool, str, a Literal of names,
    list[str], or X | None)."""
    allowed = _alternatives(hint)
    if value is None:
        return type(None) in allowed
    if choices(hint):
        return value in choices(hint)
    lists = [t for t in allowed if get_origin(t) is list]
    if lists:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    return any(isinstance(value, t) for t in allowed if t is not type(None) and t is not int)


def type_name(hint) -> str:
    if choices(hint):
        names = ["one of " + ", ".join(choices(hint))]
    else:
        names = [str(t) if get_origin(t) else t.__name__ for t in _alternatives(hint) if t is not type(None)]
    optional = type(None) in _alternatives(hint)
    return " or ".join(names) + (" (or null)" if optional else "")


def option_fields():
    """The fields the command line offers, in order, with their defaults."""
    return [f for f in fields(TrainConfig) if f.default is not MISSING]
