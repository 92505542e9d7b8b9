"""A run dir on disk: its checkpoints, its metrics log and its run record.

  checkpoints/step-N/   model.safetensors, optimizer.pt (tensors only, read with weights_only=True),
                        trainer_state.json (step, schedule, RNG, batch stream and objective states);
                        each written to a temporary dir and renamed, the last K kept
  metrics.jsonl         one JSON object per logged step or evaluation
  recipe.yaml           the recipe that ran
  versions.json         the Python and package versions it ran with
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from encoderkit.files import rng_state_from_json, rng_state_to_json, write_json, write_text

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
RECORDED_PACKAGES = ["encoderkit", "torch", "accelerate", "datasets", "sentencepiece", "safetensors", "transformers"]


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """Every record of the run's metrics.jsonl, in order."""
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]


def write_run_record(run_dir: Path, recipe_yaml: str) -> None:
    """Save the resolved recipe and the package versions beside the run's checkpoints."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    write_text(run_dir / "recipe.yaml", recipe_yaml)
    write_json(run_dir / "versions.json", versions)


# ---- checkpoints ------------------------------------------------------------------------------


def latest_checkpoint(run_dir: Path, missing_ok: bool = False) -> Path | None:
    found = sorted((Path(run_dir) / CHECKPOINTS).glob("step-*"))
    if not found:
        if missing_ok:
            return None
        raise FileNotFoundError(f"no checkpoint to resume from in {Path(run_dir) / CHECKPOINTS}")
    return found[-1]


def save_checkpoint(run_dir, step, model, optimizer, scheduler, batches, objective, nonfinite_steps,
                    keep_last) -> None:
    """Write checkpoints/step-N atomically (a temp dir, then rename) and keep the last K. Main process only."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    # Optimizer state is tensors and numbers only; it is read back with weights_only=True.
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    state = {
        "step": step,
        "nonfinite_steps": nonfinite_steps,
        "scheduler": scheduler.state_dict(),
        "python_rng": rng_state_to_json(random.getstate()),
        "batches": batches.state_dict() if hasattr(batches, "state_dict") else None,
        "objective": objective.state_dict() if hasattr(objective, "state_dict") else None,
    }
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old)


def load_checkpoint(path: Path, model, optimizer, scheduler, batches, objective) -> dict:
    """Restore everything save_checkpoint wrote; returns the trainer state (step, nonfinite_steps, ...)."""
    load_model(model, str(path / "model.safetensors"))
    saved = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    state = json.loads((path / "trainer_state.json").read_text())
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(rng_state_from_json(state["python_rng"]))
    if state["batches"] is not None and hasattr(batches, "load_state_dict"):
        batches.load_state_dict(state["batches"])
    if state["objective"] is not None and hasattr(objective, "load_state_dict"):
        objective.load_state_dict(state["objective"])
    return state
