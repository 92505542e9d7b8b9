"""The bundled recipe files: their two header lines, `recipes cp`, `--version`, and a wheel install that finds them."""

import os
import shlex
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from encoderkit.recipes import (
    RECIPES_DIR,
    bundled_names,
    load_finetune_recipe,
    load_quantize_recipe,
    load_recipe,
    read_yaml,
)
from encoderkit.recipes.qa_choice import load_choice_recipe, load_qa_recipe

ROOT = Path(__file__).resolve().parent.parent
NAMES = bundled_names(None)


def cli(*args, cwd=None, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_the_bundled_recipes_are_all_there():
    assert set(NAMES) == {"albert-demo", "albert-tiny", "albert-base", "electra-tiny", "electra-small", "electra-base",
                          "bert-mlm",
                          "glue-electra-small", "glue-electra-base", "glue-albert-base", "glue-roberta-base",
                          "quantize-glue", "finetune-classify", "finetune-tokens", "squad-electra-small",
                          "swag-electra-small"}


@pytest.mark.parametrize("name", NAMES)
def test_recipe_opens_with_what_it_is_for_and_how_to_run_it(name):
    lines = RECIPES_DIR.joinpath(f"{name}.yaml").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 10, lines[0]
    assert lines[1].startswith("# Run: encoderkit "), lines[1]
    assert not lines[2].startswith("#"), "exactly two header lines; lab notes belong in docs/recipes.md"
    command = shlex.split(lines[1].removeprefix("# Run: "))
    assert name in command, f"the Run line does not name {name}"
    assert read_yaml(RECIPES_DIR.joinpath(f"{name}.yaml"))["name"] == name
    # The Run line's recipe and overrides load as the command it names would load them.
    overrides = [arg for arg in command if "=" in arg and not arg.startswith("-")]
    loaders = {"pretrain": load_recipe, "finetune": load_finetune_recipe, "quantize": load_quantize_recipe,
               "finetune qa": load_qa_recipe, "finetune choice": load_choice_recipe}
    load = loaders.get(" ".join(command[1:3])) or loaders[command[1]]
    load(name, overrides)


def test_recipes_have_notes_in_docs():
    docs = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"\n## {name}\n" in docs, name


def test_cp_copies_byte_for_byte(tmp_path):
    dest = tmp_path / "mine.yaml"
    result = cli("recipes", "cp", "albert-tiny", str(dest))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == RECIPES_DIR.joinpath("albert-tiny.yaml").read_bytes()
    assert load_recipe(str(dest)) == load_recipe("albert-tiny")


def test_cp_into_a_directory_names_the_file_after_the_recipe(tmp_path):
    result = cli("recipes", "cp", "quantize-glue", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "quantize-glue.yaml").read_bytes() == RECIPES_DIR.joinpath("quantize-glue.yaml").read_bytes()


def test_cp_refuses_to_overwrite(tmp_path):
    dest = tmp_path / "mine.yaml"
    dest.write_text("my own work\n")
    result = cli("recipes", "cp", "albert-tiny", str(dest))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "already exists" in result.stderr
    assert dest.read_text() == "my own work\n"


def test_cp_refuses_to_overwrite_in_a_directory(tmp_path):
    existing = tmp_path / "albert-tiny.yaml"
    existing.write_text("edited\n")
    result = cli("recipes", "cp", "albert-tiny", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already exists" in result.stderr, result.stderr
    assert existing.read_text() == "edited\n"


def test_cp_unknown_name_lists_the_bundled_ones(tmp_path):
    result = cli("recipes", "cp", "albert-huge", str(tmp_path / "x.yaml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "albert-huge" in result.stderr, result.stderr
    assert all(name in result.stderr for name in NAMES)
    assert not (tmp_path / "x.yaml").exists()


def test_version_prints_the_installed_version():
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"encoderkit {version('encoderkit')}\n"


@pytest.mark.slow
def test_a_wheel_install_finds_its_recipes(tmp_path):
    """Build a wheel of the checkout, install it apart (not editable), and use the bundled recipes from it."""
    start = time.monotonic()
    # Build from a copy, so the build writes no build/ or *.egg-info into the checkout (and stale files
    # there cannot slip into the wheel).
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(src)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("encoderkit-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, timeout=300, capture_output=True)
    assert sorted(p.name for p in (site / "encoderkit" / "recipes").glob("*.yaml")) == [f"{n}.yaml" for n in NAMES]

    work = tmp_path / "work"
    work.mkdir()
    env = {"PYTHONPATH": str(site)}  # the wheel's copy comes before the editable install's finder
    where = subprocess.run([sys.executable, "-c", "import encoderkit.recipes as r; print(r.__file__); "
                            "print(r.RECIPES_DIR)"], capture_output=True, text=True, cwd=work,
                           env={**os.environ, **env}, check=True)
    assert all(Path(line).is_relative_to(site) for line in where.stdout.splitlines()), where.stdout

    listed = cli("recipes", "ls", cwd=work, env=env)
    assert listed.returncode == 0, listed.stderr
    assert {"albert-tiny", "electra-tiny", "glue-electra-small", "quantize-glue"} <= {
        line.split("\t")[0] for line in listed.stdout.splitlines()}
    assert cli("--version", cwd=work, env=env).stdout == f"encoderkit {wheel.name.split('-')[1]}\n"
    dry = cli("pretrain", "albert-tiny", "--dry-run", cwd=work, env=env)
    assert dry.returncode == 0, dry.stderr
    out = work / "out"
    run = cli("pretrain", "albert-tiny", "train.max_steps=3", "train.batch_size=8", "train.log_every=1",
              "train.save_every=3", "tokenizer.vocab_size=300", "tokenizer.sample_documents=200", f"output.dir={out}",
              cwd=work, env=env)
    assert run.returncode == 0, run.stderr
    for name in ("config.json", "model.safetensors", "spiece.model"):
        assert (out / name).is_file(), name

    # Imported straight from the zip (a wheel is one): the recipes are read through importlib.resources.
    zipped = subprocess.run([sys.executable, "-c", "import encoderkit.recipes as r; print(r.__file__); "
                             "print(' '.join(r.bundled_names(None))); print(r.load_recipe('albert-tiny').name); "
                             f"r.copy_bundled('glue-electra-small', {str(work)!r})"],
                            capture_output=True, text=True, cwd=work, env={**os.environ, "PYTHONPATH": str(wheel)})
    assert zipped.returncode == 0, zipped.stderr
    assert zipped.stdout.splitlines() == [str(wheel / "encoderkit" / "recipes" / "__init__.py"), " ".join(NAMES),
                                          "albert-tiny"]
    copied = (work / "glue-electra-small.yaml").read_bytes()
    assert copied == RECIPES_DIR.joinpath("glue-electra-small.yaml").read_bytes()
    print(f"wheel build, install and runs: {time.monotonic() - start:.1f} s")
