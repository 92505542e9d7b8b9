"""`encoderkit fill-mask`: top-k fillings for every [MASK] of every stdin line.

`[MASK]` in the input stands for the model's own mask token, however its tokenizer spells it. A line longer
than the model's positions is answered from windows that each hold some of its masks and the tokens around
them, so every mask is answered.
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

MASK = "[MASK]"


def load_masked_lm(model_dir: Path, device="cpu", dtype=torch.float32):
    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.load import load_model, vocab_size

    with announce_if_slow(f"loading {model_dir} ..."):
        model = load_model(model_dir, "masked_lm", require_head=True).eval()
        tokenizer = Tokenizer.load(model_dir, vocab_size(model))
        return model.to(device=device, dtype=dtype), tokenizer


def mask_windows(length: int, positions: list[int], width: int) -> list[tuple[int, int, list[int]]]:
    """Windows (start, end, mask positions) of at most `width` tokens of a sequence of `length` tokens that
    together hold every mask position once: masks less than `width` apart share a window, centred on them."""
    windows = []
    i = 0
    while i < len(positions):
        group = [p for p in positions[i:] if p - positions[i] < width]
        slack = width - (group[-1] - group[0] + 1)  # tokens of context around the group
        start = max(0, min(group[0] - slack // 2, length - width))
        windows.append((start, min(length, start + width), group))
        i += len(group)
    return windows


class MaskFiller:
    """The LineTask of fill-mask: a line -> its windows -> top-k candidates per mask."""

    def __init__(self, model, tokenizer, top_k: int):
        self.model, self.tokenizer, self.top_k = model, tokenizer, top_k
        self.device = next(model.parameters()).device
        self.width = max_tokens(model) - 2  # [CLS] and [SEP] around each window

    def prepare(self, text: str) -> Prepared:
        if MASK not in text:
            raise LineError(f"no {MASK} token to fill; write {MASK} where a word is missing")
        ids = self.tokenizer.encode(text.replace(MASK, self.tokenizer.mask_token))
        positions = [i for i, token in enumerate(ids) if token == self.tokenizer.mask_id]
        if not positions:  # a tokenizer that does not keep its mask token whole in text
            raise LineError(f"{MASK} did not come out of the tokenizer as its mask token {self.tokenizer.mask_token}")
        windows = mask_windows(len(ids), positions, self.width)
        sequences = [([self.tokenizer.cls_id, *ids[start:end], self.tokenizer.sep_id],
                      [p - start + 1 for p in group]) for start, end, group in windows]
        note = None
        if len(ids) > self.width:
            note = (f"{len(ids)} tokens, more than the model's {self.width + 2} positions: each {MASK} is "
                    f"answered from the {self.width} tokens around it ({len(windows)} window(s))")
        return Prepared(sum(len(ids) for ids, _ in sequences), sequences, note)

    def run(self, lines: list[list[tuple[list[int], list[int]]]]) -> list[dict]:
        sequences = [sequence for line in lines for sequence in line]
        input_ids, attention_mask = pad_batch([ids for ids, _ in sequences], self.tokenizer.pad_id, self.device)
        mlm_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for row, (_, positions) in enumerate(sequences):
            mlm_mask[row, positions] = True
        with torch.inference_mode():
            logits = self.model(input_ids, attention_mask, torch.zeros_like(input_ids), mlm_mask=mlm_mask)
            # (masks, V), row-major: each line's masks in order, as its windows hold them
            scores, token_ids = logits.float().softmax(-1).topk(min(self.top_k, logits.shape[-1]), dim=-1)
        candidates = [[{"token": self.tokenizer.token_text(t), "token_id": t, "score": s} for s, t in zip(row_s, row_t)]
                      for row_s, row_t in zip(scores.tolist(), token_ids.tolist())]
        answers, first = [], 0
        for line in lines:
            count = sum(len(positions) for _, positions in line)
            answers.append({"masks": candidates[first:first + count]})
            first += count
        return answers


def _render(text: str, answer: dict) -> str:
    rows = [text]
    for i, candidates in enumerate(answer["masks"], start=1):
        rows.append(f"  {MASK} {i}: " + "  ".join(f"{c['token']} ({c['score']:.3f})" for c in candidates))
    return "\n".join(rows) + "\n"


def run(model_dir: Path, stream: BinaryIO, top_k: int, fmt: str, out: TextIO = sys.stdout,
        err: TextIO = sys.stderr, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu",
        dtype: str = "fp32") -> int:
    """Answer each line of the binary `stream`; returns the number of lines that failed."""
    check_options(fmt, batch_size)
    model, tokenizer = load_masked_lm(model_dir, *resolve_device(device, dtype))
    filler = MaskFiller(model, tokenizer, top_k)
    return answer_stream(stream, LineTask(filler.prepare, filler.run, _render), fmt, out, err, batch_size)
