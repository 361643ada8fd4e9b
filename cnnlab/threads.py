"""How many CPU threads a training epoch uses: the cores nobody else is using.

torch starts one intra-op thread per core and splits every operation among them; each
operation ends when its slowest share does. When another process takes one of two cores, the
thread sharing that core runs half the time and every operation waits for it, while the
waiting threads spin (OpenMP's default) on cores the other process needs: LeNet on two busy
cores trained at 0.76x the speed of d2l's one-thread-per-worker pipeline. So before each CPU
epoch, ``fit_to_load`` sets torch's thread count to the cores the other processes left free
during the previous epoch (measured from /proc/stat: the machine's busy time minus this
process's own; before a training's first epoch, during a short look), never fewer than one; a
thread count fixed with ``OMP_NUM_THREADS`` is kept. Another count rounds differently (the
sums are split otherwise), so two runs agree bit for bit only at the same count.
"""

from __future__ import annotations

import os
import time

import torch

FIRST_LOOK_SECONDS = 0.05  # before the first epoch there is no previous one: look this long
_previous: tuple[float, float, float] | None = None  # (wall, machine busy, own CPU) seconds


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as quota_file:
            quota, period = quota_file.read().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy (stolen by the hypervisor included) since boot; None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def snapshot() -> tuple[float, float, float] | None:
    busy = machine_busy_seconds()
    return None if busy is None else (time.monotonic(), busy, time.process_time())


def cores_used_by_others(since: tuple[float, float, float], now: tuple[float, float, float]) -> float:
    wall, busy, own = (b - a for a, b in zip(since, now))
    return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


def threads_for(free_cores: float, cores: int) -> int:
    """Whole threads for ``free_cores`` of ``cores`` (0.5 rounds up): at least one."""
    return max(1, min(cores, int(free_cores + 0.5)))


def fit_to_load(device) -> int:
    """Set torch's CPU threads for the next epoch on ``device`` (CPU only); returns the count."""
    global _previous
    if torch.device(device).type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    now = snapshot()
    if now is None:  # no /proc/stat: torch's default
        return torch.get_num_threads()
    if _previous is None:
        _previous = now
        time.sleep(FIRST_LOOK_SECONDS)
        now = snapshot()
    elif now[0] - _previous[0] < FIRST_LOOK_SECONDS:  # too short a window to judge: keep the count
        return torch.get_num_threads()
    cores = available_cores()
    threads = threads_for(cores - cores_used_by_others(_previous, now), cores)
    _previous = now
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def forget() -> None:
    """Judge the next epoch by a fresh look, not by what ran since the last one (benchmarks)."""
    global _previous
    _previous = None
