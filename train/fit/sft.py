"""LoRA fine-tuning with TRL + PEFT: from gated JSONL rows to checkpoints the app can load.

    prepare_run(config)   every check that can fail, before any training starts: run folder and
                          resume state, base model / adapter, schema gate (file:line), token lengths,
                          held-out split, free disk
    train(config)         prepare, train with TRL's SFTTrainer (or DPOTrainer, see train/fit/dpo.py),
                          write a provenance file into every checkpoint, then held-out perplexity

Loss is on assistant tokens only. The mask is built here, by rendering the chat template prefix
by prefix, because many templates (SmolLM2's and Qwen3's among them) have no ``{% generation %}``
markers for TRL's ``assistant_only_loss``; the rows reach TRL already tokenized, with ``labels``.
Templates that render an earlier turn differently once later turns follow (Qwen3 drops the
``<think>`` block of every assistant turn before the last user message) are handled by locating each
reply in the rendered text instead (``_spans_by_text``). For Qwen3 the last reply is trained with
the empty ``<think>\n\n</think>\n\n`` block its template writes before it, so a checkpoint served with
the default template (hf:, GGUF, Ollama) answers without thinking; assistant turns that carry
``<think>`` tags themselves are refused (a tutor reply is never reasoning).

Every logging line reports tokens/s (non-padding tokens trained on, all processes), and on a GPU
listed in ``train.fit.mfu`` the model FLOPs utilisation (formula and assumptions there).

Run folder (``runs/RUN``):
    quimbot-run.json           resolved config, datasets (sha256, content hashes), base model, split
    heldout.jsonl              the held-out rows (never trained on)
    checkpoint-STEP/           PEFT adapter + tokenizer + optimizer/scheduler/RNG state (for --resume)
                               + quimbot-provenance.json
    train_log.jsonl            loss, learning rate, s/step per logging step
    data_order.jsonl           the content hashes of the rows in every micro-batch, in order
    perplexity.csv/.json/.png  held-out perplexity of the base (step 0) and every checkpoint
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError, ModelSpecError, QuimbotError
from core.files import file_sha256, write_json
from core.hashing import content_hash
from core.jsonl import iter_json_lines, no_rows
from core.schema import GateReport, SchemaError, check_row
from train.fit.config import ConfigError, TrainConfig, resolve_effective_batch
from tutor.config import Settings
from tutor.models import DEFAULT_HUB_ID

RUN_FILE = "quimbot-run.json"
PROVENANCE_FILE = "quimbot-provenance.json"
HELDOUT_FILE = "heldout.jsonl"
ORDER_FILE = "data_order.jsonl"
LOG_FILE = "train_log.jsonl"
REPO_ROOT = Path(__file__).resolve().parent.parent
# Settings that decide which rows are trained on, and in which order: a resumed run must match.
RESUME_KEYS = ("method", "dataset", "base", "init_adapter", "skip_bad_rows", "max_length", "on_long",
               "heldout_fraction", "heldout_max", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
               "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "packing", "group_by_length")


class TrainError(QuimbotError):
    """A run that cannot start or continue: model, adapter, run folder, disk."""


# ---------------------------------------------------------------------------------------------
# data: gate, encode, length check, held-out split
# ---------------------------------------------------------------------------------------------

@dataclass
class Example:
    path: str
    line: int
    row: dict[str, Any]
    hash: str
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


KIND_HELP = {"sft": "SFT rows ({\"messages\": [...]})", "preference": "preference rows (prompt/chosen/rejected)"}


def read_examples(paths: list[str], kind: str, report: GateReport) -> list[Example]:
    """Rows of ``kind`` from JSONL files, each with its file and line; every other line is recorded in
    ``report`` (bad JSON, schema failures, rows of another kind). Lines are read by the data pipeline's
    one JSONL reader (core.jsonl.iter_json_lines); a file that cannot be read, or holds no rows,
    is a DataError naming it."""
    if not paths:
        raise ConfigError("No training data: give a dataset (--dataset FILE or dataset = [...] in the config).")
    examples: list[Example] = []
    for name in paths:
        path = Path(name).expanduser()
        if not path.exists() and not path.is_symlink():
            raise DataError(f"Dataset not found: {name}")
        seen = report.accepted + len(report.rejected)
        try:
            for number, row in iter_json_lines(path, report):
                try:
                    found = check_row(row)
                    if found != kind:
                        raise SchemaError(f"is a {found} row; this run trains on {KIND_HELP.get(kind, kind)}")
                except SchemaError as exc:
                    report.rejected.append(SchemaError(exc.reason, str(path), number))
                    continue
                report.accepted += 1
                examples.append(Example(str(path), number, row, row["metadata"].get("content_hash")
                                        or content_hash(row)))
        except DataError as exc:
            raise DataError(f"Dataset: {exc}") from None
        if report.accepted + len(report.rejected) == seen:
            raise DataError(f"Dataset {no_rows(path)}")
    return examples


def gate(paths: list[str], kind: str, skip_bad_rows: bool, say=print) -> tuple[list[Example], GateReport]:
    report = GateReport()
    examples = read_examples(paths, kind, report)
    if report.rejected:
        if not skip_bad_rows:
            raise DataError("The dataset fails the schema gate; nothing was trained.\n" + report.summary()
                            + "\nFix these rows, or pass --skip-bad-rows to train without them.")
        say(f"schema gate: skipping {len(report.rejected)} bad row(s) (--skip-bad-rows):\n" + report.summary())
    if not examples:
        raise DataError(f"No usable {KIND_HELP.get(kind, kind)} in {', '.join(paths)}.")
    return examples, report


def _template_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=True)
    return list(out["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_messages(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a conversation, exactly as the chat template renders it at inference;
    labels are -100 everywhere except on assistant replies and their end-of-turn token.

    Each assistant span is found by rendering the conversation up to the reply (with the generation
    prompt) and through the reply: the tokens in between are the reply. Works for any template that
    renders earlier turns the same way whatever follows (SmolLM2, Llama, Qwen2.5, ...)."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    for message in messages:
        if message["role"] == "assistant" and THINK_TAG.search(message["content"]):
            raise DataError("An assistant turn contains <think>/</think> tags; Quimbot trains tutor replies, not "
                            "reasoning (a Qwen3-style template would also drop them from earlier turns). Remove "
                            f"the reasoning from the row: {message['content'][:80]!r}")
    ids = _template_ids(tokenizer, messages)
    labels = [-100] * len(ids)
    eos = tokenizer.eos_token_id
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _template_ids(tokenizer, messages[:i], add_generation_prompt=True)
        through = _template_ids(tokenizer, messages[: i + 1])
        start, end = _common_prefix(before, ids), _common_prefix(through, ids)
        if start < len(before) - 1 or end < len(through) - 1 or end <= start:
            return ids, _spans_by_text(tokenizer, messages, ids)
        # keep the end-of-turn token, not the whitespace some templates put after it
        while end - 1 > start and ids[end - 1] != eos and eos in ids[start:end - 1] \
                and not tokenizer.decode(ids[end - 1:end]).strip():
            end -= 1
        labels[start:end] = ids[start:end]
    return ids, labels


THINK_TAG = re.compile(r"</?think>")


def _spans_by_text(tokenizer, messages: list[dict], ids: list[int]) -> list[int]:
    """Labels for a template that renders earlier turns differently when later turns follow (Qwen3:
    the thinking block of every assistant turn before the last user message is dropped). Each reply is
    found in the rendered text: it starts where the generation prompt of the conversation so far ends
    (that prompt is a prefix of the full text), and ends after the reply's own text and the end-of-turn
    token. What lies between the start and the reply (Qwen3's empty ``<think>`` block on the last turn)
    is what the model writes at inference, so it is trained too."""
    name = getattr(tokenizer, "name_or_path", "this model")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != list(ids):
        raise DataError(f"The chat template of {name} renders earlier turns differently when later turns follow, "
                        "and its text does not tokenize to the same ids, so the assistant tokens cannot be located.")
    eot = tokenizer.eos_token or ""
    labels = [-100] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        content = message["content"].strip()
        at = text.find(content, len(prompt)) if text.startswith(prompt) else -1
        if at < 0 or not content:
            raise DataError(f"The chat template of {name} renders earlier turns differently when later turns follow, "
                            f"and reply {i} cannot be found after its prompt; use a prefix-preserving template.")
        stop = at + len(content)
        if eot and text.startswith(eot, stop):
            stop += len(eot)
        for k, (a, b) in enumerate(encoded["offset_mapping"]):
            if b > len(prompt) and a < stop:
                labels[k] = ids[k]
    return labels


def conversation_of(row: dict[str, Any]) -> list[dict]:
    """The messages a perplexity is measured on: SFT messages, or prompt + chosen reply."""
    if "messages" in row:
        return row["messages"]
    if "chosen" in row:
        return row["prompt"] + row["chosen"]
    return row["prompt"] + row["completion"]


def encode_examples(tokenizer, examples: list[Example]) -> None:
    for ex in examples:
        ex.input_ids, ex.labels = encode_messages(tokenizer, conversation_of(ex.row))


def apply_length_limit(examples: list[Example], max_length: int, on_long: str, say=print,
                       lengths: dict[int, int] | None = None) -> tuple[list[Example], dict[str, int]]:
    """Refuse (default), truncate or drop rows over ``max_length`` tokens; never silently."""
    lengths = lengths or {id(ex): len(ex.input_ids) for ex in examples}
    long = [ex for ex in examples if lengths[id(ex)] > max_length]
    stats = {"truncated": 0, "dropped_long": 0}
    if not long:
        return examples, stats
    listing = "\n".join(f"  {ex.where}: {lengths[id(ex)]:,} tokens" for ex in long[:30])
    if len(long) > 30:
        listing += f"\n  ... and {len(long) - 30} more"
    if on_long == "refuse":
        raise DataError(f"{len(long)} row(s) are longer than max_length = {max_length:,} tokens; nothing was "
                        f"trained.\n{listing}\nRaise --max-length, or pass --truncate (keep the start) or "
                        "--drop-long (leave them out).")
    if on_long == "drop":
        say(f"dropping {len(long)} row(s) longer than {max_length} tokens (--drop-long):\n{listing}")
        stats["dropped_long"] = len(long)
        return [ex for ex in examples if lengths[id(ex)] <= max_length], stats
    if any(not ex.input_ids for ex in long):  # preference rows: TRL's DPOTrainer truncates them
        say(f"{len(long)} row(s) longer than {max_length} tokens will be truncated by the trainer (--truncate):"
            f"\n{listing}")
        stats["truncated"] = len(long)
        return examples, stats
    kept = []
    emptied = []
    for ex in examples:
        if lengths[id(ex)] > max_length:
            ex.input_ids, ex.labels = ex.input_ids[:max_length], ex.labels[:max_length]
            if all(label == -100 for label in ex.labels):
                emptied.append(ex)
                continue
        kept.append(ex)
    stats["truncated"] = len(long) - len(emptied)
    stats["dropped_long"] = len(emptied)
    say(f"truncating {len(long)} row(s) to {max_length} tokens (--truncate):\n{listing}")
    if emptied:
        say(f"  {len(emptied)} of them kept no assistant token after truncation and are left out: "
            + ", ".join(ex.where for ex in emptied[:10]))
    return kept, stats


def heldout_score(seed: int, digest: str) -> float:
    """A number in [0, 1) fixed by the seed and the row's content hash."""
    h = hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()
    return int(h[:15], 16) / 16 ** 15


def split_heldout(examples: list[Example], fraction: float, max_rows: int, seed: int
                  ) -> tuple[list[Example], list[Example]]:
    """Held-out rows chosen by content hash: a row is held out when its seeded score is below
    ``fraction`` (at least one distinct row when fraction > 0, at most ``max_rows``). Copies of a
    held-out row are held out too, so it is never trained on. Stable when other rows change."""
    if fraction <= 0 or max_rows <= 0:
        return examples, []
    hashes = sorted({ex.hash for ex in examples}, key=lambda h: heldout_score(seed, h))
    if len(hashes) < 2:
        return examples, []
    chosen = [h for h in hashes if heldout_score(seed, h) < fraction] or hashes[:1]
    chosen = set(chosen[:min(max_rows, len(hashes) - 1)])
    train = [ex for ex in examples if ex.hash not in chosen]
    heldout, seen = [], set()
    for ex in examples:
        if ex.hash in chosen and ex.hash not in seen:
            seen.add(ex.hash)
            heldout.append(ex)
    return train, heldout


# ---------------------------------------------------------------------------------------------
# models: base, adapter, device and precision
# ---------------------------------------------------------------------------------------------

@dataclass
class BaseModel:
    name: str             # as configured ("default", a folder, a hub id)
    path: str             # what from_pretrained opens
    adapter_name: str     # what adapter_config.json records as base_model_name_or_path
    init_adapter: str | None = None


def resolve_models(config: TrainConfig, settings: Settings) -> BaseModel:
    """The base model to load (from the init adapter's config when one is given); clear errors when
    a folder is missing or a hub id is not in the local cache."""
    from tutor.backends.hf import resolve_base, split_adapter
    from tutor.specs import ModelSpec

    init = None
    name = config.base
    if config.init_adapter:
        init_dir = Path(config.init_adapter).expanduser()
        if not (init_dir / "adapter_config.json").is_file():
            raise TrainError(f"--init-adapter {config.init_adapter}: no adapter_config.json there; give a "
                             "checkpoint folder such as runs/stage1/checkpoint-100.")
        recorded = json.loads((init_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if config.base != "default" and recorded and config.base not in (recorded, str(Path(recorded))):
            raise TrainError(f"--base {config.base} differs from the base of {init_dir} ({recorded}); an adapter "
                             "only works on the base it was trained on. Leave --base out.")
        try:
            path, _ = split_adapter(ModelSpec("hf", str(init_dir)), settings)
        except ModelSpecError as exc:
            raise TrainError(f"The base model of adapter {init_dir} cannot be found: {exc}") from exc
        name, init = recorded or "default", str(init_dir.resolve())
    else:
        try:
            path = resolve_base(name, settings)
        except ModelSpecError as exc:
            raise TrainError(str(exc)) from exc
    if Path(path).exists():
        if not (Path(path) / "config.json").is_file():
            raise TrainError(f"Base model folder {path} has no config.json; is it a transformers model folder?")
    else:
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(path, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
        except (OSError, ValueError) as exc:
            raise TrainError(f"Base model {path!r} is neither a local folder nor in the local hub cache "
                             f"(offline): {str(exc).splitlines()[0]}") from exc
    bundled = name in ("default", "smollm2", DEFAULT_HUB_ID) or (Path(path) / "quimbot-source.json").is_file()
    adapter_name = DEFAULT_HUB_ID if bundled else (str(Path(path).resolve()) if Path(path).exists() else path)
    return BaseModel(name=name, path=str(path), adapter_name=adapter_name, init_adapter=init)


@dataclass
class DeviceChoice:
    device: str        # cpu / cuda
    dtype_name: str    # float32 / bfloat16 / float16
    bf16: bool
    fp16: bool
    gradient_checkpointing: bool

    def describe(self) -> str:
        mixed = "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"
        return (f"{self.device}, weights {self.dtype_name}, {mixed}, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}")


def choose_device(config: TrainConfig) -> DeviceChoice:
    """fp32 and no gradient checkpointing on CPU (bf16 autocast and checkpointing made a CPU step
    11x slower); bf16 (or fp16 where bf16 is missing) and checkpointing by default on CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise TrainError("--device cuda, but PyTorch sees no CUDA device.")
    device = "cuda" if (config.device == "cuda" or (config.device == "auto" and cuda)) else "cpu"
    precision = config.precision
    if precision == "auto":
        precision = "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if device == "cpu" and precision == "fp16":
        raise TrainError("fp16 training needs CUDA; use --precision fp32 (or bf16) on CPU.")
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device == "cuda"
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision] if device == "cuda" else "float32"
    return DeviceChoice(device, dtype, precision == "bf16", precision == "fp16", bool(checkpointing))


def load_tokenizer(base: BaseModel):
    from transformers import AutoTokenizer

    source = base.path
    if base.init_adapter and (Path(base.init_adapter) / "tokenizer_config.json").is_file():
        source = base.init_adapter
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
    except (OSError, ValueError) as exc:
        raise TrainError(f"Cannot load the tokenizer of {source}: {exc}") from exc
    if not tokenizer.chat_template:
        raise TrainError(f"{source} has no chat template; Quimbot trains chat models on conversations.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base: BaseModel, choice: DeviceChoice, config: TrainConfig, trainable: bool = True):
    """The base model with a LoRA adapter: fresh (from the config), or the init adapter, trainable."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=getattr(torch, choice.dtype_name),
                                                     local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise TrainError(f"Cannot load base model {base.path}: {exc}") from exc
    if base.init_adapter:
        try:
            model = PeftModel.from_pretrained(model, base.init_adapter, is_trainable=trainable)
        except Exception as exc:  # PEFT raises many kinds
            raise TrainError(f"Cannot load adapter {base.init_adapter}: {exc}") from exc
    else:
        set_seed(config.seed)  # the LoRA init is random: the same seed gives the same run
        model = get_peft_model(model, lora_config(config, LoraConfig))
    model.peft_config["default"].base_model_name_or_path = base.adapter_name
    return model


def lora_config(config: TrainConfig, cls=None):
    if cls is None:
        from peft import LoraConfig as cls
    targets = config.lora_target_modules
    return cls(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
               target_modules=targets[0] if targets == ["all-linear"] else list(targets),
               task_type="CAUSAL_LM", bias="none")


# ---------------------------------------------------------------------------------------------
# the run folder, provenance, disk
# ---------------------------------------------------------------------------------------------



def git_state() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("quimbot", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def checkpoints_of(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint in a run, by step."""
    found = []
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", path.name)
            if m and path.is_dir() and (path / "adapter_config.json").is_file():
                found.append((int(m.group(1)), path))
    return sorted(found)


def estimate_checkpoint_bytes(trainable: int, tokenizer_bytes: int) -> int:
    """Adapter weights + AdamW's two moments (fp32) + tokenizer + trainer state and RNG files."""
    return trainable * 4 * 3 + tokenizer_bytes + (2 << 20)


def check_disk(run_dir: Path, needed: int) -> None:
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise TrainError(f"Not enough free disk for the checkpoints: about {needed / 2**20:,.0f} MiB needed in "
                         f"{run_dir}, {free / 2**20:,.0f} MiB free. Free some space, save less often "
                         "(--save-steps) or train fewer steps.")


def _world() -> tuple[bool, int, int]:
    """(is main process, rank, number of processes), from the variables torchrun / `accelerate launch`
    set. Read from the environment: creating accelerate's PartialState this early (before the Trainer
    picks the CPU or GPU backend) would fix the wrong distributed type for the whole process."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return rank == 0, rank, world


# ---------------------------------------------------------------------------------------------
# prepare: every check before training
# ---------------------------------------------------------------------------------------------

@dataclass
class PreparedRun:
    config: TrainConfig
    settings: Settings
    run_dir: Path
    base: BaseModel
    device: DeviceChoice
    tokenizer: Any
    train: list[Example]
    heldout: list[Example]
    info: dict[str, Any]             # written to quimbot-run.json and into every provenance file
    resume_from: Path | None = None
    model: Any = None
    is_main: bool = True
    world_size: int = 1
    say: Any = print

    @property
    def total_steps(self) -> int:
        c = self.config
        if c.max_steps > 0:
            return c.max_steps
        per_epoch = math.ceil(len(self.train) / (c.per_device_train_batch_size * self.world_size))
        return max(1, math.ceil(per_epoch / c.gradient_accumulation_steps * c.num_train_epochs))


def _run_dir(config: TrainConfig, settings: Settings) -> tuple[TrainConfig, Path]:
    runs = Path(config.runs_dir).expanduser() if config.runs_dir else Path(settings.runs_dir)
    name = config.run_name or f"{config.method}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"run_name {name!r}: use letters, digits, '.', '_' and '-' only.")
    return dataclasses.replace(config, run_name=name, runs_dir=str(runs)), runs / name


def _resume_state(config: TrainConfig, run_dir: Path, say) -> Path | None:
    existing = checkpoints_of(run_dir)
    if config.resume:
        if not existing:
            say(f"--resume: {run_dir} has no checkpoint yet; starting at step 0.")
            return None
        saved = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).is_file() else {}
        old = saved.get("config", {})
        changed = [k for k in RESUME_KEYS if k in old and old[k] != getattr(config, k)]
        problems = [f"{k} was {old[k]!r}, now {getattr(config, k)!r}" for k in changed]
        if not changed:
            before = {d["path"]: d["sha256"] for d in saved.get("datasets", [])}
            problems += [f"{d['path']} changed since the run started (sha256 {before[d['path']][:12]} -> "
                         f"{d['sha256'][:12]})" for d in dataset_info(config.dataset)
                         if d["path"] in before and before[d["path"]] != d["sha256"]]
        if problems:
            raise TrainError(f"Cannot resume {run_dir}: " + "; ".join(problems)
                             + ". Resuming needs the same data and batch settings; start a new --run-name instead.")
        complete = [(step, p) for step, p in existing if _resumable(p)]
        if not complete:
            raise TrainError(f"No checkpoint in {run_dir} has the optimizer/trainer state needed to resume exactly; "
                             "use --init-adapter to continue from one as a new run.")
        last_step, last = complete[-1]
        for step, path in existing:
            if step > last_step:
                say(f"--resume: {path.name} is incomplete (killed while saving?); resuming from {last.name}")
        return last
    if existing and not config.overwrite:
        names = ", ".join(p.name for _, p in existing[-3:])
        raise TrainError(f"{run_dir} already has checkpoints ({names}). Pass --resume to continue from "
                         f"{existing[-1][1].name}, --overwrite to start again, or choose another --run-name.")
    return None


def _resumable(ckpt: Path) -> bool:
    names = {p.name for p in ckpt.iterdir()}
    return {"trainer_state.json", "optimizer.pt", "scheduler.pt", "adapter_model.safetensors"} <= names and any(
        n.startswith("rng_state") for n in names)


def dataset_info(paths: list[str]) -> list[dict[str, Any]]:
    return [{"path": str(Path(p).resolve()), "sha256": file_sha256(p), "bytes": Path(p).stat().st_size}
            for p in paths]


def _digest(hashes) -> str:
    return "sha256:" + hashlib.sha256("\n".join(sorted(set(hashes))).encode()).hexdigest()


def prepare_run(config: TrainConfig, settings: Settings | None = None, kind: str = "sft", say=print,
                load=True) -> PreparedRun:
    """Everything that can fail, checked before training; nothing is written until it all passes."""
    quiet_library_warnings()
    settings = settings or Settings()
    is_main, _, world = _world()
    say = say if is_main else _silent
    config = resolve_effective_batch(config, world)
    config, run_dir = _run_dir(config, settings)
    resume_from = _resume_state(config, run_dir, say)
    base = resolve_models(config, settings)
    device = choose_device(config)
    tokenizer = load_tokenizer(base)

    examples, report = gate(config.dataset, kind, config.skip_bad_rows, say)
    if kind == "sft":
        encode_examples(tokenizer, examples)
        lengths = None
    else:
        from train.fit.dpo import preference_lengths

        lengths = preference_lengths(tokenizer, examples)
    examples, length_stats = apply_length_limit(examples, config.max_length, config.on_long, say, lengths)
    train, heldout = split_heldout(examples, config.heldout_fraction, config.heldout_max, config.seed)
    if not train:
        raise DataError("No rows left to train on after the held-out split.")
    info = {
        "run": config.run_name, "method": config.method, "config": config.to_dict(),
        "datasets": dataset_info(config.dataset),
        "rows": {"accepted": report.accepted, "skipped_bad": len(report.rejected), **length_stats,
                 "train": len(train), "heldout": len(heldout)},
        "content_hashes": {"train": len({ex.hash for ex in train}), "heldout": len({ex.hash for ex in heldout}),
                           "train_digest": _digest(ex.hash for ex in train),
                           "heldout_digest": _digest(ex.hash for ex in heldout)},
        "skipped_rows": [str(err) for err in report.rejected[:200]],
        "base_model": dataclasses.asdict(base) | {"source": _bundled_source(base.path)},
        "device": device.describe(), "world_size": world,
        "git": git_state(), "versions": library_versions(),
    }
    run = PreparedRun(config, settings, run_dir, base, device, tokenizer, train, heldout, info, resume_from,
                      is_main=is_main, world_size=world, say=say)
    if load:
        run.model = load_model(base, device, config)
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        info["trainable_parameters"] = trainable
        tok_bytes = sum(f.stat().st_size for f in Path(base.init_adapter or base.path).glob("tok*") if f.is_file())
        saves = math.ceil(run.total_steps / config.save_steps) + 1
        needed = estimate_checkpoint_bytes(trainable, max(tok_bytes, 4 << 20)) * saves * 6 // 5 + (64 << 20)
        info["disk_estimate_bytes"] = needed
        check_disk(run_dir, needed)
    return run


def _silent(*args, **kwargs) -> None:
    pass


def _bundled_source(path: str) -> dict | None:
    source = Path(path) / "quimbot-source.json"
    return json.loads(source.read_text()) if source.is_file() else None


def write_run_files(run: PreparedRun) -> None:
    """Create (or reset, or keep on resume) the run folder; main process only."""
    if not run.is_main:
        return
    run_dir = run.run_dir
    if run.config.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if run.resume_from is None:
        for stale in (ORDER_FILE, LOG_FILE, "perplexity.json", "perplexity.csv", "perplexity.png"):
            (run_dir / stale).unlink(missing_ok=True)
        for name in os.listdir(run_dir):
            if name.startswith(ORDER_FILE.split(".")[0] + ".rank"):
                (run_dir / name).unlink()
    else:
        step = int(run.resume_from.name.split("-")[-1])
        _truncate_logs(run_dir, step)
        for later, path in checkpoints_of(run_dir):  # incomplete ones after the resume point: redone
            if later > step:
                shutil.rmtree(path)
    info = dict(run.info, started=_now(), resumed_from=str(run.resume_from) if run.resume_from else None)
    write_json(run_dir / RUN_FILE, info)
    with open(run_dir / HELDOUT_FILE, "w", encoding="utf-8") as fh:
        for ex in run.heldout:
            fh.write(json.dumps(ex.row, ensure_ascii=False) + "\n")


def _truncate_logs(run_dir: Path, step: int) -> None:
    """On resume, forget what a killed run logged after the checkpoint it resumes from."""
    for path in [run_dir / LOG_FILE, *run_dir.glob("data_order*.jsonl")]:
        if path.is_file():
            keep = [line for line in path.read_text().splitlines() if line.strip()
                    and json.loads(line).get("step", 0) <= step]
            path.write_text("".join(line + "\n" for line in keep))




def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# trainer pieces: callbacks and the data-order log
# ---------------------------------------------------------------------------------------------

def token_key(ids) -> str:
    return hashlib.sha1(json.dumps([int(i) for i in ids]).encode()).hexdigest()


class OrderLogMixin:
    """Logs, for every micro-batch, the content hashes of its rows (data_order[.rankN].jsonl)."""

    order_lookup: dict[str, str] | None = None
    order_path: Path | None = None
    seen_tokens: int = 0  # non-padding tokens this process trained on (for tokens/s)
    seen_rows: int = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        masks = [v for k, v in inputs.items() if k.endswith("attention_mask") and hasattr(v, "sum")]
        if masks:
            self.seen_tokens += int(sum(int(m.sum()) for m in masks))
            self.seen_rows += int(masks[0].shape[0])
        if self.order_path is not None and "input_ids" in inputs:
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            rows = []
            for r in range(ids.shape[0]):
                row = ids[r][mask[r].bool()] if mask is not None else ids[r]
                key = token_key(row.tolist())
                rows.append(self.order_lookup.get(key, "tok:" + key) if self.order_lookup else "tok:" + key)
            with open(self.order_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": self.state.global_step + 1, "rows": rows}) + "\n")
        return super().training_step(model, inputs, num_items_in_batch)


def make_callbacks(run: PreparedRun):
    from transformers.trainer_callback import ProgressCallback, TrainerCallback

    class Provenance(TrainerCallback):
        """quimbot-provenance.json in every checkpoint; only the main process writes."""

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not ckpt.is_dir():
                return
            for sub in ckpt.iterdir():  # extra adapters (DPO's frozen "ref" copy) would show up in the app
                if sub.is_dir() and (sub / "adapter_config.json").is_file():
                    shutil.rmtree(sub)
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            write_json(ckpt / PROVENANCE_FILE, {
                "quimbot_provenance": 1, "step": state.global_step, "max_steps": state.max_steps,
                "epoch": state.epoch, "final": state.global_step >= state.max_steps,
                "checkpoint": str(ckpt.resolve()), "time": _now(),
                "last_logged_loss": losses[-1] if losses else None, **run.info})

    class Progress(ProgressCallback):
        """The tqdm bar, plus one readable line per logging step (and train_log.jsonl)."""

        trainer = None  # set by _swap_progress: where the token counts are

        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            self.t0, self.step0 = time.monotonic(), state.global_step
            self.meter = throughput_meter(run)
            self.meter.start(self.t0, *self._seen())

        def _seen(self) -> tuple[int, int]:
            t = self.trainer
            return (getattr(t, "seen_tokens", 0) * run.world_size, getattr(t, "seen_rows", 0) * run.world_size)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            done = state.global_step - self.step0
            elapsed = time.monotonic() - self.t0
            per_step = elapsed / done if done else None
            speed = self.meter.update(time.monotonic(), *self._seen()) if "train_runtime" not in logs else {}
            record = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "total_flos"}}
            if per_step:
                record["s_per_step"] = round(per_step, 3)
            record.update({k: round(v, 4 if k == "mfu" else 1) for k, v in speed.items()})
            with open(Path(args.output_dir) / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            parts = [f"step {state.global_step}/{state.max_steps}"]
            for key, fmt in (("loss", "loss {:.4f}"), ("learning_rate", "lr {:.2e}"),
                             ("mean_token_accuracy", "acc {:.3f}"), ("rewards/margins", "margin {:.3f}")):
                if key in logs:
                    parts.append(fmt.format(logs[key]))
            if "tokens_per_s" in speed:
                parts.append(f"{speed['tokens_per_s']:,.0f} tok/s")
            if "mfu" in speed:
                parts.append(f"MFU {100 * speed['mfu']:.1f}%")
            if per_step:
                left = (state.max_steps - state.global_step) * per_step
                parts.append(f"{per_step:.2f} s/step")
                parts.append(f"ETA {_hms(left)}")
            if "train_runtime" in logs:
                parts = [f"done: {state.global_step} steps in {_hms(logs['train_runtime'])}"]
            line = " | ".join(parts)
            if self.training_bar is not None:
                self.training_bar.write(line)
            else:
                print(line, flush=True)

    return Provenance(), Progress


def throughput_meter(run: PreparedRun):
    """tokens/s for every run; MFU too when it trains on a GPU whose peak bf16 FLOP/s is known."""
    from train.fit.mfu import ModelShape, ThroughputMeter, peak_flops

    shape, peak = None, None
    if run.device.device == "cuda" and run.model is not None:
        import torch

        peak = peak_flops(torch.cuda.get_device_name())
        try:
            shape = ModelShape.from_config(run.model.config)
        except AttributeError:  # a config without the usual decoder fields: tokens/s only
            shape = None
    return ThroughputMeter(shape, int(run.info.get("trainable_parameters", 0)), peak, run.world_size)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def training_arguments(run: PreparedRun, cls):
    """SFTConfig / DPOConfig from the Quimbot config; [trl] keys are passed through last."""
    c = run.config
    kwargs: dict[str, Any] = dict(
        output_dir=str(run.run_dir), per_device_train_batch_size=c.per_device_train_batch_size,
        gradient_accumulation_steps=c.gradient_accumulation_steps, learning_rate=c.learning_rate,
        lr_scheduler_type=c.lr_scheduler_type, warmup_steps=c.warmup_steps, weight_decay=c.weight_decay,
        max_grad_norm=c.max_grad_norm, num_train_epochs=c.num_train_epochs, max_steps=c.max_steps,
        save_strategy="steps", save_steps=c.save_steps, save_total_limit=None, save_only_model=False,
        logging_steps=c.logging_steps, logging_first_step=True, seed=c.seed, data_seed=c.seed,
        bf16=run.device.bf16, fp16=run.device.fp16, use_cpu=run.device.device == "cpu",
        activation_checkpointing=run.device.gradient_checkpointing, report_to="none", disable_tqdm=False,
        max_length=c.max_length, dataloader_num_workers=0, eval_strategy="no",
        train_sampling_strategy="group_by_length" if c.group_by_length else "random",
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient; the search costs a graph walk
    )
    if cls.__name__ == "SFTConfig":
        kwargs.update(packing=c.packing)
    else:
        kwargs.update(beta=c.beta, loss_type=[c.loss_type])
    valid = {f.name for f in dataclasses.fields(cls)}
    kwargs.update({k: v for k, v in c.trl.items() if k in valid})
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    checkpoints: list[Path]
    seconds: float
    s_per_step: float | None
    perplexity: list[dict] | None


def scored_logits(model, input_ids, attention_mask, labels, position_ids=None, share_prefix: bool = False):
    """(logits, targets) at the positions whose next token has a label - the LM head runs on those
    rows only, not on the whole (batch, length, vocabulary) block. Works on PEFT-wrapped models.
    ``share_prefix`` (right-padded rows, no position_ids): the token prefix rows share runs once
    (train.fit.prefix); the targets then come group by group, not row by row."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if share_prefix and position_ids is None:
        from train.fit.prefix import shared_prefix_hidden

        hidden, targets = shared_prefix_hidden(base.get_decoder(), input_ids, attention_mask, labels)
        return base.get_output_embeddings()(hidden).float(), targets
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    hidden = base.get_decoder()(**kwargs).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    return base.get_output_embeddings()(hidden[mask]).float(), targets[mask]


def sft_trainer_class():
    """TRL's SFTTrainer plus the data-order log and, where TRL would score every position (no Triton:
    CPU), a loss computed on the assistant positions only.

    TRL's fused LM head projects only the labelled positions on CUDA/XPU, but on other devices it
    projects all of them and recomputes the projection in the backward pass: on CPU that made a step
    1.4x slower than a plain forward+backward. Here the head runs on the labelled positions alone
    (loss, token accuracy and entropy are the same quantities TRL logs)."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer
    from trl.kernels.chunked_logprob import _use_triton

    class QuimbotSFTTrainer(OrderLogMixin, SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            device = inputs["input_ids"].device
            if (return_outputs or _use_triton(device) or self.accelerator.num_processes > 1 or "labels" not in inputs
                    or "attention_mask" not in inputs or self.args.loss_type != "nll" or self.aux_loss_enabled):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            logits, targets = scored_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                            inputs.get("position_ids"), getattr(self, "share_prefix", False))
            count = targets.numel() if num_items_in_batch is None else num_items_in_batch
            loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(min=1)
            mode = "train" if self.model.training else "eval"
            with torch.no_grad():
                if targets.numel():
                    logp = torch.log_softmax(logits, dim=-1)
                    self._metrics[mode]["entropy"].append(float(-(logp.exp() * logp).sum(-1).mean()))
                    self._metrics[mode]["mean_token_accuracy"].append(
                        float((logits.argmax(-1) == targets).float().mean()))
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return QuimbotSFTTrainer


def build_sft_trainer(run: PreparedRun, extra_callbacks=()):
    from datasets import Dataset
    from trl import SFTConfig

    QuimbotSFTTrainer = sft_trainer_class()

    dataset = Dataset.from_dict({"input_ids": [ex.input_ids for ex in run.train],
                                 "labels": [ex.labels for ex in run.train]})
    args = training_arguments(run, SFTConfig)
    provenance, progress = make_callbacks(run)
    trainer = QuimbotSFTTrainer(model=run.model, args=args, train_dataset=dataset, processing_class=run.tokenizer,
                                callbacks=[provenance, *extra_callbacks])
    _swap_progress(trainer, progress)
    _setup_order_log(trainer, run, {token_key(ex.input_ids): ex.hash for ex in run.train})
    trainer.share_prefix = run.config.share_prefix and not run.device.gradient_checkpointing
    return trainer


def _swap_progress(trainer, progress_cls) -> None:
    from transformers.trainer_callback import ProgressCallback

    trainer.remove_callback(ProgressCallback)
    progress = progress_cls()
    progress.trainer = trainer
    trainer.add_callback(progress)


def _setup_order_log(trainer, run: PreparedRun, lookup: dict[str, str] | None) -> None:
    _, rank, world = _world()
    trainer.order_lookup = lookup
    trainer.order_path = run.run_dir / (ORDER_FILE if world == 1 else f"data_order.rank{rank}.jsonl")


def quiet_library_warnings() -> None:
    """Silence warnings that say nothing to a Quimbot user (renamed options inside TRL/PEFT, and PEFT
    looking the hub id of the bundled base up offline at every save)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Could not find a config file in", category=UserWarning)


def train(config: TrainConfig, settings: Settings | None = None, say=print, callbacks=()) -> TrainResult:
    """Run SFT (or DPO, by ``config.method``) end to end; returns where everything went."""
    quiet_library_warnings()
    kind = "sft" if config.method == "sft" else "preference"
    run = prepare_run(config, settings, kind=kind, say=say)
    say, c = run.say, run.config
    say(f"run {run.run_dir}: {len(run.train)} training rows, {len(run.heldout)} held out; "
        f"{run.total_steps} steps of {c.per_device_train_batch_size} rows x {c.gradient_accumulation_steps} "
        f"accumulated{f' x {run.world_size} processes' if run.world_size > 1 else ''}; "
        f"{run.info.get('trainable_parameters', 0):,} trainable parameters; {run.device.describe()}")
    if run.resume_from is not None:
        say(f"resuming from {run.resume_from}")
        run.info["resumed_from"] = str(run.resume_from)
    if c.method == "dpo":
        from train.fit.dpo import build_dpo_trainer

        trainer = build_dpo_trainer(run, callbacks)
    else:
        trainer = build_sft_trainer(run, callbacks)
    write_run_files(run)  # main process only; the others wait for it below
    trainer.accelerator.wait_for_everyone()
    start = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    seconds = time.monotonic() - start
    steps = trainer.state.global_step
    done_here = steps - (int(run.resume_from.name.split("-")[-1]) if run.resume_from else 0)
    del trainer, output
    run.model = None
    if not run.is_main:
        return TrainResult(run.run_dir, steps, [], seconds, None, None)
    ppl = None
    if c.perplexity and run.heldout:
        from train.fit.perplexity import evaluate_run

        ppl = evaluate_run(run.run_dir, run.settings, batch_size=c.eval_batch_size, say=say,
                           device=run.device.device, dtype=run.device.dtype_name)
    return TrainResult(run.run_dir, steps, [p for _, p in checkpoints_of(run.run_dir)], seconds,
                       seconds / done_here if done_here else None, ppl)


if __name__ == "__main__":  # pragma: no cover - `python -m train.fit.sft --config FILE` == `quimbot train sft`
    from train.fit.commands import main

    sys.exit(main(["sft", *sys.argv[1:]]))
