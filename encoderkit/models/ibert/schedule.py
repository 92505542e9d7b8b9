"""How the integer model's work is split over the CPU: groups of whole sequences that each go through the
whole model in one worker thread, every worker computing with a single intra-op thread. A batch with fewer
sequences than workers runs in the calling thread on torch's intra-op threads instead (measured faster at
batch 1 than splitting each layer's rows and heads over the workers: 53-57 against 82-98 ms at 1 x 128).

Why groups: a layer is a chain of GEMMs and elementwise passes. Run on the whole batch with torch's intra-op
threads, every pass streams tens of MB through memory (an int32 accumulator of 4096 x 3072 is 50 MB), and
each of the 2 x batch x heads small attention GEMMs opens its own OpenMP region, whose barrier stalls
whenever another process holds a core. A group of rows instead runs GEMM -> chain -> GEMM -> chain with its
temporaries in cache. Sequences do not interact in an encoder, so groups of whole sequences need no
synchronisation at all until the end. Compiled stages (kernels.py) run their GEMMs and chains from C++
with the GIL released, so the workers run in parallel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

MIN_GROUP_ROWS, MAX_GROUP_ROWS = 32, 256


def workers() -> int:
    return torch.get_num_threads()


def _target_rows(batch: int, seq: int) -> int:
    return max(MIN_GROUP_ROWS, min(MAX_GROUP_ROWS, -(-batch * seq // workers())))


def sequence_groups(batch: int, seq: int) -> list[tuple[int, int]] | None:
    """Groups (b0, b1) of whole sequences, about MAX_GROUP_ROWS rows each; None if fewer than the workers."""
    per_group = max(1, _target_rows(batch, seq) // seq)
    groups = [(b, min(b + per_group, batch)) for b in range(0, batch, per_group)]
    return groups if len(groups) >= workers() else None


@functools.cache
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="integer-ibert", initializer=torch.set_num_threads,
                              initargs=(1,))


def run(fn: Callable, items: Sequence) -> None:
    """fn(item) for every item, spread over the workers (in this thread when there is one worker), under
    this thread's grad and inference modes (thread-local, and compiled code is specialised to them)."""
    n = min(workers(), len(items))
    if n <= 1:
        for item in items:
            fn(item)
        return
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def call(item):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            fn(item)

    for _ in _pool(n).map(call, items):  # re-raises a worker's exception here
        pass
