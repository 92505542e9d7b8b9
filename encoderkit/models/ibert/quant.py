"""I-BERT's quantization modules (Kim et al., 2021, "I-BERT: Integer-only BERT Quantization") for
quantization-aware training.

Every module takes and returns `(x, scale)`: `x` is a float tensor holding integers times `scale`
(simulated quantization), so ordinary autograd trains through it, with straight-through estimators for
the roundings. A module built with quant_mode=False is its float counterpart and returns scale None.

The arithmetic, constants and buffer names are those of transformers' `ibert/quant_modules.py`, so I-BERT
checkpoints trained there (quant_mode=True) reproduce here. The methods that derive integer constants from
scales (`erf_constants`, `exp_constants`, ...) are shared with export.py, whose integer-only model
(integer.py, int_ops.py) runs the same recipes on integer tensors. Two deliberate differences from transformers:
- IntSoftmax requantizes its integer exponentials to 16 bits directly. transformers divides them by their
  float scale first, which overflows float32 (inf) when the score scale is below ~4e-5 (q/k ranges under
  about +-2.3); where it does not overflow both give the same integers.
- Float paths use torch's fused layer_norm/softmax/gelu (same values up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

FORCE_DEQUANT = ("none", "gelu", "softmax", "layernorm", "nonlinear")


def _check_force_dequant(force_dequant: str) -> None:
    if force_dequant not in FORCE_DEQUANT:
        raise ValueError(f"force_dequant {force_dequant!r}; valid: {', '.join(FORCE_DEQUANT)}")


class _FloorSTE(Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _RoundSTE(Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor with a straight-through (identity) gradient."""
    return _FloorSTE.apply(x)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round (half to even) with a straight-through (identity) gradient."""
    return _RoundSTE.apply(x)


def _per_row(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """A scale of one value or one per output channel, shaped to broadcast over a weight or activation."""
    return scale.view(-1, 1) if ndim == 2 else scale.view(-1)


def symmetric_scale(bits: int, x_min: torch.Tensor, x_max: torch.Tensor) -> torch.Tensor:
    """Scale mapping [-max|x|, max|x|] onto the signed `bits`-bit range (elementwise for per-channel ranges)."""
    with torch.no_grad():
        return torch.clamp(torch.maximum(x_min.abs(), x_max.abs()), min=1e-8) / (2 ** (bits - 1) - 1)


class _SymmetricQuantize(Function):
    """x -> integers in [-(2^(b-1) - 1), 2^(b-1) - 2] (transformers' bound); gradient dx_int/dx = 1/scale."""

    @staticmethod
    def forward(ctx, x, bits, scale):
        n = 2 ** (bits - 1) - 1
        scale = _per_row(scale, x.dim())
        ctx.save_for_backward(scale)
        return torch.clamp(torch.round(1.0 / scale * x), -n, n - 1)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad / scale, None, None


def symmetric_quantize(x: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    return _SymmetricQuantize.apply(x, bits, scale)


def fixed_point_multiplier(ratio: torch.Tensor, bits: int = 31) -> tuple[torch.Tensor, torch.Tensor]:
    """ratio ~ m / 2^e with m a `bits`-bit integer rounded half up (I-BERT's batch_frexp); float64 tensors."""
    mantissa, exponent = torch.frexp(ratio.double())
    return torch.floor(mantissa * 2.0**bits + 0.5), bits - exponent.double()


def requantize(z_int: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """round(z_int * ratio) with ratio as a fixed-point multiplier, in float64 as transformers does."""
    m, e = fixed_point_multiplier(ratio)
    return torch.round(z_int.double() * m / 2.0**e)


class _FixedPointMul(Function):
    """Requantize x (scale x_scale), plus optionally a residual (identity_scale), to `bits` bits at out_scale."""

    @staticmethod
    def forward(ctx, x, x_scale, bits, out_scale, identity, identity_scale):
        # A scale of one value or one per channel (last dimension); out_scale is rounded through float32.
        reshape = (lambda s: s) if x_scale.dim() == 3 else (lambda s: s.view(1, 1, -1))
        ctx.out_scale = out_scale
        ctx.has_identity = identity is not None
        n = 2 ** (bits - 1) - 1
        with torch.no_grad():
            out_scale64 = out_scale.float().double()
            x_scale = reshape(x_scale)
            out = requantize(torch.round(x / x_scale), reshape(x_scale.double() / out_scale64))
            if identity is not None:
                identity_scale = reshape(identity_scale)
                out = out + requantize(torch.round(identity / identity_scale),
                                       reshape(identity_scale.double() / out_scale64))
            return torch.clamp(out.float(), -n - 1, n)

    @staticmethod
    def backward(ctx, grad):
        grad = grad / ctx.out_scale
        return grad, None, None, None, grad if ctx.has_identity else None, None


class QuantEmbedding(nn.Module):
    """Embedding whose table is quantized symmetrically to weight_bit bits with one scale."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 weight_bit: int = 8, quant_mode: bool = False):
        super().__init__()
        self.padding_idx = padding_idx
        self.weight_bit = weight_bit
        self.quant_mode = quant_mode
        self.weight = nn.Parameter(torch.zeros(num_embeddings, embedding_dim))
        self.register_buffer("weight_scaling_factor", torch.zeros(1))
        self.register_buffer("weight_integer", torch.zeros(num_embeddings, embedding_dim))

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer table as float, with STE gradient; its scale). Also stored in the HF buffers."""
        w = self.weight.detach()
        scale = symmetric_scale(self.weight_bit, w.min().expand(1), w.max().expand(1))
        w_int = symmetric_quantize(self.weight, self.weight_bit, scale)
        self.weight_scaling_factor = scale
        self.weight_integer = w_int.detach()
        return w_int, scale

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.quant_mode:
            return F.embedding(ids, self.weight, self.padding_idx), None
        w_int, scale = self.quantized_weight()
        return F.embedding(ids, w_int, self.padding_idx) * scale, scale


class QuantAct(nn.Module):
    """Quantizes an activation to activation_bit bits over a range tracked in training by an EMA (momentum 0.95).

    Given the scale of its input (an integer tensor from a previous module), it requantizes by fixed-point
    multiplication, optionally adding a residual `identity` with its own scale (integer-only addition).
    """

    def __init__(self, activation_bit: int, act_range_momentum: float = 0.95, quant_mode: bool = False):
        super().__init__()
        self.activation_bit = activation_bit
        self.act_range_momentum = act_range_momentum
        self.quant_mode = quant_mode
        # +-1e-5 marks "no range yet": the first training batch sets the range, later ones move it by EMA.
        self.register_buffer("x_min", torch.full((1,), -1e-5))
        self.register_buffer("x_max", torch.full((1,), 1e-5))
        self.register_buffer("act_scaling_factor", torch.zeros(1))

    def extra_repr(self) -> str:
        return (f"activation_bit={self.activation_bit}, quant_mode={self.quant_mode}, "
                f"range=[{self.x_min.item():.3g}, {self.x_max.item():.3g}]")

    @torch.no_grad()
    def _track_range(self, x: torch.Tensor) -> None:
        x_min, x_max = x.min(), x.max()
        if x_min.isnan() or x_max.isnan():
            raise FloatingPointError(f"NaN in the activation whose range {self} tracks")
        if self.x_min.min() > -1.1e-5 and self.x_max.max() < 1.1e-5:
            self.x_min = self.x_min + x_min
            self.x_max = self.x_max + x_max
        else:
            momentum = self.act_range_momentum
            self.x_min = self.x_min * momentum + x_min * (1 - momentum)
            self.x_max = self.x_max * momentum + x_max * (1 - momentum)

    def scale(self) -> torch.Tensor:
        return symmetric_scale(self.activation_bit, self.x_min, self.x_max)

    def forward(self, x: torch.Tensor, pre_act_scaling_factor: torch.Tensor | None = None,
                identity: torch.Tensor | None = None, identity_scaling_factor: torch.Tensor | None = None):
        x_act = x if identity is None else identity + x
        if self.training:
            self._track_range(x_act.detach())
        if not self.quant_mode:
            return x_act, None
        self.act_scaling_factor = scale = self.scale()
        if pre_act_scaling_factor is None:  # a float input, e.g. after a dequantized non-linearity
            x_int = symmetric_quantize(x_act, self.activation_bit, scale)
        else:
            x_int = _FixedPointMul.apply(x, pre_act_scaling_factor, self.activation_bit, scale,
                                         identity, identity_scaling_factor)
        return x_int * scale.view(-1), scale


class QuantLinear(nn.Module):
    """Linear with weight_bit-bit symmetric weights (one scale per output channel if per_channel) and a
    bias_bit-bit bias at scale input_scale * weight_scale, so the integer GEMM accumulates it directly."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bit: int = 8,
                 bias_bit: int = 32, per_channel: bool = False, quant_mode: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_bit, self.bias_bit = weight_bit, bias_bit
        self.per_channel = per_channel
        self.quant_mode = quant_mode
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.register_buffer("weight_integer", torch.zeros(out_features, in_features))
        self.register_buffer("fc_scaling_factor", torch.zeros(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if bias:
            self.register_buffer("bias_integer", torch.zeros(out_features))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weight_bit={self.weight_bit}, per_channel={self.per_channel}, quant_mode={self.quant_mode}")

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer weight as float, with STE gradient; its scale per output channel or (1,))."""
        w = self.weight.detach()
        if self.per_channel:
            w_min, w_max = w.min(dim=1).values, w.max(dim=1).values
        else:
            w_min, w_max = w.min().expand(1), w.max().expand(1)
        scale = symmetric_scale(self.weight_bit, w_min, w_max)
        w_int = symmetric_quantize(self.weight, self.weight_bit, scale)
        self.fc_scaling_factor = scale
        self.weight_integer = w_int.detach()
        return w_int, scale

    def quantized_bias(self, bias_scale: torch.Tensor) -> torch.Tensor | None:
        if self.bias is None:
            return None
        b_int = symmetric_quantize(self.bias, self.bias_bit, bias_scale)
        self.bias_integer = b_int.detach()
        return b_int

    def forward(self, x: torch.Tensor, prev_act_scaling_factor: torch.Tensor | None = None):
        if not self.quant_mode:
            return F.linear(x, self.weight, self.bias), None
        if prev_act_scaling_factor is None or prev_act_scaling_factor.shape != (1,):
            raise ValueError("QuantLinear needs its input quantized with one scale (a QuantAct before it)")
        w_int, w_scale = self.quantized_weight()
        bias_scale = w_scale * prev_act_scaling_factor
        x_int = x / prev_act_scaling_factor.view(1, -1)
        return F.linear(x_int, w_int, self.quantized_bias(bias_scale)) * bias_scale, bias_scale


class IntGELU(nn.Module):
    """i-GELU: x * (1 + erf(x / sqrt 2)) / 2 with erf replaced by a clipped second-order polynomial,
    sign(x) * (a (min(|x|, -b) + b)^2 + 1), evaluated on integers."""

    k = 1.4142
    shift_bits = 14  # the polynomial's integer is divided by 2^14 to keep it in range
    coeff = (-0.2888, -1.769, 1 / -0.2888)  # a, b, c/a

    def __init__(self, quant_mode: bool = True, force_dequant: str = "none", approximate: str = "none"):
        super().__init__()
        _check_force_dequant(force_dequant)
        self.quant_mode = quant_mode and force_dequant not in ("nonlinear", "gelu")
        # The float path's GELU: "tanh" is ALBERT's gelu_new. The integer polynomial is within 1.8e-2 of either
        # (they differ by less than 1e-3), so it is the same for both.
        self.approximate = approximate

    def erf_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """Scale of the erf polynomial's integer (after the 2^14 division) for inputs at scale * k."""
        return scale**2 * self.coeff[0] * 2**self.shift_bits

    def erf_constants(self, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b_int, c_int) for inputs at scale * k."""
        return torch.floor(self.coeff[1] / scale), torch.floor(self.coeff[2] / scale**2)

    def output_constants(self, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the integer 1 at the erf's scale, output scale) for inputs at `scale`."""
        erf_scale = self.erf_scale(scale / self.k)
        return 1.0 // erf_scale, scale * erf_scale / 2

    def forward(self, x: torch.Tensor, scaling_factor: torch.Tensor | None = None):
        if not self.quant_mode:
            return F.gelu(x, approximate=self.approximate), None
        x_int = x / scaling_factor
        b_int, c_int = self.erf_constants(scaling_factor / self.k)
        abs_int = torch.min(torch.abs(x_int), -b_int)
        erf_int = floor_ste(torch.sign(x_int) * ((abs_int + b_int) ** 2 + c_int) / 2**self.shift_bits)
        one_int, out_scale = self.output_constants(scaling_factor)
        return x_int * (erf_int + one_int) * out_scale, out_scale


class IntSoftmax(nn.Module):
    """Softmax on integers: i-exp (exp(x) = 2^-q exp(r), r in (-ln 2, 0], exp(r) a second-order polynomial),
    16-bit requantization of the exponentials, then an integer division by their sum to output_bit bits."""

    x0 = -0.6931  # -ln 2
    const = 30  # exponents are evaluated at 2^30 times the polynomial's scale; inputs clip at 30 * x0
    coef = (0.35815147, 0.96963238 / 0.35815147, 1.0 / 0.35815147)  # a, b/a, c/a
    max_bit = 32

    def __init__(self, output_bit: int, quant_mode: bool = False, force_dequant: str = "none"):
        super().__init__()
        _check_force_dequant(force_dequant)
        self.output_bit = output_bit
        self.quant_mode = quant_mode and force_dequant not in ("nonlinear", "softmax")
        self.act = QuantAct(16, quant_mode=self.quant_mode)

    @torch.no_grad()
    def exp_constants(self, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x0_int = -ln 2 as an integer, b_int, c_int) for inputs at `scale`."""
        return (torch.floor(self.x0 / scale), torch.floor(self.coef[1] / scale),
                torch.floor(self.coef[2] / scale**2))

    def int_exp(self, x_int: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Integer exponentials of x_int <= 0 (at scale), at scale a * scale^2 / 2^30."""
        x0_int, b_int, c_int = self.exp_constants(scale)
        x_int = torch.max(x_int, self.const * x0_int)
        q = floor_ste(x_int / x0_int)
        r = x_int - x0_int * q
        exp_int = (r + b_int) * r + c_int
        return torch.clamp(floor_ste(exp_int * 2 ** (self.const - q)), min=0)

    def forward(self, x: torch.Tensor, scaling_factor: torch.Tensor | None = None):
        if not self.quant_mode:
            return F.softmax(x, dim=-1), None
        x_int = x / scaling_factor
        x_int = x_int - x_int.max(dim=-1, keepdim=True).values
        exp_int = self.int_exp(x_int, scaling_factor)
        # The exponentials' own scale cancels in the normalization: requantize the integers themselves.
        exp, exp_scale = self.act(exp_int, torch.ones_like(scaling_factor))
        exp_int = exp / exp_scale
        factor = floor_ste(2**self.max_bit / exp_int.sum(dim=-1, keepdim=True))
        exp_int = floor_ste(exp_int * factor / 2 ** (self.max_bit - self.output_bit))
        scale = 1 / 2**self.output_bit
        return exp_int * scale, scale


class IntLayerNorm(nn.Module):
    """LayerNorm on integers: integer mean and variance, the standard deviation by an integer square root,
    division as a multiplication by floor(2^31 / std). The output keeps 32 bits, at scale
    sqrt(n) / 2^30 * weight (per channel); the bias is added as an integer at that scale.

    `shift` (a buffer) right-shifts the centred input so the variance stays below 2^32; training raises it
    when a batch overflows.
    """

    max_bit = 32

    def __init__(self, normalized_shape: int, eps: float, output_bit: int = 8, quant_mode: bool = False,
                 force_dequant: str = "none"):
        super().__init__()
        _check_force_dequant(force_dequant)
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.quant_mode = quant_mode and force_dequant not in ("nonlinear", "layernorm")
        self.register_buffer("shift", torch.zeros(1))
        self.output_bit = output_bit
        # Unused (in transformers too), kept because I-BERT checkpoints carry its buffers.
        self.activation = QuantAct(output_bit, quant_mode=self.quant_mode)

    def dim_sqrt(self) -> torch.Tensor:
        return torch.sqrt(torch.tensor(float(self.normalized_shape)))

    def bias_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(bias as an integer at the normalized output's scale, output scale) as float tensors."""
        scale = self.dim_sqrt().to(self.weight.device) / 2**30
        bias_int = floor_ste(self.bias.detach() / self.weight.detach() / scale)
        return bias_int, scale * self.weight

    @torch.no_grad()
    def _raise_shift(self, y_int: torch.Tensor) -> None:
        var_int = torch.sum(y_int**2, dim=2, keepdim=True)
        shift = torch.log2(torch.sqrt(var_int / 2**self.max_bit)).ceil().max()
        self.shift = torch.max(self.shift, shift)

    def _variance(self, y_int: torch.Tensor) -> torch.Tensor:
        y_shifted = floor_ste(y_int / 2**self.shift)
        return torch.sum(y_shifted**2, dim=2, keepdim=True)

    def forward(self, x: torch.Tensor, scaling_factor: torch.Tensor | None = None):
        if not self.quant_mode:
            return F.layer_norm(x, (self.normalized_shape,), self.weight, self.bias, self.eps), None
        x_int = x / scaling_factor
        mean_int = round_ste(x_int.mean(dim=2, keepdim=True))
        y_int = x_int - mean_int
        var_int = self._variance(y_int)
        if self.training and var_int.max() >= 2**self.max_bit:
            self._raise_shift(y_int)
            var_int = self._variance(y_int)
        std_int = floor_ste(torch.sqrt(var_int)) * 2**self.shift
        factor = floor_ste(2**31 / std_int)
        y_int = floor_ste(y_int * factor / 2)
        bias_int, scale = self.bias_constants()
        return (y_int + bias_int) * scale, scale
