"""Where a model runs and in what precision: the device, autocast and the memory format, decided
in one place for training, evaluation and the benchmarks.

    placement = Placement.choose(device="auto", amp="auto", channels_last=None)
    model = placement.place(model)
    transform = BatchTransform((28, 28), mean, std, device=placement.device,
                               memory_format=placement.memory_format)   # cnnlab.data
    with placement.autocast():
        logits = model(transform(images))

``Placement.choose`` is the rule (what evaluation, summaries and a resumed run use); a new
training run left to decide times the candidates the rule leaves open (cnnlab.speed).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import DeviceUnavailable, UsageError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps; a missing one is an error."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            have = "no CUDA GPU" if count == 0 else f"{count} CUDA GPU(s), numbered 0 to {count - 1}"
            raise DeviceUnavailable(f"GPU {index} is not available: this machine has {have} (use --device cpu)")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable("the Apple GPU (mps) is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: CUDA GPUs since Ampere (compute
    capability 8), CPUs with AVX512-BF16 or AMX. Elsewhere bf16 is emulated, and slower."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":  # torch's own CPU feature probes (private, so absent ones count as no)
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


@dataclass(frozen=True)
class Placement:
    """A device, a precision (``amp``: off, bf16 or fp16) and a memory format, all resolved."""

    device: torch.device
    amp: str
    channels_last: bool

    @classmethod
    def choose(cls, device="auto", amp: str = "auto", channels_last: bool | None = None) -> "Placement":
        """Fill in ``auto``/None with the fastest settings that leave results within seed-to-seed
        noise (measured by benchmarks/train_throughput.py): bf16 where the hardware multiplies in
        it, channels-last on CPU and CUDA."""
        device = device if isinstance(device, torch.device) else resolve_device(device)
        if amp == "auto":
            amp = "bf16" if native_bf16(device) else "off"
        if amp not in AMP_DTYPES:
            raise UsageError(f"--amp must be one of auto, {', '.join(AMP_DTYPES)}, not {amp!r}")
        if amp == "fp16" and device.type == "cpu":
            raise UsageError("--amp fp16 needs a GPU; on the CPU use --amp bf16")
        if channels_last is None:
            channels_last = device.type in ("cpu", "cuda")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # input shapes stay fixed: time cuDNN's algorithms once
        return cls(device, amp, channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def place(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def autocast(self):
        """A fresh autocast context for one forward pass (a no-op without mixed precision)."""
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])


# published dense peak FLOP/s (no sparsity) by GPU name and precision; fp32 is without TF32,
# which PyTorch leaves off for matrix products by default
PUBLISHED_PEAKS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "off": 67e12},
    "H100 SXM": {"bf16": 989e12, "fp16": 989e12, "off": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "off": 51e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "off": 19.5e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "off": 30.3e12},
    "RTX 4090": {"bf16": 165e12, "fp16": 165e12, "off": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "fp16": 71e12, "off": 35.6e12},
    "V100": {"fp16": 125e12, "off": 15.7e12},
    "T4": {"fp16": 65e12, "off": 8.1e12},
}
PEAK_CACHE_FILE = "device_peaks.json"
PEAK_MATMUL_SIDE = 2048


def device_name(device: torch.device) -> str:
    """The device's model name: the GPU's, or the CPU's from /proc/cpuinfo (with the thread count
    PyTorch uses, which its peak depends on)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform_cpu_name()
    return f"{name} ({torch.get_num_threads()} threads)" if device.type == "cpu" else name


def platform_cpu_name() -> str:
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def peak_flops(placement: Placement, data_dir) -> dict:
    """The device's peak FLOP/s in the precision ``placement`` uses: the published dense figure
    of a known GPU, else a large matrix product measured once per machine and cached in
    ``data_dir``. A record for config.json: flops_per_second, precision, device, source."""
    from pathlib import Path

    name = device_name(placement.device)
    if placement.device.type == "cuda":
        for known, peaks in PUBLISHED_PEAKS.items():
            if known.lower() in name.lower() and placement.amp in peaks:
                return dict(flops_per_second=peaks[placement.amp], precision=placement.amp, device=name,
                            source=f"published dense peak of the {known}")
    cache = Path(data_dir) / PEAK_CACHE_FILE
    flops = cached_figure(cache, f"{name} | {placement.amp}", lambda: measured_matmul_flops(placement),
                          valid=lambda v: isinstance(v, (int, float)) and v > 0)
    return dict(flops_per_second=float(flops), precision=placement.amp, device=name,
                source=f"{PEAK_MATMUL_SIDE}x{PEAK_MATMUL_SIDE} matrix product measured once, cached in {cache}")


def cached_figure(cache, key: str, measure, valid):
    """``cache``'s figure under ``key`` (a JSON object file) where ``valid`` accepts it, else
    ``measure()``, stored there for next time. A cache that cannot be read or written only
    means measuring again."""
    import json
    import os
    from pathlib import Path

    cache = Path(cache)
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        cached = cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        cached = {}
    if valid(cached.get(key)):
        return cached[key]
    cached[key] = measure()
    try:  # written whole, then renamed: processes measuring at once never read half a file
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(cached, indent=2), encoding="utf-8")
        os.replace(partial, cache)
    except OSError:
        pass
    return cached[key]


def measured_matmul_flops(placement: Placement, side: int = PEAK_MATMUL_SIDE, tries: int = 3) -> float:
    """FLOP/s of the best of ``tries`` square matrix products (after one to warm up), two FLOPs a
    multiply-accumulate, in the precision ``placement`` computes in."""
    import math
    import time

    dtype = AMP_DTYPES[placement.amp] or torch.float32
    a = torch.randn(side, side, device=placement.device, dtype=dtype)
    best = math.inf
    for _ in range(tries + 1):
        started = time.perf_counter()
        (a @ a).sum().item()  # .item() waits for a GPU
        best = min(best, time.perf_counter() - started)
    return 2 * side ** 3 / best
