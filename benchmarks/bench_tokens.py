"""Token-classification accuracy: `encoderkit finetune tokens` against transformers' AutoModelForTokenClassification
fine-tuned from the same checkpoint on the same tagged files, for the same number of optimizer steps with the same
settings (finetune-tokens recipe: AdamW, lr, batch size, no warmup, no weight decay, linear decay, clipping 1.0,
labels on each word's first piece). Prints both validation token accuracies (and entity F1 for BIO tags).

    python -m benchmarks.bench_tokens --model MODEL_DIR --train train.conll --validation dev.conll
        [--tag-column -1] [--epochs 1] [--batch-size 32] [--learning-rate 5e-5] [--max-seq-length 128]
        [--seed 0] [--out runs/bench-tokens]

transformers' side follows run_ner: is_split_into_words, truncation at max_seq_length (where ours splits a long
sentence into windows; words past the cut count as wrong), predictions read at each word's first piece.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch


def ours(args, data) -> dict:
    from encoderkit.commands.finetune_tokens import finetune_tokens
    from encoderkit.recipes import load_finetune_recipe

    recipe = load_finetune_recipe("finetune-tokens", [
        f"finetune.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
        f"train.learning_rate={args.learning_rate}", f"finetune.max_seq_length={args.max_seq_length}",
        f"train.seed={args.seed}", f"output.dir={args.out / 'ours'}"])
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


def main() -> None:
    from encoderkit.data.tokens import read_tagged, tag_vocabulary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--validation", type=Path, required=True)
    parser.add_argument("--tag-column", type=int, default=-1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-tokens"))
    args = parser.parse_args()
    data = {split: read_tagged(getattr(args, split), args.tag_column) for split in ("train", "validation")}
    tags = tag_vocabulary(data["train"], {"validation": data["validation"]})
    results = {"encoderkit": ours(args, data)}
    results["transformers"] = theirs(args, data, results["encoderkit"]["steps"], tags)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
