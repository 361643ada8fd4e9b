"""A checkpoint (last.pt, best.pt) as a typed value: the state after one finished epoch, with the
history of every epoch and the record of the run it belongs to, so that a .pt file describes
itself and can be checked against the run directory it is found in.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
crafted file cannot run code. Whatever is read is checked before it is used: a file that is not a
cnnlab checkpoint, or that belongs to another run, is one line (BadCheckpoint).
"""

from __future__ import annotations

import io
import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import BadCheckpoint, CnnlabError, first_line
from cnnlab.runs.record import RunRecord

FORMAT = "cnnlab-checkpoint"


@dataclass
class Checkpoint:
    """One finished epoch of a run."""

    epoch: int
    best_epoch: int
    best_val_acc: float
    history: list[dict] | None  # every finished epoch's metrics row (None: written before checkpoints held it)
    model: dict  # the model's state_dict
    optimizer: dict
    scaler: dict
    record: RunRecord  # the run's config.json as it was when the epoch was recorded

    # -- writing -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        import torch

        buffer = io.BytesIO()
        torch.save(dict(format=FORMAT, epoch=self.epoch, best_val_acc=self.best_val_acc, best_epoch=self.best_epoch,
                        history=self.history, model=self.model, optimizer=self.optimizer, scaler=self.scaler,
                        config=self.record.to_json()), buffer)
        return buffer.getvalue()

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def read(cls, path, map_location="cpu") -> "Checkpoint":
        """The checkpoint in ``path``, loaded safely and checked field by field."""
        path = Path(path)
        state = load_state(path, map_location)
        if state.get("format") != FORMAT:
            raise BadCheckpoint(f"{str(path)!r} is not a cnnlab checkpoint"
                                f"{' (it looks like a bare state_dict of weights)' if _all_tensors(state) else ''}")
        try:
            record = RunRecord.from_json(state.get("config"), f"the record in {path}")
        except CnnlabError as e:
            raise BadCheckpoint(str(e)) from None
        if record.input_size is None or record.mean is None or record.std is None or record.num_classes is None:
            raise BadCheckpoint(f"{str(path)!r} does not record the input size, classes and normalisation it needs")
        epoch, best_epoch, best = state.get("epoch"), state.get("best_epoch"), state.get("best_val_acc")
        if not (_is_int(epoch) and epoch >= 1 and _is_int(best_epoch) and 1 <= best_epoch <= epoch
                and isinstance(best, (int, float)) and math.isfinite(best)):
            raise BadCheckpoint(f"{str(path)!r} holds no valid epoch (epoch {epoch!r}, best epoch {best_epoch!r})")
        history = state.get("history")
        if history is not None and not _valid_history(history, epoch):
            raise BadCheckpoint(f"{str(path)!r}: its history does not hold epochs 1 to {epoch}")
        for name in ("model", "optimizer", "scaler"):
            if not isinstance(state.get(name), dict):
                raise BadCheckpoint(f"{str(path)!r} has no {name} state")
        if not _all_tensors(state["model"]):
            raise BadCheckpoint(f"{str(path)!r}: its model state is not a dictionary of tensors")
        return cls(epoch, best_epoch, float(best), history, state["model"], state["optimizer"], state["scaler"], record)

    # -- checking and using ---------------------------------------------------------------------
    def check_belongs(self, record: RunRecord, path, config_path) -> None:
        """Refuse a checkpoint that is not of the run whose config.json is ``record`` (a file
        copied from another run, or a config.json edited since): one line naming what differs."""
        differences = self.record.differences(record)
        if not differences:
            return
        mine, theirs = self.record.to_json(), record.to_json()
        if "created" in differences or "name" in differences:
            raise BadCheckpoint(
                f"{path} belongs to another run ({mine['name']}, {mine['model']} on {mine['data']}, created "
                f"{mine['created']}), not to the run of {config_path} ({theirs['name']}, {theirs['model']} on "
                f"{theirs['data']}, created {theirs['created']}); nothing was changed")
        shown = "; ".join(f"{key} {_short(theirs.get(key))} there, {_short(mine[key])} in the checkpoint"
                          for key in differences[:3])
        raise BadCheckpoint(f"{config_path} disagrees with {Path(path).name}, which recorded the run's training "
                            f"({shown}); nothing was changed (restore config.json: the checkpoint's record is "
                            f"the run's own)")

    def load_weights(self, model, path) -> None:
        """Put the checkpoint's weights into ``model``; a mismatch is one line naming the first
        parameter that does not fit."""
        try:
            model.load_state_dict(self.model)
        except RuntimeError as e:
            raise BadCheckpoint(f"checkpoint {str(path)!r} does not fit the model ({state_dict_problem(e)})") from None

    def restore(self, optimizer, scaler, path) -> None:
        """The optimiser's and the gradient scaler's state, as the epoch left them."""
        try:
            optimizer.load_state_dict(self.optimizer)
            scaler.load_state_dict(self.scaler)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise BadCheckpoint(f"checkpoint {str(path)!r} cannot resume this run ({first_line(e)})") from None


def load_state(path: Path, map_location="cpu") -> dict:
    """A .pt file's dictionary, loaded safely: tensors and plain containers only, never pickled
    code. Anything else (text, random bytes, a truncated file, a pickle of code) is one line."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"checkpoint {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadCheckpoint(f"checkpoint {str(path)!r} was refused by the safe loader, which takes "
                            f"only tensors and plain containers ({refusal_reason(e)})") from None
    except MemoryError:
        raise BadCheckpoint(f"checkpoint {str(path)!r} is corrupt (it asks for more memory than there is)") from None
    except Exception as e:  # noqa: BLE001 -- text or random bytes fail deep in the unpickler, in any way
        why = first_line(e) if isinstance(e, (RuntimeError, OSError, EOFError)) else f"not a checkpoint file: {type(e).__name__}"
        raise BadCheckpoint(f"checkpoint {str(path)!r} is corrupt or truncated ({why})") from None
    if not isinstance(state, dict):
        raise BadCheckpoint(f"checkpoint {str(path)!r} does not hold a dictionary")
    return state


def peek_epoch(path: Path) -> int | None:
    """The epoch a checkpoint holds, None if it is missing or unreadable (memory-mapped: cheap)."""
    try:
        import torch

        epoch = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
        return epoch if _is_int(epoch) else None
    except Exception:  # noqa: BLE001 -- any unreadable checkpoint is simply "not this epoch"
        return None


def refusal_reason(error: Exception) -> str:
    """The specific line of torch's weights-only refusal (e.g. "Trying to load unsupported GLOBAL
    posix.system ..."), without the boilerplate around it that suggests weights_only=False."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in str(error).splitlines()]
    specific = [line for line in lines if line and not line.startswith(boilerplate)]
    return specific[0] if specific else "not a checkpoint of tensors"


def state_dict_problem(error: Exception) -> str:
    """The first specific line of load_state_dict's error ("size mismatch for conv1.weight: ...",
    "Missing key(s) in state_dict: ..."), not its heading, which ends at a colon."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith("Error(s) in loading state_dict")]
    text = specific[0] if specific else first_line(error)
    return text if len(text) <= 200 else text[:197] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _all_tensors(state: dict) -> bool:
    import torch

    return bool(state) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _valid_history(history, epoch: int) -> bool:
    return (isinstance(history, list) and len(history) == epoch
            and all(isinstance(row, dict) and row.get("epoch") == n for n, row in enumerate(history, 1)))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."
