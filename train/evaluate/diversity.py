"""How varied a model's follow-up questions are, and the single pedagogy figure (see
train.evaluate.pedagogy: a model asking the same stock questions everywhere scores badly)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

TOP_K = 5


def follow_up_diversity(questions: Sequence[str | None], n_replies: int | None = None) -> dict:
    """How varied a model's follow-up questions are (None: a reply without one)."""
    asked = [q for q in questions if q]
    n_replies = len(questions) if n_replies is None else n_replies
    counts = Counter(asked)
    stock = [(q, c) for q, c in counts.most_common() if c > 1][:TOP_K]
    if not asked:
        return {"follow_ups": 0, "distinct": 0, "distinct_per_reply": 0.0, "top5_share": 0.0,
                "entropy_norm": 0.0, "diversity": 0.0, "most_common": []}
    top5 = sum(c for _, c in stock) / len(asked)
    entropy = -sum(c / len(asked) * math.log(c / len(asked)) for c in counts.values())
    entropy_norm = entropy / math.log(len(asked)) if len(asked) > 1 else 1.0
    return {"follow_ups": len(asked), "distinct": len(counts),
            "distinct_per_reply": len(counts) / n_replies if n_replies else 0.0,
            "top5_share": top5, "entropy_norm": entropy_norm,
            "diversity": 0.5 * (1 - top5) + 0.5 * entropy_norm, "most_common": stock}


def pedagogy_score(good_move_rate: float, diversity: float) -> float:
    """The single figure: good-move rate times follow-up diversity, both in [0, 1]."""
    return max(0.0, min(1.0, good_move_rate * diversity))
