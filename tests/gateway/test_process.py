"""Process tuning for serving (gateway/process.py), checked in fresh interpreters."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Allocate and free 2,000 blocks of 1,100 bytes (above pymalloc's 512, so glibc serves them)
# twenty times, and count the page faults: a heap that is trimmed after every cycle faults
# its pages in again each time.
_CYCLES = """
import gc, resource, sys
if sys.argv[1] == "tuned":
    from gateway.process import GC_YOUNG_THRESHOLD, tune_for_serving
    tune_for_serving()
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    assert gc.get_freeze_count() > 0
def cycle():
    kept = [bytearray(1100) for _ in range(2000)]
    del kept
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _CYCLES, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tuned_heap_is_not_given_back_and_faulted_in_again_on_every_request() -> None:
    plain = _page_faults("plain")
    tuned = _page_faults("tuned")
    assert plain > 2000  # glibc's defaults: ~one fault per 4 KiB, every cycle
    assert tuned < plain / 20
