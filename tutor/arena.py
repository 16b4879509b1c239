"""The blind side-by-side arena: two models answer the same learner message, a tester picks
the better teacher (or a tie, or both bad), and win rates per model are tallied with
confidence intervals. Both replies are ordinary logged conversations (client "arena")."""

from __future__ import annotations

import math
import random
from typing import Any

from core.errors import InputError, NotFoundError
from tutor.session import ChatService
from tutor.store import VOTES

__all__ = ["VOTES", "Arena", "wilson"]


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (ties count as half a success)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class Arena:
    def __init__(self, service: ChatService, rng: random.Random | None = None):
        self.service = service
        self.store = service.store
        self.rng = rng or random.Random()

    def ask(self, learner: str, model_a: str, model_b: str, level: str | None = None,
            tester: str = "tester", options=None) -> dict[str, Any]:
        """Both models answer; returns the round with the two replies in a random order."""
        model_a, model_b = (model_a or "").strip(), (model_b or "").strip()
        if not model_a or not model_b:
            raise InputError("Pick two models for the arena.")
        if model_a == model_b:
            raise InputError("Pick two different models: the arena compares two checkpoints.")
        first, second = (model_a, model_b) if self.rng.random() < 0.5 else (model_b, model_a)
        replies, conversations = [], []
        for model in (first, second):
            last = None
            for last in self.service.send(learner, model_spec=model, level=level, client="arena", options=options):
                pass
            if last is None or last.conversation_id is None:
                raise InputError(last.error if last else "The message could not be sent.")
            replies.append(last.text if not last.error else f"⚠️ {last.error}")
            conversations.append(last.conversation_id)
        round_id = self.store.arena.add(tester=tester, learner=learner.strip(), level=level or "", model_first=first,
                                        model_second=second, conversation_first=conversations[0],
                                        conversation_second=conversations[1])
        return {"id": round_id, "first": replies[0], "second": replies[1]}

    def vote(self, round_id: int, vote: str, tester: str) -> dict[str, Any]:
        """Record the tester's choice and reveal which model was which."""
        if vote not in VOTES:
            raise InputError(f"A vote is one of {', '.join(VOTES)}, not {vote!r}.")
        played = self.store.arena.get(round_id)
        if played is None:
            raise NotFoundError(f"Arena round {round_id} does not exist.")
        if played.vote:
            raise InputError(f"Round {round_id} already has a vote ({played.vote}).")
        self.store.arena.record_vote(round_id, vote, tester or played.tester)
        return {"first": played.model_first, "second": played.model_second, "vote": vote}

    def table(self) -> list[dict[str, Any]]:
        """Per model: rounds, wins, losses, ties, both bad, win rate (ties half) with a 95% CI."""
        stats: dict[str, dict[str, int]] = {}
        for model_first, model_second, vote in self.store.arena.votes():
            for me, other_pos in ((model_first, "second"), (model_second, "first")):
                s = stats.setdefault(me, {"wins": 0, "losses": 0, "ties": 0, "both_bad": 0})
                mine = "first" if other_pos == "second" else "second"
                if vote == mine:
                    s["wins"] += 1
                elif vote == other_pos:
                    s["losses"] += 1
                elif vote == "tie":
                    s["ties"] += 1
                else:
                    s["both_bad"] += 1
        table = []
        for model, s in stats.items():
            decided = s["wins"] + s["losses"] + s["ties"]
            rate = (s["wins"] + 0.5 * s["ties"]) / decided if decided else float("nan")
            low, high = wilson(s["wins"] + 0.5 * s["ties"], decided)
            table.append({"model": model, "rounds": decided + s["both_bad"], **s, "win_rate": rate,
                          "ci_low": low, "ci_high": high})
        return sorted(table, key=lambda t: (-(t["win_rate"] if t["win_rate"] == t["win_rate"] else -1), t["model"]))
