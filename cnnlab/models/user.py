"""Networks from the user's own code: ``path/to/file.py:Name`` or ``package.module:Name``.

``Name`` is an ``nn.Module`` subclass or a function returning a module. The registry resolves
such a reference (``model_spec``, ``create_model``), so every command that takes a model name
takes one too. Its options are its signature (``--model-arg KEY=VALUE``, typed from the hints);
``in_channels`` and ``num_classes`` are passed when it accepts them, and when it does not and
the data disagree with its first convolution or its last layer, one line says which.

A run trained on such a model records where it came from (``source_record``): the reference
as given, the file's absolute path and SHA-256, and a copy of the file in the run directory.
``rebuild_reference`` turns that record back into a reference to build: the file itself while
it is unchanged; when it has changed or moved, one line says so, and ``model_source="file"``
(the current file) or ``"run"`` (the copy in the run) chooses. The copy is only ever imported
on that explicit request: a run directory received from elsewhere never runs its code by itself.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from cnnlab.errors import BadModelOption, CnnlabError, UnknownModel, UsageError, first_line
from cnnlab.models.signature import ModelSpec, signature_options, uninitialized

SOURCE_COPY = "model_source.py"  # the copy of a user's model file in a run directory
MODEL_SOURCES = ("file", "run")  # what rebuild_reference may be told to build from
# sides tried, smallest first, for a user model's natural input (the first that runs)
NATURAL_SIDES = (28, 32, 64, 96, 224, 227, 299)
_LOADED: dict[tuple[str, str], object] = {}  # (file, sha256) -> its module, imported once
_SPECS: dict[tuple, object] = {}  # (reference, file, sha256) -> its ModelSpec


def is_reference(name: str) -> bool:
    """Whether ``name`` names code (``file.py:Name`` or ``package.module:Name``), not a zoo model."""
    module, sep, attribute = str(name).rpartition(":")
    return bool(sep and module and attribute and not module.startswith("torchvision"))


@dataclass(frozen=True)
class UserModel:
    """A resolved reference: the callable that builds the network and the file defining it."""

    reference: str
    target: Callable[..., nn.Module]
    file: Path | None       # None for a module without a file
    sha256: str | None

    @property
    def label(self) -> str:
        return self.reference.rpartition(":")[2]


def resolve(reference: str) -> UserModel:
    """Import the module or file a reference names and find its ``Name``; one line for each way
    that can fail (no file, not Python, a syntax error with its file and line, no such name,
    not a module class or factory)."""
    where, _, attribute = str(reference).rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where or Path(where).is_file():
        module, file = _import_file(Path(where).expanduser(), reference)
    else:
        module, file = _import_module(where, reference)
    if not hasattr(module, attribute):
        defined = sorted(name for name, value in vars(module).items()
                         if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
                         and (inspect.isfunction(value) or _is_module_class(value)))
        listing = f"; it defines {', '.join(defined)}" if defined else ""
        raise UnknownModel(f"{where} has no {attribute!r}{listing}")
    target = getattr(module, attribute)
    if not (_is_module_class(target) or inspect.isfunction(target)):
        raise BadModelOption(f"{attribute} in {where} is a {type(target).__name__}, not an nn.Module "
                             f"subclass or a function returning one")
    return UserModel(reference, target, file, file and _sha256(file))


def _is_module_class(value) -> bool:
    return inspect.isclass(value) and issubclass(value, nn.Module)


def _import_file(path: Path, reference: str):
    if not path.is_file():
        raise UnknownModel(f"no file {str(path)!r} (from {reference!r})")
    if path.suffix != ".py":
        raise UsageError(f"{str(path)!r} is not a Python file (.py); a model reference is FILE.py:Name "
                         f"or package.module:Name")
    path = path.resolve()
    digest = _sha256(path)
    if (str(path), digest) not in _LOADED:
        name = f"cnnlab_user_{digest[:16]}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # classes defined there pickle and trace by their module's name
        sys.path.insert(0, str(path.parent))  # the file may import its neighbours
        try:
            spec.loader.exec_module(module)
        except BaseException as error:
            del sys.modules[name]
            raise _import_failed(error, path) from None
        finally:
            sys.path.remove(str(path.parent))
        _LOADED[str(path), digest] = module
    return _LOADED[str(path), digest], path


def _import_module(name: str, reference: str):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise UnknownModel(f"no module {error.name or name!r} (from {reference!r}); a model reference "
                           f"is FILE.py:Name or package.module:Name") from None
    except BaseException as error:
        raise _import_failed(error, Path(name)) from None
    file = getattr(module, "__file__", None)
    return module, Path(file).resolve() if file else None


def _import_failed(error: BaseException, path: Path) -> CnnlabError:
    if isinstance(error, SyntaxError):
        return UsageError(f"{error.filename or path}, line {error.lineno}: {error.msg}")
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        raise error
    return UsageError(f"importing {path} failed: {type(error).__name__}: {first_line(error)}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- building -----------------------------------------------------------------------------------

def user_builder(user: UserModel) -> Callable[..., nn.Module]:
    """A builder taking ``in_channels``, ``num_classes`` and the options, as zoo builders do."""

    accepts = signature_options(user.target)

    def build(in_channels: int | None = None, num_classes: int | None = None, **options) -> nn.Module:
        data = {key: value for key, value in (("in_channels", in_channels), ("num_classes", num_classes))
                if value is not None and key in accepts}
        call = ", ".join(f"{key}={value!r}" for key, value in {**data, **options}.items())
        try:
            model = user.target(**data, **options)
        except CnnlabError:
            raise
        except Exception as error:  # noqa: BLE001  the user's constructor: any failure is reported
            raise BadModelOption(f"{user.label}({call}) raised {type(error).__name__}: {first_line(error)}") from None
        if not isinstance(model, nn.Module):
            raise BadModelOption(f"{user.label}({call}) returned a {type(model).__name__}, not an nn.Module")
        _check_data_fits(user.label, model, None if "in_channels" in accepts else in_channels,
                         None if "num_classes" in accepts else num_classes)
        return model

    build.__wrapped__ = user.target  # its signature, hence its options, are the target's
    return build


def _check_data_fits(label: str, model: nn.Module, in_channels: int | None, num_classes: int | None) -> None:
    """A model that does not take ``in_channels``/``num_classes`` must already have them."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if in_channels is not None and convolutions and convolutions[0].in_channels != in_channels:
        raise BadModelOption(f"{label} takes {convolutions[0].in_channels} input channel(s) (its first "
                             f"convolution) but the data have {in_channels}; give {label} an in_channels "
                             f"parameter or choose data with {convolutions[0].in_channels}")
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    outputs = last and (last[-1].out_features if isinstance(last[-1], nn.Linear) else last[-1].out_channels)
    if num_classes is not None and outputs and outputs != num_classes:
        raise BadModelOption(f"{label} ends in {outputs} outputs but the data have {num_classes} classes; "
                             f"give {label} a num_classes parameter or make its last layer {num_classes} wide")


def user_spec(reference: str):
    """The ModelSpec of a user's network: its natural input is the smallest of NATURAL_SIDES it
    runs at (channels from its first convolution), its natural classes its output's width.
    Worked out once per version of the file."""
    user = resolve(reference)
    key = (reference, user.file, user.sha256)
    if key not in _SPECS:
        _SPECS[key] = _measured_spec(reference, user)
    return _SPECS[key]


def _measured_spec(reference: str, user: UserModel):

    builder = user_builder(user)
    with uninitialized():
        model = builder()
    input_size, num_classes = natural_input(model)
    doc = (inspect.getdoc(user.target) or "").strip().splitlines()
    where = user.file.name if user.file else reference.rpartition(":")[0]
    return ModelSpec(reference, builder, "user", 0, input_size, num_classes,
                     doc[0] if doc else f"{user.label} from {where}")


def natural_input(model: nn.Module) -> tuple[tuple[int, int, int], int]:
    """((channels, side, side), outputs) at the smallest side the model runs at; the model's
    first convolution gives the channels (1 without one). Sides it fails at all: 224, and the
    summary's search says which input works."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    channels = convolutions[0].in_channels if convolutions else 1
    was_training = model.training
    model.eval()
    try:
        for side in NATURAL_SIDES:
            try:
                with torch.no_grad():
                    output = model(torch.zeros(1, channels, side, side))
            except Exception:  # noqa: BLE001  any failure means: not this size
                continue
            width = output.shape[-1] if isinstance(output, torch.Tensor) and output.dim() >= 2 else 1000
            return (channels, side, side), int(width)
    finally:
        model.train(was_training)
    return (channels, 224, 224), 1000


# -- where a run's model came from ---------------------------------------------------------------

def source_record(reference: str, run_dir: Path) -> dict | None:
    """For a run on a user's network: the reference, its file and SHA-256, and the file copied
    into ``run_dir`` (SOURCE_COPY). None for a zoo model."""
    if not is_reference(reference):
        return None
    user = resolve(reference)
    if user.file is None:
        return dict(reference=reference, file=None, sha256=None, copy=None)
    shutil.copyfile(user.file, Path(run_dir) / SOURCE_COPY)
    return dict(reference=reference, file=str(user.file), sha256=user.sha256, copy=SOURCE_COPY)


def rebuild_reference(model: str, source: dict | None, run_dir: Path, choice: str | None = None) -> str:
    """The reference to build a recorded run's model from: the zoo name, or the recorded file
    while it still holds what was trained. A changed or missing file is one line saying so,
    unless ``choice`` is "file" (build from the current file) or "run" (import the copy kept in
    ``run_dir``)."""
    if choice is not None and choice not in MODEL_SOURCES:
        raise UsageError(f"model source must be one of {', '.join(MODEL_SOURCES)}, not {choice!r}")
    if not is_reference(model):
        return model
    if not source:  # a record edited or made by hand: cnnlab does not import code a run merely names
        raise UsageError(f"{run_dir} names the network {model} but records no source for it (config.json's "
                         f"model_source); cnnlab imports no code a run directory names by itself")
    attribute = model.rpartition(":")[2]
    recorded = source.get("file")
    if recorded is None:  # a package module: imported by name, as it was
        return model
    if choice == "run":  # always the run's own copy, whatever name the record gives it
        copy = Path(run_dir) / SOURCE_COPY
        if not copy.is_file():
            raise UsageError(f"{run_dir} keeps no copy of {model}'s file ({copy.name} is missing)")
        return f"{copy.resolve()}:{attribute}"
    file = Path(recorded)
    if not file.is_absolute() or file.resolve().is_relative_to(Path(run_dir).resolve()):
        raise UsageError(f"{run_dir} records {model}'s file as {file}, "
                         f"{'a relative path' if not file.is_absolute() else 'inside the run directory'}: "
                         f"that is the run's own code, imported only with --model-source run")
    if choice == "file":
        return f"{file}:{attribute}"
    how = "choose with --model-source file (the current file) or --model-source run (the copy in the run)"
    if not file.is_file():
        raise UsageError(f"{model}'s file {file} has moved or gone since the run was trained; {how}")
    if _sha256(file) != source.get("sha256"):
        raise UsageError(f"{model}'s file {file} has changed since the run was trained; {how}")
    return f"{file}:{attribute}"
