"""The integer-only I-BERT: parity with the QAT model it was exported from, fused == eager, save/load,
no float arithmetic (and no float GEMM) on the integer path, the integer helpers."""

import logging
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import safetensors
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from encoderkit.models.ibert import export, int_ops, kernels, schedule
from encoderkit.models.ibert import model as ibert
from encoderkit.models.ibert.integer import SHARED_WEIGHTS, load_integer_model

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)
LOGITS_ATOL = 5e-4  # the classifier head (float in I-BERT) runs on 16-bit weights and a tanh table
# ELECTRA-Small's embedding projection; ALBERT's: projection, 4 layer applications of 1 shared layer, or of 2 groups
# of 2 layers each (8 applications of 4 layers).
LAYOUTS = {"projection": dict(embedding_size=16),
           "albert-1-group": dict(embedding_size=16, num_hidden_layers=4, num_hidden_groups=1),
           "albert-2-groups": dict(embedding_size=16, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2)}


def randomize(model, std, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_((std if p.dim() == 2 else 0.2) * torch.randn(p.shape, generator=g))
    return model


def batch(seed, size=(3, 12)):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 99, size, generator=g)
    attention_mask = torch.ones(size, dtype=torch.long)
    if size[0] > 2:
        attention_mask[1, size[1] * 2 // 3:] = 0
        attention_mask[2, 3:] = 0
    input_ids[attention_mask == 0] = 1
    token_type_ids = (torch.arange(size[1]) >= size[1] // 2).long().expand(size)
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def qat_model(head="sequence_classification", std=0.2, **layout):
    config = ibert.IBertConfig(**{**TINY, **layout}, quant_mode=True, num_labels=3)
    model = randomize(ibert.HEADS[head](config), std)
    ibert.calibrate(model, [batch(100 + i) for i in range(4)])
    return model


def eager(model):
    model.fuse = False
    return model


def assert_integer_matches_qat(qat, inputs):
    """The exported classifier's logits within LOGITS_ATOL of the QAT model's; the exported encoder's int8
    outputs equal to the QAT encoder's integers at every token that is not padding. Returns the classifier."""
    integer = eager(export.export_integer_model(qat))
    with torch.no_grad():
        expected_logits = qat(**inputs)
    torch.testing.assert_close(integer(**inputs), expected_logits, atol=LOGITS_ATOL, rtol=0)

    base = eager(export.export_integer_model(qat.ibert))
    hidden = base(**inputs)
    assert hidden.dtype == torch.int8
    with torch.no_grad():
        expected = torch.round(qat.ibert(**inputs) / base.output_scale)
    valid = inputs["attention_mask"].bool()
    assert torch.equal(hidden[valid].float(), expected[valid])
    return integer


@pytest.fixture(scope="module")
def classifier():
    return qat_model()


@pytest.mark.parametrize("std", [0.2, 0.02], ids=["weights-0.2", "weights-0.02"])
@pytest.mark.parametrize("size", [(3, 12), (1, 5)], ids=["3x12-padded", "1x5"])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_integer_model_matches_the_qat_model(std, size, workers, monkeypatch):
    """Tolerance: the encoder's int8 outputs are equal to the QAT model's integers (every token that is not
    padding); logits within LOGITS_ATOL. std 0.02 gives attention scores a scale below 4e-5 (where
    transformers' softmax overflows float32). Workers: groups of whole sequences per worker, or (fewer
    sequences than workers) the whole batch in this thread."""
    monkeypatch.setattr(schedule, "workers", lambda: workers)
    assert_integer_matches_qat(qat_model(std=std), batch(7, size))


@pytest.mark.parametrize("std", [0.2, 0.02], ids=["weights-0.2", "weights-0.02"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_projection_and_shared_layers_match_the_qat_model_and_are_stored_once(layout, std, tmp_path, monkeypatch):
    """As above (logits within LOGITS_ATOL, int8 hidden states equal) with an embedding projection and ALBERT's
    shared layers; the file holds each shared weight matrix once, with the first layer application that runs it,
    and loads to the same model."""
    monkeypatch.setattr(schedule, "workers", lambda: 1)
    qat = qat_model(std=std, **LAYOUTS[layout])
    inputs = batch(7)
    integer = assert_integer_matches_qat(qat, inputs)

    integer.save(tmp_path / "model.safetensors")
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    owners = sorted(set(qat.ibert.encoder.weights_from))
    assert len(owners) == {"projection": 2, "albert-1-group": 1, "albert-2-groups": 4}[layout]
    for weight in SHARED_WEIGHTS:
        assert sorted(n for n in names if n.endswith(weight)) == [f"layers.{j}.{weight}" for j in owners]
    assert "embeddings_project.weight" in names
    assert torch.equal(eager(load_integer_model(tmp_path / "model.safetensors"))(**inputs), integer(**inputs))


def test_a_token_classifier_exports_with_its_logits_and_tag_names(tmp_path, monkeypatch):
    """The token head (one float linear layer on every position) on 16-bit weights: logits within LOGITS_ATOL of
    the QAT model's at every token that is not padding, with the embedding projection; the tag names travel in
    the file's description (the integer-only dir has no config.json), and the file loads to the same model."""
    monkeypatch.setattr(schedule, "workers", lambda: 1)
    qat = qat_model("token_classification", **LAYOUTS["projection"])
    qat.config.id2label = {0: "B-X", 1: "I-X", 2: "O"}
    inputs = batch(7)
    integer = eager(export.export_integer_model(qat))
    integer.save(tmp_path / "model.safetensors")
    loaded = eager(load_integer_model(tmp_path / "model.safetensors"))
    with torch.no_grad():
        expected = qat(**inputs)
    logits = loaded(**inputs)
    assert logits.shape == expected.shape == (3, 12, 3)
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[valid], expected[valid], atol=LOGITS_ATOL, rtol=0)
    assert loaded.spec["head"] == "token_classification" and loaded.spec["labels"] == ["B-X", "I-X", "O"]
    assert torch.equal(logits, integer(**inputs))


SECOND_PROCESS = """
import sys
import torch
from encoderkit.models.ibert.integer import load_integer_model
model_path, inputs_path, out_path = sys.argv[1:]
torch.save(load_integer_model(model_path)(**torch.load(inputs_path)), out_path)
assert "torch._inductor.compile_fx" not in sys.modules, "the kernels were compiled again, not loaded"
"""


def _packages(paths) -> dict:
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in paths}


@pytest.mark.slow
def test_compiled_chains_compute_the_same_integers_here_and_in_a_second_process(classifier, tmp_path, monkeypatch,
                                                                                 caplog):
    """The compiled chains (AOTInductor packages in encoderkit's cache dir, built on first use if missing) against
    eager torch: identical integers. A second process loads the packages, compiles nothing, and gets the same
    integers. A package of another chain put in a chain's place is refused (its probe) and the chain runs eagerly."""
    inputs = batch(8, (3, 12))
    integer = export.export_integer_model(classifier)
    assert integer.fuse
    monkeypatch.setattr(kernels, "_chains", {})
    fused = integer(**inputs)
    assert torch.equal(fused, eager(integer)(**inputs))

    assert all(isinstance(chain, kernels._Package) for chain in kernels._chains.values())  # none fell back
    paths = [Path(path) for path in kernels._chains]
    built = _packages(paths)
    assert any(name.startswith("embed-") for name in built) and any(name.startswith("layer-") for name in built)
    integer.save(tmp_path / "model.safetensors")
    torch.save(inputs, tmp_path / "inputs.pt")
    repo = str(Path(__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(tmp_path / "model.safetensors"),
                    str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")], check=True, timeout=120, env=env)
    assert torch.equal(torch.load(tmp_path / "out.pt"), fused)
    assert _packages(paths) == built  # loaded, not built again

    # The embeddings' package in the place of each layer's, in a cache of this test's own
    (tmp_path / "cache" / kernels.kernel_cache_dir().name).mkdir(parents=True)
    embed = next(path for path in paths if path.name.startswith("embed-"))
    monkeypatch.setenv("ENCODERKIT_CACHE", str(tmp_path / "cache"))
    for name in built:
        shutil.copy(embed, kernels.kernel_cache_dir() / name)
    monkeypatch.setattr(kernels, "_chains", {})
    again = export.export_integer_model(classifier)
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert torch.equal(again(**inputs), fused)
    refused = {name for name in built if name.startswith("layer-")}
    assert sum("unusable compiled kernel" in record.message for record in caplog.records) == len(refused)
    assert {path.name for path in kernels.kernel_cache_dir().glob("*")} == set(built) - refused


@pytest.mark.parametrize("failure", ["damaged package", "failed build"])
def test_a_damaged_package_or_a_failed_build_runs_the_chain_eagerly(failure, classifier, tmp_path, monkeypatch,
                                                                     caplog):
    """A package that does not load (removed, with a note), or a compiler that fails (a note): the chain runs
    eagerly, with the same integers, and the stream goes on."""
    monkeypatch.setenv("ENCODERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_chains", {})
    monkeypatch.setattr(kernels, "_can_compile", lambda: True)

    attempted = []

    def build(path, *args):
        attempted.append(path.name)
        if failure == "failed build":
            raise RuntimeError("the C++ compiler failed")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PK\x03\x04 not a whole package")

    monkeypatch.setattr(kernels, "_build", build)
    inputs = batch(8)
    integer = export.export_integer_model(classifier)
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert torch.equal(integer(**inputs), eager(integer)(**inputs))
    note = "unusable compiled kernel" if failure == "damaged package" else "could not be compiled"
    notes = [record.message for record in caplog.records if note in record.message]
    assert len(attempted) == len(set(attempted)) >= 2  # the embeddings' chain and a layer's, each tried once
    assert len(notes) == len(attempted)
    assert not list(tmp_path.rglob("*.pt2"))  # a damaged package is removed: the next process builds it again


def test_save_load_round_trip_needs_no_float_model(tmp_path, classifier):
    integer = eager(export.export_integer_model(classifier))
    integer.save(tmp_path / "model.safetensors")
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
    floats = [k for k, dtype in dtypes.items() if dtype.is_floating_point]
    assert floats == ["classifier.logit_scale"]  # the final dequantization, nothing else
    assert dtypes["layers.0.attention.qkv_weight"] == torch.int8
    assert dtypes["layers.0.attention.qkv_bias"] == torch.int32
    loaded = eager(load_integer_model(tmp_path / "model.safetensors"))
    inputs = batch(9)
    assert torch.equal(loaded(**inputs), integer(**inputs))


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        self.ops.append((func.overloadpacket.__name__, {t.dtype for t in tensors}))
        return func(*args, **(kwargs or {}))


def test_integer_path_has_no_float_arithmetic(classifier, monkeypatch):
    integer = eager(export.export_integer_model(classifier))
    inputs = batch(10)
    monkeypatch.setattr(schedule, "workers", lambda: 1)  # all work in this thread, where the recorder is
    with _RecordOps() as recorder:
        integer(**inputs)
    with_floats = [(op, dtypes) for op, dtypes in recorder.ops if any(d.is_floating_point for d in dtypes)]
    # only the last ops see a float: logits * logit_scale (float64), the cast to float32, joining the groups
    assert with_floats == recorder.ops[-len(with_floats):]
    assert [op for op, _ in with_floats] in (["mul", "to", "cat"], ["mul", "_to_copy", "cat"])
    gemms = [(op, dtypes) for op, dtypes in recorder.ops if op in ("_int_mm", "mm", "addmm", "bmm", "matmul")]
    assert all(dtypes <= {torch.int8, torch.int32, torch.int64} for _, dtypes in gemms)
    B, nh, layers = len(inputs["input_ids"]), 4, 2
    per_layer = B * (4 + 2 * nh)  # per sequence: q/k/v together, attention output, feed-forward in and out; 2 a head
    assert sum(op == "_int_mm" for op, _ in gemms) == layers * per_layer
    assert all(torch.int8 in dtypes and dtypes <= {torch.int8, torch.int32} for op, dtypes in gemms
               if op == "_int_mm")


def test_export_needs_quant_mode_calibration_and_an_integer_head():
    config = ibert.IBertConfig(**TINY, quant_mode=True)
    with pytest.raises(ValueError, match="calibrate"):
        export.export_integer_model(ibert.IBertForSequenceClassification(config))
    with pytest.raises(ValueError, match="force_dequant"):
        export.export_integer_model(ibert.IBertModel(ibert.IBertConfig(**TINY, quant_mode=True,
                                                                        force_dequant="gelu")))
    with pytest.raises(ValueError, match="quant_mode"):
        export.export_integer_model(ibert.IBertModel(ibert.IBertConfig(**TINY)))
    with pytest.raises(TypeError, match="IBertForMaskedLM: only IBertModel, IBertForSequenceClassification and "
                                        "IBertForTokenClassification export"):
        export.export_integer_model(ibert.IBertForMaskedLM(config))


# all-MiniLM-L6-v2's last LayerNorm: channels of weight ~0, whose rescales (1e-39, 6e-16) once failed the export
DEAD_CHANNELS = dict(weight=[-4.795e-33, -6.013e-33, -1.502e-9], bias=[1.560e-32, -8.598e-33, -8.655e-8])


def test_fixed_point_takes_tiny_and_huge_rescales():
    """A rescale too small for a 31-bit multiplier within a 63-bit shift (MiniLM's LayerNorm: 1.8e-39, 5.8e-16,
    with values up to 2^31 + 3.2e9) and one too large for a shift of at least 1: integers still give round(v x)."""
    for ratio, bound in ((1.8406e-39, 2**31 + 3.16e9), (5.7662e-16, 2**31 + 3.16e9), (2.0**40 + 3, 2**10)):
        fixed = export._fixed_point(torch.tensor([ratio], dtype=torch.float64), bound, "x")
        assert 1 <= fixed["x_e"].item() <= 63
        v = torch.cat([torch.linspace(-bound, bound, 1001).long(), torch.tensor([-int(bound), int(bound)])])
        exact = [math.floor(x * Fraction(ratio) + Fraction(1, 2)) for x in v.tolist()]
        assert int_ops.fixed_mul(v, fixed["x_m"], fixed["x_e"]).tolist() == exact


def test_layernorm_channels_of_weight_near_zero_export_and_match(monkeypatch):
    monkeypatch.setattr(schedule, "workers", lambda: 1)
    qat = qat_model()
    norm = qat.ibert.encoder.layer[-1].output.LayerNorm
    with torch.no_grad():
        for name, values in DEAD_CHANNELS.items():
            getattr(norm, name)[:3] = torch.tensor(values)
    assert_integer_matches_qat(qat, batch(7))  # export raised "do not fit a fixed-point multiplier" before


def test_isqrt_is_exact():
    g = torch.Generator().manual_seed(0)
    n = torch.cat([torch.arange(0, 1000), torch.randint(0, 2**62, (5000,), generator=g),
                   torch.tensor([2**32 - 1, 2**32, 2**62 - 1, (2**31 - 1) ** 2, 2**31 * 2**31 - 1])])
    expected = torch.tensor([math.isqrt(v) for v in n.tolist()])
    assert torch.equal(int_ops.isqrt(n), expected)


def test_round_div_rounds_half_to_even_like_torch_round():
    s = torch.arange(-5000, 5000)
    for n in (768, 32, 7):
        assert torch.equal(int_ops.round_div(s, n), torch.round(s.double() / n).long())


def test_fixed_mul_rounds_half_up_exactly():
    g = torch.Generator().manual_seed(0)
    v = torch.randint(-(2**30), 2**30, (2000,), generator=g)
    m = torch.randint(2**30, 2**31, (2000,), generator=g)
    e = torch.randint(1, 32, (2000,), generator=g)
    exact = [(a * b + (1 << (c - 1))) >> c  # Python integers: floor(a * b / 2^c + 1/2)
             for a, b, c in zip(v.tolist(), m.tolist(), e.tolist(), strict=True)]
    assert int_ops.fixed_mul(v, m, e).tolist() == exact


def test_int_mm_takes_any_shape_on_cpu():
    """No padding: on CPU, torch._int_mm has none of CUDA's constraints (rows > 16, multiples of 8)."""
    a = torch.randint(-128, 128, (3, 7), dtype=torch.int8)
    b = torch.randint(-128, 128, (7, 5), dtype=torch.int8)
    assert torch.equal(torch._int_mm(a, b), (a.long() @ b.long()).int())
