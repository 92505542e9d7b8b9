"""`encoderkit predict` on an integer-only dir: seconds from starting the process to its first answer, first with
an empty kernel cache (the first run on a machine compiles the integer chains), then with the warm cache
(issue #15's target: under 5 s).

    python -m benchmarks.integer_startup [--warm 3]

The dir: a tiny I-BERT classifier (2 layers x 64, random weights, activation ranges calibrated on random
batches) exported to the integer-only format, with a tokenizer trained on Python's docstrings. The cache is a
fresh temporary $ENCODERKIT_CACHE, so the first run always compiles. The children's CPU time is printed beside
the wall time: a busy machine stretches the wall time far more than the CPU time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.cold_start import seconds_to_first_line

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=130)


def make_integer_dir(directory: Path) -> Path:
    import json
    import re
    import subprocess

    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.ibert.export import export_integer_model
    from encoderkit.models.ibert.model import IBertConfig, IBertForSequenceClassification, calibrate

    texts = [line for module in (os, re, json, subprocess) for line in (module.__doc__ or "").splitlines() if line]
    tokenizer = Tokenizer.train(texts * 20, vocab_size=300)
    tokenizer.save(directory)
    torch.manual_seed(0)
    model = IBertForSequenceClassification(IBertConfig(vocab_size=tokenizer.vocab_size, num_labels=2, quant_mode=True,
                                                       **TINY))
    batches = [{"input_ids": torch.randint(3, tokenizer.vocab_size, (4, 32))} for _ in range(2)]
    calibrate(model, batches)
    export_integer_model(model).save(directory / "model.safetensors")
    return directory


def first_answer(model_dir: Path) -> tuple[float, float]:
    """(wall seconds to the first line, CPU seconds of the whole process)."""
    before = os.times()
    script = str(Path(sys.executable).with_name("encoderkit"))  # the console script users run
    wall = seconds_to_first_line([script, "predict", "--model", str(model_dir)])
    after = os.times()
    return wall, (after.children_user + after.children_system) - (before.children_user + before.children_system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=3, help="runs with the warm cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["ENCODERKIT_CACHE"] = str(Path(scratch) / "cache")  # the commands below inherit it
        model_dir = make_integer_dir(Path(scratch) / "integer")
        for run in ["empty cache"] + [f"warm cache {i + 1}" for i in range(args.warm)]:
            started = time.strftime("%H:%M:%S")
            wall, cpu = first_answer(model_dir)
            print(f"{run:14} {wall:7.1f} s to the first answer, {cpu:6.1f} s CPU  (started {started}, "
                  f"load average {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
