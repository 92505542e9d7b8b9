"""Integer-only inference of a base-size classifier: our integer I-BERT against transformers' IBert in
quant_mode (integers simulated in float) and against torch's dynamic int8 quantization of our fp32 model.

The models, here and in benchmarks/bench_quant.py (the quantization work's own latency script): RoBERTa-base
sizes, random weights from one seed, activation ranges calibrated on two random batches, then
`encoderkit.models.ibert.export.export_integer_model`; transformers' IBert gets the same weights and ranges.
In `make bench` each side builds only its own model, in its own process.
"""

from __future__ import annotations

import warnings

import torch

from benchmarks.classification import BASE
from benchmarks.common import inference_step

CALIBRATION_SEEDS = (1, 2)


def full_length_batch(batch_size: int, seq_len: int, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(3, BASE["vocab_size"], (batch_size, seq_len), generator=g),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}


def calibrated_qat_model():
    from encoderkit.models.ibert.model import IBertConfig, IBertForSequenceClassification, calibrate

    torch.manual_seed(0)
    model = IBertForSequenceClassification(IBertConfig(**BASE, num_labels=2, quant_mode=True))
    calibrate(model, [full_length_batch(2, 128, seed) for seed in CALIBRATION_SEEDS])
    return model


def fp32_model():
    from encoderkit.models.electra import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**BASE, num_labels=2)).eval()


def dynamic_int8_model(fp32):
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)


def ibert_reference_model(qat):
    """transformers' IBertForSequenceClassification with quant_mode and the QAT model's weights and ranges."""
    import transformers

    model = transformers.IBertForSequenceClassification(
        transformers.IBertConfig(**BASE, num_labels=2, quant_mode=True))
    model.load_state_dict(qat.state_dict())  # the same names: same weights and ranges
    return model.eval()


def _timed(model, batch_size: int, seq_len: int):
    batch = full_length_batch(batch_size, seq_len)
    return inference_step(model, lambda: model(**batch))


def integer_model(batch_size: int, seq_len: int):
    from encoderkit.models.ibert.export import export_integer_model

    return _timed(export_integer_model(calibrated_qat_model()), batch_size, seq_len)


def ibert_reference(batch_size: int, seq_len: int):
    return _timed(ibert_reference_model(calibrated_qat_model()), batch_size, seq_len)


def dynamic_int8_reference(batch_size: int, seq_len: int):
    return _timed(dynamic_int8_model(fp32_model()), batch_size, seq_len)
