"""I-BERT (Kim et al., 2021, "I-BERT: Integer-only BERT Quantization"): the family's folder. Each module imports
only the ones listed above it (and ..layers, ..hf_format), never one below:

  quant.py      the quantization modules of quantization-aware training (QuantAct, QuantLinear, IntGELU, ...)
  model.py      IBertConfig, the I-BERT models (transformers' names), HEADS, calibrate
  convert.py    from_float: the QAT model from a float BERT / ELECTRA / RoBERTa / ALBERT in Hugging Face format
  int_ops.py    the integer-only model's computation, as functions of integer tensors
  schedule.py   how the integer-only model's work is split over the CPU
  kernels.py    int_ops' chains compiled ahead of time (AOTInductor), cached per machine
  integer.py    the integer-only model (IntegerIBert) and load_integer_model
  export.py     export_integer_model: a calibrated QAT model -> the integer-only model

An I-BERT checkpoint (config.json + model.safetensors, as transformers' IBert* write them) is read and written
by hf_format.load_pretrained / save_pretrained, like every family's. This package re-exports model.py only:
hf_format imports model.py, and convert.py imports hf_format, so importing convert or export here would be a cycle.
"""

from .model import (
    HEADS,
    IBertConfig,
    IBertForMaskedLM,
    IBertForSequenceClassification,
    IBertForTokenClassification,
    IBertModel,
    calibrate,
)

__all__ = ["HEADS", "IBertConfig", "IBertForMaskedLM", "IBertForSequenceClassification", "IBertForTokenClassification",
           "IBertModel", "calibrate"]
