"""`encoderkit fill-mask`: top-k fillings for every [MASK] of every stdin line."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import torch

from encoderkit.commands.lines import LineError, answer_lines
from encoderkit.models.load import max_tokens

MASK = "[MASK]"


def load_masked_lm(model_dir: Path):
    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.load import load_model

    return load_model(model_dir, "masked_lm").eval(), Tokenizer.load(model_dir)


def fill_masks(model, tokenizer, text: str, top_k: int) -> list[list[dict]]:
    """For each [MASK] in `text`, the top-k candidates as {token, token_id, score}."""
    if MASK not in text:
        raise LineError(f"no {MASK} token to fill; write {MASK} where a word is missing")
    max_len = max_tokens(model)
    # [MASK] stands for the model's own mask token (RoBERTa's <mask>)
    ids = [tokenizer.cls_id, *tokenizer.encode(text.replace(MASK, tokenizer.mask_token))][: max_len - 1]
    ids.append(tokenizer.sep_id)
    input_ids = torch.tensor([ids])
    mlm_mask = input_ids == tokenizer.mask_id
    if not mlm_mask.any():
        raise LineError(f"every {MASK} lies beyond the model's {max_len} positions")
    with torch.inference_mode():
        logits = model(input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids), mlm_mask=mlm_mask)
    scores, token_ids = logits.float().softmax(-1).topk(min(top_k, logits.shape[-1]), dim=-1)
    return [
        [
            {"token": tokenizer.token_text(int(t)), "token_id": int(t), "score": round(float(s), 5)}
            for s, t in zip(row_scores, row_ids)
        ]
        for row_scores, row_ids in zip(scores, token_ids)
    ]


def _render(text: str, result: dict) -> str:
    rows = [text]
    for i, candidates in enumerate(result["masks"], start=1):
        rows.append(f"  [MASK] {i}: " + "  ".join(f"{c['token']} ({c['score']:.3f})" for c in candidates))
    return "\n".join(rows) + "\n"


def run(model_dir: Path, lines: Iterable[str], top_k: int, fmt: str, out: TextIO = sys.stdout,
        err: TextIO = sys.stderr) -> int:
    """Answer each stdin line; returns the number of lines that failed."""
    model, tokenizer = load_masked_lm(model_dir)
    return answer_lines(lines, lambda text: {"masks": fill_masks(model, tokenizer, text, top_k)}, _render,
                        fmt, out, err)
