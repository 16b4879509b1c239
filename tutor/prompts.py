"""The tutor's system prompt, per learner level."""

from __future__ import annotations

LEVELS = ("beginner", "intermediate", "advanced")
DEFAULT_LEVEL = "intermediate"

_BASE = (
    "You are a friendly English conversation partner for a language learner. "
    "Reply to what the learner says as a person would in a real conversation. "
    "When the learner makes a mistake, do not point it out and do not explain grammar: "
    "say the correct form naturally inside your own reply (for example, if the learner says "
    "'Yesterday I go to the store', you say 'Oh, you went to the store yesterday? What did you buy?'). "
    "Then ask one short follow-up question about what the learner said, so the conversation goes on."
)

_LEVEL_NOTES = {
    "beginner": "The learner is a beginner: use short sentences and very common words, one idea at a time, "
    "and keep your reply to one or two sentences.",
    "intermediate": "The learner is at an intermediate level: use everyday language and keep your reply "
    "to two or three sentences.",
    "advanced": "The learner is advanced: talk naturally, with richer vocabulary and idioms, "
    "in up to four sentences.",
}


def system_prompt(level: str = DEFAULT_LEVEL) -> str:
    """The system prompt for a level; an unknown level falls back to the default with no error,
    because it comes from a UI control and must never break the chat."""
    note = _LEVEL_NOTES.get((level or "").lower(), _LEVEL_NOTES[DEFAULT_LEVEL])
    return f"{_BASE} {note}"


def normalize_level(level: str | None) -> str:
    level = (level or "").strip().lower()
    return level if level in LEVELS else DEFAULT_LEVEL
