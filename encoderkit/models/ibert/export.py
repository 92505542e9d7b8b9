"""Export to integer-only inference: `export_integer_model` turns a QAT model (model.py, quant_mode=True, ranges
calibrated) into the `IntegerIBert` of integer.py, whose tensors are integers and whose forward uses integer
arithmetic only.

Every constant is computed from the QAT model's scales in float32, as its forward computes them, and stored as
integers: requantizations as fixed-point multipliers m / 2^e, where m keeps 31 bits as I-BERT's, fewer where
|v| * m could leave int64 (the bound on v is known here); i-GELU's, i-softmax's and the integer LayerNorm's
constants as quant.py derives them; the classifier heads (float in I-BERT) on 16-bit weights, with a table
for the sequence classifier's tanh. ALBERT's shared layers: the int8 weight matrices of a layer application that
runs another's weights (integer.SHARED_WEIGHTS) are left out, the IntegerIBert holds the first application's.
"""

from __future__ import annotations

import torch
from torch import nn

from . import int_ops
from .integer import FORMAT, SHARED_WEIGHTS, IntegerIBert
from .model import IBertForSequenceClassification, IBertForTokenClassification, IBertModel, IBertResidualOutput
from .quant import QuantAct, QuantLinear, fixed_point_multiplier

HEAD_WEIGHT_BITS = 16  # the float classifier head of I-BERT runs on 16-bit weights here
TANH_STEP_BITS = 11  # tanh's table covers [-16, 16) in steps of 2^-11 (65536 entries)
TANH_ONE = 2**15 - 1  # tanh's output scale is 1 / TANH_ONE


# ---- Export: constants from the QAT model, computed in float32 as its forward computes them. ----

def _ratio(pre_scale: torch.Tensor, out_scale: torch.Tensor) -> torch.Tensor:
    """The rescale factor of a requantization, as transformers' FixedPointMul forms it (float64)."""
    return pre_scale.double() / out_scale.float().double()


def _fixed_point(ratio: torch.Tensor, bound: float, prefix: str, max_e: int = 63) -> dict[str, torch.Tensor]:
    """{prefix_m, prefix_e}: ratio ~ m / 2^e, with |v * m| < 2^62 for every |v| <= bound, 1 <= e <= max_e.

    m keeps 31 significant bits, fewer where |v| needs the room (16 at least). A ratio so small that this would
    take a shift beyond max_e (a LayerNorm channel whose weight is ~0: all-MiniLM-L6-v2's last LayerNorm has
    weights of 1e-33 and 1e-9, rescales of 1e-39 and 6e-16) gets e = max_e and the shorter m = round(ratio 2^e),
    possibly 0: m / 2^e is then within 2^-(max_e + 1) of the ratio, which moves v * ratio by less than
    bound / 2^64 < 2^-18 (bound < 2^46), well below the output's rounding step. A ratio so large that it would
    take a shift below 1 gets e = 1 and a longer m, where |v * m| still fits.
    """
    bits = min(31, 62 - int(bound).bit_length())
    if bits < 16:
        raise ValueError(f"{prefix}: values up to {bound:.3g} leave {bits} bits for the fixed-point multiplier")
    ratio = ratio.reshape(-1).double()
    m, e = fixed_point_multiplier(ratio, bits)
    clamped = e.clamp(1, max_e)
    m = torch.where(e == clamped, m, torch.floor(ratio * 2.0**clamped + 0.5))
    if (m.abs() * bound >= 2.0**62).any():
        raise ValueError(f"{prefix}: rescale factors up to {ratio.abs().max().item():.3g} of values up to "
                         f"{bound:.3g} do not fit a 64-bit fixed-point multiplication")
    return {f"{prefix}_m": m.long(), f"{prefix}_e": clamped.long()}


def _wide_fixed_point(ratio: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """For an 8-bit requantization of values too wide for `_fixed_point` (I-BERT's GELU output): v is shifted
    right by prefix_shift (keeping >= 31 significant bits where it matters), clamped to +-prefix_limit
    (beyond which the result saturates anyway), then multiplied by the 31-bit m and shifted by e <= 54, so
    every product stays inside int64."""
    m, e = fixed_point_multiplier(ratio.reshape(-1))
    shift = (e - 54).clamp(min=0)
    e = e - shift
    limit = torch.ceil(2.0 ** (e + 8) / m.abs().clamp(min=1))  # |v m / 2^e| >= 256: saturated
    return {f"{prefix}_m": m.long(), f"{prefix}_e": e.long(), f"{prefix}_shift": shift.long(),
            f"{prefix}_limit": limit.long()}


def _narrow_fixed_point(ratio: torch.Tensor, domain: int, prefix: str) -> dict[str, torch.Tensor]:
    """`_fixed_point` of one ratio for small integers |v| <= domain (a requantization of 8-bit values), as
    int32 where a shorter multiplier gives the same results on the whole domain (checked) with
    |v * m| < 2^30 and e <= 31; else as `_fixed_point` gives it."""
    reference = _fixed_point(ratio, domain, prefix)
    v = torch.arange(-domain, domain + 1)
    m, e = fixed_point_multiplier(ratio.reshape(-1), 30 - domain.bit_length())
    if 1 <= e.item() <= 31 and torch.equal(int_ops.fixed_mul(v, m.long(), e.long()),
                                   int_ops.fixed_mul(v, reference[f"{prefix}_m"], reference[f"{prefix}_e"])):
        return {f"{prefix}_m": m.int(), f"{prefix}_e": e.int()}
    return reference


def _identity(prefix: str) -> dict[str, torch.Tensor]:
    """The fixed point m / 2^e = 2 / 2: exact identity (a chain's step that this instance does not need)."""
    return {f"{prefix}_m": torch.tensor([2], dtype=torch.int32), f"{prefix}_e": torch.tensor([1], dtype=torch.int32)}


def _rescale(true_scale: torch.Tensor, told_scale: torch.Tensor, bound: float, prefix: str):
    """A fixed-point rescale from an input's true scale to the one its layer was told (identity if equal)."""
    if torch.equal(true_scale, told_scale):
        return _identity(prefix)
    return _fixed_point(_ratio(true_scale, told_scale), bound, prefix)


def _narrow_rescale(true_scale: torch.Tensor, told_scale: torch.Tensor, prefix: str):
    """`_rescale` of 8-bit values."""
    if torch.equal(true_scale, told_scale):
        return _identity(prefix)
    return _narrow_fixed_point(_ratio(true_scale, told_scale), 128, prefix)


def _rescaled_domain(true_scale: torch.Tensor, told_scale: torch.Tensor) -> int:
    """|round(v * true / told)| for 8-bit v is at most this."""
    return int(128 * max(1.0, (true_scale / told_scale).item())) + 1


def _width(fits_int32: bool, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Constants as int32 when every product they enter fits 32 bits, else int64 (see int_ops). Scalars are
    1-element tensors, never 0-d: a 0-d tensor does not take part in type promotion."""
    return tuple(t.int() if fits_int32 else t.long() for t in tensors)


def _linear(linear: QuantLinear, in_scale: torch.Tensor) -> tuple[dict, torch.Tensor, float]:
    """int8 weight, int32 bias, the accumulator's scale (per channel), a bound on |accumulator + bias|."""
    w_int, w_scale = linear.quantized_weight()
    bias_scale = w_scale * in_scale
    b_int = linear.quantized_bias(bias_scale)
    bound = linear.in_features * 128 * 128 + b_int.abs().max().item()
    return {"weight": w_int.to(torch.int8), "bias": b_int.to(torch.int32)}, bias_scale, bound


def _calibrated_scale(act: QuantAct, name: str) -> torch.Tensor:
    if act.x_min.item() > -1.1e-5 and act.x_max.item() < 1.1e-5:  # QuantAct's "no range yet"
        raise ValueError(f"{name} has no activation range: calibrate the model (ibert.calibrate) or "
                         "fine-tune it with quant_mode=True before exporting")
    return act.scale()


def _layernorm(norm, out_act: QuantAct, next_act: QuantAct | None, name: str):
    """Tensors of IntLayerNorm + its 8-bit requantization + the next QuantAct's; the final scale."""
    bias_int, scale = norm.bias_constants()
    out_scale = _calibrated_scale(out_act, f"{name}.output_activation")
    tensors = {"shift": norm.shift.long().reshape(1), "ln_bias": bias_int.long(),
               **_fixed_point(_ratio(scale, out_scale), 2**31 + bias_int.abs().max().item(), "out")}
    if next_act is None:
        return tensors | _identity("next"), out_scale
    next_scale = _calibrated_scale(next_act, name)
    return tensors | _narrow_fixed_point(_ratio(out_scale, next_scale), 128, "next"), next_scale


def _export_embeddings(emb) -> tuple[dict, torch.Tensor]:
    tables = {}
    sum_scale = _calibrated_scale(emb.embeddings_act1, "embeddings.embeddings_act1")
    for name, table in (("word", emb.word_embeddings), ("type", emb.token_type_embeddings),
                        ("position", emb.position_embeddings)):
        w_int, w_scale = table.quantized_weight()
        tables[f"{name}_table"] = w_int.to(torch.int8)
        tables |= _narrow_fixed_point(_ratio(w_scale, sum_scale), 128, name)
    ln, scale = _layernorm(emb.LayerNorm, emb.output_activation, None, "embeddings")
    return tables | ln, scale


def _export_projection(base: IBertModel, in_scale: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """The embeddings' projection E -> H and its 8-bit QuantAct; their output scale."""
    dense, acc_scale, bound = _linear(base.embeddings_project, in_scale)
    out_scale = _calibrated_scale(base.embeddings_project_act, "embeddings_project_act")
    return {**dense, **_fixed_point(_ratio(acc_scale, out_scale), bound, "out")}, out_scale


def _export_residual(block: IBertResidualOutput, in_scale, residual_scale, told_scale, next_act, name):
    """dense + residual (told_scale: the residual's scale as the layer was told) -> LayerNorm -> int8."""
    dense, acc_scale, bound = _linear(block.dense, in_scale)
    sum_scale = _calibrated_scale(block.ln_input_act, f"{name}.ln_input_act")
    tensors = {**dense, **_fixed_point(_ratio(acc_scale, sum_scale), bound, "acc"),
               **_narrow_rescale(residual_scale, told_scale, "rescale"),
               **_narrow_fixed_point(_ratio(told_scale, sum_scale), _rescaled_domain(residual_scale, told_scale),
                                     "residual")}
    ln, out_scale = _layernorm(block.LayerNorm, block.output_activation, next_act, name)
    return tensors | ln, out_scale


def _export_layer(layer, in_scale: torch.Tensor, told_scale: torch.Tensor, name: str):
    attn = layer.attention.self
    tensors, qkv_scales = {}, []
    weights, biases, multipliers = [], [], []
    rescale = max(1.0, (in_scale / told_scale).item())
    for proj, act in ((attn.query, attn.query_activation), (attn.key, attn.key_activation),
                      (attn.value, attn.value_activation)):
        linear, acc_scale, bound = _linear(proj, told_scale)
        out_scale = _calibrated_scale(act, f"{name}.attention.self")
        qkv_scales.append(out_scale)
        weights.append(linear["weight"])
        biases.append(linear["bias"])
        multipliers.append(_fixed_point(_ratio(acc_scale, out_scale), bound * rescale, "qkv"))
    tensors["qkv_weight"] = torch.cat(weights)
    tensors["qkv_bias"] = torch.cat(biases)
    tensors |= {k: torch.cat([mult[k] for mult in multipliers]) for k in ("qkv_m", "qkv_e")}
    tensors |= _rescale(in_scale, told_scale, bound, "qkv_rescale")

    q_scale, k_scale, v_scale = qkv_scales
    scores_scale = q_scale * k_scale / (attn.head_size ** 0.5)
    x0, b, c = (t.long().reshape(1) for t in attn.softmax.exp_constants(scores_scale))
    if x0 >= 0 or b.abs() >= 2**31 or x0.abs() * int_ops.EXP_SHIFT >= 2**31 or (x0 + b) * x0 + c <= 0:
        raise ValueError(f"{name}: attention scores' scale {scores_scale.item():.3g} is out of range")
    exp_scale = _calibrated_scale(attn.softmax.act, f"{name}.attention.self.softmax.act")
    exp_bound = c.abs() + x0.abs() * (x0.abs() + b.abs())
    b, c = _width(exp_bound < 2**31, b, c)  # z = (r + b) r + c
    softmax = {"softmax_x0": x0.int(), **_division(-x0.item(), -x0.item() * int_ops.EXP_SHIFT, "softmax_div"),
               "softmax_b": b, "softmax_c": c,
               **_fixed_point(_ratio(torch.ones_like(exp_scale), exp_scale), exp_bound.item(), "softmax",
                              max_e=63 + int_ops.EXP_SHIFT)}
    _check_probabilities_fit_uint8(softmax)
    tensors |= softmax
    context_scale = _calibrated_scale(attn.output_activation, f"{name}.attention.self.output_activation")
    tensors |= _fixed_point(_ratio(v_scale / 2**8, context_scale), 2**32, "context")

    attention_out, a_scale = _export_residual(layer.attention.output, context_scale, in_scale, told_scale,
                                              layer.pre_intermediate_act, f"{name}.attention.output")
    ffn, acc_scale, x_bound = _linear(layer.intermediate.dense, a_scale)
    gelu = layer.intermediate.intermediate_act_fn
    erf_b, erf_c = gelu.erf_constants(acc_scale / gelu.k)
    one, gelu_scale = gelu.output_constants(acc_scale)
    poly_bound = (erf_b.abs().max() ** 2 + erf_c.abs().max()).item()  # (min(|x|, -b) + b)^2 + c
    erf_b, erf_c, one = _width(max(x_bound, poly_bound, poly_bound / 2**14 + one.abs().max().item() + 1) < 2**31,
                               erf_b, erf_c, one)
    g_scale = _calibrated_scale(layer.intermediate.output_activation, f"{name}.intermediate.output_activation")
    gelu_fp = _wide_fixed_point(_ratio(gelu_scale, g_scale), "gelu")
    next_scale = _calibrated_scale(layer.pre_output_act, f"{name}.pre_output_act")
    ffn_in = {**ffn, "erf_b": erf_b, "erf_c": erf_c, "erf_one": one, **gelu_fp,
              **_narrow_fixed_point(_ratio(g_scale, next_scale), 128, "next")}
    ffn_out, out_scale = _export_residual(layer.output, next_scale, a_scale, a_scale, None, f"{name}.output")
    return {**_prefixed(tensors, "attention."), **_prefixed(attention_out, "attention_output."),
            **_prefixed(ffn_in, "ffn_in."), **_prefixed(ffn_out, "ffn_out.")}, out_scale


def _division(divisor: int, bound: int, prefix: str) -> dict[str, torch.Tensor]:
    """{prefix_m, prefix_s}: floor(u / divisor) == (u * m) >> s for every 0 <= u <= bound (checked)."""
    s = bound.bit_length() + divisor.bit_length()
    m = -(-(1 << s) // divisor)  # ceil(2^s / divisor)
    u = torch.arange(bound + 1)
    if not torch.equal((u * m) >> s, u // divisor):
        raise ValueError(f"{prefix}: no exact multiply-shift for division by {divisor}")
    return {f"{prefix}_m": torch.tensor([m]), f"{prefix}_s": torch.tensor([s])}


def _check_probabilities_fit_uint8(softmax: dict[str, torch.Tensor]) -> None:
    """A probability reaches 256 (not 8-bit unsigned) only if one exponential is the whole row's sum and
    divides 2^32, i.e. the largest one (at x = 0, the constant c) requantizes to a power of two."""
    e_max = int_ops.saturate(int_ops.fixed_mul(softmax["softmax_c"], softmax["softmax_m"],
                                               softmax["softmax_e"] - int_ops.EXP_SHIFT), 16).item()
    if e_max <= 0 or (e_max & (e_max - 1)) == 0:
        raise ValueError(f"softmax: the largest 16-bit exponential is {e_max}; probabilities would not fit "
                         "8 bits (recalibrate)")


def _head_linear(linear: nn.Linear, in_scale: torch.Tensor, name: str) -> tuple[dict, torch.Tensor]:
    """A float head layer on 16-bit weights (one scale per output row), its bias at the accumulator's scale;
    returns the tensors and the accumulator's scale per output."""
    one = 2 ** (HEAD_WEIGHT_BITS - 1) - 1
    w = linear.weight.detach().double()
    w_scale = w.abs().amax(dim=1).clamp(min=1e-12) / one
    acc_scale = w_scale * in_scale.double()
    return {f"{name}weight": torch.round(w / w_scale[:, None]).long(),
            f"{name}bias": torch.round(linear.bias.detach().double() / acc_scale).long()}, acc_scale


def _export_classifier(head, in_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """RoBERTa's head on 16-bit weights: dense -> tanh (table) -> out_proj -> float logits at the end."""
    tensors, scale = _head_linear(head.dense, in_scale, "dense_")
    bound = head.dense.in_features * 128 * (2 ** (HEAD_WEIGHT_BITS - 1) - 1) + tensors["dense_bias"].abs().max().item()
    tensors |= _fixed_point(scale * 2**TANH_STEP_BITS, bound, "tanh_in")
    grid = torch.arange(-(2**15), 2**15, dtype=torch.float64) / 2**TANH_STEP_BITS
    tensors["tanh_table"] = torch.round(torch.tanh(grid) * TANH_ONE).long()
    out_proj, scale = _head_linear(head.out_proj, torch.tensor(1 / TANH_ONE, dtype=torch.float64), "out_proj_")
    tensors |= out_proj
    tensors["logit_scale"] = scale  # the only float: logits = accumulator * logit_scale, at the very end
    return tensors


def _export_token_classifier(linear: nn.Linear, in_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """The token classifier (one float linear layer on every position) on 16-bit weights, float logits at the end."""
    tensors, scale = _head_linear(linear, in_scale, "")
    return {**tensors, "logit_scale": scale}


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in tensors.items()}


# The heads with an integer-only form: the model class, the spec's head name, the head's export.
_HEADS = {IBertForSequenceClassification: ("sequence_classification", _export_classifier),
          IBertForTokenClassification: ("token_classification", _export_token_classifier)}


@torch.no_grad()
def export_integer_model(model: nn.Module) -> IntegerIBert:
    """The integer-only version of an I-BERT QAT model (IBertModel, IBertForSequenceClassification or
    IBertForTokenClassification with quant_mode=True, force_dequant='none', activation ranges calibrated)."""
    base = model if isinstance(model, IBertModel) else getattr(model, "ibert", None)
    if not isinstance(base, IBertModel) or (base is not model and type(model) not in _HEADS):
        raise TypeError(f"{type(model).__name__}: only IBertModel, IBertForSequenceClassification and "
                        "IBertForTokenClassification export")
    config = base.config
    if not config.quant_mode or config.force_dequant != "none":
        raise ValueError("only a model with quant_mode=True and force_dequant='none' is integer-only "
                         f"(quant_mode={config.quant_mode}, force_dequant={config.force_dequant!r})")
    tensors, emb_scale = _export_embeddings(base.embeddings)
    tensors = _prefixed(tensors, "embeddings.")
    if base.embeddings_project is not None:
        projection, emb_scale = _export_projection(base, emb_scale)
        tensors |= _prefixed(projection, "embeddings_project.")
    scale = emb_scale
    weights_from = base.encoder.weights_from
    for i, layer in enumerate(base.encoder.layer):
        layer_tensors, scale = _export_layer(layer, scale, emb_scale, f"encoder.layer.{i}")
        if weights_from[i] != i:  # the same module's weights: stored with the first application only
            layer_tensors = {k: v for k, v in layer_tensors.items() if k not in SHARED_WEIGHTS}
        tensors |= _prefixed(layer_tensors, f"layers.{i}.")
    head, export_head = _HEADS.get(type(model), ("base", None))
    spec = {"format": FORMAT, "version": 1, "hidden_size": config.hidden_size,
            "num_hidden_layers": len(weights_from), "layer_weights": weights_from,
            "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
            "pad_token_id": config.pad_token_id, "head": head}
    if export_head is None:
        spec["output_scale"] = scale.item()
    else:
        spec["labels"] = config.label_names()  # config.json's id2label: the integer-only dir has no config.json
        tensors |= _prefixed(export_head(model.classifier, scale), "classifier.")
    return IntegerIBert(spec, tensors)
