"""Fitting: LoRA SFT and DPO with TRL + PEFT, run folders, checkpoints and their perplexity."""
