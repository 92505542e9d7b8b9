"""What both sides of a row share: random batches, the AdamW settings, and the step wrappers.

Weights are random (fresh initialisation) and batches are random token ids from a fixed seed, so nothing
is downloaded and both sides see exactly the same inputs.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

LEARNING_RATE, WEIGHT_DECAY, ADAM_EPSILON = 1e-4, 0.01, 1e-6
MASK_ID = 4  # ALBERT's [MASK]; the value does not matter for speed
MASKED_FRACTION = 0.15


def pretraining_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-length sequences (as pretraining packs them), two segments, 15% of positions masked."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
    masked_per_row = round(MASKED_FRACTION * seq_len)
    positions = torch.rand(batch_size, seq_len, generator=g).argsort(-1)[:, :masked_per_row]
    mlm_mask = torch.zeros(batch_size, seq_len, dtype=torch.bool).scatter_(1, positions, True)
    token_type_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    token_type_ids[:, seq_len // 2:] = 1
    return {
        "input_ids": input_ids.masked_fill(mlm_mask, MASK_ID),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        "token_type_ids": token_type_ids,
        "mlm_labels": input_ids.masked_fill(~mlm_mask, -100),
        "sop_labels": torch.randint(0, 2, (batch_size,), generator=g),
    }


CLASSIFICATION_LENGTHS = (32, 128)  # real tokens per example, drawn uniformly; the rest is padding


def classification_batch(batch_size: int, seq_len: int, vocab_size: int, num_labels: int = 2,
                         seed: int = 0, pad_id: int = 0, type_vocab_size: int = 2) -> dict[str, torch.Tensor]:
    """Sentence pairs of CLASSIFICATION_LENGTHS real tokens, padded to seq_len with pad_id as GLUE scripts pad
    them; one token type where the model has one (RoBERTa's)."""
    g = torch.Generator().manual_seed(seed)
    shortest, longest = CLASSIFICATION_LENGTHS
    lengths = torch.randint(shortest, min(longest, seq_len) + 1, (batch_size, 1), generator=g)
    positions = torch.arange(seq_len)
    real = positions < lengths
    second_segment = (positions >= lengths // 2) & real
    return {
        "input_ids": torch.randint(5, vocab_size, (batch_size, seq_len), generator=g).masked_fill(~real, pad_id),
        "attention_mask": real.long(),
        "token_type_ids": second_segment.long() if type_vocab_size > 1 else torch.zeros_like(real, dtype=torch.long),
        "labels": torch.randint(0, num_labels, (batch_size,), generator=g),
    }


def our_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW as encoderkit's training loop builds it."""
    from encoderkit.train.config import TrainConfig
    from encoderkit.train.optim import build_optimizer, parameter_groups

    config = TrainConfig(optimizer="adamw", learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                         adam_epsilon=ADAM_EPSILON)
    return build_optimizer(parameter_groups(model, WEIGHT_DECAY), config)


def adamw(param_groups: list[dict]) -> torch.optim.Optimizer:
    """The reference's optimizer: torch's AdamW with the same settings (transformers' Trainer uses it too)."""
    return torch.optim.AdamW(param_groups, lr=LEARNING_RATE, eps=ADAM_EPSILON)


def reference_decay_groups(model: torch.nn.Module) -> list[dict]:
    """transformers' Trainer grouping: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith(("bias", "LayerNorm.weight")) else decay).append(param)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, bf16: bool = False):
    """One optimizer step: forward and loss (under bf16 autocast if asked), backward, AdamW."""
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(bf16):
            loss = loss_fn()
        loss.backward()
        optimizer.step()

    return step


def inference_step(model: torch.nn.Module, forward, bf16: bool = False):
    """One batch through the model without autograd."""
    model.eval()

    def step():
        with torch.inference_mode(), autocast(bf16):
            forward()

    return step
