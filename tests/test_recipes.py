"""Recipes: validation into typed configs, overrides, and errors that name the key."""

import subprocess
import sys

import pytest

from encoderkit.recipes import RecipeError, apply_overrides, bundled_names, dump_yaml, load_recipe, read_yaml, validate
from encoderkit.recipes import resolve_path as recipe_path


def test_bundled_recipes_validate():
    assert {"albert-tiny", "albert-base"} <= set(bundled_names())
    for name in bundled_names():
        recipe = load_recipe(name)
        assert recipe.train.max_steps >= 1
        assert recipe.output.dir


def test_albert_base_has_the_paper_settings():
    r = load_recipe("albert-base")
    cfg = r.model.config
    assert (cfg.embedding_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (128, 768, 12, 12)
    assert r.tokenizer.vocab_size == 30000 and r.data.max_seq_length == 512
    assert r.train.optimizer == "lamb" and r.train.learning_rate == pytest.approx(1.76e-3)
    assert r.train.batch_size == 4096


def test_overrides_are_typed_and_applied(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data files a recipe names must exist
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("Some text.\n")
    r = load_recipe("albert-tiny", ["train.max_steps=7", "train.learning_rate=3e-4", "output.dir=x/y",
                                    "model.num_hidden_layers=2", "data.source=[a.txt, b.txt]"])
    assert r.train.max_steps == 7
    assert r.train.learning_rate == pytest.approx(3e-4)
    assert r.output.dir == "x/y"
    assert r.model.config.num_hidden_layers == 2
    assert r.data.source == ["a.txt", "b.txt"]


def test_an_override_of_no_is_the_string_no_and_only_true_false_are_booleans():
    # YAML 1.1 would read `no` as False, which mixed_precision refuses
    assert load_recipe("albert-tiny", ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert load_recipe("albert-tiny", ["train.mixed_precision=bf16"]).train.mixed_precision == "bf16"
    assert apply_overrides({"a": {}}, ["a.b=True", "a.c=false", "a.d=on"]) == {"a": {"b": True, "c": False, "d": "on"}}


def test_show_round_trips(tmp_path):
    r = load_recipe("albert-tiny", ["train.seed=5"])
    path = tmp_path / "r.yaml"
    path.write_text(dump_yaml(r))
    again = validate(read_yaml(path))
    assert dump_yaml(again) == dump_yaml(r)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_step=3", "train.max_step: unknown key"),
        ("train.max_steps=abc", "train.max_steps: expected an integer"),
        ("train.max_steps=-1", "train.max_steps: -1 is out of range"),
        ("train.learning_rate=-1", "train.learning_rate: -1.0 is out of range"),
        ("train.optimizer=sgd", "train.optimizer: 'sgd' is not one of"),
        ("model.hidden_sise=3", "model.hidden_sise: unknown key"),
        ("model.num_attention_heads=5", "model.hidden_size: 128 is not divisible"),
        ("tokenizer.path=/no/such/spiece.model", "tokenizer.path: '/no/such/spiece.model' does not exist"),
        ("data.max_seq_length=4096", "data.max_seq_length: 4096 exceeds"),
        ("nosection.key=1", "nosection"),
        ("train.max_steps", "is not key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(RecipeError) as err:
        load_recipe("albert-tiny", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_recipe_lists_the_bundled_ones():
    with pytest.raises(RecipeError, match="albert-tiny"):
        recipe_path("no-such-recipe")


def test_invalid_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  family: albert\n  hidden_size: [1,\n")
    with pytest.raises(RecipeError, match="bad.yaml line"):
        load_recipe(str(bad))


def _cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], input=stdin, capture_output=True, text=True)


def test_cli_validate_and_bad_key_exit_code(tmp_path):
    ok = _cli("recipes", "validate", str(recipe_path("albert-tiny")))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = _cli("recipes", "show", "albert-tiny", "train.bogus=1")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: train.bogus: unknown key; valid keys are: "
                                               + bad.stderr.split("valid keys are: ")[1].strip()]
    assert "Traceback" not in bad.stderr


def test_cli_show_prints_resolved_recipe():
    out = _cli("recipes", "show", "albert-tiny", "train.max_steps=11")
    assert out.returncode == 0
    assert "max_steps: 11" in out.stdout and "family: albert" in out.stdout
