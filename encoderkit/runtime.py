"""Process-wide settings applied once by encoderkit's entry point: PyTorch on CPU faster, and accelerate
seeing every process of a CPU launch.

Only things that change speed or how processes find each other, never results.
"""

from __future__ import annotations

import ctypes
import functools
import os

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks up to MMAP_THRESHOLD come from the heap, and up to TRIM_THRESHOLD of free heap is kept for reuse.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2 << 30


@functools.cache
def tune_allocator() -> str:
    """Keep freed blocks of up to 1 GiB for reuse instead of unmapping them (glibc only; elsewhere a no-op).

    glibc's default gives every block over 32 MB back to the kernel on free, and the next allocation of that
    size pays a page fault per 4 KB page: a 50 MB activation costs ~14 ms to allocate and fill instead of
    ~1 ms when reused. Training and inference allocate such tensors on every step. Raising the mmap
    threshold alone is not enough: the trim threshold must rise too, or the freed top of the heap is
    returned to the kernel all the same. The price is that peak memory stays mapped until the process ends.
    Returns a description of what was set, for run records and benchmark settings.
    """
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a glibc system
        glibc = False
    if not glibc:
        return "default allocator (not glibc)"
    libc = ctypes.CDLL(None)  # the C library this process already uses
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc default (mallopt refused)"
    return f"glibc mallopt M_MMAP_THRESHOLD={MMAP_THRESHOLD >> 20} MiB, M_TRIM_THRESHOLD={TRIM_THRESHOLD >> 20} MiB"


def use_cpu_processes() -> None:
    """Let accelerate see the processes a launcher started on a machine without CUDA.

    torchrun and `accelerate launch --multi_gpu` set WORLD_SIZE; accelerate 1.x then still reports one
    process on a CPU-only torch unless ACCELERATE_USE_CPU is true (it then picks MULTI_CPU over gloo), and
    every process would train on its own. Results do not change: N processes train like one.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "1"
