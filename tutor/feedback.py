"""Flags on tutor replies: the teaching taxonomy, flag CRUD, detector suggestions that a tester
confirms or dismisses, and the review queue's queries."""

from __future__ import annotations

from core.errors import InputError, NotFoundError
from tutor.detector import DETECTOR_VERSION, suggest_flags
from tutor.store import Flag, FlagFilters, QueuedFlag, Store, Suggestion, SuggestionStatus, Turn, TurnStatus

__all__ = ["MAX_NOTE_CHARS", "MAX_REWRITE_CHARS", "REASONS", "Feedback", "FlagFilters"]

REASONS: dict[str, str] = {
    "red_pen": "explicit “red-pen” correction",
    "rule_dump": "rule dump / grammar lecture",
    "missed_error": "missed the learner's error",
    "wrong_correction": "wrong correction",
    "over_correction": "over-correction of what was fine",
    "tone": "patronising or discouraging tone",
    "too_long": "too long or too hard for the level",
    "no_follow_up": "dialogue does not continue (no follow-up)",
    "off_topic": "off-topic",
    "other": "other (see note)",
}
MAX_NOTE_CHARS = 2000
MAX_REWRITE_CHARS = 4000


def _check_reasons(reasons: list[str]) -> list[str]:
    cleaned = sorted({r.strip() for r in reasons or [] if r and r.strip()})
    unknown = [r for r in cleaned if r not in REASONS]
    if unknown:
        raise InputError(f"Unknown flag reason(s) {unknown}; choose from: {', '.join(REASONS)}.")
    if not cleaned:
        raise InputError("Pick at least one reason for the flag.")
    return cleaned


def _check_text(value: str | None, limit: int, what: str) -> str | None:
    if value is None:
        return None
    value = str(value).replace("\r\n", "\n").strip()
    if len(value) > limit:
        raise InputError(f"The {what} is {len(value):,} characters long; the limit is {limit:,}.")
    return value or None


class Feedback:
    """Flags and suggestions: what may be flagged and how; the SQL is the store's (``store.flags``)."""

    def __init__(self, store: Store):
        self.store = store
        self.flags = store.flags

    # -- flags ---------------------------------------------------------------------------
    def _assistant_turn(self, turn_id: int) -> Turn:
        turn = self.store.turn(turn_id)
        if turn.role != "assistant" or turn.status != TurnStatus.OK:
            raise InputError(f"Turn {turn_id} is not a completed tutor reply; only those can be flagged.")
        return turn

    def flag(self, turn_id: int, reasons: list[str], tester: str, note: str | None = None,
             rewrite: str | None = None) -> int:
        """Flag a tutor reply. The same tester flagging the same reply again edits their flag."""
        tester = (tester or "").strip()
        if not tester:
            raise InputError("Say who is flagging (a tester name).")
        reasons = _check_reasons(reasons)
        note = _check_text(note, MAX_NOTE_CHARS, "note")
        rewrite = _check_text(rewrite, MAX_REWRITE_CHARS, "rewrite")
        turn = self._assistant_turn(turn_id)
        existing = self.flags.live_flag_of(turn_id, tester)
        if existing is not None:
            self.update(existing, reasons=reasons, note=note, rewrite=rewrite)
            return existing
        return self.flags.add(turn_id, turn.conversation_id, reasons, tester, note, rewrite)

    def update(self, flag_id: int, *, reasons: list[str] | None = None, note: str | None = None,
               rewrite: str | None = None) -> None:
        self.get(flag_id)
        note = _check_text(note, MAX_NOTE_CHARS, "note")
        rewrite = _check_text(rewrite, MAX_REWRITE_CHARS, "rewrite")
        self.flags.update(flag_id, note=note, rewrite=rewrite,
                          reasons=None if reasons is None else _check_reasons(reasons))

    def remove(self, flag_id: int, by: str) -> None:
        self.get(flag_id)
        self.flags.remove(flag_id, by)

    def get(self, flag_id: int) -> Flag:
        flag = self.flags.get(flag_id)
        if flag is None:
            raise NotFoundError(f"Flag {flag_id} does not exist (or was removed).")
        return flag

    def flaggable_replies(self, conversation_id: int) -> list[Turn]:
        """The conversation's tutor replies that may be flagged (the completed ones), in order."""
        return [t for t in self.store.turns(conversation_id) if t.role == "assistant" and t.status == TurnStatus.OK]

    def flags_for_turn(self, turn_id: int) -> list[Flag]:
        return self.flags.for_turn(turn_id)

    # -- suggestions ---------------------------------------------------------------------
    def suggest(self, turn_id: int) -> list[Suggestion]:
        """Run the detector on a reply and store its suggestions (once per detector version)."""
        turn = self._assistant_turn(turn_id)
        learner = self.store.learner_message_before(turn)
        found = suggest_flags(turn.content, learner or "", turn.level or "")
        self.flags.add_suggestions(turn_id, [(s.reason, s.evidence) for s in found], DETECTOR_VERSION)
        return self.suggestions_for_turn(turn_id)

    def suggest_all(self) -> int:
        """Store the detector's suggestions for every finished reply it has not looked at yet; return how many."""
        todo = self.flags.replies_without_suggestions(DETECTOR_VERSION)
        for turn_id in todo:
            self.suggest(turn_id)
        return len(todo)

    def suggestions_for_turn(self, turn_id: int) -> list[Suggestion]:
        return self.flags.suggestions_for_turn(turn_id)

    def decide(self, suggestion_id: int, confirm: bool, tester: str) -> int | None:
        """Confirm (adds the reason to the tester's flag on that reply) or dismiss a suggestion."""
        suggestion = self.flags.suggestion(suggestion_id)
        if suggestion is None:
            raise NotFoundError(f"Suggestion {suggestion_id} does not exist.")
        flag_id = None
        if confirm:
            mine = [f for f in self.flags_for_turn(suggestion.turn_id) if f.tester == (tester or "").strip()]
            reasons = (mine[0].reasons if mine else []) + [suggestion.reason]
            flag_id = self.flag(suggestion.turn_id, reasons, tester,
                                note=mine[0].note if mine else None, rewrite=mine[0].rewrite if mine else None)
        status = SuggestionStatus.CONFIRMED if confirm else SuggestionStatus.DISMISSED
        self.flags.decide_suggestion(suggestion_id, status, tester)
        return flag_id

    # -- review queue --------------------------------------------------------------------
    def queue(self, filters: FlagFilters | None = None, limit: int = 500) -> list[QueuedFlag]:
        return self.flags.queue(filters, limit)

    def counts(self, filters: FlagFilters | None = None) -> dict[str, dict[str, int]]:
        return self.flags.counts(filters)
