"""The model a run trains: base model (or the adapter it continues), tokenizer, LoRA, device and precision."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelSpecError
from train.fit.config import TrainConfig, TrainError
from tutor.checkpoints import ADAPTER_CONFIG, base_weights, is_adapter, recorded_base, resolve_base
from tutor.config import Settings
from tutor.models import DEFAULT_HUB_ID


@dataclass
class BaseModel:
    name: str             # as configured ("default", a folder, a hub id)
    path: str             # what from_pretrained opens
    adapter_name: str     # what adapter_config.json records as base_model_name_or_path
    init_adapter: str | None = None


def resolve_models(config: TrainConfig, settings: Settings) -> BaseModel:
    """The base model to load (the one the init adapter was trained on, when one is given: see
    tutor.checkpoints.recorded_base); clear errors when a folder is missing or a hub id is not in the
    local cache."""
    init = None
    name = config.base
    if config.init_adapter:
        init_dir = Path(config.init_adapter).expanduser()
        if not is_adapter(init_dir):
            raise TrainError(f"--init-adapter {config.init_adapter}: no {ADAPTER_CONFIG} there; give a "
                             "checkpoint folder such as runs/stage1/checkpoint-100.")
        recorded = recorded_base(init_dir)
        if config.base != "default" and recorded and config.base not in (recorded, str(Path(recorded))):
            raise TrainError(f"--base {config.base} differs from the base of {init_dir} ({recorded}); an adapter "
                             "only works on the base it was trained on. Leave --base out.")
        try:
            path = base_weights(init_dir, settings)
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


def quiet_library_warnings() -> None:
    """Silence warnings that say nothing to a Quimbot user (renamed options inside TRL/PEFT, and PEFT
    looking the hub id of the bundled base up offline at every save)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Could not find a config file in", category=UserWarning)
