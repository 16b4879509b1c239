"""Held-out perplexity on assistant tokens, for the base model (step 0) and every checkpoint.

``evaluate_run(run_dir)`` reads the run's ``heldout.jsonl`` (rows the run never trained on), loads
the base once, then each checkpoint's adapter in turn, and writes ``perplexity.json``, ``.csv`` and
``.png`` into the run folder. Results already computed for the same held-out file and the same
adapter weights are reused; ``force=True`` recomputes everything.

Perplexity = exp(total negative log-likelihood of the assistant tokens / their number), the
tokens being exactly those the training loss uses (see ``train.fit.loss_mask.encode_messages``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.files import file_sha256, write_json
from train.fit.config import TrainConfig, TrainError
from train.fit.loss_mask import conversation_of, encode_messages
from train.fit.models import BaseModel, load_tokenizer, quiet_library_warnings, resolve_models
from train.fit.scoring import scored_logits
from tutor.checkpoints import HELDOUT_FILE, PERPLEXITY_FILE, PROVENANCE_FILE, RUN_FILE, base_weights, checkpoints_of
from tutor.config import Settings

RESULT_FILE = PERPLEXITY_FILE


def perplexity(model, encoded: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8,
               device: str | None = None) -> dict[str, float]:
    """Perplexity of ``model`` on (input_ids, labels) pairs; labels are -100 where not scored."""
    import torch
    import torch.nn.functional as F

    device = device or next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = [encoded[i] for i in order[start:start + batch_size]]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, (row_ids, row_labels) in enumerate(batch):
                    ids[r, :len(row_ids)] = torch.tensor(row_ids)
                    labels[r, :len(row_labels)] = torch.tensor(row_labels)
                    mask[r, :len(row_ids)] = 1
                ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
                logits, target = scored_logits(model, ids, mask, labels)
                nll += F.cross_entropy(logits, target, reduction="sum").item()
                count += target.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError("The held-out rows have no assistant tokens to score.")
    return {"perplexity": math.exp(nll / count), "nll": nll / count, "tokens": count}


def _run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _adapter_digest(ckpt: Path) -> str:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (ckpt / name).is_file():
            return file_sha256(ckpt / name)
    raise TrainError(f"{ckpt} has no adapter weights (adapter_model.safetensors).")


def evaluate_run(run_dir: str | Path, settings: Settings | None = None, *, force: bool = False,
                 batch_size: int = 8, device: str | None = None, dtype: str | None = None,
                 heldout: str | Path | None = None, say=print) -> list[dict[str, Any]]:
    """(Re)compute held-out perplexity for the base and every checkpoint of a run; write
    perplexity.json / .csv / .png; return the rows (step order, base first)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    quiet_library_warnings()
    settings = settings or Settings()
    run_dir = Path(run_dir)
    checkpoints = checkpoints_of(run_dir)
    heldout_path = Path(heldout) if heldout else run_dir / HELDOUT_FILE
    if not heldout_path.is_file():
        raise DataError(f"{heldout_path} not found: is {run_dir} a Quimbot run folder? (Give --heldout FILE to "
                        "score another set of rows.)")
    rows = [json.loads(line) for line in heldout_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{heldout_path} holds no rows; the run was trained with heldout_fraction = 0.")

    info = _run_info(run_dir)
    base_cfg = info.get("base_model") or {}
    if base_cfg.get("path") and Path(base_cfg["path"]).exists():
        base_path, init_adapter = base_cfg["path"], base_cfg.get("init_adapter")
    elif base_cfg:
        config = TrainConfig(base=base_cfg.get("name", "default"), init_adapter=base_cfg.get("init_adapter"))
        resolved = resolve_models(config, settings)
        base_path, init_adapter = resolved.path, resolved.init_adapter
    elif checkpoints:
        base_path = base_weights(checkpoints[0][1], settings)
        init_adapter = None
    else:
        raise TrainError(f"{run_dir} has no {RUN_FILE} and no checkpoint; nothing to evaluate.")
    tokenizer = load_tokenizer(BaseModel("", str(checkpoints[0][1]) if checkpoints else base_path, ""))
    encoded = [encode_messages(tokenizer, conversation_of(row)) for row in rows]

    heldout_sha = file_sha256(heldout_path)
    previous = {}
    result_path = run_dir / RESULT_FILE
    if result_path.is_file() and not force:
        old = json.loads(result_path.read_text())
        if old.get("heldout", {}).get("sha256") == heldout_sha:
            previous = {r["checkpoint"]: r for r in old.get("results", [])}

    targets: list[tuple[int, str, Path | None]] = [(0, "base", None)]
    if init_adapter:
        targets.append((0, "init-adapter", Path(init_adapter)))
    targets += [(step, path.name, path) for step, path in checkpoints]
    todo, results = [], []
    for step, name, path in targets:
        digest = _adapter_digest(path) if path is not None else base_path
        cached = previous.get(name)
        if cached and cached.get("digest") == digest:
            results.append(cached)
        else:
            todo.append((step, name, path, digest))

    if todo:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype),
                                                     local_files_only=offline).to(device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        peft_model, loaded = None, None
        for step, name, path, digest in todo:
            if path is None and peft_model is None:
                scored = perplexity(model, encoded, pad, batch_size, device)
            elif path is None:
                with peft_model.disable_adapter():
                    scored = perplexity(peft_model, encoded, pad, batch_size, device)
            else:
                label = f"eval{len(results)}"
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=label)
                else:
                    peft_model.load_adapter(str(path), adapter_name=label)
                    peft_model.set_adapter(label)
                    if loaded:
                        peft_model.delete_adapter(loaded)
                loaded = label
                peft_model.to(device)
                scored = perplexity(peft_model, encoded, pad, batch_size, device)
            entry = {"step": step, "checkpoint": name, "path": str(path) if path else base_path, "digest": digest,
                     **scored}
            say(f"perplexity {name:>18} (step {step:>5}): {scored['perplexity']:.3f}")
            results.append(entry)
        del model, peft_model

    results.sort(key=lambda r: (r["step"], r["checkpoint"] != "base"))
    payload = {"run": str(run_dir), "heldout": {"path": str(heldout_path), "sha256": heldout_sha, "rows": len(rows),
                                                "tokens": results[0]["tokens"]}, "results": results}
    write_json(result_path, payload)
    with open(run_dir / "perplexity.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "checkpoint", "perplexity", "nll_per_token", "tokens"])
        for r in results:
            writer.writerow([r["step"], r["checkpoint"], f"{r['perplexity']:.6f}", f"{r['nll']:.6f}", r["tokens"]])
    plot(results, run_dir / "perplexity.png", title=f"{run_dir.name}: held-out perplexity ({len(rows)} rows)")
    _annotate_checkpoints(results)
    return results


def _annotate_checkpoints(results: list[dict]) -> None:
    """Copy each checkpoint's perplexity into its provenance file, so the folder says how good it is."""
    for r in results:
        prov = Path(r["path"]) / PROVENANCE_FILE
        if r["checkpoint"].startswith("checkpoint-") and prov.is_file():
            data = json.loads(prov.read_text())
            data["heldout_perplexity"] = r["perplexity"]
            write_json(prov, data)


def plot(results: list[dict], path: Path, title: str = "held-out perplexity") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ckpts = [r for r in results if r["checkpoint"].startswith("checkpoint-")]
    starts = [r for r in results if not r["checkpoint"].startswith("checkpoint-")]
    start = next((r for r in starts if r["checkpoint"] == "init-adapter"), None) or (starts[0] if starts else None)
    xs = ([0] if start else []) + [r["step"] for r in ckpts]
    ys = ([start["perplexity"]] if start else []) + [r["perplexity"] for r in ckpts]
    ax.plot(xs, ys, marker="o", color="#1f77b4", label="checkpoints")
    for r in starts:
        ax.scatter([0], [r["perplexity"]], s=70, zorder=3, marker="s" if r["checkpoint"] == "base" else "D",
                   label=f"{r['checkpoint']} (step 0): {r['perplexity']:.2f}")
    if ckpts:
        best = min(ckpts, key=lambda r: r["perplexity"])
        last = best is ckpts[-1]
        ax.annotate(f"lowest: {best['checkpoint']} ({best['perplexity']:.2f})", (best["step"], best["perplexity"]),
                    textcoords="offset points", xytext=(0, 10), ha="right" if last else "center", fontsize=8)
    ax.set_xlabel("training step")
    ax.set_ylabel("perplexity (assistant tokens)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
