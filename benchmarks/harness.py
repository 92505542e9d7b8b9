"""The one timing and memory helper behind every row.

Each side of a comparison (ours, the reference, ours under bf16 autocast) lives in a process of its own,
spawned fresh, so that its peak RSS is its own and neither side inherits the other's allocator state or
imports. The parent drives the sides in turns: one step of each, round after round, so that load from
other processes on a shared machine falls on both sides alike. The first rounds are warm-up; a side's
time is the median over the rest. Every process gets the same settings: fp32 (unless the side itself
autocasts), the same torch thread count, and the allocator setting of encoderkit's own entry point.
Besides wall time, each step's CPU time (all threads, and processes it started) is kept: with one thread
it hardly depends on what else runs on the machine.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import resource
import statistics
import time
import traceback
from dataclasses import dataclass, field

DEFAULT_THREADS = 2


@dataclass(frozen=True)
class Side:
    """A workload: `factory` ("module:function") is called with `kwargs` in the side's own process and
    returns a zero-argument `step` callable that does one unit of work (a training step, a forward).
    A step that times itself (e.g. up to the first line another process prints) returns its seconds."""

    factory: str
    kwargs: dict = field(default_factory=dict)


@dataclass
class SideResult:
    step_seconds: list[float]  # wall time of the timed rounds, in order
    cpu_seconds: list[float]  # CPU time of the same steps
    peak_rss_bytes: int  # of the side's process, or of the largest process it started
    flops_per_step: float | None  # counted on the first warm-up step
    error: str | None = None

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)


def configure_process(threads: int | None = None) -> str:
    """Thread count and allocator, identical in every benchmark process; returns the allocator setting.

    The parent passes `threads`; the side processes it spawns inherit the count through the environment.
    """
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", DEFAULT_THREADS))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    from encoderkit.runtime import tune_allocator

    allocator = tune_allocator()
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return allocator


def _cpu_seconds() -> float:
    """CPU time of this process and of the processes it started and waited for."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _serve(connection, side: Side) -> None:
    """A side's process: build the workload, then answer "step", "flops" and "rss" until "stop"."""
    module, function = side.factory.split(":")
    try:
        configure_process()
        step = getattr(importlib.import_module(module), function)(**side.kwargs)
        connection.send(None)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        connection.send(f"not yet available ({module.replace('.', '/')}.py does not exist)")
        return
    except Exception as err:  # the row reports it and the other rows go on
        traceback.print_exc()
        connection.send(f"{type(err).__name__}: {err}")
        return
    while True:
        command = connection.recv()
        try:
            if command == "step":
                start, cpu_start = time.perf_counter(), _cpu_seconds()
                seconds = step()
                wall = seconds if seconds is not None else time.perf_counter() - start
                connection.send((wall, _cpu_seconds() - cpu_start))
            elif command == "flops":
                connection.send(count_flops(step))
            elif command == "rss":
                peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
                connection.send(peak_kib * 1024)
            else:
                return
        except Exception as err:
            traceback.print_exc()
            connection.send(SideFailed(f"{type(err).__name__}: {err}"))
            return


class SideFailed(Exception):
    """A side's step raised; the message names the error."""


class _SideProcess:
    def __init__(self, side: Side):
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end, side), daemon=True)
        self.process.start()
        self.error = self.connection.recv()

    def ask(self, command: str):
        self.connection.send(command)
        answer = self.connection.recv()
        if isinstance(answer, SideFailed):
            self.error = str(answer)
            raise answer
        return answer

    def close(self) -> None:
        if self.process.is_alive():
            self.connection.send("stop")
        self.process.join()


def compare(sides: dict[str, Side], warmup: int, repeats: int, flops: bool = True) -> dict[str, SideResult]:
    """Time each side's step in interleaved rounds; with `flops` the first warm-up step also counts FLOPs."""
    processes = {}
    try:
        for name, side in sides.items():
            processes[name] = _SideProcess(side)
        counted = {name: None for name in processes}
        first_timed = warmup - 1 if flops else warmup  # the counting step is a warm-up step
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
        for round_index in range(-1 if flops else 0, first_timed + repeats):
            for name, process in processes.items():
                if process.error is not None:
                    continue
                try:
                    if round_index < 0:
                        counted[name] = process.ask("flops")
                    elif round_index < first_timed:
                        process.ask("step")
                    else:
                        times[name].append(process.ask("step"))
                except SideFailed:
                    continue  # process.error says why; the other sides go on
        results = {}
        for name, process in processes.items():
            if process.error:
                results[name] = SideResult([], [], 0, None, process.error)
            else:
                walls, cpus = ([wall for wall, _ in times[name]], [cpu for _, cpu in times[name]])
                results[name] = SideResult(walls, cpus, process.ask("rss"), counted[name])
        return results
    finally:
        for process in processes.values():
            process.close()


def count_flops(step) -> float:
    """FLOPs of one call of `step` (matrix products and attention, forward and backward), by torch's counter.

    torch's counter knows the CUDA attention kernels but not the CPU one, so that one is added here.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def cpu_attention(query, key, value, *args, **kwargs):
        return sdpa_flop_count(query, key, value)

    def cpu_attention_backward(grad_out, query, key, value, *args, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    counter = FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_attention_backward,
    })
    with counter:
        step()
    return float(counter.get_total_flops())


GEMM_SIZE = 2048


def gemm_side() -> Side:
    """This CPU's fp32 matrix-multiply rate, as a side timed in the same rounds as a row's sides."""
    return Side("benchmarks.harness:square_gemm", {"size": GEMM_SIZE})


def gemm_flops_per_second(result: SideResult) -> float:
    return 2 * GEMM_SIZE**3 / result.median_seconds


def square_gemm(size: int):
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)

    def step() -> None:
        torch.mm(a, b, out=out)

    return step
