"""Model registry: a name maps to a one-line builder plus what a user needs to know about it.

Builders are registered with a decorator in their family's module::

    @register_model(family="VGG", year=2014, input_size=(3, 224, 224))
    def vgg16(in_channels=3, num_classes=1000, **kwargs):
        return VGG(cfgs["D"], in_channels, num_classes, **kwargs)

Every builder takes ``in_channels`` and ``num_classes``; the other keywords it accepts (the
options a user may set, e.g. ``--model-arg width=0.5``) are declared with their types in
``register_model(options=...)``, so ``model_options`` can check them before anything is built.
``torchvision:<name>`` builds any torchvision classification model (random weights) through the
same ``create_model``; it takes no options (its builders forward unchecked keywords).
"""

from __future__ import annotations

import difflib
import functools
import fnmatch
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from cnnlab.errors import UnknownModel, UsageError, first_line

TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before building it."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    year: int
    input_size: tuple[int, int, int]  # natural (channels, height, width)
    num_classes: int  # natural number of classes (1000 for ImageNet models)
    description: str
    options: dict[str, type]  # keyword -> type (bool, int, float, str or tuple of ints)


# the keywords every builder takes; the data set decides them, so they are not user options
DATA_KEYWORDS = ("in_channels", "num_classes")
OPTION_TYPES = (bool, int, float, str, tuple)
_REGISTRY: dict[str, ModelSpec] = {}


def register_model(family: str, year: int, input_size=(3, 224, 224), num_classes: int = 1000,
                   options: dict[str, type] | None = None):
    """Register the decorated builder under its function name; ``options`` lists the keywords
    besides ``in_channels`` and ``num_classes`` it accepts, with their types."""

    def decorator(builder):
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if any(key in DATA_KEYWORDS or kind not in OPTION_TYPES for key, kind in (options or {}).items()):
            raise ValueError(f"model {name!r}: options must be user keywords typed {OPTION_TYPES}")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            family=family,
            year=year,
            input_size=tuple(input_size),
            num_classes=num_classes,
            description=doc[0] if doc else "",
            options=dict(options or {}),
        )
        return builder

    return decorator


def _natural_key(name: str):
    """Sort resnet18 before resnet101: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, in natural order."""
    return sorted(fnmatch.filter(_REGISTRY, pattern), key=_natural_key)


def _unknown(name: str, candidates) -> UnknownModel:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run 'cnnlab models' for the list"
    return UnknownModel(f"unknown model {name!r}{hint}")


def _torchvision_names() -> list[str]:
    from torchvision import models as tv_models

    return tv_models.list_models(module=tv_models)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (``torchvision:<name>`` included)."""
    if name.startswith(TORCHVISION_PREFIX):
        tv_name = name[len(TORCHVISION_PREFIX):]
        if tv_name not in _torchvision_names():
            raise _unknown(tv_name, _torchvision_names())
        side = 299 if tv_name == "inception_v3" else 224
        return ModelSpec(name, _torchvision_builder(tv_name), "torchvision", 0, (3, side, side), 1000,
                         f"torchvision.models.{tv_name}, random weights", {})
    if name not in _REGISTRY:
        raise _unknown(name, _REGISTRY)
    return _REGISTRY[name]


@functools.lru_cache(maxsize=None)
def default_recipe(name: str) -> str:
    """The training recipe (cnnlab/config.py's RECIPES) a model gets unless told otherwise."""
    with uninitialized():
        return recipe_of(create_model(name), model_spec(name).input_size)


def recipe_of(model: nn.Module, natural_input) -> str:
    """"batchnorm" for a network with batch normalisation, "small" for a BatchNorm-free one at a
    natural input of 32 pixels or less (LeNet, the MLP), "plain" for the deep BatchNorm-free ones
    (AlexNet, VGG, NiN, GoogLeNet), which need a gentler learning rate."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "batchnorm"
    return "small" if max(natural_input[1:]) <= 32 else "plain"


def create_model(name: str, in_channels: int | None = None, num_classes: int | None = None,
                 **kwargs) -> nn.Module:
    """Build a registered model; channels and classes default to the model's natural ones."""
    spec = model_spec(name)
    return spec.builder(
        in_channels=spec.input_size[0] if in_channels is None else in_channels,
        num_classes=spec.num_classes if num_classes is None else num_classes,
        **kwargs,
    )


def model_options(name: str, pairs: list[str]) -> dict:
    """``["width=0.5", "attention=se"]`` -> ``{"width": 0.5, "attention": "se"}`` for model
    ``name``, checked: each pair is KEY=VALUE (split on the first "="), each key an option the
    builder accepts, each value of its type. Values read as true/false/yes/no -> bool, integers,
    floats, comma lists of integers (3,3) -> tuple, else text; an integer is accepted where a
    float is expected and one integer where a tuple is. The model is then built once on the meta
    device, so values the architecture refuses (width=0, attention=foo) are reported here,
    before a run writes anything. Raises UsageError (one line) naming the accepted options."""
    spec = model_spec(name)
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"model option {pair!r} is not KEY=VALUE, e.g. width=0.5")
        if key in DATA_KEYWORDS:
            raise UsageError(f"{key} is not a model option: the data set decides it")
        if key not in spec.options:
            raise UsageError(f"{name} has no option {key!r}{_accepted(spec, key)}")
        options[key] = _typed(name, key, spec.options[key], _parse_value(text))
    if options:
        _try_build(name, options)
    return options


def _accepted(spec: ModelSpec, key: str) -> str:
    if not spec.options:
        return "; it takes no options"
    close = difflib.get_close_matches(key, list(spec.options), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"; {hint}it accepts {', '.join(f'{k} ({t.__name__})' for k, t in spec.options.items())}"


def _parse_value(text: str):
    text = text.strip()
    words = {"true": True, "yes": True, "false": False, "no": False}
    if text.lower() in words:
        return words[text.lower()]
    if "," in text:
        parts = [part.strip() for part in text.split(",")]
        if not all(re.fullmatch(r"[+-]?\d+", part) for part in parts):
            raise UsageError(f"{text!r}: a comma list must be integers, e.g. 3,3")
        return tuple(int(part) for part in parts)
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _typed(name: str, key: str, kind: type, value):
    """``value`` as the option's type, or UsageError."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is tuple and isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a word",
                tuple: "integers separated by commas"}[kind]
    raise UsageError(f"{name} option {key} takes {expected}; got {value!r}")


def _try_build(name: str, options: dict) -> None:
    """Build the model on the meta device (shapes only) to let the architecture check the values."""
    try:
        with torch.device("meta"), uninitialized():
            create_model(name, **options)
    except (ValueError, TypeError, RuntimeError) as error:  # torch refusing a size or a probability
        raise UsageError(f"{name} refuses {options}: {first_line(error)}") from None


def _torchvision_builder(tv_name: str):
    def build(in_channels=3, num_classes=1000, **kwargs):
        from torchvision import models as tv_models

        if tv_name in ("googlenet", "inception_v3"):
            kwargs.setdefault("aux_logits", False)
            kwargs.setdefault("init_weights", True)
        model = tv_models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            _replace_first_conv(model, in_channels)
        return model

    return build


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """torchvision models take 3 channels; swap the stem convolution for another count."""
    for qualified_name, module in model.named_modules():  # pre-order: the stem comes first
        if isinstance(module, nn.Conv2d):
            parent_name, _, child_name = qualified_name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, nn.Conv2d(
                in_channels, module.out_channels, module.kernel_size, module.stride,
                module.padding, module.dilation, module.groups, module.bias is not None,
                module.padding_mode))
            return
    raise ValueError("model has no Conv2d whose input channels could be changed")


@contextmanager
def uninitialized():
    """Build models whose weights are never read: torch.nn.init's in-place initializers do
    nothing inside this block, so a model's parameters keep whatever memory they were given.
    (Patches torch.nn.init for the duration; not for use from several threads at once.)"""
    initializers = {name: function for name, function in vars(nn.init).items()
                    if name.endswith("_") and not name.startswith("_") and callable(function)}
    for name in initializers:
        setattr(nn.init, name, _leave_as_is)
    try:
        yield
    finally:
        for name, function in initializers.items():
            setattr(nn.init, name, function)


def _leave_as_is(tensor, *args, **kwargs):
    return tensor
