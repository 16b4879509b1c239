"""transformers (+ an optional PEFT LoRA adapter): how training checkpoints are served.

    hf:default                                   bundled SmolLM2 weights (cached as safetensors)
    hf:/path/to/model  or  hf:org/name           any local model directory or hub id
    hf:default?adapter=runs/stage1/checkpoint-50 base plus a LoRA adapter from any training step
    hf:runs/stage1/checkpoint-50                 adapter directory; base read from its config
Options: ``device`` (cpu, cuda, cuda:1 ...; default: cuda when available), ``dtype``
(float32, bfloat16, float16; default: bfloat16 on GPU, float32 on CPU).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from core.errors import BackendError, ModelSpecError
from tutor.backends.base import Backend, Chunk, GenerationOptions, Message
from tutor.checkpoints import base_weights, is_adapter, resolve_base
from tutor.config import Settings
from tutor.specs import ModelSpec


def split_adapter(spec: ModelSpec, settings: Settings) -> tuple[str, str | None]:
    """(base, adapter dir) for a spec; an adapter's base is the one training recorded
    (tutor.checkpoints.base_weights)."""
    adapter = spec.get("adapter")
    target = spec.target
    if adapter is None and is_adapter(target):
        adapter, target = target, None
    if adapter is not None:
        adapter_path = Path(adapter).expanduser()
        if not is_adapter(adapter_path):
            raise ModelSpecError(
                f"Adapter folder {adapter_path} has no adapter_config.json; is it a PEFT checkpoint?"
            )
        if target is None:
            return base_weights(adapter_path, settings), str(adapter_path)
        return resolve_base(target, settings), str(adapter_path)
    return resolve_base(target, settings), None


class TransformersBackend(Backend):
    engine = "hf"

    def __init__(self, spec: ModelSpec, settings: Settings):
        super().__init__(spec, settings)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.base, self.adapter = split_adapter(spec, settings)
        device = spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype_name = spec.get("dtype") or ("bfloat16" if device.startswith("cuda") else "float32")
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise ModelSpecError(f"Spec {spec}: unknown dtype {dtype_name!r}; use float32, bfloat16 or float16.")
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        tokenizer_source = self.base
        if self.adapter and (Path(self.adapter) / "tokenizer_config.json").exists():
            tokenizer_source = self.adapter
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=offline)
            model = AutoModelForCausalLM.from_pretrained(self.base, dtype=dtype, local_files_only=offline)
        except OSError as exc:
            raise BackendError(f"transformers could not load base model {self.base!r}: {exc}") from exc
        if self.adapter:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, self.adapter)
            except Exception as exc:
                raise BackendError(f"PEFT could not load adapter {self.adapter}: {exc}") from exc
        self.model = model.to(device).eval()
        self.device = device
        self._lock = threading.Lock()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.tokenizer.chat_template is None:
            raise BackendError(f"Model {self.base} has no chat template; it cannot serve a chat.")

    @property
    def checkpoint(self) -> str:
        return self.adapter or self.base

    @property
    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def _encode(self, messages: list[Message]):
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def count_tokens(self, messages: list[Message]) -> int:
        return int(self._encode(messages)["input_ids"].shape[-1])

    def stream(self, messages: list[Message], options: GenerationOptions) -> Iterator[Chunk]:
        import torch
        from transformers import TextIteratorStreamer

        with self._lock:
            inputs = {k: v.to(self.device) for k, v in self._encode(messages).items()}
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            sample = options.temperature > 0
            kwargs = dict(
                **inputs,
                streamer=streamer,
                max_new_tokens=options.max_tokens,
                do_sample=sample,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
            if sample:
                kwargs.update(temperature=options.temperature, top_p=options.top_p)
            if options.stop:
                kwargs.update(stop_strings=options.stop, tokenizer=self.tokenizer)
            outcome: dict = {}

            def run() -> None:
                try:
                    if options.seed is not None:
                        torch.manual_seed(options.seed)
                    with torch.inference_mode():
                        outcome["ids"] = self.model.generate(**kwargs)
                except Exception as exc:  # surfaced in the consumer thread below
                    outcome["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            for text in streamer:
                if text:
                    yield Chunk(text=text)
            worker.join()
            if "error" in outcome:
                raise BackendError(f"transformers failed while generating: {outcome['error']}")
            prompt_len = inputs["input_ids"].shape[-1]
            new_ids = outcome["ids"][0][prompt_len:]
            finish = "stop" if len(new_ids) < options.max_tokens else "length"
            yield Chunk(prompt_tokens=int(prompt_len), completion_tokens=int(len(new_ids)), finish_reason=finish)

    def generate_batch(self, conversations: list[list[Message]], options: GenerationOptions) -> list[str]:
        """Replies to several conversations in one padded batch (left padding), for evaluation:
        much faster per reply than one at a time. Greedy when temperature is 0."""
        import torch

        if not conversations:
            return []
        with self._lock:
            texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                     for m in conversations]
            side, self.tokenizer.padding_side = self.tokenizer.padding_side, "left"
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            try:
                batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            finally:
                self.tokenizer.padding_side = side
            batch = {k: v.to(self.device) for k, v in batch.items()}
            sample = options.temperature > 0
            kwargs = dict(max_new_tokens=options.max_tokens, do_sample=sample, pad_token_id=pad)
            if sample:
                kwargs.update(temperature=options.temperature, top_p=options.top_p)
            if options.seed is not None:
                torch.manual_seed(options.seed)
            with torch.inference_mode():
                out = self.model.generate(**batch, **kwargs)
            new = out[:, batch["input_ids"].shape[1]:]
            return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def close(self) -> None:
        with self._lock:
            self.model = None
