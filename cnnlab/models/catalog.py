"""The zoo as records, one per registered model: what ``cnnlab models`` lists.

Measuring happens here; the CLI only renders. Models are built with torch's initializers
switched off (``uninitialized``: their memory is allocated but never written, since counting
needs no values), so listing the whole zoo takes about a second.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from torch import nn

from cnnlab.errors import UnknownModel
from cnnlab.models.registry import create_model, list_models, model_spec, recipe_of
from cnnlab.models.signature import REQUIRED, ModelOption, uninitialized
from cnnlab.models.user import is_reference


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    year: int
    params: int  # at the natural input channels and number of classes
    input_size: tuple[int, int, int]  # natural (channels, height, width)
    num_classes: int
    recipe: str  # the training recipe it gets by default
    description: str
    options: tuple[ModelOption, ...]  # what --model-arg may set


def option_rows(info: ModelInfo) -> list[dict]:
    """One row per option of a model: name, type (or choices), default."""
    return [dict(option=option.name, type=option.describe(),
                 default="(required)" if option.default is REQUIRED else option.default)
            for option in info.options]


def parameter_count(model: nn.Module) -> int:
    """Trainable and frozen parameters, each shared tensor once."""
    return sum(parameter.numel() for parameter in model.parameters())


def describe_models(pattern: str = "*") -> list[ModelInfo]:
    """One record per registered model whose name matches the shell-style ``pattern``; for a
    reference to a user's network (file.py:Name), its record."""
    names = [pattern] if is_reference(pattern) else list_models(pattern)
    if not names:
        close = difflib.get_close_matches(pattern, list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModel(f"no model matches {pattern!r}{hint} (patterns are shell-style, e.g. 'resnet*')")
    records = []
    for name in names:
        spec = model_spec(name)
        with uninitialized():  # allocated but never written: counting needs no values
            model = create_model(name)
        records.append(ModelInfo(name, spec.family, spec.year, parameter_count(model), spec.input_size,
                                 spec.num_classes, recipe_of(model, spec.input_size), spec.description,
                                 tuple(spec.options.values())))
    return records
