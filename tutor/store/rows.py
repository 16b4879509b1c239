"""What the store hands out: one type per table row, and the statuses a turn and a suggestion can have.

The rows are dataclasses with the table's columns as fields, in the table's column order. They also
read like the dicts the store returned before they had types (``row["status"]``, ``row.get(...)``,
``dict(row)``), so callers written against those keep working; ``as_dict()`` gives the plain dict
(what the command line prints as JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from functools import cache
from typing import Any, Literal

TURN_FIELDS = (
    "status model_spec checkpoint level system_prompt options latency_ms first_token_ms "
    "prompt_tokens completion_tokens finish_reason error completed_at content"
).split()


class TurnStatus(StrEnum):
    """A turn's ``status`` column. A StrEnum: each member is equal to the string stored in the table."""

    OK = "ok"                    # stored and (for a reply) finished
    PENDING = "pending"          # a reply being written; recovery marks it interrupted if its writer died
    ERROR = "error"              # the reply failed; ``error`` says why
    INTERRUPTED = "interrupted"  # the reply was stopped (consumer gone, app stopped) before it finished
    REJECTED = "rejected"        # a learner message not sent (too long for the model's context)


class SuggestionStatus(StrEnum):
    """A detector suggestion's ``status`` column."""

    OPEN = "open"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


Vote = Literal["first", "second", "tie", "both_bad"]
VOTES: tuple[Vote, ...] = ("first", "second", "tie", "both_bad")


@cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


class Row:
    """Mapping-style reads on a dataclass row."""

    @classmethod
    def from_row(cls, row: dict[str, Any]):
        return cls(**{name: row.get(name) for name in _names(cls)})

    def keys(self) -> tuple[str, ...]:
        return _names(type(self))

    def __iter__(self):
        return iter(self.keys())

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Turn(Row):
    id: int
    conversation_id: int
    idx: int
    role: str
    content: str
    status: TurnStatus | str
    model_spec: str | None = None
    checkpoint: str | None = None
    level: str | None = None
    system_prompt: str | None = None
    options: str | None = None  # JSON
    latency_ms: float | None = None
    first_token_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    created_at: str | None = None
    completed_at: str | None = None
    writer: str | None = None

    def __post_init__(self):
        if self.status in TurnStatus._value2member_map_:
            self.status = TurnStatus(self.status)


@dataclass
class ConversationColumns(Row):
    id: int
    created_at: str
    updated_at: str
    title: str | None
    level: str | None
    model_spec: str | None
    client: str | None
    learner: str | None


@dataclass
class Conversation(ConversationColumns):
    """A conversation with its turns in order."""

    turns: list[Turn] = field(default_factory=list)


@dataclass
class ConversationSummary(ConversationColumns):
    """A line of the conversation list."""

    n_turns: int = 0


@dataclass
class Event(Row):
    id: int
    created_at: str
    conversation_id: int | None
    kind: str
    detail: str


@dataclass
class Flag(Row):
    id: int
    turn_id: int
    conversation_id: int
    reasons: list[str]  # stored as a JSON list
    note: str | None
    rewrite: str | None
    tester: str
    created_at: str
    updated_at: str
    removed_at: str | None
    removed_by: str | None

    def __post_init__(self):
        if isinstance(self.reasons, str):
            self.reasons = json.loads(self.reasons)


@dataclass
class QueuedFlag(Flag):
    """A flag in the review queue, with the reply it is on and the learner message before that reply."""

    reply: str = ""
    model_spec: str | None = None
    checkpoint: str | None = None
    level: str | None = None
    learner: str | None = None


@dataclass
class Suggestion(Row):
    id: int
    turn_id: int
    reason: str
    evidence: str | None
    detector: str
    status: SuggestionStatus | str
    decided_by: str | None
    decided_at: str | None
    created_at: str

    def __post_init__(self):
        if self.status in SuggestionStatus._value2member_map_:
            self.status = SuggestionStatus(self.status)


@dataclass
class ArenaRound(Row):
    id: int
    created_at: str
    tester: str | None
    learner: str
    level: str | None
    model_first: str
    model_second: str
    conversation_first: int | None
    conversation_second: int | None
    vote: Vote | None
    voted_at: str | None
