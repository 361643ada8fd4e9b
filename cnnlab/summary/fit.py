"""What fits: the largest batch whose estimated peak (cost.py) fits a device's free memory, and
optionally one real training step at that batch to check the estimate.

    found = fit_batch("resnet18", input_size=96, optimizer="adamw", device="cpu")
    found.batch_size, found.margin

Free memory: on CUDA what the driver reports free now; on the CPU the kernel's MemAvailable
(/proc/meminfo). Measured peak: on CUDA ``torch.cuda.max_memory_allocated`` over the step; on
the CPU the growth of the process's resident size (its high-water mark, reset before the step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.errors import DeviceUnavailable, DoesNotFit, UsageError
from cnnlab.host_memory import return_freed_memory
from cnnlab.summary.cost import TrainingCost, training_cost

LARGEST_BATCH = 1 << 20  # as TrainConfig's --batch-size


@dataclass
class Fit:
    cost: TrainingCost              # at the batch found
    device: str
    free: int                       # bytes free on the device when asked
    batch_size: int
    margin: int                     # free - estimated peak at batch_size
    limited_by: str                 # "memory" or "the limit" (the batch asked for as the most)
    measured_peak: int | None = None  # one real step at measured_batch
    measured_batch: int | None = None
    estimated_peak: int | None = None  # the estimate at measured_batch
    failed_batches: tuple[int, ...] = ()  # batches whose real step failed (searching down)


def free_memory(device: torch.device) -> int:
    """Bytes free now: CUDA's free memory, or the CPU's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        raise UsageError("the available RAM is unknown here (no /proc/meminfo); --fit needs it")
    raise UsageError(f"--fit cannot read the free memory of {device.type}; use cpu or cuda")


def largest_batch(cost: TrainingCost, free: int, limit: int = LARGEST_BATCH) -> int:
    """The largest batch whose estimated peak is at most ``free`` (0: not even one image)."""
    at_zero = cost.memory_at(0).peak
    per_image = cost.memory_at(1).peak - at_zero
    if at_zero > free:
        return 0
    return min(limit, (free - at_zero) // per_image if per_image else limit)


def fit_batch(model, input_size=None, num_classes=None, model_args=None, optimizer: str = "sgd",
              momentum: float = 0.0, amp: str = "off", device: str = "auto", measure: bool = False,
              limit: int | None = None) -> Fit:
    """The largest batch (at most ``limit``) whose estimated peak fits ``device``'s free memory,
    with the margin left; ``measure``: one real training step there, halving the batch until a
    step succeeds."""
    from cnnlab.devices import resolve_device

    target = resolve_device(device)
    limit = LARGEST_BATCH if limit is None else limit
    if not 1 <= limit <= LARGEST_BATCH:
        raise UsageError(f"--batch-size must be between 1 and {LARGEST_BATCH:,}, not {limit}")
    free = free_memory(target)
    options = dict(input_size=input_size, num_classes=num_classes, model_args=model_args, optimizer=optimizer,
                   momentum=momentum, amp=amp)
    probe = training_cost(model, batch_size=1, device=target.type, **options)
    batch = largest_batch(probe, free, limit)
    if batch < 1:
        raise DoesNotFit(f"{probe.model} does not fit {target} even at batch 1: its estimated peak is "
                         f"{probe.memory.peak / 2**20:,.0f} MiB, {free / 2**20:,.0f} MiB are free")
    cost = training_cost(model, batch_size=batch, device=target.type, **options)
    found = Fit(cost, str(target), free, batch, free - cost.memory.peak,
                "the limit" if batch == limit else "memory")
    if measure:
        _measure(found, model, options, target)
    return found


def _measure(found: Fit, model, options, device) -> None:
    """One training step at the batch found, halving it while the step runs out of memory."""
    failed, batch = [], found.batch_size
    measured_step_peak(model, 2, device, **options)  # loads the kernels and libraries a step uses first (2: batch norm)
    while batch >= 1:
        try:
            found.measured_peak = measured_step_peak(model, batch, device, **options)
            found.measured_batch = batch
            found.estimated_peak = found.cost.memory_at(batch).peak
            found.failed_batches = tuple(failed)
            return
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
            if not out_of_memory(error):
                raise
            failed.append(batch)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch //= 2
    raise DoesNotFit(f"one training step failed for lack of memory at every batch tried ({failed})")


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(error).lower() \
        or "can't allocate memory" in str(error).lower()


def measured_step_peak(model_name, batch: int, device: torch.device, input_size=None, num_classes=None,
                       model_args=None, optimizer="sgd", momentum=0.0, amp="off") -> int:
    """Bytes one real training step (forward, backward, optimiser step) adds at its peak."""
    from cnnlab.devices import AMP_DTYPES
    from cnnlab.summary.core import prepare_model

    before = _peak_start(device)
    model, _, size, _ = prepare_model(model_name, input_size, num_classes, None, model_args)  # weights not initialised
    model = model.to(device).train()
    params = model.parameters()
    step = {"sgd": lambda: torch.optim.SGD(params, 0.01, momentum=momentum),
            "adam": lambda: torch.optim.Adam(params, 1e-3),
            "adamw": lambda: torch.optim.AdamW(params, 1e-3)}[optimizer]()
    images = torch.randn(batch, *size, device=device)
    with torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "off"):
        logits = model(images)
        logits = getattr(logits, "logits", logits)
        loss = F.cross_entropy(logits.float(), torch.zeros(batch, dtype=torch.long, device=device))
    loss.backward()
    step.step()
    return _peak_since(device, before)


def _peak_start(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return_freed_memory()  # else a step that reuses memory an earlier one freed measures as nothing
    try:  # writing 5 to clear_refs resets the resident high-water mark (Linux)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


def _peak_since(device: torch.device, before: int) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _status_bytes("VmHWM") - before


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise DeviceUnavailable("the process's resident size is unknown here (no /proc/self/status)")
