"""The integer elementwise chains of the integer-only I-BERT (runtime.py), as functions of integer tensors.

Each function is the work between two GEMMs; the recipes and their constants are those of the QAT modules
(modules.py). Every argument is a tensor (constants too, as 0-d or per-channel int64 tensors) so one
torch.compile'd graph serves every layer. `fused(fn)` returns that compiled version, which computes the
same integers in one pass over memory, or `fn` itself where torch.compile cannot build C++ here.
"""

from __future__ import annotations

import functools
import logging
import shutil

import torch

logger = logging.getLogger(__name__)

EXP_SHIFT = 30  # i-exp evaluates 2^-q at 2^30 (IntSoftmax.const)
SOFTMAX_SUM_BITS = 32  # probabilities = exp * floor(2^32 / sum) / 2^24 (IntSoftmax.max_bit)
ERF_SHIFT_BITS = 14  # IntGELU.shift_bits
MASKED = -(1 << 40)  # added to masked attention scores: below any score, clipped by i-exp to exp(-30 ln 2)


def round_shift(v: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """round(v / 2^e), half up, for 1 <= e <= 63: floor((floor(v / 2^(e-1)) + 1) / 2)."""
    return ((v >> (e - 1)) + 1) >> 1


def fixed_mul(v: torch.Tensor, m: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """round(v * m / 2^e): requantization by a fixed-point multiplier (v, m int64)."""
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


def layernorm_requant(x: torch.Tensor, shift: torch.Tensor, bias: torch.Tensor, out_m: torch.Tensor,
                      out_e: torch.Tensor, next_m: torch.Tensor | None = None,
                      next_e: torch.Tensor | None = None) -> torch.Tensor:
    """IntLayerNorm over the last dimension of int64 x, then its 8-bit requantization (and optionally a
    second one, the next QuantAct's); returns int8."""
    mean = round_div(x.sum(-1, keepdim=True), x.shape[-1])
    y = x - mean
    y_shifted = y >> shift
    std = (isqrt((y_shifted * y_shifted).sum(-1, keepdim=True)) << shift).clamp(min=1)
    factor = (1 << 31) // std
    out = saturate(fixed_mul(((y * factor) >> 1) + bias, out_m, out_e), 8)
    if next_m is not None:
        out = saturate(fixed_mul(out, next_m, next_e), 8)
    return out.to(torch.int8)


def embed(words: torch.Tensor, types: torch.Tensor, positions: torch.Tensor, word_m, word_e, type_m, type_e,
          position_m, position_e, shift, bias, out_m, out_e) -> torch.Tensor:
    """Rows of the int8 tables -> 16-bit sums (I-BERT's embeddings_act1, twice) -> LayerNorm -> int8."""
    x = saturate(fixed_mul(words.long(), word_m, word_e) + fixed_mul(types.long(), type_m, type_e), 16)
    x = saturate(x + fixed_mul(positions.long(), position_m, position_e), 16)
    return layernorm_requant(x, shift, bias, out_m, out_e)


def qkv_requant(acc: torch.Tensor, bias, m, e, rescale_m=None, rescale_e=None) -> torch.Tensor:
    """q/k/v accumulators (+ bias) -> int8; `rescale` first corrects an input whose true scale differs from
    the one the layer was told (see ibert.IBertEncoder)."""
    z = acc.long()
    if rescale_m is not None:
        z = fixed_mul(z, rescale_m, rescale_e)
    return saturate(fixed_mul(z + bias, m, e), 8).to(torch.int8)


def softmax(scores: torch.Tensor, mask: torch.Tensor | None, x0, b, c, m, e) -> torch.Tensor:
    """i-softmax of int32 scores (B, nh, S, S), mask (B, 1, 1, S) of 0 / MASKED -> probabilities in 0..255
    (at scale 2^-8), returned as int8 p - 128 for the int8 GEMM.

    exp(x) = 2^-q exp(r) with x = q x0 + r, x0 = -ln 2 as an integer; exp(r) ~ (r + b) r + c. The 16-bit
    requantization of exp * 2^(30 - q) is folded into one rounding shift by e - 30 + q.
    """
    x = scores.long()
    if mask is not None:
        x = x + mask
    x = x - x.amax(-1, keepdim=True)
    x = torch.maximum(x, EXP_SHIFT * x0)
    q = torch.div(x, x0, rounding_mode="floor")
    r = x - x0 * q
    z = ((r + b) * r + c).clamp(min=0)
    exp = saturate(round_shift(z * m, (e - EXP_SHIFT + q).clamp(max=63)), 16)  # >= 63: 0 (z * m < 2^62)
    factor = (1 << SOFTMAX_SUM_BITS) // exp.sum(-1, keepdim=True)
    return (((exp * factor) >> (SOFTMAX_SUM_BITS - 8)) - 128).to(torch.int8)


def context_requant(context: torch.Tensor, value_sum: torch.Tensor, m, e) -> torch.Tensor:
    """(p - 128) @ v accumulators (B, nh, S, hs) + 128 * sum(v) -> int8 (B, S, nh * hs)."""
    z = context.long() + 128 * value_sum.long().unsqueeze(2)
    out = saturate(fixed_mul(z, m, e), 8).to(torch.int8)
    B, nh, S, hs = out.shape
    return out.transpose(1, 2).reshape(B * S, nh * hs)


def residual_layernorm(acc: torch.Tensor, bias, m, e, residual: torch.Tensor, residual_m, residual_e, shift,
                       ln_bias, out_m, out_e, next_m=None, next_e=None, rescale_m=None,
                       rescale_e=None) -> torch.Tensor:
    """dense accumulators + bias and the int8 residual, each requantized, summed to 22 bits -> LayerNorm ->
    int8 (-> the next QuantAct). `rescale` first rounds the residual to the scale the layer was told."""
    r = residual.long()
    if rescale_m is not None:
        r = fixed_mul(r, rescale_m, rescale_e)
    x = saturate(fixed_mul(acc.long() + bias, m, e) + fixed_mul(r, residual_m, residual_e), 22)
    return layernorm_requant(x, shift, ln_bias, out_m, out_e, next_m, next_e)


def gelu_requant(acc: torch.Tensor, bias, erf_b, erf_c, erf_one, m, e, next_m, next_e) -> torch.Tensor:
    """i-GELU of the dense accumulators + bias: x * (erf_int + 1_int) with erf(x / sqrt 2) ~
    sign(x) ((min(|x|, -b) + b)^2 + c) / 2^14; then two 8-bit requantizations (the GELU's QuantAct and the
    next layer's input QuantAct)."""
    x = acc.long() + bias
    clipped = torch.minimum(x.abs(), -erf_b) + erf_b
    erf = (torch.sign(x) * (clipped * clipped + erf_c)) >> ERF_SHIFT_BITS
    out = saturate(fixed_mul(x * (erf + erf_one), m, e), 8)
    return saturate(fixed_mul(out, next_m, next_e), 8).to(torch.int8)


@functools.cache
def _can_compile() -> bool:
    return shutil.which("g++") is not None or shutil.which("c++") is not None


@functools.cache
def fused(fn):
    """fn compiled by torch.compile (Inductor generates one vectorized C++ loop nest), or fn if no compiler."""
    if not _can_compile():
        logger.warning("no C++ compiler: the integer chains run eagerly (slower, same results)")
        return fn
    return torch.compile(fn, dynamic=False)
