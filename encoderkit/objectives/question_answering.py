"""Extractive question answering: cross-entropy of the answer's start and end token, averaged.

Batches come from encoderkit.data.squad's training features: `labels` (B, 2), each window's answer start and end
token ((0, 0), the [CLS] token, where it holds no answer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpanObjective:
    """(cross-entropy(start) + cross-entropy(end)) / 2 over each feature's tokens, as transformers'
    *ForQuestionAnswering compute it: positions beyond the sequence are clamped to its length and ignored.

    The model maps (input_ids, attention_mask, token_type_ids) to (start_logits, end_logits), (B, S) each.
    """

    shown_metrics = (("start_accuracy", "start {:.3f}"), ("end_accuracy", "end {:.3f}"))

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        start_logits, end_logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        start_positions, end_positions = batch["labels"].unbind(-1)
        loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        metrics = {"loss": float(loss.detach())}
        for name, logits, positions in (("start", start_logits, start_positions), ("end", end_logits, end_positions)):
            metrics[f"{name}_accuracy"] = float((logits.detach().argmax(-1) == positions).float().mean())
        return loss, metrics


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
              end_positions: torch.Tensor) -> torch.Tensor:
    ignored = start_logits.shape[1]
    losses = [F.cross_entropy(logits.float(), positions.clamp(0, ignored), ignore_index=ignored)
              for logits, positions in ((start_logits, start_positions), (end_logits, end_positions))]
    return (losses[0] + losses[1]) / 2
