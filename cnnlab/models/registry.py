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

import ast
import difflib
import functools
import fnmatch
import inspect
import re
import textwrap
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from cnnlab.errors import BadModelOption, UnknownModel, first_line

TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class ModelOption:
    """One keyword a user may set with ``--model-arg KEY=VALUE``, read from the builder's (or
    constructor's) signature and type hints."""

    name: str
    kind: type | None       # bool, int, float, str or tuple (of ints); None: any literal value
    default: object         # REQUIRED when the keyword has no default
    choices: tuple = ()     # from Literal[...]
    optional: bool = False  # None is accepted (written "none")

    def describe(self) -> str:
        kind = "|".join(map(str, self.choices)) if self.choices else KIND_NAMES[self.kind]
        return kind + ("|none" if self.optional else "")

    def parse(self, model: str, text: str):
        """``text`` as this option's value, or BadModelOption naming what it takes."""
        text = text.strip()
        if self.optional and text.lower() in ("none", "null"):
            return None
        if self.choices:
            for choice in self.choices:
                if text == str(choice):
                    return choice
            expected = "one of " + ", ".join(map(str, self.choices))
        else:
            value = _literal(text, self.kind)
            if value is not _NOT_READ:
                return value
            expected = KIND_EXPECTED[self.kind]
        raise BadModelOption(f"{model} option {self.name} takes {expected}; got {text!r}")


REQUIRED = inspect.Parameter.empty
KIND_NAMES = {bool: "bool", int: "int", float: "float", str: "str", tuple: "ints", None: "value"}
KIND_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a word",
                 tuple: "integers separated by commas, e.g. 3,3", None: "a value"}
_NOT_READ = object()


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

    @functools.cached_property
    def parameters(self) -> dict[str, ModelOption]:
        """Every keyword the builder takes, ``in_channels`` and ``num_classes`` included."""
        return signature_options(self.builder)

    @property
    def options(self) -> dict[str, ModelOption]:
        """The keywords a user may set: all but the ones the data set decides."""
        return {key: option for key, option in self.parameters.items() if key not in DATA_KEYWORDS}


# the keywords every zoo builder takes; the data set decides them, so they are not user options
DATA_KEYWORDS = ("in_channels", "num_classes")
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


def signature_options(target: Callable, defaulted_only: bool = False) -> dict[str, ModelOption]:
    """The keywords ``target`` (a function or a class) accepts, typed from its hints (or, without
    one, from the default's type). A function that passes ``**kwargs`` on to another callable
    (``return VGG(16, in_channels, num_classes, batch_norm=True, **kwargs)``) also takes that
    callable's keywords with a default, less those the call already sets. Keywords of other
    types (a module, a function) cannot be written on a command line and are left out."""
    target = inspect.unwrap(target)
    function = target.__init__ if isinstance(target, type) else target
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001  a hint naming what its module cannot resolve: use the defaults
        hints = {}
    options, forwards = {}, None
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            forwards = parameter.name
        elif parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            if defaulted_only and parameter.default is REQUIRED:
                continue
            option = _option(parameter.name, hints.get(parameter.name), parameter.default)
            if option is not None:
                options[parameter.name] = option
    forwarded = forwards and _forwarding_call(function, forwards)
    if forwarded:
        callee, already_set = forwarded
        inherited = signature_options(callee, defaulted_only=True)
        options = {**{k: v for k, v in inherited.items() if k not in already_set}, **options}
    return options


def _option(name: str, hint, default) -> ModelOption | None:
    optional = default is None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        optional = optional or len(kinds) < len(typing.get_args(hint))
        hint = kinds[0] if len(kinds) == 1 else None
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return ModelOption(name, type(choices[0]), default, choices, optional)
    if hint is None or hint is inspect.Parameter.empty:
        hint = type(default) if default not in (REQUIRED, None) else None
    kind = tuple if hint is tuple or typing.get_origin(hint) is tuple else hint
    if kind not in KIND_NAMES:
        return None
    return ModelOption(name, kind, default, (), optional)


def _forwarding_call(function, kwargs_name: str):
    """(callee, names it sets) of the call in ``function``'s source that receives
    ``**kwargs_name``, when the callee is a name of the function's module; else None."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and any(
                keyword.arg is None and isinstance(keyword.value, ast.Name) and keyword.value.id == kwargs_name
                for keyword in node.keywords)):
            continue
        callee = getattr(function, "__globals__", {}).get(node.func.id)
        if not callable(callee):
            return None
        try:
            leading = list(inspect.signature(callee).parameters)[:len(node.args)]
        except (TypeError, ValueError):
            return None
        named = {keyword.arg for keyword in node.keywords if keyword.arg}
        unpacked = [_constant_keys(keyword.value, function.__globals__) for keyword in node.keywords
                    if keyword.arg is None and not (isinstance(keyword.value, ast.Name) and keyword.value.id == kwargs_name)]
        return callee, {*leading, *named, *(key for keys in unpacked for key in keys)}
    return None


def _constant_keys(node, names: dict) -> set:
    """The keys of a ``**CONFIGS["vgg16"]`` (or ``**NAME``) in a builder's call, read from its
    module's table; nothing for anything else."""
    if isinstance(node, ast.Name):
        table = names.get(node.id)
    elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Constant):
        table = names.get(node.value.id, {}).get(node.slice.value) if isinstance(names.get(node.value.id), dict) else None
    else:
        table = None
    return set(table) if isinstance(table, dict) else set()


def _literal(text: str, kind):
    """``text`` read as ``kind`` (None: whatever it reads as), or _NOT_READ."""
    words = {"true": True, "yes": True, "false": False, "no": False}
    if kind is bool:
        return words.get(text.lower(), _NOT_READ)
    if kind is str:
        return text
    if kind is tuple:
        parts = [part.strip() for part in text.split(",")]
        return tuple(int(p) for p in parts) if all(re.fullmatch(r"[+-]?\d+", p) for p in parts) else _NOT_READ
    if kind is int:
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else _NOT_READ
    if kind is float:
        try:
            return float(text)  # nan and inf too: the model says why it refuses them
        except ValueError:
            return _NOT_READ
    for any_kind in (bool, int, float):  # kind None: the most specific reading
        value = _literal(text, any_kind)
        if value is not _NOT_READ:
            return value
    return _literal(text, tuple) if "," in text else text


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
    from cnnlab.models.user import is_reference, user_spec

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
    from cnnlab.models.user import is_reference

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
