"""Training on several processes at once with DistributedDataParallel (DDP).

    torchrun --standalone --nproc-per-node=4 -m cnnlab train resnet18 --data cifar10
    cnnlab train resnet18 --data cifar10 --gpus 0,1,2,3        (launches the line above)

Every process runs the same ``cnnlab train``. Under torchrun (RANK and WORLD_SIZE in the
environment) it joins the process group (``join_process_group``: nccl for a GPU, gloo for the
CPU) and trains on its own GPU, ``cuda:LOCAL_RANK``. Each process takes the rows
``rank::world_size`` of every global batch (``shard``), so ``--batch-size`` is the global batch
and N processes take the same optimiser steps as one process with the whole batch: DDP averages
the gradients over all of them. Per-epoch sums are added up over the processes
(``all_reduce_sums``), so metrics.csv describes the whole data set; only rank 0 writes the run
directory and prints progress.

A process that dies or stops answering makes the others fail with a one-line PeerFailed
instead of waiting forever: at once for a lost connection, otherwise after
$CNNLAB_DIST_TIMEOUT seconds (default 600).
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnnlab.errors import DeviceUnavailable, PeerFailed, UsageError

TIMEOUT_ENV = "CNNLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600  # PyTorch's own default for nccl; long enough for rank 0 to save a VGG checkpoint


# -- who am I -----------------------------------------------------------------------------------

def launched() -> bool:
    """Whether torchrun (or another env:// launcher) started this process as one of several."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """Whether this process has joined a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory and prints."""
    return rank() == 0


def local_rank() -> int:
    """This process's number on its machine (torchrun's LOCAL_RANK): which GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV) or str(DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise UsageError(f"${TIMEOUT_ENV} must be a positive number of seconds, not {text!r}")
    return seconds


# -- joining the others -------------------------------------------------------------------------

def process_device(spec: str) -> str:
    """The device this process trains on. Under torchrun a GPU (auto, cuda or cuda:N) is the
    process's own, cuda:LOCAL_RANK (pick a machine's GPUs with CUDA_VISIBLE_DEVICES); otherwise
    ``spec`` unchanged."""
    if not launched():
        return spec
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        return f"cuda:{local_rank()}"
    if spec.startswith("mps"):
        raise UsageError("training on several processes needs CUDA GPUs or the CPU, not the Apple GPU (mps)")
    return spec


def join_process_group(device: torch.device) -> None:
    """Under torchrun, join the other processes (nccl on a GPU, gloo on the CPU), once per
    process, and leave at exit; outside torchrun, or already joined, do nothing."""
    if not launched() or is_distributed():
        return
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if on_gpu else "gloo", timeout=timedelta(seconds=timeout_seconds()),
                                device_id=device if on_gpu else None)
    except dist.DistError as error:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise PeerFailed(f"could not join the other training processes at {where} ({short_reason(error)})") from None
    atexit.register(leave_process_group)


def leave_process_group() -> None:
    if is_distributed():
        # DistributedDataParallel sits in a reference cycle: collect it first, or the group dies
        # during interpreter shutdown and gloo's threads abort the process (1 exit in 5 here)
        gc.collect()
        dist.destroy_process_group()


def distribute(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """The module the training loop calls: in a process group, DistributedDataParallel over
    ``model`` (every step averages the gradients of all processes); otherwise ``model``.

    ``sync_bn`` makes batch normalisation use the statistics of the global batch instead of
    each process's share (PyTorch's SyncBatchNorm, CUDA only); ``model`` is converted in place,
    so its checkpoints keep their keys.
    """
    if not is_distributed():
        return model
    if sync_bn:
        if device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    with peer_failures_reported():  # the constructor broadcasts rank 0's weights
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# -- the whole distributed question, settled once ------------------------------------------------

@dataclass(frozen=True)
class World:
    """This process among the training processes: rank 0 of 1 unless torchrun started several.

    The training loop asks it everything that differs between one process and several, so the
    loop reads as the single-process loop it mostly is: with one process every method is the
    identity (``shard`` keeps every row, ``sum`` adds nothing, ``wrap`` returns the model).
    """

    device: torch.device
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """The one process that writes the run directory and prints."""
        return self.rank == 0

    def local_batch(self, global_batch: int) -> int:
        return local_batch_size(global_batch, self.size)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        return shard(rows, self.rank, self.size)

    def sum(self, sums: torch.Tensor) -> torch.Tensor:
        return all_reduce_sums(sums)

    def broadcast(self, value):
        return broadcast_from_main(value)

    def wrap(self, model: nn.Module, sync_bn: bool = False) -> nn.Module:
        return distribute(model, self.device, sync_bn)

    def share_buffers(self, model: nn.Module) -> None:
        share_main_buffers(model)

    def describe(self) -> str:
        return f"{self.size} processes ({self.device.type})" if self.size > 1 else str(self.device)


def join(device_spec: str = "auto") -> World:
    """Resolve this process's device and, under torchrun, join the others (once, at the top)."""
    from cnnlab.devices import resolve_device

    device = resolve_device(process_device(device_spec))
    join_process_group(device)
    return World(device, rank(), world_size())


# -- sharing the work, adding up the results ----------------------------------------------------

def local_batch_size(global_batch: int, size: int | None = None) -> int:
    """This process's share of a global batch of ``global_batch`` images, among ``size``
    processes (default: the process group's)."""
    size = world_size() if size is None else size
    if global_batch % size:
        raise UsageError(f"--batch-size {global_batch} is the global batch: it must divide evenly "
                         f"among the {size} processes")
    return global_batch // size


def shard(rows: torch.Tensor, process: int | None = None, size: int | None = None) -> torch.Tensor:
    """Process number ``process``'s rows ``process::size`` (default: this process's, in the process group):
    the processes' shards are disjoint and cover every row, and the first k*size rows hold k
    rows of each process."""
    return rows[(rank() if process is None else process)::(world_size() if size is None else size)]


def all_reduce_sums(sums: torch.Tensor) -> torch.Tensor:
    """Add ``sums`` up over all processes, in place (per-process totals become whole-set totals)."""
    if is_distributed():
        with peer_failures_reported():
            dist.all_reduce(sums)
    return sums


def broadcast_from_main(value):
    """Rank 0's ``value`` (a small picklable object, e.g. the run's path) on every process."""
    if not is_distributed():
        return value
    box = [value]
    with peer_failures_reported():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def share_main_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) into every process's ``model``."""
    if is_distributed():
        with peer_failures_reported():
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)


@contextmanager
def local_main_first():
    """Run the block on each machine's local rank 0 before its other processes (so a data set
    is downloaded once per machine, not once per process)."""
    if not is_distributed():
        yield
        return
    if local_rank() != 0:
        with peer_failures_reported():
            dist.barrier()
    yield
    if local_rank() == 0:
        with peer_failures_reported():
            dist.barrier()


# -- when another process fails ------------------------------------------------------------------

def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process died or hung:
    a c10d error, or gloo's plain RuntimeError (its messages carry gloo's source path)."""
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and "gloo/" in str(error))


def short_reason(error: BaseException) -> str:
    """The first sentence of a c10d or gloo message, without its ``[file.cc:123]`` prefix."""
    text = re.sub(r"^\s*\[[^\]]*\]\s*", "", str(error).strip())
    first_line = text.splitlines()[0] if text else type(error).__name__
    return re.split(r"\.\s", first_line + " ")[0].strip().rstrip(".")


def peer_failure_message(error: BaseException) -> str:
    return (f"training process {rank()} of {world_size()} lost the others ({short_reason(error)}): "
            f"another process failed (see its error) or did not answer within {timeout_seconds():g} s "
            f"(${TIMEOUT_ENV})")


@contextmanager
def peer_failures_reported():
    """Turn a collective that failed because of another process into a one-line PeerFailed."""
    try:
        yield
    except RuntimeError as error:
        if not is_peer_failure(error):
            raise
        raise PeerFailed(peer_failure_message(error)) from None


# -- cnnlab train --gpus: the launcher ----------------------------------------------------------

def parse_gpus(text: str) -> list[int]:
    """``--gpus 0,1,3`` -> [0, 1, 3]."""
    try:
        gpus = [int(part) for part in text.split(",")]
    except ValueError:
        gpus = []
    if not gpus or min(gpus) < 0 or len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus takes distinct GPU numbers separated by commas, e.g. 0,1; not {text!r}")
    return gpus


def launch_command(processes: int, cli_args: list[str]) -> list[str]:
    """torchrun on this machine (a free port of its own), ``processes`` times ``cnnlab <cli_args>``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "cnnlab", *cli_args]


def launch_on_gpus(gpus: list[int], cli_args: list[str]) -> int:
    """Run ``cnnlab <cli_args>`` once per GPU in ``gpus`` under torch.distributed.run, every
    process on its own GPU; returns the launcher's exit code."""
    if launched():
        raise UsageError("--gpus starts processes of its own: under torchrun leave it out")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [gpu for gpu in gpus if gpu >= count]
    if missing:
        have = "no CUDA GPU" if count == 0 else f"{count} CUDA GPU(s), numbered 0 to {count - 1}"
        raise DeviceUnavailable(f"GPU {missing[0]} is not available: this machine has {have}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # --gpus counts the GPUs this process sees
    ids = [part.strip() for part in visible.split(",")] if visible else [str(i) for i in range(count)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(ids[gpu] for gpu in gpus)}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(gpus))))
    process = subprocess.Popen(launch_command(len(gpus), cli_args), env=env)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:  # the terminal sent it to torchrun and the processes too:
            continue               # they stop by themselves, keeping the finished epochs
