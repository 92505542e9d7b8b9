"""Multiple choice: cross-entropy over each example's choices (softmax across the C scores).

Batches come from encoderkit.data.choice: input_ids (B, C, S) and `labels` (B,), the right choice's index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChoiceObjective:
    """The model maps (input_ids, attention_mask, token_type_ids) of shape (B, C, S) to scores (B, C)."""

    shown_metrics = (("accuracy", "acc {:.3f}"),)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        scores = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = F.cross_entropy(scores.float(), batch["labels"])
        accuracy = (scores.detach().argmax(-1) == batch["labels"]).float().mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        """The chosen index of each example (what accuracy and the predictions file take)."""
        return scores.argmax(-1)
