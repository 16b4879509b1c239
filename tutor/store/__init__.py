"""The conversation log, and the only place the tutor speaks SQL.

- ``log``: the Store (conversations, turns, events; recovery, deletion, backup);
- ``flags``: flags, suggestions and the review queue (``store.flags``);
- ``arena``: arena rounds (``store.arena``);
- ``jobs``: background jobs started from the app (``store.jobs``);
- ``promotions``: the learners' default model, promotions and rollbacks (``store.promotions``);
- ``rows``: the typed rows it returns and the status types;
- ``database``: opening the file, the lock and the transaction; ``writers``: writer locks."""

from tutor.store.database import now, open_database
from tutor.store.flags import FlagFilters
from tutor.store.jobs import Job
from tutor.store.log import Store
from tutor.store.promotions import Promotion
from tutor.store.rows import (
    TURN_FIELDS,
    VOTES,
    ArenaRound,
    Conversation,
    ConversationSummary,
    Event,
    Flag,
    QueuedFlag,
    Suggestion,
    SuggestionStatus,
    Turn,
    TurnStatus,
    Vote,
)

__all__ = ["TURN_FIELDS", "VOTES", "ArenaRound", "Conversation", "ConversationSummary", "Event", "Flag",
           "FlagFilters", "Job", "Promotion", "QueuedFlag", "Store", "Suggestion", "SuggestionStatus", "Turn",
           "TurnStatus", "Vote", "now", "open_database"]
