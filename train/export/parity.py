"""Parity check: does an exported GGUF still answer like the transformers checkpoint it came from?

The same tutoring prompts go through the checkpoint (transformers + PEFT) and the GGUF (llama-cpp,
with the chat template stored in the GGUF, as the app serves it), greedy. Reported per prompt and
overall: whether the two engines build the same prompt tokens (chat template, BOS), greedy token
agreement (shared prefix of the two replies over the longer one, in the checkpoint's tokens),
exact matches, and the pedagogy metrics of both sides. The check fails when prompt tokens differ,
when mean agreement falls below ``min_agreement``, or when the good-move rate moves by more than
``max_good_move_drift``.

    quimbot export parity CHECKPOINT GGUF       on demand (every export runs it too)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from train.evaluate.compare import generate_replies, prompt_messages
from train.evaluate.pedagogy import aggregate, score_prompt
from train.evaluate.prompt_sets import load_prompts
from tutor.backends.base import GenerationOptions
from tutor.config import Settings

DEFAULT_PROMPTS = 24
DEFAULT_MAX_TOKENS = 48


def pick_prompts(prompts: list[dict], n: int) -> list[dict]:
    """``n`` prompts spread evenly over the set (so every error type is likely represented)."""
    if n >= len(prompts):
        return prompts
    step = len(prompts) / n
    return [prompts[int(i * step)] for i in range(n)]


def agreement(a: list[int], b: list[int]) -> float:
    if not a and not b:
        return 1.0
    shared = 0
    for x, y in zip(a, b):
        if x != y:
            break
        shared += 1
    return shared / max(len(a), len(b))


def prompt_tokens_match(tokenizer, gguf_path: Path, conversations: list[list[dict]]) -> list[bool]:
    """Per conversation: do transformers and llama-cpp build the same prompt token ids?"""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(model_path=str(gguf_path), n_ctx=512, vocab_only=True, verbose=False)
    try:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return [False] * len(conversations)
        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        same = []
        for messages in conversations:
            hf_ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))
            result = formatter(messages=messages)
            ids = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
            same.append(hf_ids == list(ids))
        return same
    finally:
        llm.close()


def parity_check(checkpoint: str | Path, gguf: str | Path, settings: Settings | None = None, *,
                 prompts: list[dict] | None = None, n_prompts: int = DEFAULT_PROMPTS,
                 max_tokens: int = DEFAULT_MAX_TOKENS, min_agreement: float = 0.8,
                 max_good_move_drift: float = 0.15, say=print) -> dict[str, Any]:
    from transformers import AutoTokenizer

    settings = settings or Settings()
    checkpoint, gguf = Path(checkpoint), Path(gguf)
    chosen = pick_prompts(prompts if prompts is not None else load_prompts(), n_prompts)
    conversations = [prompt_messages(p) for p in chosen]
    options = GenerationOptions.greedy(max_tokens)
    say(f"parity check: {len(chosen)} prompts, greedy, {max_tokens} tokens, checkpoint vs {gguf.name}")
    t0 = time.monotonic()
    hf_replies = generate_replies(f"hf:{checkpoint}", chosen, settings, options, batch_size=1, progress=False)
    t1 = time.monotonic()
    gguf_replies = generate_replies(f"gguf:{gguf}", chosen, settings, options, batch_size=1, progress=False)
    t2 = time.monotonic()
    tok_src = checkpoint if (checkpoint / "tokenizer_config.json").is_file() else None
    if tok_src is None:
        from tutor.backends.hf import split_adapter
        from tutor.specs import parse_spec

        tok_src = Path(split_adapter(parse_spec(f"hf:{checkpoint}"), settings)[0])
    tokenizer = AutoTokenizer.from_pretrained(tok_src, local_files_only=True)
    same_prompt = prompt_tokens_match(tokenizer, gguf, conversations)
    rows, agreements = [], []
    hf_metrics, gguf_metrics = [], []
    for prompt, a, b, same in zip(chosen, hf_replies, gguf_replies, same_prompt):
        ids_a = tokenizer.encode(a, add_special_tokens=False)
        ids_b = tokenizer.encode(b, add_special_tokens=False)
        score = agreement(ids_a, ids_b)
        agreements.append(score)
        ma, mb = score_prompt(prompt, a), score_prompt(prompt, b)
        hf_metrics.append(ma)
        gguf_metrics.append(mb)
        rows.append({"id": prompt["id"], "learner": prompt["learner"], "checkpoint": a, "gguf": b,
                     "agreement": round(score, 4), "exact": a == b, "same_prompt_tokens": same,
                     "good_move": {"checkpoint": ma.good_move, "gguf": mb.good_move}})
    agg_hf, agg_gguf = aggregate(hf_metrics), aggregate(gguf_metrics)
    mean = sum(agreements) / len(agreements) if agreements else 0.0
    drift = abs((agg_hf.get("good_move") or 0) - (agg_gguf.get("good_move") or 0))
    problems = []
    if not all(same_prompt):
        problems.append(f"{same_prompt.count(False)} of {len(same_prompt)} prompts tokenize differently in "
                        "llama-cpp (chat template, BOS or special tokens differ from the checkpoint's tokenizer)")
    if mean < min_agreement:
        problems.append(f"mean token agreement {mean:.3f} < {min_agreement}")
    if drift > max_good_move_drift:
        problems.append(f"good-move rate differs by {drift:.3f} > {max_good_move_drift}")
    keys = ("good_move", "takes_up_error", "red_pen", "echo", "follow_up", "words", "pedagogy_score")
    report = {
        "checkpoint": str(checkpoint), "gguf": str(gguf), "prompts_n": len(chosen), "max_tokens": max_tokens,
        "mean_agreement": round(mean, 4), "exact_match_rate": round(sum(r["exact"] for r in rows) / len(rows), 4)
        if rows else 0.0,
        "same_prompt_tokens_rate": round(sum(same_prompt) / len(same_prompt), 4) if same_prompt else 0.0,
        "metrics": {"checkpoint": {k: agg_hf.get(k) for k in keys}, "gguf": {k: agg_gguf.get(k) for k in keys}},
        "good_move_drift": round(drift, 4),
        "thresholds": {"min_agreement": min_agreement, "max_good_move_drift": max_good_move_drift},
        "seconds": {"checkpoint": round(t1 - t0, 1), "gguf": round(t2 - t1, 1)},
        "passed": not problems, "problems": problems, "prompts": rows,
    }
    say(f"parity: agreement {mean:.3f}, exact {report['exact_match_rate']:.2f}, prompt tokens same "
        f"{report['same_prompt_tokens_rate']:.2f}, good moves {agg_hf['good_move']:.2f} vs "
        f"{agg_gguf['good_move']:.2f} -> {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}")
    return report

