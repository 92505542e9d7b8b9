"""The training loop on a toy model: checkpoints, exact resume, non-finite steps, accumulation."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from encoderkit.train.config import TrainConfig
from encoderkit.train.loop import TrainingDiverged, train
from encoderkit.train.optim import Lamb, warmup_then_decay
from encoderkit.train.run_dir import latest_checkpoint


class ToyStream:
    """Deterministic batches from a position counter, resumable like the real stream."""

    def __init__(self, rows=8, poison_from=None):
        self.position, self.rows, self.poison_from = 0, rows, poison_from

    def __iter__(self):
        return self

    def __next__(self):
        g = torch.Generator().manual_seed(self.position)
        x = torch.randn(self.rows, 6, generator=g)
        if self.poison_from is not None and self.position >= self.poison_from:
            x = x * float("nan")
        self.position += 1
        return {"input_ids": x, "attention_mask": torch.ones(self.rows, 6), "labels": (x.sum(1) > 0).long()}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.dense = nn.Linear(6, 16)
        self.dropout = nn.Dropout(0.2)  # makes resume depend on the restored RNG state
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        return self.out(self.dropout(torch.relu(self.dense(x))))


def toy_objective(model, batch):
    logits = model(batch["input_ids"])
    loss = F.cross_entropy(logits, batch["labels"])
    return loss, {"loss": loss.item(), "accuracy": float((logits.argmax(-1) == batch["labels"]).float().mean())}


def cfg(**kw):
    base = dict(max_steps=6, batch_size=8, learning_rate=1e-2, warmup_steps=2, save_every=3, keep_last=2, log_every=2)
    base.update(kw)
    return TrainConfig(**base)


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_checkpoints_are_kept_and_metrics_logged(tmp_path):
    train(ToyModel(), toy_objective, ToyStream(), cfg(save_every=2, keep_last=2), tmp_path)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-00000004", "step-00000006"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert {"loss", "accuracy", "lr", "tokens_per_s"} <= set(records[0])


def test_resume_gives_the_same_weights(tmp_path):
    full = tmp_path / "full"
    train(ToyModel(), toy_objective, ToyStream(), cfg(), full)
    # Pretend the run died after step 3: keep only that checkpoint, then resume to step 6.
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step-00000006")
    torch.manual_seed(123)  # resume must not depend on the caller's RNG state
    train(ToyModel(), toy_objective, ToyStream(), cfg(), part, resume=True)
    a = weights(latest_checkpoint(full))
    b = weights(latest_checkpoint(part))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_nonfinite_steps_are_skipped_then_stop_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row .* at step 7; lower train.learning_rate "
                                               r"\(now 0.01\); resume from .*step-00000004 \(--resume\)"):
        train(ToyModel(), toy_objective, ToyStream(poison_from=4), cfg(max_steps=20, save_every=2,
                                                                        max_nonfinite_steps=3), tmp_path)
    # Steps 5-7 were skipped and no checkpoint was written during them: the last one is step 4's, all finite.
    last = latest_checkpoint(tmp_path)
    assert last.name == "step-00000004"
    assert all(torch.isfinite(tensor).all() for tensor in weights(last).values())
    # metrics.jsonl stays JSON: the non-finite loss of steps 5-6 is null and flagged.
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[2]["loss"] is None and "loss" in records[2]["nonfinite"] and records[2]["nonfinite_steps"] == 2
    assert "nonfinite" not in records[1]


def test_an_update_that_makes_weights_nonfinite_is_rolled_back(tmp_path):
    # A NaN clipping norm turns every gradient into NaN while the loss and the gradient's norm stay finite.
    model = ToyModel()
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"last: weights after the update\) at step 2; set a finite "
                                               r"train.max_grad_norm \(now nan\); no checkpoint was written"):
        train(model, toy_objective, ToyStream(), cfg(max_grad_norm=float("nan"), save_every=1, max_nonfinite_steps=2),
              tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, initial[name]), name
    assert latest_checkpoint(tmp_path, missing_ok=True) is None


def test_rollback_restores_the_optimizer_state_too(tmp_path):
    # One good step, then an update that breaks the weights: the state after it is the state after step 1.
    from encoderkit.train.loop import _Rollback

    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    after_one = (w.detach().clone(), {k: v.clone() for k, v in opt.state[w].items()})
    rollback = _Rollback([w], opt)
    w.grad = torch.full((3,), float("nan"))
    opt.step()
    assert not torch.isfinite(w).all()
    rollback.restore()
    assert torch.equal(w.detach(), after_one[0])
    for key, value in after_one[1].items():
        assert torch.equal(opt.state[w][key], value), key


def test_accumulation_matches_one_big_batch(tmp_path):
    # Two micro-batches of 4 rows (equal sizes, mean losses) give the same update as one of 8.
    class Halves(ToyStream):
        def __next__(self):
            if not hasattr(self, "pending") or not self.pending:
                big = super().__next__()
                self.pending = [{k: v[:4] for k, v in big.items()}, {k: v[4:] for k, v in big.items()}]
            return self.pending.pop(0)

    class NoDropout(ToyModel):
        def forward(self, x):
            return self.out(torch.relu(self.dense(x)))

    one = train(NoDropout(), toy_objective, ToyStream(), cfg(max_steps=3, save_every=100), tmp_path / "a")
    two = train(NoDropout(), toy_objective, Halves(), cfg(max_steps=3, save_every=100,
                                                          gradient_accumulation_steps=2), tmp_path / "b")
    for p, q in zip(one.model.parameters(), two.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_schedule_warms_up_then_decays_to_zero():
    f = warmup_then_decay(cfg(max_steps=10, warmup_steps=4))
    values = [f(s) for s in range(11)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[10] == 0.0
    assert all(a >= b for a, b in zip(values[4:], values[5:]))


def test_lamb_scales_update_by_trust_ratio():
    w = nn.Parameter(torch.full((4,), 2.0))
    opt = Lamb([w], lr=0.1, betas=(0.0, 0.0), eps=0.0)
    w.grad = torch.tensor([1.0, -1.0, 1.0, -1.0])
    opt.step()
    # Adam update is sign(g) (norm 2); ||w|| = 4 so the trust ratio is 2: step = 0.1 * 2 * sign(g).
    assert torch.allclose(w.detach(), torch.tensor([1.8, 2.2, 1.8, 2.2]))


def test_every_finetune_command_refuses_a_used_or_file_output_dir(tmp_path):
    from encoderkit.train.finetune import OutputDirInUse, check_output_dir

    check_output_dir(tmp_path / "new", resume=False)  # no dir yet: fine
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "results.json").write_text("{}")
    with pytest.raises(OutputDirInUse, match=r"'.*used' is not empty; pass --resume"):
        check_output_dir(tmp_path / "used", resume=False)
    check_output_dir(tmp_path / "used", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirInUse, match=r"'.*file' is a file; choose a directory"):
        check_output_dir(tmp_path / "file", resume=True)
