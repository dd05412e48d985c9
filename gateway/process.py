"""Process-wide settings for a long-running server process: garbage collector and glibc malloc.

Both defaults are tuned for short scripts and cost a server under load real time
(bench/RESULTS.md, "HTTP"):

- glibc gives memory at the top of its heap back to the system as soon as more than
  128 KiB of it is free, and serves requests of 128 KiB or more with their own mmap. A
  produce request allocates and frees about a megabyte (one JSON value per record, the
  body, the encoded batch) and a stream's rendered batch up to 1 MiB, so every request
  shrank the heap and grew it again: sbrk/mmap calls and a page fault per 4 KiB touched.
  Measured: `orjson.dumps` of 1,000 values kept alive took 1.3-1.9 us each with the
  defaults and 0.07-0.13 us with an 8 MiB trim threshold. So the heap keeps up to
  `MALLOC_KEEP_BYTES` free, and requests below it come from the heap.
- CPython collects its youngest generation every 700 container allocations; a
  1,000-record request makes several thousand (the parsed JSON, the records, the offsets
  answer), so several collections ran per request. The threshold is raised to
  `GC_YOUNG_THRESHOLD`, and everything alive once the app is built (modules, the app,
  the spec) is frozen out of the collector's scans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import platform

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
MALLOC_KEEP_BYTES = 8 * MiB
GC_YOUNG_THRESHOLD = 10_000
# mallopt(3) parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_for_serving() -> None:
    """Apply the settings above to this process (call once the app is built)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    gc.freeze()
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        for parameter in (_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD):
            if libc.mallopt(parameter, MALLOC_KEEP_BYTES) != 1:
                logger.warning("mallopt(%d) refused; keeping glibc's default", parameter)
    except (OSError, AttributeError) as exc:  # no libc to load, or no mallopt in it
        logger.warning("could not tune glibc malloc: %s", exc)
