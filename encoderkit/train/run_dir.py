"""A run dir on disk: its checkpoints, its metrics log and its run record.

  checkpoints/step-N/   model.safetensors, optimizer.pt (tensors only, read with weights_only=True),
                        trainer_state.json (step, batch geometry, schedule, RNG, batch stream and objective
                        states), manifest.json (every file and its size, written last); each written to a
                        temporary dir and renamed, the last K kept
  metrics.jsonl         one JSON object per logged step or evaluation (non-finite numbers as null, their
                        keys listed under "nonfinite")
  recipe.yaml           the recipe that ran
  versions.json         the Python and package versions it ran with

Resume takes the newest complete checkpoint: one whose manifest is there and whose files have the sizes
it lists and load. Old checkpoints are renamed out of the step-* names before they are deleted, so a kill
during rotation never leaves a half-deleted checkpoint under a name resume would pick.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from encoderkit.errors import UserError
from encoderkit.files import rng_state_from_json, rng_state_to_json, write_json, write_text

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
MANIFEST = "manifest.json"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "trainer_state.json")
RECORDED_PACKAGES = ["encoderkit", "torch", "accelerate", "datasets", "sentencepiece", "safetensors", "transformers"]


class RunDirError(UserError):
    """A run dir, checkpoint or file in it that cannot be read or written; the message names the path."""


@contextmanager
def writing(path: Path):
    """Turn an OSError while writing under `path` (a full disk, no permission) into one line naming the
    file and the cause."""
    try:
        yield
    except OSError as err:
        where = err.filename or path
        raise RunDirError(f"{where}: cannot write: {err.strerror or err}; free disk space or fix the "
                          "permissions, then run again (--resume continues from the last checkpoint)") from None
    except SafetensorError as err:  # safetensors' own writer reports I/O errors as this
        raise RunDirError(f"{path}: cannot write: {err}; free disk space or fix the permissions, then run "
                          "again (--resume continues from the last checkpoint)") from None


# ---- metrics.jsonl ----------------------------------------------------------------------------


def json_record(record: dict) -> dict:
    """`record` with non-finite numbers as null and their keys under "nonfinite": JSON has no NaN."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return record
    return {**{k: None if k in bad else v for k, v in record.items()}, "nonfinite": bad}


def append_metrics(path: Path, record: dict) -> None:
    with writing(path), open(path, "a") as f:
        f.write(json.dumps(json_record(record), allow_nan=False) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """Every record of the run's metrics.jsonl, in order."""
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]


def drop_metrics_after(run_dir: Path, step: int) -> None:
    """Rewrite metrics.jsonl (atomically) without the records logged after `step`: a resume from the
    checkpoint at `step` logs those steps again, and each step is kept once."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines(keepends=True) if line.strip()]
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) < len(lines):
        with writing(path):
            write_text(path, "".join(kept))


def _logged_step(line: str) -> float:
    try:
        return json.loads(line).get("step", math.inf)
    except (json.JSONDecodeError, AttributeError):  # a line cut by a kill mid-append: logged after any checkpoint
        return math.inf


def write_run_record(run_dir: Path, recipe_yaml: str) -> None:
    """Save the resolved recipe and the package versions beside the run's checkpoints."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    with writing(run_dir):
        write_text(run_dir / "recipe.yaml", recipe_yaml)
        write_json(run_dir / "versions.json", versions)


# ---- checkpoints ------------------------------------------------------------------------------


def latest_checkpoint(run_dir: Path, missing_ok: bool = False) -> Path | None:
    """The newest checkpoints/step-N, complete or not (see resume_checkpoint for the one resume takes)."""
    found = sorted((Path(run_dir) / CHECKPOINTS).glob("step-*"))
    if not found:
        if missing_ok:
            return None
        raise FileNotFoundError(f"no checkpoint to resume from in {Path(run_dir) / CHECKPOINTS}")
    return found[-1]


def save_checkpoint(run_dir, step, model, optimizer, scheduler, batches, objective, nonfinite_steps,
                    keep_last, geometry: dict | None = None) -> None:
    """Write checkpoints/step-N atomically (a temp dir, its manifest last, then rename) and keep the last K.
    Main process only. `geometry` (batch size, accumulation) must match on resume."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    with writing(root):
        for leftover in [*root.glob(".tmp-step-*"), *root.glob(".deleted-*")]:  # from a killed save or rotation
            shutil.rmtree(leftover)
        tmp.mkdir(parents=True)
        with writing(tmp / "model.safetensors"):
            save_model(model, str(tmp / "model.safetensors"))
        # Optimizer state is tensors and numbers only; it is read back with weights_only=True. Serialised in
        # memory and written by Python, so a full disk is an OSError naming its cause.
        buffer = io.BytesIO()
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, buffer)
        (tmp / "optimizer.pt").write_bytes(buffer.getvalue())
        state = {
            "step": step,
            "nonfinite_steps": nonfinite_steps,
            "geometry": geometry or {},
            "scheduler": scheduler.state_dict(),
            "python_rng": rng_state_to_json(random.getstate()),
            "batches": batches.state_dict() if hasattr(batches, "state_dict") else None,
            "objective": objective.state_dict() if hasattr(objective, "state_dict") else None,
        }
        write_text(tmp / "trainer_state.json", json.dumps(state))
        sizes = {name: (tmp / name).stat().st_size for name in CHECKPOINT_FILES}
        write_json(tmp / MANIFEST, {"files": sizes})  # last: a checkpoint without it is incomplete
        if final.exists():
            _delete(final)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-keep_last]:
            _delete(old)


def _delete(checkpoint: Path) -> None:
    """Rename out of the step-* names first: a kill mid-delete leaves a .deleted-* that resume never picks."""
    trash = checkpoint.with_name(f".deleted-{checkpoint.name}")
    os.replace(checkpoint, trash)
    shutil.rmtree(trash)


class DamagedCheckpoint(Exception):
    """A checkpoint that is incomplete or unreadable; resume falls back to an older one."""


def resume_checkpoint(run_dir, model, optimizer, scheduler, batches, objective, geometry: dict | None = None,
                      log=print, set_aside: bool = True) -> dict:
    """Restore the newest complete checkpoint (saying through `log` which newer ones were skipped and why)
    and return its trainer state (step, nonfinite_steps, ...). Skipped ones are moved aside to
    checkpoints/damaged-step-N, out of rotation, if `set_aside` (the main process). A checkpoint of another
    model size or batch geometry is refused, naming the setting."""
    root = Path(run_dir) / CHECKPOINTS
    skipped = []
    for path in sorted(root.glob("step-*"), reverse=True):
        try:
            saved_optimizer, state = _read_checkpoint(path, model)
        except DamagedCheckpoint as err:
            log(f"skipping {path}: {err}")
            skipped.append((path, f"{path.name}: {err}"))
            continue
        _check_geometry(state.get("geometry", {}), geometry or {}, path)
        try:
            load_model(model, str(path / "model.safetensors"))
        except (RuntimeError, SafetensorError) as err:
            raise RunDirError(f"{path / 'model.safetensors'}: does not fit the model ({_first_line(err)}); "
                              "the model settings cannot change on resume") from None
        optimizer.load_state_dict(saved_optimizer["optimizer"])
        torch.set_rng_state(saved_optimizer["torch_rng"])
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(rng_state_from_json(state["python_rng"]))
        if state["batches"] is not None and hasattr(batches, "load_state_dict"):
            batches.load_state_dict(state["batches"])
        if state["objective"] is not None and hasattr(objective, "load_state_dict"):
            objective.load_state_dict(state["objective"])
        for damaged, _ in skipped if set_aside else ():
            aside = damaged.with_name(f"damaged-{damaged.name}")
            with writing(root):
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(damaged, aside)
        return state
    reasons = "; ".join(reason for _, reason in skipped) or "there is none"
    raise RunDirError(f"{root}: no complete checkpoint to resume from ({reasons}); start a new run in another "
                      "output.dir")


def complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose manifest lists files of the sizes on disk (what resume will try first)."""
    for path in sorted((Path(run_dir) / CHECKPOINTS).glob("step-*"), reverse=True):
        try:
            _check_manifest(path)
            return path
        except DamagedCheckpoint:
            continue
    return None


def _check_manifest(path: Path) -> None:
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        raise DamagedCheckpoint(f"no {MANIFEST} (it is written last: the save did not finish)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedCheckpoint(f"{MANIFEST} unreadable ({_first_line(err)})") from None
    for name in CHECKPOINT_FILES:
        file = path / name
        if name not in files:
            raise DamagedCheckpoint(f"{MANIFEST} does not list {name}")
        if not file.is_file():
            raise DamagedCheckpoint(f"{name} is missing")
        if file.stat().st_size != files[name]:
            raise DamagedCheckpoint(f"{name} has {file.stat().st_size} bytes, the manifest says {files[name]}")


def _read_checkpoint(path: Path, model) -> tuple[dict, dict]:
    """The optimizer file and trainer state of a checkpoint, after checking its manifest and that every
    file parses; a tensor of another shape than the model's is a RunDirError (no older checkpoint fits)."""
    _check_manifest(path)
    weights = path / "model.safetensors"
    try:
        with safe_open(str(weights), "pt") as file:
            shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except Exception as err:  # safetensors raises several types for a damaged header
        raise DamagedCheckpoint(f"model.safetensors unreadable ({_first_line(err)})") from None
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for name, shape in shapes.items():
        if name in ours and ours[name] != shape:
            raise RunDirError(f"{weights}: {name} has shape {list(shape)}, the model {list(ours[name])}; "
                              "the model size cannot change on resume (start a new run in another output.dir)")
    try:
        saved_optimizer = torch.load(path / "optimizer.pt", weights_only=True)
    except Exception as err:  # unpickling garbage raises many types
        raise DamagedCheckpoint(f"optimizer.pt unreadable ({_first_line(err)})") from None
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except ValueError as err:
        raise DamagedCheckpoint(f"trainer_state.json unreadable ({_first_line(err)})") from None
    if not isinstance(state, dict) or not {"step", "scheduler", "python_rng"} <= set(state):
        raise DamagedCheckpoint("trainer_state.json lacks the step, schedule or RNG state")
    return saved_optimizer, state


def _check_geometry(saved: dict, now: dict, path: Path) -> None:
    for key, value in now.items():
        if key in saved and saved[key] != value:
            raise RunDirError(f"train.{key}: {value}, but the run was checkpointed with {saved[key]} ({path}); "
                              "the batch geometry cannot change on resume (start a new run in another output.dir)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
