"""`encoderkit rtd`: for each token of each stdin line, the discriminator's probability that it
was replaced."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import torch

from encoderkit.commands.lines import answer_lines
from encoderkit.models.load import max_tokens


def replaced_scores(model, tokenizer, text: str) -> list[dict]:
    max_len = max_tokens(model)
    ids = tokenizer.encode(text)[: max_len - 2]
    input_ids = torch.tensor([[tokenizer.cls_id, *ids, tokenizer.sep_id]])
    with torch.inference_mode():
        logits = model(input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids))
    probs = logits[0, 1:-1].float().sigmoid()
    return [{"token": tokenizer.id_to_piece(i), "token_id": i, "replaced": round(float(p), 5)}
            for i, p in zip(ids, probs)]


def _render(text: str, result: dict) -> str:
    cells = "  ".join(f"{t['token']} {t['replaced']:.2f}" for t in result["tokens"])
    return f"{text}\n  {cells}\n"


def run(model_dir: Path, lines: Iterable[str], fmt: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.load import load_model, vocab_size

    model = load_model(model_dir, "discriminator", require_head=True).eval()
    tokenizer = Tokenizer.load(model_dir, vocab_size(model))
    return answer_lines(lines, lambda text: {"tokens": replaced_scores(model, tokenizer, text)}, _render,
                        fmt, out, err)
