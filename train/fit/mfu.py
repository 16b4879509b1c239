"""Training throughput and model FLOPs utilisation (MFU) for LoRA runs.

MFU = (FLOPs one training step needs) / (step time x the GPUs' peak dense bf16 FLOP/s).

FLOPs per token of a LoRA step on a decoder-only transformer (``training_flops_per_token``):

    linear layers   4 N + 2 N_train      N: weights of every matrix multiply a token goes through
                                          (attention q/k/v/o, the MLP, the LM head; not the embedding
                                          lookup). Forward 2 N (a multiply and an add per weight);
                                          backward 2 N for the gradient w.r.t. the activations, which
                                          LoRA still needs all the way down; the gradient w.r.t. the
                                          weights (another 2 per weight) only for trainable weights:
                                          none of the frozen base, so 4 N rather than full fine-tuning's 6 N.
    LoRA adapters   6 N_lora             N_lora = r x (d_in + d_out) per adapted matrix; they are
                                          trained, so forward, activation and weight gradients: 6.
    attention       12 L H d_h T         the score and value products (no weights): 4 L H d_h T in the
                                          forward pass, twice that backward; T is the mean sequence
                                          length of the step's rows; counted over the full T x T matrix,
                                          as PaLM's MFU does, though a causal kernel skips half of it.

Assumptions: norms, activations, rotary embeddings, softmax and the optimizer are left out (a few
per cent); recomputation from gradient checkpointing is *not* counted (that would be hardware FLOPs
utilisation, HFU): MFU is the useful work only. The LM head is counted at every position although the
loss only needs the assistant positions. Tokens are the non-padding tokens the step trained on.
The shape comes from the model's config, so the figure does not depend on how PEFT wraps the model.

Peak dense bf16 tensor-core FLOP/s (no sparsity) come from a small table of known GPUs, matched
on ``torch.cuda.get_device_name()``; ``QUIMBOT_PEAK_TFLOPS`` overrides it (e.g. for a GPU that is
not listed, or a power-capped one). On CPU no MFU is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Dense bf16 tensor TFLOP/s per GPU from the vendors' data sheets (the sparsity figures are 2x these).
# Order matters: the first matching name wins, so the specific variants come first.
PEAK_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),      # SXM
    (("H200",), 989.0),
    (("GH200",), 989.0),
    (("B200",), 2250.0),
    (("A100",), 312.0),
    (("L40S",), 362.0),
    (("L40",), 181.0),
    (("L4",), 121.0),
    (("A10",), 125.0),       # A10 (the A10G of AWS is slower: set QUIMBOT_PEAK_TFLOPS)
    (("RTX 4090",), 165.0),
    (("RTX 6000 ADA",), 364.0),
]


@dataclass
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool = True  # gate + up + down (SwiGLU: Llama, Qwen, SmolLM2); False: up + down

    @classmethod
    def from_config(cls, config: Any) -> "ModelShape":
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        hidden = config.hidden_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        act = str(getattr(config, "hidden_act", "silu"))
        return cls(layers=config.num_hidden_layers, hidden=hidden, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                   intermediate=config.intermediate_size, vocab=config.vocab_size,
                   gated_mlp=act in ("silu", "swish", "gelu_pytorch_tanh") or "glu" in act)

    def linear_weights(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of every matrix multiply in one layer."""
        d, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                  "up_proj": (d, self.intermediate), "down_proj": (self.intermediate, d)}
        if self.gated_mlp:
            shapes["gate_proj"] = (d, self.intermediate)
        return shapes

    def matmul_params(self) -> int:
        """N: weights every token is multiplied with (all layers' linear layers + the LM head)."""
        per_layer = sum(i * o for i, o in self.linear_weights().values())
        return self.layers * per_layer + self.hidden * self.vocab

    def lora_params(self, rank: int, targets: list[str] | str = "all-linear") -> int:
        """N_lora of a rank-``rank`` adapter on ``targets`` (module names, or 'all-linear')."""
        shapes = self.linear_weights()
        names = list(shapes) if targets in ("all-linear", ["all-linear"]) else [t for t in targets if t in shapes]
        return self.layers * sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)


def training_flops_per_token(shape: ModelShape, seq_len: float, lora_params: int = 0,
                             trainable_base_params: int = 0) -> float:
    """Model FLOPs one token costs in a training step (forward + backward), per the module docstring."""
    n = shape.matmul_params()
    attention = 12 * shape.layers * shape.heads * shape.head_dim * seq_len
    return 4 * n + 2 * trainable_base_params + 6 * lora_params + attention


def peak_flops(device_name: str | None) -> float | None:
    """Peak dense bf16 FLOP/s of one GPU, from QUIMBOT_PEAK_TFLOPS or the table; None when unknown."""
    override = os.environ.get("QUIMBOT_PEAK_TFLOPS")
    if override:
        try:
            return float(override) * 1e12
        except ValueError:
            raise ValueError(f"QUIMBOT_PEAK_TFLOPS={override!r} is not a number of TFLOP/s") from None
    if not device_name:
        return None
    name = device_name.upper()
    for keys, tflops in PEAK_BF16_TFLOPS:
        if all(k in name for k in keys):
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_per_gpu: float, gpus: int = 1) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all GPUs."""
    return tokens_per_s * flops_per_token / (peak_per_gpu * max(1, gpus))


class ThroughputMeter:
    """tokens/s (and MFU on a known GPU) between two logging steps of a run."""

    def __init__(self, shape: ModelShape | None, lora_params: int, peak_per_gpu: float | None, gpus: int = 1):
        self.shape, self.lora_params, self.peak, self.gpus = shape, lora_params, peak_per_gpu, gpus
        self._last: tuple[float, int, int] | None = None  # (time, tokens, sequences)

    def start(self, now: float, tokens: int, sequences: int) -> None:
        self._last = (now, tokens, sequences)

    def update(self, now: float, tokens: int, sequences: int) -> dict[str, float]:
        """{'tokens_per_s': ..., 'mfu': ...} since the last call (mfu only where the peak is known)."""
        if self._last is None:
            self.start(now, tokens, sequences)
            return {}
        t0, tok0, seq0 = self._last
        self._last = (now, tokens, sequences)
        dt, dtok, dseq = now - t0, tokens - tok0, sequences - seq0
        if dt <= 0 or dtok <= 0:
            return {}
        out = {"tokens_per_s": dtok / dt}
        if self.shape is not None and self.peak:
            seq_len = dtok / dseq if dseq > 0 else 0.0
            per_token = training_flops_per_token(self.shape, seq_len, self.lora_params)
            out["mfu"] = mfu(out["tokens_per_s"], per_token, self.peak, self.gpus)
        return out
