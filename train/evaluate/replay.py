"""Flag replay: the learner turns behind flagged replies are answered again by an old and a new
checkpoint, and each flag is labelled fixed, still broken, regressed or fine — the proof that
Stage 2 helped (or did not)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from train.evaluate.compare import generate_replies
from tutor.backends import GenerationOptions
from tutor.config import Settings
from tutor.detector import DETECTED, suggest_flags
from tutor.feedback import Feedback, FlagFilters
from tutor.stage2 import dialogue_before
from tutor.store import Store


def broken(reply: str, learner: str, level: str, reasons: list[str]) -> list[str]:
    """The flagged reasons the detector still sees in a reply (reasons it cannot see, such as
    tone or off-topic, are judged by the general teaching problems it can see)."""
    seen = {s.reason for s in suggest_flags(reply, learner, level)}
    detectable = set(DETECTED)
    wanted = set(reasons) & detectable or detectable
    return sorted(seen & wanted)


def label(old_problems: list[str], new_problems: list[str]) -> str:
    if old_problems and not new_problems:
        return "fixed"
    if old_problems and new_problems:
        return "still broken"
    if new_problems:
        return "regressed"
    return "fine"


def replay(store: Store, old: str, new: str, out_dir: str | Path, filters: FlagFilters | None = None,
           settings: Settings | None = None, options: GenerationOptions | None = None,
           progress: bool = True) -> dict[str, Any]:
    settings = settings or Settings()
    options = options or GenerationOptions.greedy()
    flags = Feedback(store).queue(filters, limit=100_000)
    by_turn: dict[int, dict] = {}
    for flag in flags:
        item = by_turn.setdefault(flag["turn_id"], {"reasons": set(), "flag_ids": []})
        item["reasons"].update(flag["reasons"])
        item["flag_ids"].append(flag["id"])
    prompts = []
    for turn_id, item in sorted(by_turn.items()):
        turn = store.turn(turn_id)
        messages, learner = dialogue_before(store, turn, include_system=False)
        if learner is None:
            continue
        prompts.append({"id": f"turn-{turn_id}", "turn_id": turn_id, "learner": learner["content"],
                        "context": messages[:-1], "level": turn["level"] or "intermediate",
                        "reasons": sorted(item["reasons"]), "flag_ids": item["flag_ids"],
                        "original": turn["content"]})
    replies = {spec: generate_replies(spec, prompts, settings, options, progress=progress) for spec in (old, new)}
    rows = []
    for i, p in enumerate(prompts):
        old_p = broken(replies[old][i], p["learner"], p["level"], p["reasons"])
        new_p = broken(replies[new][i], p["learner"], p["level"], p["reasons"])
        rows.append({**{k: p[k] for k in ("turn_id", "flag_ids", "learner", "reasons", "original")},
                     "old_reply": replies[old][i], "new_reply": replies[new][i], "old_problems": old_p,
                     "new_problems": new_p, "label": label(old_p, new_p)})
    counts = Counter(r["label"] for r in rows)
    result = {"old": old, "new": new, "flagged_replies": len(rows), "counts": dict(counts), "rows": rows}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "replay.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    lines = [f"# Flag replay: `{old}` → `{new}`", "", f"{len(rows)} flagged replies: " +
             ", ".join(f"{counts[k]} {k}" for k in ("fixed", "still broken", "regressed", "fine")), "",
             "| turn | reasons | label | old reply | new reply |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['turn_id']} | {', '.join(r['reasons'])} | {r['label']} | "
                     f"{' '.join(r['old_reply'].split())[:120]} | {' '.join(r['new_reply'].split())[:120]} |")
    (out_dir / "replay.md").write_text("\n".join(lines) + "\n")
    return result
