"""Integer-only inference of a base-size classifier: our integer I-BERT against transformers' IBert in
quant_mode (integers simulated in float) and against torch's dynamic int8 quantization of our fp32 model.

The models are built as benchmarks/bench_quant.py (the quantization work's own latency script) builds
them: RoBERTa-base sizes, random weights from one seed, activation ranges calibrated on two random
batches, then `encoderkit.models.quant.runtime.export_integer_model`; transformers' IBert gets the same
weights and ranges. Here each side builds only its own model, in its own process.
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


def _calibrated_qat_model():
    from encoderkit.models import ibert

    torch.manual_seed(0)
    model = ibert.IBertForSequenceClassification(ibert.IBertConfig(**BASE, num_labels=2, quant_mode=True))
    ibert.calibrate(model, [full_length_batch(2, 128, seed) for seed in CALIBRATION_SEEDS])
    return model


def integer_model(batch_size: int, seq_len: int):
    from encoderkit.models.quant.runtime import export_integer_model

    model = export_integer_model(_calibrated_qat_model())
    batch = full_length_batch(batch_size, seq_len)
    return inference_step(model, lambda: model(**batch))


def ibert_reference(batch_size: int, seq_len: int):
    import transformers

    model = transformers.IBertForSequenceClassification(
        transformers.IBertConfig(**BASE, num_labels=2, quant_mode=True))
    model.load_state_dict(_calibrated_qat_model().state_dict())  # the same names: same weights and ranges
    batch = full_length_batch(batch_size, seq_len)
    return inference_step(model, lambda: model(**batch))


def dynamic_int8_reference(batch_size: int, seq_len: int):
    from encoderkit.models.electra import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    fp32 = BertForSequenceClassification(BertConfig(**BASE, num_labels=2)).eval()
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
    batch = full_length_batch(batch_size, seq_len)
    return inference_step(model, lambda: model(**batch))
