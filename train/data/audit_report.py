"""What an audit reports: one FileAudit per file (and the total), the style-artifact score, JSON and
Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ARTIFACT_WEIGHTS = {  # component: (weight, share at which the component reaches 1)
    "opener": (0.20, 0.5), "stock": (0.20, 0.5), "echo": (0.20, 0.25), "red_pen": (0.20, 0.25),
    "markdown": (0.10, 0.25), "monotony": (0.10, None),
}
TOP = 10  # openers, 3-grams, follow-ups, duplicate groups shown


@dataclass
class FileAudit:
    """The audit of one file, or of a whole folder (``files`` lists what it covers)."""

    name: str
    files: list[str]
    lines: int
    rows: int
    rejected: int
    rejection_reasons: dict[str, int]
    rejection_examples: list[str]
    kinds: dict[str, int]
    exact_duplicates: int
    exact_groups: list[list[str]]
    near_duplicates: int | None
    near_clusters: list[dict[str, Any]]
    near_threshold: float | None
    turns: dict[int, int]
    tutor_turns: int
    learner_turns: int
    reply_words: dict[str, float]
    openers: dict[int, list[tuple[str, int]]]
    trigrams: list[tuple[str, int]]
    question_ending_share: float
    follow_ups: dict[str, Any]
    learner: dict[str, Any]
    markdown: dict[str, Any]
    red_pen: dict[str, Any]
    echo: dict[str, Any]
    dominant_opener: tuple[str, int, float] | None
    artifact_score: float = 0.0

    def artifact_components(self) -> dict[str, float]:
        """Each component of the style-artifact score, in [0, 1] (see the module docstring)."""
        opener_share = self.dominant_opener[2] if self.dominant_opener else 0.0
        shares = {"opener": opener_share, "stock": self.follow_ups["stock_share"], "echo": self.echo["share"],
                  "red_pen": self.red_pen["share"], "markdown": self.markdown["share"]}
        out = {k: min(1.0, v / ARTIFACT_WEIGHTS[k][1]) for k, v in shares.items()}
        out["monotony"] = min(1.0, max(0.0, (self.question_ending_share - 0.75) / 0.25))
        return {k: round(v, 4) for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["openers"] = {str(n): [{"opener": o, "count": c} for o, c in top] for n, top in self.openers.items()}
        out["trigrams"] = [{"trigram": t, "count": c} for t, c in self.trigrams]
        out["turns"] = {str(k): v for k, v in sorted(self.turns.items())}
        out["dominant_opener"] = None if not self.dominant_opener else dict(
            zip(("opener", "count", "share"), self.dominant_opener))
        out["artifact_components"] = self.artifact_components()
        out["artifact_weights"] = {k: w for k, (w, _) in ARTIFACT_WEIGHTS.items()}
        return out

    def to_markdown(self, level: int = 2) -> str:
        h = "#" * level
        pct = _pct
        lines = [f"{h} {self.name}", ""]
        if len(self.files) > 1:
            lines.append(f"{len(self.files)} files. ")
        lines += [
            f"**Style-artifact score: {self.artifact_score:.3f}** (0 = none, 1 = every artifact saturated) - "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.artifact_components().items()), "",
            "| measure | value |", "|---|---|",
            f"| lines | {self.lines:,} |", f"| rows accepted | {self.rows:,} |",
            f"| rejected by the gate | {self.rejected:,} |",
            f"| exact duplicates | {self.exact_duplicates:,} ({pct(self.exact_duplicates, self.rows)}) |",
            "| near duplicates | " + ("not checked" if self.near_duplicates is None else
                                     f"{self.near_duplicates:,} ({pct(self.near_duplicates, self.rows)}) at "
                                     f"Jaccard >= {self.near_threshold}") + " |",
            f"| tutor turns / learner turns | {self.tutor_turns:,} / {self.learner_turns:,} |",
            f"| reply words mean / median / p90 / max | {self.reply_words['mean']:.1f} / "
            f"{self.reply_words['median']:.0f} / {self.reply_words['p90']:.0f} / {self.reply_words['max']:.0f} |",
            f"| tutor turns ending in \"?\" | {self.question_ending_share:.1%} |",
            "| dominant tutor opener | " + (f"\"{self.dominant_opener[0]}\" {self.dominant_opener[1]:,} "
                                          f"({self.dominant_opener[2]:.1%})" if self.dominant_opener else "none")
            + " |",
            f"| stock follow-up rows (top {TOP} reused questions) | {self.follow_ups['stock_share']:.1%} |",
            f"| distinct follow-ups / rows | {self.follow_ups['distinct']:,} / {self.rows:,} "
            f"({self.follow_ups['distinct_per_row']:.2f}) |",
            f"| distinct learner utterances | {self.learner['distinct']:,} ({self.learner['distinct_share']:.1%}) |",
            f"| markdown in tutor turns | {self.markdown['count']:,} ({self.markdown['share']:.1%}) |",
            f"| red pen in tutor turns | {self.red_pen['count']:,} ({self.red_pen['share']:.1%}) |",
            f"| tutor echoes learner's first person | {self.echo['count']:,} ({self.echo['share']:.1%}) |",
            "",
            "Messages per row (system left out): " + ", ".join(f"{k}: {v:,}" for k, v in sorted(self.turns.items())),
            "",
        ]
        if self.rejection_reasons:
            lines += [f"{h}# Rejected lines", ""] + [f"- {n:,} x {r}" for r, n in self.rejection_reasons.items()]
            lines += [f"- e.g. `{e}`" for e in self.rejection_examples[:5]] + [""]
        for n, top in self.openers.items():
            if top:
                lines.append(f"Top {n}-word tutor openers: " + "; ".join(f"\"{o}\" {c:,}" for o, c in top[:TOP]))
        if self.trigrams:
            lines.append("Top tutor 3-grams: " + "; ".join(f"\"{t}\" {c:,}" for t, c in self.trigrams[:TOP]))
        if self.follow_ups["top"]:
            lines.append("Most used follow-up questions: "
                         + "; ".join(f"\"{q['question']}\" {q['rows']:,}" for q in self.follow_ups["top"]))
        if self.learner["top_openers"]:
            lines.append("Most repeated learner openers: "
                         + "; ".join(f"\"{o}\" {c:,}" for o, c in self.learner["top_openers"][:TOP]))
        lines.append("")
        for name, title in (("red_pen", "Red pen"), ("echo", "Echoes"), ("markdown", "Markdown")):
            examples = getattr(self, name)["examples"]
            if examples:
                lines += [f"{title} examples:"] + [
                    f"- `{e['ref']}`: " + (f"learner \"{e['learner']}\" -> " if e.get("learner") else "")
                    + f"\"{e['text']}\"" for e in examples] + [""]
        if self.exact_groups:
            lines += ["Largest exact-duplicate groups (first is kept by dedup):"]
            lines += [f"- {', '.join(g[:6])}{' ...' if len(g) > 6 else ''}" for g in self.exact_groups[:5]] + [""]
        if self.near_clusters:
            lines += ["Largest near-duplicate clusters (first is kept by dedup):"]
            lines += [f"- {', '.join(c['rows'][:6])}{' ...' if len(c['rows']) > 6 else ''} "
                      f"(min similarity {c['min_similarity']:.2f})" for c in self.near_clusters[:5]] + [""]
        return "\n".join(lines).rstrip() + "\n"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "0%"


@dataclass
class AuditReport:
    """An audit of one file or a folder: one FileAudit per file and the total."""

    path: str
    files: list[FileAudit]
    total: FileAudit

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "total": self.total.to_dict(), "files": [f.to_dict() for f in self.files],
                "artifact_score_formula": ARTIFACT_FORMULA}

    def to_markdown(self) -> str:
        parts = [f"# Data audit: {self.path}", "", ARTIFACT_FORMULA, ""]
        if len(self.files) > 1:
            parts += ["| file | rows | rejected | exact dup | near dup | artifact score |", "|---|---|---|---|---|---|"]
            parts += [f"| {f.name} | {f.rows:,} | {f.rejected:,} | {f.exact_duplicates:,} | "
                      f"{'-' if f.near_duplicates is None else format(f.near_duplicates, ',')} | "
                      f"{f.artifact_score:.3f} |" for f in self.files]
            parts += ["", self.total.to_markdown(2)]
            parts += [f.to_markdown(2) for f in self.files]
        else:
            parts.append(self.total.to_markdown(2))
        return "\n".join(parts)


ARTIFACT_FORMULA = ("Style-artifact score = 0.2 opener + 0.2 stock + 0.2 echo + 0.2 red_pen + 0.1 markdown + "
                    "0.1 monotony, where opener = min(1, dominant 2-word opener share / 0.5), stock = min(1, stock "
                    "follow-up row share / 0.5), echo / red_pen / markdown = min(1, share of tutor turns / 0.25), "
                    "monotony = clamp((share of tutor turns ending in '?' - 0.75) / 0.25, 0, 1).")
