"""Data parallelism through the documented launchers: two CPU processes (gloo) see a world of two, each
trains on its own rows, one process trains the tokenizer and writes the run dir, and the run matches one
process on the same global batch, metrics included."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_pretrain_cli import WORDS, tiny


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import random

    rng = random.Random(1)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    docs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "."
                      for _ in range(rng.randint(3, 8))) for _ in range(40)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


def run(prefix, recipe, corpus, out, *extra):
    # The recipe as shipped, made small: sizes and steps only (no dropout setting is overridden).
    args = [*prefix, "-m", "encoderkit", "pretrain", recipe, *tiny(corpus, out)[1:], "train.max_steps=3",
            "train.save_every=3", *extra]
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# accelerate's launcher starts N processes with --multi_gpu (on a machine without CUDA too: encoderkit then
# tells accelerate to use CPU processes); without it, --num_processes 2 starts one process.
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, model_file, launcher", [
    ("electra-tiny", "discriminator/model.safetensors", ACCELERATE),
    ("albert-tiny", "model.safetensors", TORCHRUN),
], ids=["electra-accelerate", "albert-torchrun"])
def test_two_processes_match_one_process(recipe, model_file, launcher, corpus, tmp_path):
    one = tmp_path / "one"
    run([sys.executable], recipe, corpus, one)
    two = tmp_path / "two"
    log = run(launcher, recipe, corpus, two)

    # Each process saw a world of two and kept its own half of every micro-batch of 4 rows.
    seen = sorted(re.findall(r"process (\d) of (\d): rows (\d+)-(\d+)", log))
    assert seen == [("0", "2", "0", "1"), ("1", "2", "2", "3")], log[-3000:]
    assert log.count("training a unigram tokenizer") == 1  # one process trained it, the other loaded it
    assert (one / "spiece.model").read_bytes() == (two / "spiece.model").read_bytes()

    # One set of metrics, reduced over both processes: the whole batch's loss, as one process logs it.
    single_log, double_log = metrics(one), metrics(two)
    assert [r["step"] for r in double_log] == [r["step"] for r in single_log] == [1, 2, 3]
    for a, b in zip(single_log, double_log):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(a["loss"])), (a, b)

    single, double = load_file(str(one / model_file)), load_file(str(two / model_file))
    assert single.keys() == double.keys()
    for name in single:
        # Same batch, same noise, same initial weights: only the order of the gradient sums differs.
        assert torch.allclose(single[name], double[name], atol=1e-5, rtol=0), name


def test_entry_point_lets_accelerate_see_cpu_processes(monkeypatch):
    from encoderkit.runtime import use_cpu_processes

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    use_cpu_processes()
    assert "ACCELERATE_USE_CPU" not in os.environ  # a single process is left alone
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")  # what `accelerate launch` without --cpu passes
    use_cpu_processes()
    expected = "False" if torch.cuda.is_available() else "1"
    assert os.environ["ACCELERATE_USE_CPU"] == expected


def test_a_launch_accelerate_does_not_see_is_refused(monkeypatch):
    from encoderkit.errors import UserError
    from encoderkit.train.loop import make_accelerator

    assert make_accelerator().num_processes == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it, for a process accelerate counts as alone
    with pytest.raises(UserError, match=r"the launcher started 2 processes \(WORLD_SIZE\) but accelerate sees 1"):
        make_accelerator()
