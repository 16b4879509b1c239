"""Quimbot's training side, one sub-package a stage: ``data`` (generate, import, gate, dedup, audit, mix),
``fit`` (LoRA SFT/DPO, checkpoints, perplexity), ``evaluate`` (pedagogy metrics, compare, replay,
calibration) and ``export`` (merge, GGUF, Modelfile, parity)."""
