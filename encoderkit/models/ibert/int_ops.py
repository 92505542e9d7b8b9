"""The integer-only I-BERT's computation (integer.py) as functions of integer tensors: int8 GEMMs
(torch._int_mm) and the elementwise chains between them.

The recipes and constants are those of the QAT modules (quant.py). The integer model calls three stages, `embed`,
`dense` (the embeddings' projection) and `layer` (built of `project`, `attend` and `feed_forward`), one sequence
at a time; each takes its block's constants as a dict of tensors, so one compiled kernel serves every layer
whose constants have the same dtypes. kernels.py compiles each stage ahead of time: each chain becomes one
vectorized C++ loop nest (one pass over memory) and the GEMMs are called from C++.

Widths: the constants' dtypes choose them. Export stores a constant as int32 where every product it enters
fits 32 bits (checked on the values' range), else int64, and torch's type promotion carries that through
the chain: int32 vectors hold twice the lanes. Values are narrowed back to int32 after each saturation.
Constants are never 0-d (shape (1,) for a scalar): a 0-d tensor would not take part in the promotion.
"""

from __future__ import annotations

import torch

EXP_SHIFT = 30  # i-exp evaluates 2^-q at 2^30 (IntSoftmax.const)
SOFTMAX_SUM_BITS = 32  # probabilities = exp * floor(2^32 / sum) / 2^24 (IntSoftmax.max_bit)
ERF_SHIFT_BITS = 14  # IntGELU.shift_bits
MASKED = -(1 << 30)  # added to masked int32 scores (|score| <= 2^20): clipped by i-exp to exp(-30 ln 2)


def round_shift(v: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """round(v / 2^e), half up, for 1 <= e <= 63: floor((floor(v / 2^(e-1)) + 1) / 2)."""
    return ((v >> (e - 1)) + 1) >> 1


def fixed_mul(v: torch.Tensor, m: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """round(v * m / 2^e): requantization by a fixed-point multiplier, in the wider of v's and m's dtypes."""
    return round_shift(v * m, e)


def saturate(v: torch.Tensor, bits: int) -> torch.Tensor:
    return v.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def round_div(s: torch.Tensor, n: int) -> torch.Tensor:
    """round(s / n), half to even as torch.round (the mean of IntLayerNorm)."""
    q = torch.div(s, n, rounding_mode="floor")
    twice_rest = 2 * (s - q * n)
    return q + ((twice_rest > n) | ((twice_rest == n) & (q % 2 == 1))).long()


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) for int64 0 <= n < 2^62: Newton's method (I-BERT's Algorithm 4) from a power of two
    above sqrt(n), found by a binary search for n's bit length; converges from above in <= 6 steps."""
    bits = torch.zeros_like(n)
    for step in (32, 16, 8, 4, 2, 1):
        bits = bits + step * ((n >> (bits + step)) > 0).long()
    x = torch.ones_like(n) << ((bits + 2) >> 1)  # 2^ceil((bit length) / 2) > sqrt(n)
    for _ in range(6):
        x = torch.minimum(x, (x + n // x.clamp(min=1)) >> 1)
    return x


def layernorm_requant(x: torch.Tensor, t: dict) -> torch.Tensor:
    """IntLayerNorm over the last dimension of int32 x, then its 8-bit requantization and the next
    QuantAct's (an identity where there is none); returns int8."""
    shift = t["shift"]
    mean = round_div(x.sum(-1, keepdim=True, dtype=torch.int64), x.shape[-1])
    y = x - mean
    y_shifted = y >> shift
    std = (isqrt((y_shifted * y_shifted).sum(-1, keepdim=True)) << shift).clamp(min=1)
    factor = (1 << 31) // std
    out = saturate(fixed_mul(((y * factor) >> 1) + t["ln_bias"], t["out_m"], t["out_e"]), 8).int()
    return saturate(fixed_mul(out, t["next_m"], t["next_e"]), 8).to(torch.int8)


def embed(input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor, t: dict) -> torch.Tensor:
    """(B, S) ids -> rows of the int8 tables -> 16-bit sums (I-BERT's embeddings_act1, twice) -> LayerNorm
    -> int8 (B * S, H)."""
    words, types = t["word_table"][input_ids.reshape(-1)], t["type_table"][token_type_ids.reshape(-1)]
    # int8 -> int32 first: Inductor's direct int8 -> int64 conversion is several times slower
    x = saturate(fixed_mul(words.int(), t["word_m"], t["word_e"]) + fixed_mul(types.int(), t["type_m"],
                                                                               t["type_e"]), 16)
    positions = t["position_table"][positions.reshape(-1)]
    x = saturate(x + fixed_mul(positions.int(), t["position_m"], t["position_e"]), 16)
    return layernorm_requant(x.int(), t)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """int8 (R, K) @ int8 weight (N, K)^T -> int32 (R, N), without the bias (the chains add it)."""
    return torch._int_mm(x, weight.t())


def requantize_int8(acc: torch.Tensor, bias: torch.Tensor, m: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """GEMM accumulators + bias, requantized to int8 (a QuantLinear followed by an 8-bit QuantAct)."""
    return saturate(fixed_mul(acc + bias, m, e), 8).to(torch.int8)


def dense(h: torch.Tensor, t: dict) -> torch.Tensor:
    """int8 rows (R, K) -> accumulators (+ bias) -> int8 (R, N): the embeddings' projection E -> H."""
    return requantize_int8(linear(h, t["weight"]).long(), t["bias"], t["out_m"], t["out_e"])


def project(h: torch.Tensor, a: dict) -> torch.Tensor:
    """int8 rows (R, H) -> q, k, v accumulators (+ bias) -> int8 (R, 3H). `rescale` first corrects an input
    whose true scale differs from the one the layer was told (see model.IBertEncoder; identity if equal)."""
    z = fixed_mul(linear(h, a["qkv_weight"]).long(), a["qkv_rescale_m"], a["qkv_rescale_e"])
    return requantize_int8(z, a["qkv_bias"], a["qkv_m"], a["qkv_e"])


def softmax(scores: torch.Tensor, mask: torch.Tensor, a: dict) -> torch.Tensor:
    """i-softmax of int32 scores (n, S, S), mask (1, 1, S) of 0 / MASKED -> probabilities in 0..255 (at
    scale 2^-8), returned as int8 p - 128 for the int8 GEMM.

    exp(x) = 2^-q exp(r) with x = q x0 + r, x0 = -ln 2 as an integer; exp(r) ~ (r + b) r + c. The division
    q = floor(x / x0) is a multiplication by div_m and a shift by div_s (exact on the clipped range of x,
    checked at export). The 16-bit requantization of exp * 2^(30 - q) is one rounding shift by e - 30 + q.
    """
    x0, b, c = a["softmax_x0"], a["softmax_b"], a["softmax_c"]
    x = scores + mask
    x = torch.maximum(x - x.amax(-1, keepdim=True), EXP_SHIFT * x0)  # int32
    q = ((-x.long() * a["softmax_div_m"]) >> a["softmax_div_s"]).int()  # 0..30
    r = x - x0 * q
    z = (r + b) * r + c  # > 0 on (x0, 0] (checked at export)
    shift = (a["softmax_e"] - EXP_SHIFT + q).clamp(max=63)  # 63: 0, as z m < 2^62
    exp = round_shift(z * a["softmax_m"], shift).clamp(max=32767).int()
    factor = (1 << SOFTMAX_SUM_BITS) // exp.sum(-1, keepdim=True, dtype=torch.int64)
    return (((exp * factor) >> (SOFTMAX_SUM_BITS - 8)) - 128).to(torch.int8)


def attend(qkv: torch.Tensor, mask: torch.Tensor, a: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The n heads of one sequence: qkv (S, 3, n, hs) int8 -> ((p - 128) @ v as int32 (n, S, hs), sum(v) as
    int32 (n, hs)). One GEMM per head for the scores and one for the context."""
    q, k, v = qkv.unbind(1)  # (S, n, hs)
    heads = range(q.shape[1])
    scores = torch.stack([torch._int_mm(q[:, i], k[:, i].t()) for i in heads])
    probs = softmax(scores, mask, a)
    return torch.stack([torch._int_mm(probs[i], v[:, i]) for i in heads]), v.sum(0, dtype=torch.int32)


def residual_layernorm(acc: torch.Tensor, residual: torch.Tensor, t: dict) -> torch.Tensor:
    """dense accumulators + bias and the int8 residual, each requantized, summed to 22 bits -> LayerNorm ->
    int8 -> the next QuantAct. `rescale` first rounds the residual to the scale the layer was told."""
    r = fixed_mul(fixed_mul(residual.int(), t["rescale_m"], t["rescale_e"]), t["residual_m"], t["residual_e"])
    x = saturate(fixed_mul(acc.long() + t["bias"], t["acc_m"], t["acc_e"]) + r, 22)
    return layernorm_requant(x.int(), t)


def gelu_requant(acc: torch.Tensor, f: dict) -> torch.Tensor:
    """i-GELU of the dense accumulators + bias: x * (erf_int + 1_int) with erf(x / sqrt 2) ~
    sign(x) ((min(|x|, -b) + b)^2 + c) / 2^14; then two 8-bit requantizations (the GELU's QuantAct and the
    next layer's input QuantAct). The first is export._wide_fixed_point's: shift, clamp, multiply."""
    erf_b, limit = f["erf_b"], f["gelu_limit"]
    x = acc.to(erf_b.dtype) + f["bias"]
    clipped = torch.minimum(x.abs(), -erf_b) + erf_b
    poly = clipped * clipped + f["erf_c"]
    erf = torch.where(x < 0, -poly, poly) >> ERF_SHIFT_BITS  # sign(x) poly, but x = 0 gives 0 below anyway
    gelu = torch.minimum(torch.maximum((x.long() * (erf + f["erf_one"])) >> f["gelu_shift"], -limit), limit)
    out = saturate(fixed_mul(gelu, f["gelu_m"], f["gelu_e"]), 8).int()
    return saturate(fixed_mul(out, f["next_m"], f["next_e"]), 8).to(torch.int8)


def feed_forward(h: torch.Tensor, context: torch.Tensor, value_sum: torch.Tensor, a: dict, o: dict, f: dict,
                 fo: dict) -> torch.Tensor:
    """Rows h (R, H) and their attention context (b, nh, s, hs) + value sums (b, nh, hs), R = b s -> context
    requantized -> attention output + residual -> LayerNorm -> feed-forward + residual -> LayerNorm: the
    layer's int8 output (R, H)."""
    z = context.long() + 128 * value_sum.long().unsqueeze(2)  # (p - 128) @ v + 128 sum(v)
    c = saturate(fixed_mul(z, a["context_m"], a["context_e"]), 8).to(torch.int8).transpose(1, 2)
    x = residual_layernorm(linear(c.reshape(h.shape), o["weight"]), h, o)
    g = gelu_requant(linear(x, f["weight"]), f)
    return residual_layernorm(linear(g, fo["weight"]), x, fo)


def layer(h: torch.Tensor, mask: torch.Tensor, a: dict, o: dict, f: dict, fo: dict, num_heads: int) -> torch.Tensor:
    """A whole layer on one sequence: h int8 (S, H), mask (1, 1, S) -> int8 (S, H). One sequence at a time, so
    that a compiled layer serves every batch size (the heads' GEMMs are a loop over the sequences otherwise)."""
    qkv = project(h, a).view(h.shape[0], 3, num_heads, -1)
    context, value_sum = attend(qkv, mask, a)
    return feed_forward(h, context[None], value_sum[None], a, o, f, fo)
