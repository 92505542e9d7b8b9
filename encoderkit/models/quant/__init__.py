"""I-BERT quantization: QAT modules (modules.py) and the exported integer-only model (runtime.py)."""

from .modules import (
    FORCE_DEQUANT,
    IntGELU,
    IntLayerNorm,
    IntSoftmax,
    QuantAct,
    QuantEmbedding,
    QuantLinear,
    fixed_point_multiplier,
    floor_ste,
    round_ste,
    symmetric_quantize,
    symmetric_scale,
)

__all__ = [
    "FORCE_DEQUANT",
    "IntGELU",
    "IntLayerNorm",
    "IntSoftmax",
    "QuantAct",
    "QuantEmbedding",
    "QuantLinear",
    "fixed_point_multiplier",
    "floor_ste",
    "round_ste",
    "symmetric_quantize",
    "symmetric_scale",
]
