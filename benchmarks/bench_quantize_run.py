"""Latency and throughput of the models of a finished `encoderkit quantize` run: the FP32 classifier it started
from (results.json's "model"), its integer-only model (integer/model.safetensors) and transformers'
IBertForSequenceClassification with quant_mode on its QAT weights (qat/).

    python -m benchmarks.bench_quantize_run RUN_DIR [--threads 2] [--shapes 1x128,32x128] [--warmup 2]
        [--repeats 5] [--json PATH]

Every side runs in its own process (benchmarks/harness.py) on the same threads, the sides take turns, and the
table shows the medians. Batches are GLUE-like sentence pairs (common.classification_batch), cut to the
model's positions if it has fewer. transformers' I-BERT has no embedding projection or shared layers: for an
ELECTRA-Small or ALBERT run its column shows why it did not run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import harness

MODULE = "benchmarks.bench_quantize_run"  # where the sides' processes find the factories below
SHAPES = "1x128,32x128"  # (batch x tokens): one request, and a batch of GLUE-length pairs
WARMUP, REPEATS = 2, 5  # as benchmarks/run.py
SIDES = {"fp32": "FP32", "integer": "integer-only", "transformers": "transformers IBert quant_mode"}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _step(model, vocab_size: int, batch_size: int, seq_len: int, pad_id: int, type_vocab_size: int):
    from benchmarks.common import classification_batch, inference_step

    batch = classification_batch(batch_size, seq_len, vocab_size, pad_id=pad_id, type_vocab_size=type_vocab_size)
    inputs = [batch[key] for key in MODEL_INPUTS]
    return inference_step(model, lambda: model(*inputs))


def bench_float(path: str, **shape):
    """The fine-tuned float classifier, loaded as `encoderkit quantize` loads it (a harness.Side factory: runs in
    the side's own process)."""
    from encoderkit.commands.quantize import load_float_classifier
    from encoderkit.models.hf_format import read_config

    return _step(load_float_classifier(Path(path), read_config(path)["model_type"]), **shape)


def bench_integer(path: str, **shape):
    from encoderkit.models.ibert.integer import load_integer_model

    return _step(load_integer_model(path), **shape)


def bench_transformers(path: str, **shape):
    """transformers' IBertForSequenceClassification with quant_mode on (its simulated integers), the QAT weights.
    Raises (the harness reports it) for a model with an embedding projection or shared layers, which it lacks."""
    from transformers import IBertForSequenceClassification

    from encoderkit.models.hf_format import read_config

    config = read_config(path)
    if config.get("embedding_size") is not None or config.get("num_hidden_groups") is not None:
        raise ValueError("transformers' I-BERT has no embedding projection or shared layers")
    return _step(IBertForSequenceClassification.from_pretrained(path), **shape)


def benchmark(run_dir: Path, shapes: list[tuple[int, int]], threads: int, warmup: int, repeats: int,
              console: Console) -> dict:
    """Latency and throughput of each side at each (batch, tokens) shape."""
    from encoderkit.commands.quantize import INTEGER_DIR, INTEGER_FILE, QAT_DIR, RESULTS_FILE
    from encoderkit.models.hf_format import read_config

    model_dir = json.loads((run_dir / RESULTS_FILE).read_text())["model"]
    config = read_config(model_dir)
    integer_file = run_dir / INTEGER_DIR / INTEGER_FILE
    positions = config["max_position_embeddings"] - (config["pad_token_id"] + 1 if config["model_type"] in
                                                     ("ibert", "roberta") else 0)
    factories = {"fp32": ("bench_float", str(model_dir)), "integer": ("bench_integer", str(integer_file)),
                 "transformers": ("bench_transformers", str(run_dir / QAT_DIR))}
    timings = {}
    for batch_size, tokens in shapes:
        shape = {"vocab_size": config["vocab_size"], "batch_size": batch_size, "seq_len": min(tokens, positions),
                 "pad_id": config.get("pad_token_id", 0), "type_vocab_size": config.get("type_vocab_size", 2)}
        console.log(f"timing {batch_size} x {shape['seq_len']} tokens: {', '.join(SIDES.values())}")
        sides = {name: harness.Side(f"{MODULE}:{factory}", {"path": path, **shape})
                 for name, (factory, path) in factories.items() if name != "integer" or integer_file.is_file()}
        measured = harness.compare(sides, warmup, repeats, flops=False)
        timings[f"{batch_size}x{shape['seq_len']}"] = {
            name: {"error": result.error} if result.error else {
                "latency_ms": 1e3 * result.median_seconds, "sequences_per_s": batch_size / result.median_seconds}
            for name, result in measured.items()}
    return {"threads": threads, "warmup": warmup, "repeats": repeats, "timings": timings}


def bench_table(bench: dict) -> Table:
    table = Table(title=f"CPU inference, {bench['threads']} threads: latency (ms) and throughput (sequences/s), "
                        f"median of {bench['repeats']}")
    table.add_column("batch x tokens")
    for name in SIDES.values():
        table.add_column(name, justify="right")
    table.add_column("integer-only / FP32", justify="right")
    for shape, sides in bench["timings"].items():
        cells = []
        for name in SIDES:
            side = sides.get(name, {"error": "not exported"})
            cells.append(side["error"] if "error" in side else
                         f"{side['latency_ms']:,.1f} ms\n{side['sequences_per_s']:,.1f} seq/s")
        speedup = ("-" if any("error" in sides.get(name, {"error": ""}) for name in ("fp32", "integer")) else
                   f"{sides['integer']['sequences_per_s'] / sides['fp32']['sequences_per_s']:.2f}x")
        table.add_row(shape, *cells, speedup)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the output.dir of a finished `encoderkit quantize` run")
    parser.add_argument("--threads", type=int, default=harness.DEFAULT_THREADS)
    parser.add_argument("--shapes", default=SHAPES, help="batch x tokens, comma-separated")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--json", type=Path, help="also write the timings to this JSON file")
    args = parser.parse_args()
    harness.configure_process(args.threads)  # the sides inherit the thread count, apply the same allocator
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    bench = benchmark(args.run_dir, shapes, args.threads, args.warmup, args.repeats, Console(stderr=True))
    if args.json:
        args.json.write_text(json.dumps(bench, indent=2) + "\n")
    Console().print(bench_table(bench))


if __name__ == "__main__":
    main()
