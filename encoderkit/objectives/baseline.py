"""The unigram baseline for masked-token accuracy.

A model that has only learned token frequencies always answers the most frequent token; its
accuracy is the share of masked labels equal to that token. Logged beside the model's accuracy,
the gap says whether the model learned more than frequencies (a loss drop alone does not).
"""

from __future__ import annotations

import torch


class UnigramBaseline:
    def __init__(self, vocab_size: int):
        self.label_counts = torch.zeros(vocab_size, dtype=torch.long)

    def accuracy(self, targets: torch.Tensor) -> float:
        """Accuracy of answering the most frequent label seen so far, then count these labels."""
        targets = targets.detach().cpu()
        guess = int(self.label_counts.argmax())
        self.label_counts += torch.bincount(targets, minlength=self.label_counts.numel())
        return float((targets == guess).float().mean()) if targets.numel() else 0.0

    def state_dict(self) -> dict:
        return {"label_counts": self.label_counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.label_counts = torch.tensor(state["label_counts"], dtype=torch.long)
