"""Build a training set from several sources with explicit ratios, filters and a fixed seed,
and write a manifest: inputs with their hashes, target vs actual ratios, filters applied.

A mix config (TOML)::

    name = "stage1-starter"
    seed = 13
    total = 3000                       # rows in the mix
    out = "data/generated/stage1.jsonl"
    dedup = "within"                   # "within" each source, or "across" all sources

    [[sources]]
    name = "offline"
    path = "data/generated/offline.jsonl"
    ratio = 1.0                        # share of `total`; the ratios must add up to 1
    upsample = false                   # allow repeating rows when the source is too small
    [sources.filter]                   # optional
    styles = ["recast", "expansion"]
    error_types = ["past_tense"]
    include_error_free = true
    [sources.generate]                 # optional: build (or finish) the source first; a file made with
                                       # other parameters or generator version is refused, never mixed
    lanes = ["offline"]
    n = 3200
    rotate_every = 200
    seed = 7

Relative paths are taken from the directory the command runs in.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomllib

from core.errors import DataError, QuimbotError
from core.files import check_input, file_sha256, open_data, output_path, write_error
from core.hashing import content_hash
from core.jsonl import no_rows, read_rows
from core.schema import GateReport

SOURCE_KEYS = {"name", "path", "ratio", "upsample", "filter", "generate"}
FILTER_KEYS = {"styles", "error_types", "include_error_free", "sources", "lanes"}
TOP_KEYS = {"name", "seed", "total", "out", "dedup", "sources"}


@dataclass
class Source:
    name: str
    path: Path
    ratio: float
    upsample: bool = False
    filter: dict[str, Any] = field(default_factory=dict)
    generate: dict[str, Any] | None = None


@dataclass
class MixConfig:
    name: str
    seed: int
    total: int
    out: Path
    dedup: str
    sources: list[Source]


def _unknown(keys: set[str], allowed: set[str], where: str) -> None:
    extra = sorted(keys - allowed)
    if extra:
        raise QuimbotError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}.")


def load_mix_config(path: str | Path) -> MixConfig:
    path = Path(path)
    try:
        with open_data(path) as fh:
            raw = tomllib.loads(fh.read().decode("utf-8"))
    except DataError as exc:
        raise QuimbotError(f"Mix config: {exc}") from None
    except OSError as exc:
        raise QuimbotError(f"Cannot read mix config {path}: {exc.strerror}.") from exc
    except UnicodeDecodeError as exc:
        raise QuimbotError(f"{path}: not valid UTF-8 at byte {exc.start + 1}; save the config as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise QuimbotError(f"{path}: not valid TOML ({exc}).") from exc
    _unknown(set(raw), TOP_KEYS, str(path))
    for key in ("total", "out", "sources"):
        if key not in raw:
            raise QuimbotError(f"{path}: '{key}' is missing.")
    sources = []
    for i, item in enumerate(raw["sources"]):
        where = f"{path}: sources[{i}]"
        _unknown(set(item), SOURCE_KEYS, where)
        _unknown(set(item.get("filter", {})), FILTER_KEYS, where + ".filter")
        if "path" not in item or "ratio" not in item:
            raise QuimbotError(f"{where} needs 'path' and 'ratio'.")
        sources.append(Source(item.get("name", f"source{i}"), Path(item["path"]), float(item["ratio"]),
                              bool(item.get("upsample", False)), dict(item.get("filter", {})), item.get("generate")))
    total_ratio = sum(s.ratio for s in sources)
    if not sources or abs(total_ratio - 1.0) > 1e-6:
        raise QuimbotError(f"{path}: the source ratios add up to {total_ratio:g}; they must add up to 1.")
    dedup = raw.get("dedup", "within")
    if dedup not in ("within", "across"):
        raise QuimbotError(f"{path}: dedup must be 'within' or 'across', not {dedup!r}.")
    return MixConfig(raw.get("name", path.stem), int(raw.get("seed", 0)), int(raw["total"]), Path(raw["out"]),
                     dedup, sources)


def _keep(row: dict[str, Any], flt: dict[str, Any]) -> bool:
    meta = row.get("metadata", {})
    if "styles" in flt and meta.get("style") not in flt["styles"]:
        return False
    if meta.get("error_type") is None:
        return flt.get("include_error_free", True)
    if "error_types" in flt and meta.get("error_type") not in flt["error_types"]:
        return False
    if "sources" in flt and meta.get("source") not in flt["sources"]:
        return False
    if "lanes" in flt and meta.get("lane") not in flt["lanes"]:
        return False
    return True




def build_mix(config: MixConfig, progress: bool = True) -> dict[str, Any]:
    """Write the mix and its manifest (OUT.manifest.json); return the manifest."""
    output_path(config.out)  # before any work: a folder, or a folder that cannot be made, is refused
    rng = random.Random(config.seed)
    seen_across: set[str] = set()
    picked: list[dict[str, Any]] = []
    inputs = []
    for source in config.sources:
        if source.generate:  # missing: generated; unfinished: resumed; made by another generator version: refused
            from train.data.generate import GenerateConfig, run_generation

            gen = dict(source.generate)
            run_generation(GenerateConfig(out=source.path, n=int(gen.pop("n")), lanes=list(gen.pop("lanes", ["offline"])),
                                          **gen), progress=progress)
        try:
            check_input(source.path)
        except DataError as exc:
            raise QuimbotError(f"Mix source '{source.name}': {exc}") from None
        report = GateReport()
        rows, duplicates, seen = [], 0, set()
        for row in read_rows(source.path, report):
            if not _keep(row, source.filter):
                continue
            key = row.get("metadata", {}).get("content_hash") or content_hash(row)
            scope = seen_across if config.dedup == "across" else seen
            if key in scope:
                duplicates += 1
                continue
            scope.add(key)
            rows.append(row)
        if not report.accepted and not report.rejected:
            raise QuimbotError(f"Mix source '{source.name}': {no_rows(source.path)}")
        target = round(config.total * source.ratio)
        if len(rows) >= target:
            chosen = rng.sample(rows, target)
        elif source.upsample and rows:
            chosen = rows + [rng.choice(rows) for _ in range(target - len(rows))]
        else:
            chosen = list(rows)
        for row in chosen:
            row = json.loads(json.dumps(row))
            row.setdefault("metadata", {})["mix_source"] = source.name
            picked.append(row)
        inputs.append({"name": source.name, "path": str(source.path), "sha256": file_sha256(source.path),
                       "rows_accepted_by_gate": report.accepted, "rows_rejected_by_gate": len(report.rejected),
                       "rejected_examples": [str(e) for e in report.rejected[:10]], "filter": source.filter,
                       "rows_after_filter_and_dedup": len(rows), "duplicates_removed": duplicates,
                       "target_ratio": source.ratio, "target_rows": target, "actual_rows": len(chosen),
                       "upsampled": max(0, len(chosen) - len(rows))})
    rng.shuffle(picked)
    for item in inputs:
        item["actual_ratio"] = round(item["actual_rows"] / len(picked), 4) if picked else 0.0
    out = config.out
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in picked:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(out, exc) from None
    styles: dict[str, int] = {}
    for row in picked:
        style = row.get("metadata", {}).get("style") or "none"
        styles[style] = styles.get(style, 0) + 1
    manifest = {"name": config.name, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seed": config.seed, "dedup": config.dedup, "total_target": config.total, "rows": len(picked),
                "out": str(out), "out_sha256": file_sha256(out), "inputs": inputs, "styles": styles,
                "shortfall": [i["name"] for i in inputs if i["actual_rows"] < i["target_rows"]]}
    manifest_path = out.with_name(out.name + ".manifest.json")
    try:
        manifest_path.write_text(json.dumps(manifest, indent=2))
    except OSError as exc:
        raise write_error(manifest_path, exc) from None
    return manifest
