"""A training checkpoint out of the workbench: merged GGUF files, a GGUF LoRA, provenance.

    export_gguf(checkpoint, types)   merge the LoRA into its base (transformers + PEFT, fp32), convert
                                     with llama.cpp's own converter (f16, q8_0), quantize 4-bit types
                                     with llama.cpp's quantizer, then run the parity check (train/export/parity.py)
    export_lora(checkpoint)          the adapter alone as a GGUF LoRA, for llama-cpp on the base GGUF

Layout: ``EXPORTS/<run>-<checkpoint>/model-<type>.gguf`` with ``model-<type>.json`` (provenance and
parity figures) beside it; ``adapter-f16.lora.gguf`` for the LoRA. Every file is written under a
``.part`` name and renamed only when complete (and, for models, only when the parity check passes),
so the app's picker, which lists ``*.gguf``, never offers a half-written or drifting export. An export
that fails its parity check is kept as ``model-<type>.gguf.rejected`` next to its report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import BackendError, QuimbotError
from core.files import file_sha256, write_json
from train.export.converter import converter_dir, converter_env, llama_cpp_version
from train.fit.provenance import git_state, utc_now
from tutor.checkpoints import base_weights, is_adapter, names_bundled_model, read_provenance, recorded_base
from tutor.config import Settings
from tutor.weights import quantize as quantize_gguf

# type -> (converter --outtype, llama.cpp ftype for llama_model_quantize from the f16 file)
TYPES: dict[str, tuple[str | None, int | None]] = {
    "f16": ("f16", None),
    "q8_0": ("q8_0", None),
    "q4_k_m": (None, 15),   # LLAMA_FTYPE_MOSTLY_Q4_K_M
    "q4_0": (None, 2),      # LLAMA_FTYPE_MOSTLY_Q4_0
}
FOUR_BIT = ("q4_k_m", "q4_0")
EXPORT_FORMAT = 1


class ExportError(QuimbotError):
    """An export could not be made; nothing half-written was left where the picker looks."""


@dataclass
class Source:
    """The checkpoint to export and the base model it adapts."""

    checkpoint: Path
    base_dir: Path
    base_name: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def export_name(self) -> str:
        run = self.provenance.get("run") or self.checkpoint.parent.name
        return _safe(f"{run}-{self.checkpoint.name}")


@dataclass
class ExportResult:
    type: str
    path: Path
    seconds: float
    bytes: int
    provenance: Path
    parity: dict[str, Any] | None = None
    accepted: bool = True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "export"


def resolve_source(checkpoint: str | Path, settings: Settings) -> Source:
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise ExportError(f"Checkpoint folder not found: {path}. Pass a folder such as runs/RUN/checkpoint-80 "
                          "(`quimbot models` lists them).")
    if not is_adapter(path):
        raise ExportError(f"{path} has no adapter_config.json; export needs a LoRA checkpoint written by "
                          "`quimbot train` (or any PEFT adapter folder).")
    if not any((path / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ExportError(f"{path} has an adapter_config.json but no adapter weights "
                          "(adapter_model.safetensors); the checkpoint is incomplete.")
    base = base_weights(path, settings)
    if not Path(base).is_dir():
        raise ExportError(f"The base model of {path} ({base}) is not a local folder; export needs the base "
                          "weights on disk.")
    return Source(path.resolve(), Path(base).resolve(), recorded_base(path) or "default", read_provenance(path))


def merge(source: Source, out_dir: Path, say=print) -> Path:
    """The adapter merged into a full-precision copy of its base, saved as safetensors + tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"merging {source.checkpoint} into {source.base_dir} (fp32)")
    model = AutoModelForCausalLM.from_pretrained(source.base_dir, dtype=torch.float32, local_files_only=True)
    model = PeftModel.from_pretrained(model, str(source.checkpoint)).merge_and_unload()
    tok_src = source.checkpoint if (source.checkpoint / "tokenizer_config.json").is_file() else source.base_dir
    tokenizer = AutoTokenizer.from_pretrained(tok_src, local_files_only=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    del model
    return out_dir


def _run_converter(cmd: list[str], folder: Path, say, what: str) -> None:
    say(f"{what}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}")
    proc = subprocess.Popen(cmd, cwd=folder, env=converter_env(folder), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-30:]
        if "Writing:" in line or "INFO:hf-to-gguf:Model successfully exported" in line or "Exporting" in line:
            say("  " + line.rstrip()[-120:])
    if proc.wait() != 0:
        raise ExportError(f"{what} failed (exit {proc.returncode}). Last converter output:\n" + "\n".join(tail))


def convert(merged: Path, out_file: Path, outtype: str, folder: Path, say=print) -> None:
    cmd = [sys.executable, str(folder / "convert_hf_to_gguf.py"), str(merged), "--outfile", str(out_file),
           "--outtype", outtype]
    _run_converter(cmd, folder, say, f"converting to {outtype}")


def quantize(src: Path, dst: Path, ftype: int, say=print) -> None:
    try:
        quantize_gguf(src, dst, ftype, say=say)
    except BackendError as exc:
        raise ExportError(str(exc)) from exc


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ExportError(f"{path} was written but is not a GGUF file; the converter misbehaved.")


def _provenance(source: Source, kind: str, gtype: str, path: Path, seconds: float, folder: Path,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    marker = folder / "quimbot-converter.txt"
    adapter = source.checkpoint / "adapter_model.safetensors"
    return {
        "quimbot_export": EXPORT_FORMAT, "kind": kind, "type": gtype, "file": path.name,
        "sha256": file_sha256(path), "bytes": path.stat().st_size, "seconds": round(seconds, 2),
        "time": utc_now(),
        "source_checkpoint": str(source.checkpoint),
        "adapter_sha256": file_sha256(adapter) if adapter.is_file() else None,
        "step": source.provenance.get("step"), "run": source.provenance.get("run"),
        "dataset": source.provenance.get("datasets"),
        "base_model": {"recorded": source.base_name, "weights": str(source.base_dir)},
        "converter": {"llama_cpp_python": llama_cpp_version(), "folder": str(folder),
                      "source": marker.read_text().strip() if marker.is_file() else "QUIMBOT_LLAMA_CPP_DIR"},
        "git": git_state(),
        **(extra or {}),
    }


def export_dir(source: Source, settings: Settings, out_dir: str | Path | None) -> Path:
    folder = Path(out_dir) if out_dir else Path(settings.exports_dir) / source.export_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()  # the converters run in their own folder: every path they get is absolute


def _clean_parts(folder: Path) -> None:
    for stale in folder.glob("*.part"):
        stale.unlink()


def export_gguf(checkpoint: str | Path, types: list[str], settings: Settings | None = None, *,
                out_dir: str | Path | None = None, parity: bool = True, parity_options: dict | None = None,
                say=print) -> list[ExportResult]:
    """Merged GGUF files of ``checkpoint`` at each type, each checked for parity unless ``parity`` is off."""
    settings = settings or Settings()
    unknown = [t for t in types if t not in TYPES]
    if unknown or not types:
        raise ExportError(f"Unknown GGUF type {', '.join(unknown) or '(none)'}; choose from {', '.join(TYPES)}.")
    source = resolve_source(checkpoint, settings)
    folder = converter_dir(settings, say)
    out = export_dir(source, settings, out_dir)
    _check_space(out, source)
    _clean_parts(out)
    try:
        return _export_types(source, types, out, folder, parity, parity_options, settings, say)
    finally:
        _clean_parts(out)  # a failed or interrupted conversion leaves nothing half-written


def _export_types(source: Source, types: list[str], out: Path, folder: Path, parity: bool,
                  parity_options: dict | None, settings: Settings, say) -> list[ExportResult]:
    results: list[ExportResult] = []
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=out) as tmp:
        t0 = time.monotonic()
        merged = merge(source, Path(tmp) / "merged", say)
        say(f"merged in {time.monotonic() - t0:.1f} s")
        merge_seconds = time.monotonic() - t0
        f16_part: Path | None = None
        for gtype in types:
            t1 = time.monotonic()
            outtype, ftype = TYPES[gtype]
            part = out / f"model-{gtype}.gguf.part"
            if outtype is not None:
                convert(merged, part, outtype, folder, say)
                if gtype == "f16":
                    f16_part = part
            else:
                if f16_part is None or not f16_part.exists():
                    f16_part = Path(tmp) / "model-f16.gguf"
                    convert(merged, f16_part, "f16", folder, say)
                quantize(f16_part, part, ftype, say)
            _check_gguf(part)
            seconds = time.monotonic() - t1 + merge_seconds
            results.append(_finish(source, gtype, part, seconds, folder, parity, parity_options, settings, say))
            if f16_part == part and results[-1].accepted:
                f16_part = results[-1].path
    return results


def _finish(source: Source, gtype: str, part: Path, seconds: float, folder: Path, parity: bool,
            parity_options: dict | None, settings: Settings, say) -> ExportResult:
    final = part.with_name(part.name[:-len(".part")])
    report = None
    accepted = True
    if parity:
        from train.export.parity import parity_check

        options = dict(parity_options or {})
        options.setdefault("min_agreement", default_min_agreement(gtype))
        report = parity_check(source.checkpoint, part, settings=settings, say=say, **options)
        accepted = report["passed"]
    extra = {"parity": report and {k: v for k, v in report.items() if k != "prompts"}, "accepted": accepted}
    prov = _provenance(source, "model", gtype, part, seconds, folder, extra)
    if accepted:
        prov["file"] = final.name
        part.replace(final)
        say(f"wrote {final} ({final.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s)")
    else:
        final = final.with_name(final.name + ".rejected")
        part.replace(final)
        prov["file"] = final.name
        say(f"PARITY FAILED: kept as {final} (not offered in the app); see parity-{gtype}.json")
    if report is not None:
        write_json(final.parent / f"parity-{gtype}.json", report)
    meta = final.parent / f"model-{gtype}.json"
    write_json(meta, prov)
    return ExportResult(gtype, final, seconds, final.stat().st_size, meta, report, accepted)


def default_min_agreement(gtype: str) -> float:
    """Token agreement (greedy, vs the transformers checkpoint) below which an export fails.
    Quantization changes some greedy choices; a template or BOS mismatch changes almost all."""
    return {"f16": 0.8, "q8_0": 0.6}.get(gtype, 0.3)


def export_lora(checkpoint: str | Path, settings: Settings | None = None, *, out_dir: str | Path | None = None,
                outtype: str = "f16", say=print) -> ExportResult:
    """The adapter alone, as a GGUF LoRA for llama-cpp (``gguf:BASE?lora=FILE``)."""
    settings = settings or Settings()
    if outtype not in ("f32", "f16", "q8_0"):
        raise ExportError(f"LoRA GGUF type {outtype!r}: choose f32, f16 or q8_0.")
    source = resolve_source(checkpoint, settings)
    folder = converter_dir(settings, say)
    out = export_dir(source, settings, out_dir)
    final = out / f"adapter-{outtype}.lora.gguf"
    part = final.with_name(final.name + ".part")
    t0 = time.monotonic()
    cmd = [sys.executable, str(folder / "convert_lora_to_gguf.py"), str(source.checkpoint), "--base",
           str(source.base_dir), "--outfile", str(part), "--outtype", outtype]
    try:
        _run_converter(cmd, folder, say, "converting the LoRA adapter")
        _check_gguf(part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - t0
    from tutor.models import default_gguf_path

    base_gguf = str(default_gguf_path()) if _is_default(source) else None
    prov = _provenance(source, "lora", outtype, part, seconds, folder, {"base_gguf": base_gguf})
    prov["file"] = final.name
    part.replace(final)
    meta = out / f"adapter-{outtype}.json"
    write_json(meta, prov)
    say(f"wrote {final} ({final.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s)"
        + (f"; serve it with gguf:default?lora={final}" if base_gguf else ""))
    return ExportResult(outtype, final, seconds, final.stat().st_size, meta)


def _is_default(source: Source) -> bool:
    return names_bundled_model(source.base_name)


def _check_space(out: Path, source: Source) -> None:
    need = sum(p.stat().st_size for p in source.base_dir.glob("*.safetensors")) * 3
    free = shutil.disk_usage(out).free
    if free < need:
        raise ExportError(f"Not enough disk space in {out}: about {need / 1e9:.1f} GB needed (merged weights + "
                          f"GGUF files), {free / 1e9:.1f} GB free.")


def existing_export(folder: Path, gtype: str, source: Source) -> ExportResult | None:
    """A passing export of this very adapter at this type, if one is already on disk."""
    meta, gguf = folder / f"model-{gtype}.json", folder / f"model-{gtype}.gguf"
    if not (meta.is_file() and gguf.is_file()):
        return None
    prov = json.loads(meta.read_text())
    adapter = source.checkpoint / "adapter_model.safetensors"
    if not prov.get("accepted") or prov.get("adapter_sha256") != (file_sha256(adapter) if adapter.is_file() else None):
        return None
    return ExportResult(gtype, gguf, prov.get("seconds", 0.0), gguf.stat().st_size, meta, prov.get("parity"), True)


def export_ollama(checkpoint: str | Path, gtype: str = "q8_0", settings: Settings | None = None, *,
                  out_dir: str | Path | None = None, parity: bool = True, parity_options: dict | None = None,
                  level: str = "intermediate", template: str | None = None, say=print
                  ) -> tuple[ExportResult | None, Path | None]:
    """A GGUF (reused when a passing export of the same adapter exists) and a Modelfile beside it."""
    from transformers import AutoTokenizer

    from train.export.modelfile import choose_template, write_modelfile

    settings = settings or Settings()
    source = resolve_source(checkpoint, settings)
    tok_src = source.checkpoint if (source.checkpoint / "tokenizer_config.json").is_file() else source.base_dir
    tokenizer = AutoTokenizer.from_pretrained(tok_src, local_files_only=True)
    if template is None:
        choose_template(tokenizer)  # fail before a long export if no template can be written
    result = existing_export(export_dir(source, settings, out_dir), gtype, source)
    if result is not None:
        say(f"reusing {result.path} (same adapter, parity passed)")
    else:
        result = export_gguf(checkpoint, [gtype], settings, out_dir=out_dir, parity=parity,
                             parity_options=parity_options, say=say)[0]
    if not result.accepted:
        return result, None
    comment = (f"Quimbot tutor: {source.checkpoint.parent.name}/{source.checkpoint.name}, {gtype}\n"
               f"ollama create quimbot-tutor -f {result.path.parent / 'Modelfile'}")
    path = write_modelfile(result.path, tokenizer, level=level, template=template, comment=comment)
    say(f"wrote {path}")
    return result, path
