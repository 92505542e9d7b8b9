"""encoderkit: pretrain, fine-tune, quantize and use compact encoders (ALBERT, ELECTRA, I-BERT)."""

__version__ = "0.1.0"
