"""I-BERT's quantization modules: each integer op against its float counterpart within the I-BERT paper's
error, quantizers, EMA ranges, force_dequant, straight-through gradients, transformers' modules."""

import pytest
import torch
import torch.nn.functional as F

from encoderkit.models.ibert.quant import (
    IntGELU,
    IntLayerNorm,
    IntSoftmax,
    QuantAct,
    QuantEmbedding,
    QuantLinear,
    fixed_point_multiplier,
    floor_ste,
    round_ste,
)

transformers = pytest.importorskip("transformers")
hf_quant = pytest.importorskip("transformers.models.ibert.quant_modules")


def quantized(x, bits):
    """x as (integers * scale, scale) with a symmetric `bits`-bit scale, as a QuantAct would hand it on."""
    scale = (x.abs().max() / (2 ** (bits - 1) - 1)).reshape(1)
    return torch.round(x / scale) * scale, scale


def test_fixed_point_multiplier_matches_transformers_batch_frexp():
    ratio = torch.tensor([1.0, 0.75, 1e-3, 3.3e-7, 0.999999999, 12.5], dtype=torch.float64)
    m, e = fixed_point_multiplier(ratio)
    hf_m, hf_e = hf_quant.batch_frexp(ratio)
    assert torch.equal(m, hf_m.double()) and torch.equal(e, hf_e.double())
    torch.testing.assert_close(m / 2**e, ratio, rtol=2**-30, atol=0)


def test_ste_gradients_are_identity():
    x = torch.tensor([0.3, -1.7, 2.5], requires_grad=True)
    (floor_ste(x) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 2.0, 3.0]))
    x.grad = None
    round_ste(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_quant_linear_per_channel_weights_and_32_bit_bias():
    torch.manual_seed(0)
    linear = QuantLinear(16, 8, per_channel=True, quant_mode=True)
    with torch.no_grad():
        linear.weight.normal_(0, 0.1).mul_(torch.logspace(-2, 0, 8)[:, None])  # channels of different range
        linear.bias.normal_()
    w_int, scale = linear.quantized_weight()
    assert scale.shape == (8,)
    assert w_int.min() >= -127 and w_int.max() <= 126 and torch.equal(w_int, w_int.round())
    # within half a step, except at the top: transformers' range is [-127, 126], so +max loses a step
    assert ((w_int * scale[:, None] - linear.weight).abs() <= scale[:, None] * 1.0001).all()
    x, x_scale = quantized(torch.randn(3, 5, 16), 8)
    y, y_scale = linear(x, x_scale)
    assert torch.equal(y_scale, scale * x_scale)
    torch.testing.assert_close(y, F.linear(x, linear.weight, linear.bias), atol=0.05, rtol=0.02)
    assert torch.equal(linear.bias_integer, torch.round(linear.bias / y_scale))


def test_quant_embedding_is_8_bit_with_one_scale():
    emb = QuantEmbedding(10, 4, weight_bit=8, quant_mode=True)
    with torch.no_grad():
        emb.weight.normal_()
    ids = torch.tensor([[1, 2, 9]])
    out, scale = emb(ids)
    assert scale.shape == (1,)
    torch.testing.assert_close(out / scale, torch.round(out / scale))
    assert (out / scale).abs().max() <= 127.5
    assert ((out - emb.weight[ids]).abs() <= scale * 1.0001).all()


def test_quant_act_tracks_range_by_ema_and_requantizes():
    act = QuantAct(8, quant_mode=True)
    act.train()
    act(torch.tensor([-1.0, 2.0]))  # the first batch sets the range
    torch.testing.assert_close(act.x_min, torch.tensor([-1.0]), atol=2e-5, rtol=0)
    torch.testing.assert_close(act.x_max, torch.tensor([2.0]), atol=2e-5, rtol=0)
    act(torch.tensor([-3.0, 4.0]))  # EMA with momentum 0.95
    torch.testing.assert_close(act.x_min, torch.tensor([-1.1]), atol=2e-5, rtol=0)
    torch.testing.assert_close(act.x_max, torch.tensor([2.1]), atol=2e-5, rtol=0)
    act.eval()
    x, x_scale = quantized(torch.linspace(-2, 2, 9), 16)
    y, scale = act(x, x_scale)
    torch.testing.assert_close(scale, torch.tensor([2.1 / 127]), atol=1e-6, rtol=0)
    torch.testing.assert_close(y / scale, torch.round(y / scale))
    assert ((y - x).abs() <= scale / 2 + 1e-6).all()
    # with a residual: integer-only addition of two differently scaled inputs
    y, _ = act(x, x_scale, identity=x / 2, identity_scaling_factor=x_scale / 2)
    assert ((y - (1.5 * x).clamp(-128 * scale, 127 * scale)).abs() <= scale + 1e-6).all()


def test_int_gelu_within_the_papers_error():
    """I-BERT Table 1: i-GELU is within 1.8e-2 (L-inf) of GELU; integers add at most their quantization."""
    x, scale = quantized(torch.linspace(-6, 6, 20001), 22)
    y, _ = IntGELU(quant_mode=True)(x, scale)
    assert (y - F.gelu(x)).abs().max() < 0.0182


def test_int_softmax_within_the_papers_error():
    """The second-order polynomial of i-exp is within 1.9e-3 of exp on [-ln 2, 0]; the output has 8 bits."""
    torch.manual_seed(0)
    x, scale = quantized(torch.randn(4, 3, 16) * 3, 16)
    softmax = IntSoftmax(8, quant_mode=True)
    softmax.train()
    softmax(x, scale)  # sets the exponentials' 16-bit range
    softmax.eval()
    y, y_scale = softmax(x, scale)
    assert y_scale == 1 / 256
    assert ((y - F.softmax(x, -1)).abs() <= 1.9e-3 + 2 / 256).all()


def test_int_softmax_small_scores_scale_does_not_overflow():
    """transformers divides the integer exponentials by their float scale, which is inf when the scores'
    scale is below ~4e-5; ours requantizes the integers and stays accurate."""
    torch.manual_seed(0)
    x, scale = quantized(torch.randn(2, 8) * 0.5, 22)
    assert scale < 4e-5
    ours = IntSoftmax(8, quant_mode=True)
    ours.train()
    ours(x, scale)
    ours.eval()
    assert ((ours(x, scale)[0] - F.softmax(x, -1)).abs() <= 1.9e-3 + 2 / 256).all()


def test_int_layernorm_matches_layernorm():
    torch.manual_seed(0)
    x, scale = quantized(torch.randn(2, 5, 32) * 4 + 1, 22)
    norm = IntLayerNorm(32, eps=1e-12, output_bit=32, quant_mode=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    norm.train()
    norm(x, scale)  # raises the shift so the variance fits 32 bits
    assert norm.shift.item() > 0
    norm.eval()
    y, _ = norm(x, scale)
    torch.testing.assert_close(y, F.layer_norm(x, (32,), norm.weight, norm.bias, 1e-12), atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("force_dequant", ["none", "gelu", "softmax", "layernorm", "nonlinear"])
def test_force_dequant_runs_those_in_float(force_dequant):
    gelu = IntGELU(quant_mode=True, force_dequant=force_dequant)
    softmax = IntSoftmax(8, quant_mode=True, force_dequant=force_dequant)
    norm = IntLayerNorm(4, eps=1e-5, quant_mode=True, force_dequant=force_dequant)
    assert gelu.quant_mode == (force_dequant not in ("gelu", "nonlinear"))
    assert softmax.quant_mode == (force_dequant not in ("softmax", "nonlinear"))
    assert norm.quant_mode == (force_dequant not in ("layernorm", "nonlinear"))
    x = torch.randn(1, 2, 4)
    for module, float_fn in ((gelu, F.gelu), (softmax, lambda t: F.softmax(t, -1)),
                             (norm, lambda t: F.layer_norm(t, (4,), norm.weight, norm.bias, 1e-5))):
        if not module.quant_mode:
            y, scale = module(x)
            assert scale is None and torch.equal(y, float_fn(x))


def test_force_dequant_rejects_unknown():
    with pytest.raises(ValueError, match="force_dequant"):
        IntGELU(force_dequant="all")


def test_straight_through_gradients_flow_to_weights():
    torch.manual_seed(0)
    linear = QuantLinear(8, 16, per_channel=True, quant_mode=True)
    norm = IntLayerNorm(16, eps=1e-12, output_bit=32, quant_mode=True)
    acts = [QuantAct(8, quant_mode=True), QuantAct(22, quant_mode=True), QuantAct(8, quant_mode=True)]
    gelu = IntGELU(quant_mode=True)
    with torch.no_grad():
        linear.weight.normal_(0, 0.3)
    x = torch.randn(2, 3, 8, requires_grad=True)
    h, s = acts[0](x)
    h, s = gelu(*linear(h, s))
    h, s = norm(*acts[1](h, s))
    y, _ = acts[2](h, s)
    y.square().sum().backward()
    for p in (x, linear.weight, linear.bias, norm.weight):
        assert p.grad is not None and p.grad.isfinite().all() and p.grad.abs().sum() > 0
    assert norm.bias.grad is None  # transformers' IntLayerNorm adds its bias as a detached integer


@pytest.mark.parametrize("module", ["QuantLinear", "IntGELU", "IntLayerNorm", "IntSoftmax"])
def test_same_values_as_transformers_modules(module):
    torch.manual_seed(0)
    x, scale = quantized(torch.randn(2, 6, 16) * 2, 8 if module == "QuantLinear" else 22)
    if module == "QuantLinear":
        ours, theirs = QuantLinear(16, 8, per_channel=True, quant_mode=True), \
            hf_quant.QuantLinear(16, 8, per_channel=True, quant_mode=True)
    elif module == "IntGELU":
        ours, theirs = IntGELU(quant_mode=True), hf_quant.IntGELU(quant_mode=True)
    elif module == "IntLayerNorm":
        ours = IntLayerNorm(16, 1e-12, output_bit=32, quant_mode=True)
        theirs = hf_quant.IntLayerNorm(16, 1e-12, output_bit=32, quant_mode=True)
    else:  # scores at a scale where transformers' softmax does not overflow (see above)
        x, scale = quantized(torch.randn(2, 6, 16) * 4, 16)
        ours, theirs = IntSoftmax(8, quant_mode=True), hf_quant.IntSoftmax(8, quant_mode=True)
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            p.normal_()
            q.copy_(p)
    for m in (ours, theirs):
        m.train()
        m(x, scale)
        m.eval()
    (y, y_scale), (hf_y, hf_scale) = ours(x, scale), theirs(x, scale)
    torch.testing.assert_close(y, hf_y, atol=1e-5 if module != "IntSoftmax" else 1 / 256, rtol=1e-6)
    torch.testing.assert_close(torch.as_tensor(y_scale), torch.as_tensor(hf_scale))
