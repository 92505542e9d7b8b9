"""`encoderkit rtd`: for each token of each stdin line, the discriminator's probability that it was replaced.

A line longer than the model's positions is split into consecutive windows, so every token is scored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO, TextIO

import torch

from encoderkit.commands.lines import (
    DEFAULT_BATCH_SIZE,
    LineError,
    LineTask,
    Prepared,
    announce_if_slow,
    answer_stream,
    check_options,
    pad_batch,
    resolve_device,
)
from encoderkit.models.load import max_tokens


class ReplacedTokenScorer:
    """The LineTask of rtd: a line -> windows of its tokens -> P(replaced) per token."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.width = max_tokens(model) - 2  # [CLS] and [SEP] around each window

    def prepare(self, text: str) -> Prepared:
        ids = self.tokenizer.encode(text)
        if not ids:
            raise LineError("no tokens: the line holds only characters the tokenizer drops")
        windows = [ids[start:start + self.width] for start in range(0, len(ids), self.width)]
        note = (f"{len(ids)} tokens, more than the model's {self.width + 2} positions: scored in "
                f"{len(windows)} windows of up to {self.width}") if len(windows) > 1 else None
        return Prepared(len(ids), windows, note)

    def run(self, lines: list[list[list[int]]]) -> list[dict]:
        windows = [window for line in lines for window in line]
        t = self.tokenizer
        input_ids, attention_mask = pad_batch([[t.cls_id, *w, t.sep_id] for w in windows], t.pad_id, self.device)
        with torch.inference_mode():
            probabilities = self.model(input_ids, attention_mask, torch.zeros_like(input_ids)).float().sigmoid()
        rows = iter(probabilities.tolist())
        answers = []
        for line in lines:
            tokens = []
            for window in line:
                row = next(rows)
                tokens += [{"token": t.id_to_piece(i), "token_id": i, "replaced": p} for i, p in zip(window, row[1:])]
            answers.append({"tokens": tokens})
        return answers


def _render(text: str, answer: dict) -> str:
    cells = "  ".join(f"{t['token']} {t['replaced']:.2f}" for t in answer["tokens"])
    return f"{text}\n  {cells}\n"


def run(model_dir: Path, stream: BinaryIO, fmt: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
        batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", dtype: str = "fp32") -> int:
    """Answer each line of the binary `stream`; returns the number of lines that failed."""
    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.load import load_model, vocab_size

    check_options(fmt, batch_size)
    device, dtype = resolve_device(device, dtype)
    with announce_if_slow(f"loading {model_dir} ..."):
        model = load_model(model_dir, "discriminator", require_head=True).eval()
        tokenizer = Tokenizer.load(model_dir, vocab_size(model))
        model = model.to(device=device, dtype=dtype)
    scorer = ReplacedTokenScorer(model, tokenizer)
    return answer_stream(stream, LineTask(scorer.prepare, scorer.run, _render), fmt, out, err, batch_size)
