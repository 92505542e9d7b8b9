"""`fill-mask` cold start: from starting the process to the first line of answers, with a tiny model.

Ours runs the `encoderkit fill-mask` command; the reference is a Python process that answers the same line
with transformers' fill-mask pipeline on the same model directory (ALBERT in Hugging Face format).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

LINE = "the function returns a [MASK] of its arguments.\n"
TINY = dict(embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=128)

REFERENCE = """
import sys
from transformers import pipeline

fill_mask = pipeline("fill-mask", model=sys.argv[1], top_k=5)
for line in sys.stdin:
    print("  ".join(f"{c['token_str']} ({c['score']:.3f})" for c in fill_mask(line.strip())), flush=True)
"""


def make_tiny_model(directory: Path) -> Path:
    """A randomly initialised tiny ALBERT with a 300-piece tokenizer trained on Python's own docstrings."""
    import json
    import re

    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.albert import AlbertConfig, AlbertForMaskedLM
    from encoderkit.models.hf_format import save_pretrained

    texts = [line for module in (os, re, json, subprocess) for line in (module.__doc__ or "").splitlines() if line]
    tokenizer = Tokenizer.train(texts * 20, vocab_size=300)
    tokenizer.save(directory)
    save_pretrained(AlbertForMaskedLM(AlbertConfig(vocab_size=tokenizer.vocab_size, **TINY)), directory)
    return directory


def seconds_to_first_line(command: list[str]) -> float:
    """Start `command`, give it LINE on stdin, and time until it prints its first line."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    process.stdin.write(LINE)
    process.stdin.close()
    first_line = process.stdout.readline()
    seconds = time.perf_counter() - start
    process.stdout.read()
    if process.wait() != 0 or not first_line:
        raise RuntimeError(f"{command[0]} exited with {process.returncode} without answering")
    return seconds


def fill_mask_ours(model_dir: str):
    script = Path(sys.executable).with_name("encoderkit")  # the console script users run
    return lambda: seconds_to_first_line([str(script), "fill-mask", "--model", model_dir, "--top-k", "5"])


def fill_mask_reference(model_dir: str):
    return lambda: seconds_to_first_line([sys.executable, "-c", REFERENCE, model_dir])
