"""Checkpoints on a toy loop: a manifest written last, resume from the newest complete checkpoint, rotation by
rename, refused changes of geometry or model size, one-line write errors, metrics logged once per step."""

import io
import json
import shutil

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from test_loop import ToyModel, ToyStream, cfg, toy_objective, weights
from torch import nn

from encoderkit.train.loop import train
from encoderkit.train.run_dir import MANIFEST, RunDirError, latest_checkpoint, read_metrics

STEP3, STEP6 = "step-00000003", "step-00000006"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6."""
    out = tmp_path_factory.mktemp("full")
    train(ToyModel(), toy_objective, ToyStream(), cfg(), out)
    return out


def copy_of(full_run, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(full_run, part)
    return part


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_manifest_lists_every_file_with_its_size(full_run):
    checkpoint = full_run / "checkpoints" / STEP6
    files = json.loads((checkpoint / MANIFEST).read_text())["files"]
    assert set(files) == {"model.safetensors", "optimizer.pt", "trainer_state.json"}
    for name, size in files.items():
        assert (checkpoint / name).stat().st_size == size


def damage_deleted(path):
    path.unlink()


def damage_truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_garbage(path):  # same size: only reading it can tell
    path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(path.stat().st_size)))


@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.pt", "trainer_state.json", MANIFEST])
@pytest.mark.parametrize("damage", [damage_deleted, damage_truncated, damage_garbage])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(full_run, tmp_path, file, damage):
    part = copy_of(full_run, tmp_path)
    damage(part / "checkpoints" / STEP6 / file)
    console = Console(file=io.StringIO(), width=1000)
    train(ToyModel(), toy_objective, ToyStream(), cfg(), part, resume=True, console=console)
    log = console.file.getvalue()
    assert f"skipping {part / 'checkpoints' / STEP6}" in log and "resumed from step 3" in log
    # Steps 4-6 ran again from step 3: the weights of the uninterrupted run, each step logged once.
    assert_same_weights(full_run / "checkpoints" / STEP6, part / "checkpoints" / STEP6)
    assert [r["step"] for r in read_metrics(part)] == [2, 4, 6]
    assert (part / "checkpoints" / f"damaged-{STEP6}").is_dir()  # moved aside, not deleted


def test_no_complete_checkpoint_is_one_error_naming_each(full_run, tmp_path):
    part = copy_of(full_run, tmp_path)
    (part / "checkpoints" / STEP6 / "optimizer.pt").unlink()
    damage_truncated(part / "checkpoints" / STEP3 / "model.safetensors")
    before = (part / "metrics.jsonl").read_bytes()
    with pytest.raises(RunDirError, match=f"no complete checkpoint.*{STEP6}: optimizer.pt is missing.*{STEP3}: "
                                          "model.safetensors has"):
        train(ToyModel(), toy_objective, ToyStream(), cfg(), part, resume=True)
    assert (part / "metrics.jsonl").read_bytes() == before
    assert (part / "checkpoints" / STEP6).is_dir()


def test_a_kill_during_rotation_leaves_nothing_resume_would_pick(full_run, tmp_path):
    part = copy_of(full_run, tmp_path)
    # What a kill in the middle of deleting step 6 leaves: renamed first, then partly removed.
    trash = part / "checkpoints" / f".deleted-{STEP6}"
    (part / "checkpoints" / STEP6).rename(trash)
    (trash / "optimizer.pt").unlink()
    assert latest_checkpoint(part).name == STEP3
    train(ToyModel(), toy_objective, ToyStream(), cfg(), part, resume=True)
    assert_same_weights(full_run / "checkpoints" / STEP6, part / "checkpoints" / STEP6)
    assert not trash.exists()  # the next save cleans it up
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == [STEP3, STEP6]


@pytest.mark.parametrize("change, key", [(dict(batch_size=4), "train.batch_size"),
                                         (dict(gradient_accumulation_steps=2), "train.gradient_accumulation_steps")])
def test_resume_refuses_another_batch_geometry(full_run, tmp_path, change, key):
    part = copy_of(full_run, tmp_path)
    with pytest.raises(RunDirError, match=f"{key}: .* checkpointed with"):
        train(ToyModel(), toy_objective, ToyStream(rows=8 // change.get("gradient_accumulation_steps", 1)),
              cfg(**change), part, resume=True)


def test_resume_refuses_another_model_size(full_run, tmp_path):
    class Wider(ToyModel):
        def __init__(self):
            super().__init__()
            self.dense, self.out = nn.Linear(6, 32), nn.Linear(32, 2)

    part = copy_of(full_run, tmp_path)
    with pytest.raises(RunDirError, match=r"dense.bias has shape \[16\], the model \[32\]; the model size"):
        train(Wider(), toy_objective, ToyStream(), cfg(), part, resume=True)


def test_resume_takes_the_learning_rate_given_now(full_run, tmp_path):
    part = copy_of(full_run, tmp_path)
    shutil.rmtree(part / "checkpoints" / STEP6)
    train(ToyModel(), toy_objective, ToyStream(), cfg(learning_rate=1e-3), part, resume=True)
    records = {r["step"]: r for r in read_metrics(part)}
    assert records[2]["lr"] == pytest.approx(1e-2)  # logged before the resume
    assert records[4]["lr"] == pytest.approx(1e-3 * 2 / 4)  # linear decay over steps 2..6 at the new rate


def test_a_full_disk_while_saving_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import encoderkit.train.run_dir as run_dir

    def full_disk(model, filename, *args, **kwargs):
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr(run_dir, "save_model", full_disk)
    with pytest.raises(RunDirError) as err:
        train(ToyModel(), toy_objective, ToyStream(), cfg(), tmp_path)
    message = str(err.value)
    assert "model.safetensors: cannot write: No space left on device" in message and "\n" not in message
    assert latest_checkpoint(tmp_path, missing_ok=True) is None  # no half-written step-* left behind


def test_a_read_only_checkpoints_dir_is_one_line(tmp_path, monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", denied)
    with pytest.raises(RunDirError, match="Permission denied"):
        from encoderkit.train.run_dir import save_checkpoint

        model, optimizer = ToyModel(), torch.optim.SGD(ToyModel().parameters(), lr=0.1)
        save_checkpoint(tmp_path, 1, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                        ToyStream(), toy_objective, 0, keep_last=2)


def test_saved_weights_load_as_safetensors(full_run):
    assert load_file(str(full_run / "checkpoints" / STEP6 / "model.safetensors"))
