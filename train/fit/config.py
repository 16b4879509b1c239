"""The training configuration: one dataclass, help text on every field.

A config file (TOML, or YAML when PyYAML is installed) sets values; command-line flags override
them; anything unset keeps the dataclass default. Names follow TRL / PEFT where an option exists
there (``learning_rate``, ``per_device_train_batch_size``, ``lora_r`` ...), and a ``[trl]`` table
passes any other ``SFTConfig`` / ``DPOConfig`` field straight through. An unknown key is an error
that names the key and lists the valid ones.

Defaults mirror the seed project's Run 4 (rank-16 LoRA on all linear layers, alpha 32, lr 1e-4,
effective batch 64 via gradient accumulation, a checkpoint every 50 steps). The CPU config in
``data/train_default.toml`` scales the run down so that it finishes on a laptop.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from core.errors import QuimbotError


class ConfigError(QuimbotError):
    """A config file or flag that cannot be used: unknown key, wrong type, bad value."""


class TrainError(QuimbotError):
    """A run that cannot start or continue: model, adapter, run folder, disk."""


def _f(default: Any, help: str, *, choices: tuple | None = None, cli: bool = True, **kw: Any) -> Any:
    meta = {"help": help, "cli": cli}
    if choices:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class TrainConfig:
    """Everything a training run needs. ``quimbot train config`` prints the resolved values."""

    # what to train on, what to start from, where to write
    method: str = _f("sft", "training method: 'sft' (messages rows) or 'dpo' (prompt/chosen/rejected rows); "
                     "set by the subcommand", choices=("sft", "dpo"), cli=False)
    dataset: list[str] = _f([], "training JSONL file(s) in Quimbot's row format (TRL conversational); "
                            "several files are read in order and trained on together")
    base: str = _f("default", "base model: 'default' (bundled SmolLM2-135M-Instruct), a local model folder, "
                   "or a hub id already in the local cache")
    init_adapter: str | None = _f(None, "start from this LoRA adapter (a checkpoint folder, e.g. a Stage 1 "
                                  "checkpoint) instead of a fresh one; its base model is used")
    run_name: str | None = _f(None, "name of the run folder under runs_dir (default: the config file's name, "
                              "else method-date-time)")
    runs_dir: str | None = _f(None, "folder holding the runs (default: env QUIMBOT_RUNS_DIR or ./runs)")
    resume: bool = _f(False, "continue the run from its last checkpoint (same steps, same data order)")
    overwrite: bool = _f(False, "delete an existing run folder of the same name before starting")
    # data checks
    skip_bad_rows: bool = _f(False, "train without rows that fail the schema gate (they are counted and "
                             "listed); without it, any bad row stops the run before training")
    max_length: int = _f(1024, "longest row in tokens (chat template applied); longer rows stop the run "
                         "unless on_long says otherwise")
    on_long: str = _f("refuse", "what to do with rows longer than max_length: refuse (list them and stop), "
                      "truncate (keep the start), drop (leave them out); --truncate / --drop-long set it",
                      choices=("refuse", "truncate", "drop"))
    heldout_fraction: float = _f(0.05, "share of distinct rows (chosen by content hash and seed, so the choice is "
                                 "stable) held out of training for perplexity")
    heldout_max: int = _f(200, "at most this many held-out rows")
    # LoRA (names as in TRL's ModelConfig)
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha (scaling = alpha / r)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] = _f(["all-linear"], "modules that get a LoRA adapter ('all-linear' = every "
                                        "linear layer except the output head)")
    # optimisation (names as in transformers' TrainingArguments)
    learning_rate: float = _f(1e-4, "peak learning rate of AdamW")
    lr_scheduler_type: str = _f("cosine", "learning-rate schedule (transformers names: linear, cosine, constant, "
                                "constant_with_warmup ...)")
    warmup_steps: float = _f(0.03, "warm-up: a number of steps, or a fraction of all steps when below 1")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    per_device_train_batch_size: int = _f(8, "rows per forward pass on each device")
    gradient_accumulation_steps: int = _f(8, "forward passes per optimizer step; effective batch = "
                                          "per_device_train_batch_size x this x number of devices")
    effective_batch_size: int | None = _f(None, "rows per optimizer step over all devices; when set, "
                                          "gradient_accumulation_steps is derived from it at start "
                                          "(effective_batch_size / (per_device_train_batch_size x processes)), so "
                                          "one config gives the same batch on 1, 4 or 8 GPUs")
    num_train_epochs: float = _f(1.0, "passes over the training rows (ignored when max_steps > 0)")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run num_train_epochs)")
    save_steps: int = _f(50, "write a checkpoint every this many optimizer steps (and always at the end)")
    logging_steps: int = _f(5, "print loss, speed and ETA every this many steps")
    seed: int = _f(42, "seed for LoRA init, data order and the held-out split")
    packing: bool = _f(False, "pack several rows into one max_length sequence (TRL best-fit packing; needs an "
                       "attention kernel that respects sequence boundaries, e.g. flash-attention on GPU)")
    group_by_length: bool = _f(False, "batch rows of similar length together (less padding)")
    share_prefix: bool = _f(True, "run the token prefix that rows of a forward pass share (the system prompt) "
                            "once, not once a row: same loss and gradients, about 1.7x faster steps with the "
                            "starter rows (CPU/MPS path; off with gradient checkpointing)")
    # device
    device: str = _f("auto", "auto (CUDA when present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = _f("auto", "auto (fp32 on CPU, bf16 on CUDA when supported, else fp16), fp32, bf16, fp16",
                        choices=("auto", "fp32", "bf16", "fp16"))
    gradient_checkpointing: bool | None = _f(None, "recompute activations in the backward pass to save memory "
                                             "(default: off on CPU, where it only costs time; on with CUDA)")
    # evaluation
    perplexity: bool = _f(True, "compute held-out perplexity for the base and every checkpoint after training")
    eval_batch_size: int = _f(8, "rows per forward pass when computing perplexity")
    # DPO
    beta: float = _f(0.1, "DPO: strength of the pull towards the reference model")
    loss_type: str = _f("sigmoid", "DPO loss (TRL names: sigmoid, ipo, hinge, ...)")
    # pass-through
    trl: dict[str, Any] = _f({}, "any other SFTConfig / DPOConfig field, e.g. [trl] dataloader_num_workers = 2 "
                             "(config file only)", cli=False)

    # derived helpers ------------------------------------------------------------------------
    @property
    def effective_batch(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(name: str) -> tuple[type, bool]:
    """(element type, is_list) of a field; Optional is unwrapped."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is list:
        return typing.get_args(hint)[0], True
    if origin is dict:
        return dict, False
    if args and origin is not None:  # X | None
        return args[0], False
    return hint, False


def _coerce(name: str, value: Any, source: str) -> Any:
    typ, is_list = _base_type(name)
    optional = type(None) in typing.get_args(_HINTS[name])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: '{name}' cannot be empty")
    if is_list:
        items = value if isinstance(value, list) else [value]
        return [_coerce_one(name, typ, v, source) for v in items]
    if typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{name}' must be a table of keys and values")
        return dict(value)
    return _coerce_one(name, typ, value, source)


def _coerce_one(name: str, typ: type, value: Any, source: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{name}' must be true or false, not {value!r}")
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is str and isinstance(value, (str, Path)):
        value = str(value)
        choices = FIELDS[name].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{source}: '{name}' is {value!r}; use one of {', '.join(choices)}")
        return value
    raise ConfigError(f"{source}: '{name}' must be {typ.__name__}, not {type(value).__name__} ({value!r})")


def _unknown(keys: list[str], source: str, valid: list[str], what: str = "key") -> ConfigError:
    return ConfigError(f"{source}: unknown {what}{'s' if len(keys) > 1 else ''} {', '.join(map(repr, keys))}. "
                       f"Valid {what}s: {', '.join(valid)}.")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a TOML (or YAML) config file; syntax errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - PyYAML comes with datasets/accelerate
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use TOML") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of keys and values")
    return data


def apply(config: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    """A copy of ``config`` with ``values`` applied; unknown keys and wrong types are errors."""
    unknown = sorted(k for k in values if k not in FIELDS)
    if unknown:
        raise _unknown(unknown, source, sorted(FIELDS))
    updates = {k: _coerce(k, v, source) for k, v in values.items()}
    if "trl" in updates:
        check_trl_keys(updates["trl"], source)
    return dataclasses.replace(config, **updates)


def check_trl_keys(trl: dict[str, Any], source: str) -> None:
    """Keys of the ``[trl]`` pass-through table must be SFTConfig or DPOConfig fields."""
    from trl import DPOConfig, SFTConfig

    valid = {f.name for f in dataclasses.fields(SFTConfig)} | {f.name for f in dataclasses.fields(DPOConfig)}
    unknown = sorted(k for k in trl if k not in valid)
    if unknown:
        raise ConfigError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))} in [trl]; it takes SFTConfig / DPOConfig fields "
                          "(see https://huggingface.co/docs/trl/sft_trainer).")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                method: str | None = None) -> TrainConfig:
    """Defaults, then the config file, then ``overrides`` (from flags)."""
    config = TrainConfig()
    if path is not None:
        config = apply(config, read_config_file(path), str(path))
        if config.run_name is None:
            config = dataclasses.replace(config, run_name=Path(path).stem)
    if overrides:
        config = apply(config, overrides, "command line")
    if method is not None:
        if path is not None and config.method != method and "method" in read_config_file(path):
            raise ConfigError(f"{path} says method = {config.method!r}, but this is `quimbot train {method}`; "
                              f"run `quimbot train {config.method}` or change the file.")
        config = dataclasses.replace(config, method=method)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    positive = ("lora_r", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps",
                "save_steps", "logging_steps", "max_length", "eval_batch_size", "heldout_max")
    for name in positive:
        if getattr(config, name) < 1 and not (name == "heldout_max" and getattr(config, name) == 0):
            raise ConfigError(f"'{name}' must be at least 1 (it is {getattr(config, name)})")
    if not 0 <= config.heldout_fraction < 1:
        raise ConfigError(f"'heldout_fraction' must be in [0, 1) (it is {config.heldout_fraction})")
    if config.learning_rate <= 0:
        raise ConfigError("'learning_rate' must be positive")
    if config.max_steps == 0 or (config.max_steps < 0 and config.num_train_epochs <= 0):
        raise ConfigError("set max_steps > 0, or max_steps = -1 with num_train_epochs > 0")
    if config.resume and config.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")
    if config.effective_batch_size is not None and config.effective_batch_size < 1:
        raise ConfigError(f"'effective_batch_size' must be at least 1 (it is {config.effective_batch_size})")


def resolve_effective_batch(config: TrainConfig, processes: int) -> TrainConfig:
    """``gradient_accumulation_steps`` from ``effective_batch_size`` for this number of processes."""
    if config.effective_batch_size is None:
        return config
    per_step = config.per_device_train_batch_size * max(1, processes)
    if config.effective_batch_size % per_step:
        raise ConfigError(f"effective_batch_size = {config.effective_batch_size} is not a multiple of "
                          f"per_device_train_batch_size ({config.per_device_train_batch_size}) x {processes} "
                          f"process(es) = {per_step}; change one of them.")
    return dataclasses.replace(config, gradient_accumulation_steps=config.effective_batch_size // per_step)


# command-line flags, generated from the fields --------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per CLI field (``--learning-rate``), default SUPPRESS so only given flags override."""
    group = parser.add_argument_group("training options (override the config file)")
    for name, f in FIELDS.items():
        if not f.metadata.get("cli", True) or name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        typ, is_list = _base_type(name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = json.dumps(default) if not isinstance(default, str) else default
        help_text = f"{f.metadata['help']} (default: {shown})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = typ
            kwargs["metavar"] = name.upper() if name != "dataset" else "JSONL"
            if is_list:
                kwargs["action"] = "extend"
                kwargs["nargs"] = "+"
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        group.add_argument(flag, **kwargs)
    if "on_long" not in skip:
        group.add_argument("--truncate", dest="on_long", action="store_const", const="truncate",
                           default=argparse.SUPPRESS, help="same as --on-long truncate")
        group.add_argument("--drop-long", dest="on_long", action="store_const", const="drop",
                           default=argparse.SUPPRESS, help="same as --on-long drop")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line."""
    return {name: value for name, value in vars(args).items()
            if name in FIELDS and FIELDS[name].metadata.get("cli", True)}


def describe() -> str:
    """Every field with its default and help, for ``quimbot train config --fields``."""
    lines = []
    for name, f in FIELDS.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{name} = {json.dumps(default)}\n    {f.metadata['help']}")
    return "\n".join(lines)
