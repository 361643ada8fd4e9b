"""Model registry: a name maps to a one-line builder plus what a user needs to know about it.

Builders are registered with a decorator in their family's module::

    @register_model(family="VGG", year=2014, input_size=(3, 224, 224))
    def vgg16(in_channels=3, num_classes=1000, **kwargs):
        return VGG(cfgs["D"], in_channels, num_classes, **kwargs)

Every builder takes ``in_channels`` and ``num_classes``; the other keywords it accepts (the
options a user may set, e.g. ``--model-arg width=0.5``) are read from its signature and type
hints (``signature_options``), following its ``**kwargs`` into the constructor it calls, so
``model_options`` can check them before anything is built and no family restates them.
``torchvision:<name>`` builds any torchvision classification model (random weights) through the
same ``create_model``; it takes no options (its builders forward unchecked keywords).
"""

from __future__ import annotations

import difflib
import functools
import fnmatch
import re

import torch
from torch import nn

from cnnlab.errors import BadModelOption, UnknownModel, first_line
from cnnlab.models.signature import DATA_KEYWORDS, ModelSpec, uninitialized
from cnnlab.models.user import is_reference, user_spec

TORCHVISION_PREFIX = "torchvision:"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(family: str, year: int, input_size=(3, 224, 224), num_classes: int = 1000):
    """Register the decorated builder under its function name. Its options are its signature:
    the keywords it names, and, where it hands ``**kwargs`` on to a constructor, that
    constructor's keywords with a default which the builder does not set itself."""

    def decorator(builder):
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            family=family,
            year=year,
            input_size=tuple(input_size),
            num_classes=num_classes,
            description=doc[0] if doc else "",
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
    """The registry entry for ``name`` (``torchvision:<name>`` included), or the spec of a
    user's network for a reference ``path/to/file.py:Name`` or ``package.module:Name``."""

    if is_reference(name):
        return user_spec(name)
    if name.startswith(TORCHVISION_PREFIX):
        tv_name = name[len(TORCHVISION_PREFIX):]
        if tv_name not in _torchvision_names():
            raise _unknown(tv_name, _torchvision_names())
        side = 299 if tv_name == "inception_v3" else 224
        return ModelSpec(name, _torchvision_builder(tv_name), "torchvision", 0, (3, side, side), 1000,
                         f"torchvision.models.{tv_name}, random weights")
    if name not in _REGISTRY:
        raise _unknown(name, _REGISTRY)
    return _REGISTRY[name]


def default_recipe(name: str) -> str:
    """The training recipe (cnnlab/config.py's RECIPES) a model gets unless told otherwise:
    chosen by what the network contains (recipe_of), for a user's network as for the zoo."""

    return _measured_recipe(name) if is_reference(name) else _zoo_recipe(name)


@functools.lru_cache(maxsize=None)
def _zoo_recipe(name: str) -> str:
    return _measured_recipe(name)


def _measured_recipe(name: str) -> str:
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


# zoo names whose network changed since runs were recorded under them: name -> (a tensor of
# the state dict, its first dimension in the old network, the model that builds the old one)
RENAMED = {"alexnet": ("features.0.weight", 64, "alexnet_tv")}  # torchvision's AlexNet until 0.x


def recorded_model(name: str, weights: dict | None) -> str:
    """The model that rebuilds a run recorded as ``name`` with these ``weights`` (its state
    dict): ``name`` itself, or the model that name meant when the run was recorded (a run of
    ``alexnet`` from before it became the paper's network holds torchvision's variant)."""
    if name in RENAMED and weights:
        tensor, old_width, old_model = RENAMED[name]
        shape = getattr(weights.get(tensor), "shape", None)
        if shape and shape[0] == old_width:
            return old_model
    return name


def model_options(name: str, pairs: list[str]) -> dict:
    """``["width=0.5", "attention=se"]`` -> ``{"width": 0.5, "attention": "se"}`` for model
    ``name``, checked: each pair is KEY=VALUE (split on the first "="), each key an option the
    builder accepts, each value of the type its signature gives (see ModelOption.parse). The
    model is then built once on the meta device, so values the architecture refuses (width=0,
    attention=foo) are reported here, before a run writes anything. Raises BadModelOption (one
    line) naming the accepted options."""
    spec = model_spec(name)
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadModelOption(f"model option {pair!r} is not KEY=VALUE, e.g. width=0.5")
        if key in DATA_KEYWORDS:
            raise BadModelOption(f"{key} is not a model option: the data set decides it")
        if key not in spec.options:
            raise BadModelOption(f"{spec.name} has no option {key!r}{_accepted(spec, key)}")
        options[key] = spec.options[key].parse(spec.name, text)
    if options:
        _try_build(name, options)
    return options


def _accepted(spec: ModelSpec, key: str) -> str:
    if not spec.options:
        return "; it takes no options"
    close = difflib.get_close_matches(key, list(spec.options), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"; {hint}it accepts {', '.join(f'{k} ({o.describe()})' for k, o in spec.options.items())}"


def _try_build(name: str, options: dict) -> None:
    """Build the model on the meta device (shapes only) to let the architecture check the values."""
    try:
        with torch.device("meta"), uninitialized():
            create_model(name, **options)
    except BadModelOption:
        raise
    except (ValueError, TypeError, RuntimeError) as error:  # torch refusing a size or a probability
        raise BadModelOption(f"{name} refuses {options}: {first_line(error)}") from None


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
    raise BadModelOption("model has no Conv2d whose input channels could be changed")

