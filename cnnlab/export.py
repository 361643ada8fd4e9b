"""cnnlab export: a trained run (or a model name, with random weights) as a file other tools
open: ONNX (``.onnx``: Netron, onnxruntime; needs the ``cnnlab[onnx]`` extra), TorchScript
(``.pt``: ``torch.jit.load``) or a torch.export program (``.pt2``: ``torch.export.load``).

The graph takes a batch of normalised images, N x C x H x W at the trained size (N free); what
a reader needs to prepare them travels in the file as ``cnnlab`` metadata: the input size, the
class names, the mean and std to normalise with, the pixel permutation's seed, and where the
weights came from. In ONNX these are metadata_props (each value JSON); in .pt and .pt2 an extra
file ``cnnlab.json``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path

import torch

from cnnlab.errors import UsageError

FORMAT_BY_SUFFIX = {".onnx": "onnx", ".pt": "torchscript", ".pt2": "pt2"}
METADATA_FILE = "cnnlab.json"
INSTALL_ONNX = "pip install 'cnnlab[onnx]'"


def export_format(out) -> str:
    """The format ``out``'s extension names; a one-line error for any other."""
    fmt = FORMAT_BY_SUFFIX.get(Path(out).suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the format of {out}: give .onnx, .pt (TorchScript) or .pt2 (torch.export)")
    return fmt


def exported_subject(target, *, checkpoint: str = "last", input_size=None, model_args=None):
    """(model in eval mode on the CPU, its input size, the metadata) for a run directory, a .pt
    checkpoint or a model name."""
    from cnnlab.models import create_model, is_reference, model_options, model_spec

    path = Path(target)
    if not is_reference(str(target)) and (path.exists() or "/" in str(target)):
        if input_size is not None or model_args:
            raise UsageError("--input and --model-arg apply to a model name; a run has its own")
        from cnnlab.evaluation import load_trained

        trained = load_trained(path, checkpoint, device="cpu")
        record = trained.record
        model = trained.model.float().to(memory_format=torch.contiguous_format)
        metadata = dict(model=record.model, input_size=list(record.input_size), classes=record.classes,
                        mean=record.mean, std=record.std, permute_pixels=record.options.permute_pixels,
                        weights=f"{trained.checkpoint} (epoch {trained.epoch})")
        return model.eval(), tuple(record.input_size), metadata
    from cnnlab.show import full_input_size

    spec = model_spec(str(target))
    size = full_input_size(spec.input_size, input_size)
    with torch.random.fork_rng():  # the same random weights every time, as show draws them
        torch.manual_seed(0)
        model = create_model(spec.name, in_channels=size[0], **model_options(spec.name, model_args or []))
    metadata = dict(model=spec.name, input_size=list(size), classes=None, mean=None, std=None,
                    permute_pixels=None, weights="random (seed 0)")
    return model.eval(), size, metadata


def export_model(target, out, *, checkpoint: str = "last", input_size=None, model_args=None) -> Path:
    """Write ``target`` (see exported_subject) to ``out`` in the format its extension names."""
    out = Path(out)
    fmt = export_format(out)
    if fmt == "onnx":
        _require_onnx()
    model, size, metadata = exported_subject(target, checkpoint=checkpoint, input_size=input_size,
                                             model_args=model_args)
    example = torch.zeros(2, *size)  # a batch of 2: the batch dimension stays free
    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(sys.stderr):  # the exporters' progress is not the command's output
        if fmt == "onnx":
            _write_onnx(model, example, batch, metadata, out)
        elif fmt == "torchscript":  # deprecated in PyTorch, asked for by name: its warnings say nothing new
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(model, example)
                torch.jit.save(traced, str(out), _extra_files={METADATA_FILE: json.dumps(metadata)})
        else:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, out, extra_files={METADATA_FILE: json.dumps(metadata)})
    return out


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's ONNX exporter)
    except ImportError:
        raise UsageError(f"writing .onnx needs the onnx and onnxscript packages: {INSTALL_ONNX}") from None


def _write_onnx(model, example, batch, metadata: dict, out: Path) -> None:
    import onnx

    program = torch.onnx.export(model, (example,), input_names=["images"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    program.save(str(out))
    saved = onnx.load(str(out))
    onnx.helper.set_model_props(saved, {key: json.dumps(value) for key, value in metadata.items()})
    onnx.save(saved, str(out))


def read_metadata(path) -> dict:
    """The cnnlab metadata of an exported file, read without loading its program (a .pt or .pt2
    is a zip archive holding cnnlab.json among its extra files)."""
    import zipfile

    path = Path(path)
    if export_format(path) == "onnx":
        import onnx

        return {prop.key: json.loads(prop.value) for prop in onnx.load(str(path)).metadata_props}
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith(f"/{METADATA_FILE}")]
        if not names:
            raise UsageError(f"{path} holds no {METADATA_FILE}: not written by cnnlab export")
        return json.loads(archive.read(names[0]))
