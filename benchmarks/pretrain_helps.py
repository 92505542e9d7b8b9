"""Does pretraining pay off? The tiny ALBERT (MLM + SOP) and the tiny ELECTRA (replaced-token detection) are
pretrained on real English prose for a fixed budget (the same tokens, or with --electra-steps about the same
compute: the table gives each one's steps, tokens and minutes), half of it on shorter rows (the length warmup),
then each, and a randomly initialised model of the same shape and tokenizer, is fine-tuned on a real labelled
sentence task, three seeds each. Everything runs through the CLI (`encoderkit pretrain`, `encoderkit finetune
classify`), so the product is what is measured.

    python -m benchmarks.pretrain_helps [--out runs/pretrain-helps] [--steps 1600] [--electra-steps N] [--seeds 3] ...

(benchmarks/README.md has the measured table.)

Data: the Brown corpus (benchmarks/brown.py). Pretraining prose: the sentences of the corpus's train samples,
one document per sample. The task: which of three groups of genres a single sentence comes from: press
(reportage, editorials, reviews), learned and government writing, or fiction (general, mystery, science,
adventure, romance); the miscellany between them (religion, hobbies, popular lore, belles-lettres, humour) is
left out, so that each class has a character of its own. Labelled training sentences come from the train
samples (balanced per class); validation and test sentences from the held-out samples, which pretraining never
saw (validation: samples numbered 5, 15, ...; test: 10, 20, ...). The best epoch is picked on validation;
accuracy is read on test from the run's predictions. A bag-of-words logistic regression on the same sentences
is printed beside, as the level that word identity alone reaches.

One tokenizer (`encoderkit tokenizer train` on the prose) serves every model. Random init: `encoderkit pretrain
RECIPE train.max_steps=0 train.seed=S` writes the recipe's untrained model with that tokenizer, one per seed.
Every stage's output is kept under --out and reused by a rerun (delete a stage's dir to redo it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import brown

GROUPS = {"press": "abc", "learned": "hj", "fiction": "klmnp"}
SEQ = 64  # tokens per pretraining sequence and the fine-tuning cut (Brown sentences average ~25 words)

# The tiny recipes' shapes and settings, stated here so that a change to the bundled recipes does not move
# these numbers. Budget: steps x batch x SEQ tokens.
COMMON = [f"data.max_seq_length={SEQ}", "model.embedding_size=64", "model.hidden_size=128",
          "model.num_hidden_layers=4", "model.num_attention_heads=4", "model.intermediate_size=512",
          "model.max_position_embeddings=128", "train.schedule=linear", "train.weight_decay=0.01",
          "train.max_grad_norm=1.0", 'train.mixed_precision="no"', "data.masked_lm_prob=0.15"]
RECIPES = {
    "albert": ("albert-tiny", ["model.num_hidden_groups=1", "model.inner_group_num=1", "data.max_ngram=1"]),
    "electra": ("electra-tiny", ["rtd.discriminator_weight=50.0", "rtd.temperature=1.5",
                                 "rtd.generator_size_multiplier=0.5"]),
}


# The CPU's cores shared among the --jobs processes (set in main): more threads than cores make torch's OpenMP
# workers spin against each other (measured: one 2-thread pretraining at 11k tokens/s alone, 2k beside another).
THREADS: dict[str, str] = {}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def encoderkit(*args: str) -> None:
    """One CLI call in a process of its own, as a user runs it; its output goes to the log file beside it."""
    command = [sys.executable, "-m", "encoderkit", *args]
    log(" ".join(command[2:]))
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=THREADS)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}")


def write_data(out: Path, per_class: int, seed: int) -> dict[str, Path]:
    """prose.txt for pretraining and {train, validation, test}.csv for the task; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    group_of = {genre: group for group, genres in GROUPS.items() for genre in genres}
    documents: dict[str, list[str]] = {}
    rows: dict[str, dict[str, list[str]]] = {split: {g: [] for g in GROUPS} for split in ("train", "validation",
                                                                                        "test")}
    for sentence in brown.sentences(brown.fetch()):
        line = brown.text(sentence.words)
        if brown.split_of(sentence.sample) == "train":
            documents.setdefault(sentence.sample, []).append(line)
            split = "train"
        else:
            split = "test" if int(sentence.sample[2:]) % 10 == 0 else "validation"
        if sentence.genre in group_of and len(sentence.words) >= 5:  # headings and fragments carry no task
            rows[split][group_of[sentence.genre]].append(line)
    paths = {"prose": out / "prose.txt"}
    paths["prose"].write_text("\n\n".join("\n".join(lines) for lines in documents.values()) + "\n")
    rng = random.Random(seed)
    sizes = {"train": per_class, "validation": 150, "test": 500}  # a large test set: its noise is ~1.2 points
    for split, by_group in rows.items():
        chosen = [(text, group) for group, texts in by_group.items() for text in rng.sample(texts, sizes[split])]
        rng.shuffle(chosen)
        paths[split] = out / f"{split}.csv"
        with paths[split].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(chosen)
    log(f"prose: {len(documents)} documents, {sum(map(len, documents.values()))} sentences; task: "
        + ", ".join(f"{split} {sizes[split]} x {len(GROUPS)}" for split in sizes))
    return paths


def read_labels(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [row["label"] for row in csv.DictReader(f)]


def pretrain(family: str, run: Path, overrides: list[str]) -> None:
    """One pretraining run; its wall time goes to run/seconds.txt (a reused run keeps the one it had)."""
    if (run / "config.json").is_file() or (run / "discriminator" / "config.json").is_file():
        log(f"reusing {run}")
        return
    recipe, own = RECIPES[family]
    start = time.perf_counter()
    encoderkit("pretrain", recipe, *COMMON, *own, *overrides, f"output.dir={run}", "--overwrite")
    (run / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")


def finetune(model_dir: Path, run: Path, data: dict[str, Path], seed: int, args) -> float:
    """Test accuracy of one fine-tuning run (best epoch on validation)."""
    predictions = run / "predictions" / "test.tsv"
    if not predictions.is_file():
        shutil.rmtree(run, ignore_errors=True)  # what an interrupted run left
        encoderkit("finetune", "classify", "--model", str(model_dir), "--train", str(data["train"]),
                   "--validation", str(data["validation"]), "--test", str(data["test"]),
                   f"finetune.max_seq_length={SEQ}", f"finetune.epochs={args.epochs}", "finetune.warmup_fraction=0.1",
                   f"train.learning_rate={args.finetune_lr}", "train.batch_size=32", "train.weight_decay=0.01",
                   f"train.seed={seed}", f"output.dir={run}")
    with predictions.open() as f:
        predicted = [line.rstrip("\n").split("\t")[1] for line in f.readlines()[1:]]
    truth = read_labels(data["test"])
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


def bag_of_words(data: dict[str, Path]) -> float:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    def texts(split):
        with data[split].open(newline="") as f:
            return [row["text"] for row in csv.DictReader(f)]

    words = CountVectorizer(lowercase=True)
    model = LogisticRegression(max_iter=2000).fit(words.fit_transform(texts("train")), read_labels(data["train"]))
    predicted = model.predict(words.transform(texts("test")))
    return sum(p == t for p, t in zip(predicted, read_labels(data["test"]), strict=True)) / len(predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain-helps"))
    parser.add_argument("--steps", type=int, default=1600, help="pretraining steps (ALBERT's; ELECTRA's too unless "
                        "--electra-steps)")
    parser.add_argument("--electra-steps", type=int, help="ELECTRA's pretraining steps: fewer for equal compute, as "
                        "its step (generator + discriminator) costs more than ALBERT's")
    parser.add_argument("--batch-size", type=int, default=32, help="pretraining sequences per step")
    parser.add_argument("--length-warmup", type=float, default=0.5,
                        help="share of the pretraining steps on shorter rows (data.length_warmup_steps; 0: none)")
    parser.add_argument("--albert-lr", type=float, default=2e-3)
    parser.add_argument("--electra-lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=300, help="labelled training sentences per class")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=2, help="CLI processes at a time")
    args = parser.parse_args()
    THREADS.update(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.jobs)))
    out, start = args.out, time.perf_counter()
    data = write_data(out / "data", args.per_class, seed=0)
    steps = {"albert": args.steps, "electra": args.electra_steps or args.steps}
    tokenizer = out / "tokenizer"
    if not (tokenizer / "spiece.model").is_file():
        encoderkit("tokenizer", "train", "albert-tiny", f"data.source={data['prose']}", "tokenizer.vocab_size=4000",
                   "tokenizer.model_type=unigram", "tokenizer.sample_documents=20000", "--out", str(tokenizer))
    shared = [f"data.source={data['prose']}", f"tokenizer.path={tokenizer}"]

    def budget(count: int) -> list[str]:
        return [f"train.max_steps={count}", f"train.batch_size={args.batch_size}", f"train.warmup_steps={count // 10}",
                "train.seed=0", "data.validation=0.03", f"train.save_every={count}",
                f"train.log_every={max(1, count // 20)}", f"data.length_warmup_steps={int(count * args.length_warmup)}"]

    learning_rates = {"albert": args.albert_lr, "electra": args.electra_lr}
    accuracy: dict[str, dict[int, float]] = {}  # "albert random" -> {seed: test accuracy}

    def encoder_dir(run: Path, family: str) -> Path:
        return run / "discriminator" if family == "electra" else run

    def tune(family: str, init: str, seed: int, model_dir: Path) -> None:
        result = finetune(model_dir, out / f"finetune-{family}-{init}-{seed}", data, seed, args)
        accuracy.setdefault(f"{family} {init}", {})[seed] = result

    # The pretraining runs start first (ELECTRA's, the longest, before ALBERT's); the random-init runs fill the
    # other processes meanwhile; each pretrained model's fine-tunings are queued as soon as it is saved.
    with ThreadPoolExecutor(args.jobs) as pool:
        def pretrained(family: str) -> None:
            run = out / f"pretrain-{family}"
            pretrain(family, run, [*shared, *budget(steps[family]), f"train.learning_rate={learning_rates[family]}"])
            tasks.extend(pool.submit(tune, family, "pretrained", seed, encoder_dir(run, family))
                         for seed in range(args.seeds))

        def random_init(family: str, seed: int) -> None:
            run = out / f"random-{family}-{seed}"
            pretrain(family, run, [*shared, "train.max_steps=0", f"train.seed={seed}"])
            tune(family, "random", seed, encoder_dir(run, family))

        tasks = []  # filled before any task can extend it
        tasks += [pool.submit(pretrained, family) for family in ("electra", "albert")]
        tasks += [pool.submit(random_init, family, seed) for seed in range(args.seeds) for family in RECIPES]
        while tasks:  # a pretraining task adds its fine-tunings before it completes
            tasks.pop(0).result()
    scores = {name: [by_seed[seed] for seed in sorted(by_seed)] for name, by_seed in accuracy.items()}
    seconds = {family: float((out / f"pretrain-{family}" / "seconds.txt").read_text()) for family in RECIPES}
    report(args, steps, seconds, scores, bag_of_words(data), time.perf_counter() - start, out)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def report(args, steps: dict[str, int], pretrain_seconds: dict[str, float], scores: dict[str, list[float]],
           bow: float, seconds: float, out: Path) -> None:
    chance = 100 / len(GROUPS)
    tokens = {family: count * args.batch_size * SEQ for family, count in steps.items()}
    lines = [f"pretraining: steps x {args.batch_size} x {SEQ} tokens, {args.length_warmup:g} of the steps on shorter "
             f"rows; task: genre group of one sentence ({', '.join(GROUPS)}), {args.per_class} training sentences "
             f"per class, test accuracy x100 over {args.seeds} seeds (chance {chance:.1f}; bag-of-words logistic "
             f"regression {100 * bow:.1f})",
             "| model | pretraining | random init | pretrained | gain |", "|---|---|---|---|---|"]
    for family in RECIPES:
        random_, trained = scores[f"{family} random"], scores[f"{family} pretrained"]
        gain = 100 * (statistics.mean(trained) - statistics.mean(random_))
        budget = f"{steps[family]} steps, {tokens[family] / 1e6:.2f}M tokens, {pretrain_seconds[family] / 60:.1f} min"
        lines.append(f"| {family}-tiny | {budget} | {mean_std(random_)} | {mean_std(trained)} | {gain:+.1f} |")
    lines.append(f"{seconds / 60:.1f} min in all, {args.jobs} processes at a time, one thread each")
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"settings": vars(args) | {"out": str(out)}, "tokens": tokens,
                                                  "pretrain_seconds": pretrain_seconds, "test_accuracy": scores,
                                                  "bag_of_words": bow, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
