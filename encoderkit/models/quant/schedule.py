"""How the integer model's work is split over the CPU: groups of whole sequences that each go through the
whole model in one worker thread, or, for batches too small for that, row tiles and attention units
of each layer; every worker computes with a single intra-op thread.

Why: a layer is a chain of GEMMs and elementwise passes. Run on the whole batch with torch's intra-op
threads, every pass streams tens of MB through memory (an int32 accumulator of 4096 x 3072 is 50 MB, and
glibc hands such blocks back to the OS on every free), and each of the 2 x batch x heads small attention
GEMMs opens its own OpenMP region, whose barrier stalls whenever another process holds a core. A group
of rows instead runs GEMM -> chain -> GEMM -> chain with its temporaries in cache. Sequences do not
interact in an encoder, so groups of whole sequences need no synchronisation at all until the end;
parts of sequences meet after each phase of a layer. Compiled stages (int_ops.fused) run their GEMMs
and chains from C++ with the GIL released, so the workers run in parallel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

MIN_TILE_ROWS, MAX_TILE_ROWS = 32, 256


@dataclass(frozen=True)
class Tile:
    """Rows b0 * S + s0 ... (b1 - 1) * S + s1 of a (B * S, H) activation: part of one sequence
    (b1 == b0 + 1) or whole sequences (s0 == 0, s1 == S)."""

    b0: int
    b1: int
    s0: int
    s1: int
    seq: int

    @property
    def rows(self) -> slice:
        return slice(self.b0 * self.seq + self.s0, (self.b1 - 1) * self.seq + self.s1)

    @property
    def num_rows(self) -> int:
        return (self.b1 - self.b0) * (self.s1 - self.s0)


def workers() -> int:
    return torch.get_num_threads()


def _target_rows(batch: int, seq: int) -> int:
    return max(MIN_TILE_ROWS, min(MAX_TILE_ROWS, -(-batch * seq // workers())))


def sequence_groups(batch: int, seq: int) -> list[tuple[int, int]] | None:
    """Groups (b0, b1) of whole sequences, about MAX_TILE_ROWS rows each; None if fewer than the workers."""
    per_group = max(1, _target_rows(batch, seq) // seq)
    groups = [(b, min(b + per_group, batch)) for b in range(0, batch, per_group)]
    return groups if len(groups) >= workers() else None


def tiles(batch: int, seq: int) -> list[Tile]:
    """At least a tile per worker, of MIN_TILE_ROWS to MAX_TILE_ROWS rows, never splitting a tile across
    sequences; parts of a sequence are of near-equal length (few distinct shapes to compile)."""
    target = _target_rows(batch, seq)
    if seq >= target:
        parts = -(-seq // target)
        step = -(-seq // parts)
        return [Tile(b, b + 1, s, min(s + step, seq), seq) for b in range(batch) for s in range(0, seq, step)]
    per_tile = max(1, target // seq)
    return [Tile(b, min(b + per_tile, batch), 0, seq, seq) for b in range(0, batch, per_tile)]


def head_groups(batch: int, num_heads: int) -> list[tuple[int, int, int]]:
    """Attention units (sequence, first head, end head): whole sequences, or groups of heads when there
    are fewer than two sequences per worker."""
    groups = max(1, min(num_heads, -(-2 * workers() // batch)))
    size = -(-num_heads // groups)
    return [(b, h, min(h + size, num_heads)) for b in range(batch) for h in range(0, num_heads, size)]


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
