"""Freed host memory kept between CPU training steps (cnnlab.host_memory), seen in the kernel's
own counters -- page faults and resident size -- not in timings. In a fresh process, so that the
heap holds no free blocks from earlier tests."""

import json
import subprocess
import sys

import pytest

from cnnlab.host_memory import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")

SCENARIO = """
import json, resource, sys, torch
from cnnlab.host_memory import freed_memory_kept

BLOCK = 64 * 2**20  # a weight gradient above glibc's largest mmap threshold (32 MiB)


def faults_of(elements):  # allocate, write every page, free
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(elements)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


# a block freed, then one a little smaller (the next step's gradient): as in a training step
with freed_memory_kept(torch.device(sys.argv[1])):
    first = faults_of(BLOCK // 4)
    reused = faults_of(BLOCK // 4 - 1024)
    inside = resident()
print(json.dumps(dict(pages=BLOCK // resource.getpagesize(), first=first, reused=reused,
                      handed_back=inside - resident())))
"""


def scenario(device: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCENARIO, device], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_in_a_cpu_epoch_a_freed_block_is_reused_without_faulting_its_pages_in_again():
    seen = scenario("cpu")
    assert seen["first"] >= seen["pages"] / 1024  # new memory (huge pages: a fault per 512 pages)
    assert seen["reused"] < seen["pages"] / 100, seen  # glibc's defaults: a new mapping, every page again
    assert seen["handed_back"] > 32 * 2**20, seen  # on leaving, the kept memory goes back to the system


def test_other_devices_leave_malloc_as_it_is():
    """A CUDA epoch's host allocations are small: nothing changes (no GPU needed to see it)."""
    seen = scenario("cuda")
    assert seen["reused"] >= seen["pages"] / 1024, seen  # mapped anew
