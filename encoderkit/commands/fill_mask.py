"""`encoderkit fill-mask`: top-k fillings for every [MASK] of every stdin line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import torch

MASK = "[MASK]"


def load_masked_lm(model_dir: Path):
    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.hf_format import load_pretrained

    model = load_pretrained(model_dir, head="masked_lm")
    model.eval()
    return model, Tokenizer.load(model_dir)


def fill_masks(model, tokenizer, text: str, top_k: int) -> list[list[dict]]:
    """For each [MASK] in `text`, the top-k candidates as {token, token_id, score}."""
    max_len = model.config.max_position_embeddings
    ids = [tokenizer.cls_id, *tokenizer.encode(text)][: max_len - 1] + [tokenizer.sep_id]
    input_ids = torch.tensor([ids])
    mlm_mask = input_ids == tokenizer.mask_id
    with torch.inference_mode():
        logits = model(input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids), mlm_mask=mlm_mask)
    scores, token_ids = logits.float().softmax(-1).topk(top_k, dim=-1)
    return [
        [
            {"token": _display(tokenizer.id_to_piece(int(t))), "token_id": int(t), "score": round(float(s), 5)}
            for s, t in zip(row_scores, row_ids)
        ]
        for row_scores, row_ids in zip(scores, token_ids)
    ]


def _display(piece: str) -> str:
    return piece.replace("\u2581", " ").strip() or piece


def run(model_dir: Path, lines: Iterable[str], top_k: int, fmt: str, out: TextIO = sys.stdout,
        err: TextIO = sys.stderr) -> int:
    """Process lines as they come; a bad line gets an error on `err` and the stream goes on.
    Returns the number of lines that failed."""
    model, tokenizer = load_masked_lm(model_dir)
    failed = 0
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\n")
        if not text.strip():
            continue
        if MASK not in text:
            err.write(f"line {number}: no {MASK} token to fill; write {MASK} where a word is missing\n")
            failed += 1
            continue
        masks = fill_masks(model, tokenizer, text, top_k)
        if len(masks) < text.count(MASK):
            err.write(f"line {number}: only the first {len(masks)} [MASK] tokens fit in "
                      f"{model.config.max_position_embeddings} positions\n")
        if fmt == "jsonl":
            out.write(json.dumps({"line": number, "text": text, "masks": masks}) + "\n")
        else:
            out.write(text + "\n")
            for i, candidates in enumerate(masks, start=1):
                shown = "  ".join(f"{c['token']} ({c['score']:.3f})" for c in candidates)
                out.write(f"  [MASK] {i}: {shown}\n")
        out.flush()
    return failed
