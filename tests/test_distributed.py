"""Data parallelism through accelerate: two CPU processes (gloo) give the weights of one process
on the same global batch."""

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
    args = [*prefix, "-m", "encoderkit", "pretrain", recipe, *tiny(corpus, out)[1:], "train.max_steps=3",
            "train.save_every=3", *extra]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, model_file", [("electra-tiny", "discriminator/model.safetensors"),
                                                ("albert-tiny", "model.safetensors")])
def test_two_processes_match_one_process(recipe, model_file, corpus, tmp_path):
    one = tmp_path / "one"
    run([sys.executable], recipe, corpus, one)
    two = tmp_path / "two"
    # --standalone picks a free port: a fixed one can still be held (TIME_WAIT) by the previous case's run
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run(torchrun, recipe, corpus, two, f"tokenizer.path={one / 'spiece.model'}")
    single, double = load_file(str(one / model_file)), load_file(str(two / model_file))
    assert single.keys() == double.keys()
    for name in single:
        # Same batch, same noise, same initial weights: only the order of the gradient sums differs.
        assert torch.allclose(single[name], double[name], atol=2e-5, rtol=1e-4), name
