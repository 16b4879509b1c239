"""The chat service: validates a learner message, stores it, builds the prompt from the
stored history, streams the tutor's reply from a backend and logs the outcome.

The learner's message is written before generation starts, and the reply turn is written as
'pending' and completed afterwards, so a crash mid-reply loses nothing the learner typed."""

from __future__ import annotations

import threading
import time
import traceback
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from core.errors import InputError, QuimbotError
from tutor.backends import Backend, BackendPool, GenerationOptions, Message
from tutor.feedback import Feedback
from tutor.fresh import default_tries, fresh_stream
from tutor.promotion import learners_default
from tutor.prompts import normalize_level, system_prompt
from tutor.specs import parse_spec
from tutor.spelling import Fix, spelled_stream
from tutor.spelling import enabled as spelling_enabled
from tutor.spelling import warm as warm_spelling
from tutor.store import Store, TurnStatus, now

MAX_MESSAGE_CHARS = 4000
TRIM_BLOCK = 4  # exchanges dropped at a time when the history outgrows the context
# Bidirectional overrides can make text display differently from what it is.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_message(text: Any, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """Return the message as it will be stored and sent, or raise InputError saying why not.

    Drops control characters (keeping newlines and tabs), lone surrogates and bidi overrides,
    normalises newlines and Unicode (NFC), and trims surrounding whitespace."""
    if text is None:
        raise InputError("Your message is empty: type something to say to the tutor.")
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\n\t" or (category not in ("Cc", "Cs") and ch not in _BIDI_CONTROLS):
            kept.append(ch)
    cleaned = unicodedata.normalize("NFC", "".join(kept)).strip()
    if not cleaned:
        raise InputError("Your message is empty: type something to say to the tutor.")
    if len(cleaned) > max_chars:
        raise InputError(
            f"Your message is {len(cleaned):,} characters long; the limit is {max_chars:,}. "
            "Please split it into shorter messages."
        )
    return cleaned


TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators a chat template adds (ChatML: 5)


def _token_bound(messages: list[Message]) -> int:
    """An upper bound on the prompt's tokens: every token of a byte-level tokenizer covers at least one
    UTF-8 byte, and a chat template adds a few tokens per message and at the end."""
    return sum(len(m["content"].encode("utf-8")) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages) + 16


def completed_exchanges(turns: list[dict[str, Any]]) -> list[Message]:
    """The user/assistant pairs of a turn list in which both sides succeeded, as chat messages.
    Rejected messages, failed and interrupted replies are left out."""
    messages: list[Message] = []
    pending_user: dict | None = None
    for turn in turns:
        if turn["role"] == "user":
            pending_user = turn if turn["status"] == TurnStatus.OK else None
        elif turn["role"] == "assistant" and turn["status"] == TurnStatus.OK and pending_user is not None:
            messages.append({"role": "user", "content": pending_user["content"]})
            messages.append({"role": "assistant", "content": turn["content"]})
            pending_user = None
    return messages


@dataclass
class ReplyUpdate:
    """One step of a streamed reply. ``text`` is the reply so far; the last update has
    ``done=True`` and, when something went wrong, ``error`` with a message for the user."""

    conversation_id: int | None
    text: str = ""
    done: bool = False
    error: str | None = None
    user_turn_id: int | None = None
    turn_id: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0  # times the reply so far was dropped for a new one (tutor.fresh); ``text`` starts again


class ChatService:
    """What the app and the CLI call. Conversations are keyed by id and rebuilt from the
    store on every message, so concurrent sessions can never mix their histories."""

    def __init__(self, store: Store, pool: BackendPool, default_model: str = "default",
                 default_options: GenerationOptions | None = None, fresh_tries: int | None = None,
                 spelling: bool | None = None):
        self.store = store
        self.fresh_tries = default_tries() if fresh_tries is None else fresh_tries  # tutor.fresh
        self.spelling = spelling_enabled() if spelling is None else spelling  # tutor.spelling
        if self.spelling:  # its dictionary loads in about 5 s: not on the first learner's reply
            threading.Thread(target=warm_spelling, name="quimbot-spelling", daemon=True).start()
        self.pool = pool
        self.default_model = default_model
        self.default_options = default_options or GenerationOptions()

    def new_conversation(self, *, model_spec: str | None = None, level: str | None = None,
                         client: str = "app", learner: str | None = None) -> int:
        return self.store.create_conversation(
            level=normalize_level(level), model_spec=model_spec or self.learners_default(),
            client=client, learner=learner,
        )

    def learners_default(self) -> str:
        """The model a new conversation gets when none is picked: the promoted one (tutor.promotion), else
        the app's own default."""
        return learners_default(self.store, self.default_model).spec

    def model_for(self, conversation_id: int | None) -> str:
        """The model a message gets when none is picked: its conversation's own (a conversation keeps its
        model when another is promoted), or for a new conversation the learners' default."""
        if conversation_id is not None:
            try:
                spec = self.store.get_conversation(conversation_id).model_spec
            except QuimbotError:
                spec = None  # send() reports the missing conversation itself
            if spec:
                return spec
        return self.learners_default()

    def _suggest_flags(self, turn_id: int, conversation_id: int) -> None:
        """Store the detector's flag suggestions for a new reply; never breaks the chat."""
        try:
            Feedback(self.store).suggest(turn_id)
        except Exception as exc:  # noqa: BLE001
            self.store.log_event("detector_error", {"turn_id": turn_id, "error": repr(exc)}, conversation_id)

    def history(self, conversation_id: int) -> list[Message]:
        """Completed exchanges only: a learner turn counts once its reply succeeded."""
        return completed_exchanges(self.store.turns(conversation_id))

    def build_messages(self, backend: Backend, system: str, history: list[Message], text: str,
                       options: GenerationOptions) -> tuple[list[Message], int | None]:
        """System prompt + as much recent history as fits + the new message.

        Oldest exchanges are dropped first. Raises InputError when the new message alone does
        not fit the model's context next to the reply it needs room for."""
        current = [{"role": "user", "content": text}]
        context = backend.context_length

        def build(drop: int) -> list[Message]:
            return [{"role": "system", "content": system}, *history[2 * drop:], *current]

        messages = build(0)
        if context is not None and _token_bound(messages) <= context - options.max_tokens:
            # Surely fits: a token is at least one UTF-8 byte, plus a few template tokens per message. The
            # engine reports the exact prompt size with the reply, so counting here would only delay it
            # (two HTTP calls to llama-server before every reply).
            return messages, None
        count = backend.count_tokens(messages)
        if context is None or count is None:
            return messages, count
        budget = context - options.max_tokens
        if count > budget:
            # Drop the fewest oldest exchanges that make it fit: a binary search, so a long
            # conversation costs O(log n) token counts per message instead of O(n).
            exchanges = len(history) // 2
            lo, hi = 1, exchanges
            hi_count = backend.count_tokens(build(hi)) if exchanges else count
            if hi_count <= budget:
                while lo < hi:
                    mid = (lo + hi) // 2
                    if backend.count_tokens(build(mid)) <= budget:
                        hi = mid
                    else:
                        lo = mid + 1
                # Drop whole blocks of exchanges, not the fewest: the kept history then starts at the same
                # exchange for several turns in a row, so the engine's prompt cache still holds it (dropping
                # one more exchange each turn shifted the prompt and made every turn evaluate it all again).
                hi = min(exchanges, -(-hi // TRIM_BLOCK) * TRIM_BLOCK)
                messages = build(hi)
                count = backend.count_tokens(messages)
            else:
                count = hi_count
        if count > budget:
            raise InputError(
                f"Your message is too long for this model: with the tutor's instructions it takes "
                f"{count:,} tokens, and the model reads {context:,} tokens including room for a "
                f"{options.max_tokens}-token reply. Please shorten it."
            )
        return messages, count

    def send(self, text: Any, *, conversation_id: int | None = None, model_spec: str | None = None,
             level: str | None = None, options: GenerationOptions | None = None,
             client: str = "app") -> Iterator[ReplyUpdate]:
        """Stream the tutor's reply. Never raises a QuimbotError: problems arrive as the last
        update's ``error`` and are logged."""
        options = options or self.default_options
        level = normalize_level(level)
        spec_text = (model_spec or self.model_for(conversation_id)).strip()
        try:
            cleaned = clean_message(text)
        except InputError as exc:
            raw = "" if text is None else str(text)
            self.store.log_event("rejected_input", {"reason": str(exc), "chars": len(raw),
                                                     "preview": raw[:200]}, conversation_id)
            yield ReplyUpdate(conversation_id, done=True, error=str(exc))
            return
        if conversation_id is None:
            conversation_id = self.new_conversation(model_spec=spec_text, level=level, client=client)
        user_turn = self.store.add_turn(conversation_id, "user", cleaned, level=level)
        update = ReplyUpdate(conversation_id, user_turn_id=user_turn)
        yield replace(update)
        system = system_prompt(level)
        base_fields = dict(model_spec=spec_text, level=level, system_prompt=system,
                           options=options.model_dump())
        reply_turn: int | None = None
        produced: list[str] = []
        finished = False
        try:
            spec = parse_spec(spec_text)
            base_fields["model_spec"] = str(spec)
            backend = self.pool.get(spec)
            try:
                messages, prompt_tokens = self.build_messages(
                    backend, system, self.history(conversation_id), cleaned, options)
            except InputError:
                self.store.update_turn(user_turn, status=TurnStatus.REJECTED, error="too long for the model's context")
                raise
            reply_turn = self.store.add_turn(conversation_id, "assistant", "", status=TurnStatus.PENDING,
                                             checkpoint=backend.checkpoint, prompt_tokens=prompt_tokens,
                                             **base_fields)
            update.turn_id = reply_turn
            start = time.perf_counter()
            first_token_ms = None
            final: dict[str, Any] = {}
            def spelling_fixed(fix: Fix) -> None:
                self.store.log_event("spelling_fixed", {"turn_id": reply_turn, "model_wrote": fix.wrong,
                                                        "shown": fix.right}, conversation_id)

            stream = fresh_stream(backend, messages, options, self.fresh_tries,
                                  on_retry=lambda text, question: self.store.log_event(
                                      "asked_again", {"turn_id": reply_turn, "question": question,
                                                      "reply": text}, conversation_id))
            for chunk in spelled_stream(stream, cleaned, on_fix=spelling_fixed, on=self.spelling,
                                        on_error=lambda why: self.store.log_event(
                                            "spelling_check_failed", {"turn_id": reply_turn, "error": why},
                                            conversation_id)):
                if chunk.restart:  # the reply asked again what the tutor asked before: a new one replaces it
                    produced.clear()
                    final.clear()
                    update.text, update.restarts = "", update.restarts + 1
                    yield replace(update)
                if chunk.text:
                    if first_token_ms is None:
                        first_token_ms = (time.perf_counter() - start) * 1000
                    produced.append(chunk.text)
                    update.text = "".join(produced)
                    yield replace(update)
                for key in ("prompt_tokens", "completion_tokens", "finish_reason"):
                    if getattr(chunk, key) is not None:
                        final[key] = getattr(chunk, key)
            latency_ms = (time.perf_counter() - start) * 1000
            if final.get("prompt_tokens") is None and prompt_tokens is None:
                final["prompt_tokens"] = backend.count_tokens(messages)  # after the reply: it delays nothing
            content = "".join(produced).strip()
            stats = {"latency_ms": round(latency_ms, 1),
                     "first_token_ms": round(first_token_ms, 1) if first_token_ms is not None else None,
                     **final}
            if not content:
                raise QuimbotError("The model returned an empty reply. Try again or pick another model.")
            self.store.update_turn(reply_turn, content=content, status=TurnStatus.OK, completed_at=now(), **stats)
            finished = True
            self._suggest_flags(reply_turn, conversation_id)
            update.text, update.done, update.stats = content, True, stats
            yield replace(update)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a logged, visible message
            if isinstance(exc, QuimbotError):
                message = str(exc)
            else:
                message = f"Something went wrong inside Quimbot ({type(exc).__name__}: {exc})."
                self.store.log_event("internal_error", {"error": repr(exc),
                                                        "trace": traceback.format_exc()}, conversation_id)
            partial = "".join(produced)
            if reply_turn is None:
                reply_turn = self.store.add_turn(conversation_id, "assistant", "", status=TurnStatus.ERROR,
                                                 error=message, completed_at=now(), **base_fields)
            else:
                self.store.update_turn(reply_turn, status=TurnStatus.ERROR, error=message, content=partial,
                                       completed_at=now())
            finished = True
            update.turn_id, update.done, update.error = reply_turn, True, message
            yield replace(update)
        finally:
            if reply_turn is not None and not finished:
                # The consumer went away (closed tab, Ctrl-C) or something unexpected broke.
                self.store.update_turn(reply_turn, status=TurnStatus.INTERRUPTED, content="".join(produced),
                                       error="the reply was stopped before it finished",
                                       completed_at=now())
