"""Let the CPU chain reuse freed memory instead of faulting fresh pages in for every photo.

The chain allocates maps of 2.4-10 MB a photo. glibc's malloc serves blocks that large with
mmap and returns them to the kernel when freed (or trims them off the heap), so each new
photo pays a page fault for every 4 KiB it touches, and much of the guided filter's time
goes to the kernel. Raising the mmap and trim thresholds keeps those blocks in the heap for
the next photo; peak memory is unchanged (it is the largest working set either way). It sets malloc for the whole process, once, from
`predict_submission` and `tune`. Linux/glibc only; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap for reuse rather than trimming it


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for the chain's large, short-lived maps; True if it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, say)
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
