"""What a model builder accepts, read from its signature: the options a user may set with
``--model-arg KEY=VALUE`` (typed from the type hints, following ``**kwargs`` into the constructor
a builder calls), and the spec the registry keeps beside each builder. Imports nothing else of
cnnlab's models, so the registry and user networks (cnnlab/models/user.py) can both build on it."""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from torch import nn

from cnnlab.errors import BadModelOption


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
