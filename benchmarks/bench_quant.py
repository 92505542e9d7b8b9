"""Latency and throughput of a base-size encoder on CPU: FP32, our integer-only I-BERT, torch's dynamic int8
quantization of the FP32 model, and transformers' IBert with quant_mode (which simulates integers in float).

    python -m benchmarks.bench_quant [--threads 2] [--shapes 1x128,32x128] [--repeats 5]

The models are `make bench`'s integer-only rows' (benchmarks/quantized.py): random weights at RoBERTa-base
sizes, a sequence-classification head on each, the QAT model's activation ranges calibrated on two random
batches, transformers' IBert with the same weights and ranges; here all in this process. Each model runs once
to warm up (the integer model compiles its chains then), then the models take turns, `--repeats` times, so that a
change in the machine's load hits them alike; the table shows medians. Every column runs with the allocator
setting of encoderkit's entry point (as in `make bench`; under glibc's default, transformers' IBert takes
~50% longer). Prints the load average too: on a shared machine, compare the ratios rather than the absolute
times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks import quantized
from encoderkit.models.ibert.export import export_integer_model
from encoderkit.runtime import tune_allocator


def build_models() -> dict[str, torch.nn.Module]:
    fp32, qat = quantized.fp32_model(), quantized.calibrated_qat_model()
    models = {"fp32": fp32, "integer": export_integer_model(qat),
              "dynamic int8": quantized.dynamic_int8_model(fp32)}
    try:
        models["transformers IBert quant_mode"] = quantized.ibert_reference_model(qat)
    except ImportError:
        print("transformers is not installed: no IBert quant_mode column")
    return models


def run(model, batch) -> None:
    with torch.inference_mode():
        model(**batch)


def measure(models, batch, repeats) -> dict[str, list[float]]:
    for name, model in models.items():
        start = time.perf_counter()
        run(model, batch)
        print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s")
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            run(model, batch)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", default="1x128,32x128", help="batch x sequence length, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator = tune_allocator()  # as encoderkit's entry point and make bench set it, for every column
    print(f"torch {torch.__version__}, {args.threads} threads, {allocator}, load average {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    models = build_models()
    print(f"built, calibrated and exported in {time.perf_counter() - start:.0f} s")
    rows = []
    for shape in args.shapes.split(","):
        batch_size, seq = (int(n) for n in shape.split("x"))
        print(f"{batch_size} x {seq}:")
        times = measure(models, quantized.full_length_batch(batch_size, seq), args.repeats)
        integer = statistics.median(times["integer"])
        for name, ts in times.items():
            median = statistics.median(ts)
            rows.append((shape, name, median * 1e3, batch_size / median, median / integer))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    print(f"{'shape':>8}  {'model':<30} {'median ms':>10} {'seq/s':>8} {'time / integer':>15}")
    for shape, name, ms, throughput, ratio in rows:
        print(f"{shape:>8}  {name:<30} {ms:10.1f} {throughput:8.1f} {ratio:15.2f}")


if __name__ == "__main__":
    main()
