"""The chat panel shared by the learner view and the tester view (Gradio layout and wiring only)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.errors import NotFoundError, QuimbotError
from tutor.catalog import check_ui_spec, list_models
from tutor.config import Settings
from tutor.prompts import DEFAULT_LEVEL, LEVELS
from tutor.session import ChatService, ReplyUpdate
from tutor.store import Store, TurnStatus


def display(text: str | None) -> str:
    """Chat text as the browser will show it: HTML is escaped, so markup displays as text, and a
    markdown image (``![x](URL)``, ``![x][ref]``) is shown as text instead of being fetched: its
    ``[`` becomes an entity, which markdown does not read as the start of an image."""
    return html.escape(text or "", quote=False).replace("![", "!&#91;")


def render_turns(turns: list[dict[str, Any]], marks: dict[int, str] | None = None) -> list[dict[str, str]]:
    """Stored turns -> Gradio chat messages; ``marks`` (turn id -> Markdown) is shown under those replies."""
    shown = []
    for turn in turns:
        if turn["role"] == "user":
            sent = turn["status"] == TurnStatus.OK
            note = "" if sent else f"\n\n*(not sent: {display(turn['error'] or turn['status'])})*"
            shown.append({"role": "user", "content": display(turn["content"]) + note})
        elif turn["role"] == "assistant":
            if turn["status"] in (TurnStatus.OK, TurnStatus.PENDING):
                shown.append({"role": "assistant", "content": display(turn["content"])})
            else:
                partial = display(turn["content"]) + "\n\n" if turn["content"] else ""
                shown.append({"role": "assistant",
                              "content": f"{partial}⚠️ {display(turn['error'] or turn['status'])}"})
            if marks and turn["id"] in marks:
                shown[-1]["content"] += "\n\n" + marks[turn["id"]]
    return shown


def conversation_choices(store: Store, only: list[int] | None = None) -> list[tuple[str, int]]:
    """The picker's list: every conversation (tester view), or only the ids in ``only`` (learner view)."""
    choices = []
    for row in store.list_conversations(limit=100, ids=only):
        title = row["title"] or "(empty)"
        choices.append((f"#{row['id']} · {row['updated_at'][:16].replace('T', ' ')} · {title[:40]}", row["id"]))
    return choices


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    return [(c.label, c.spec) for c in list_models(settings)]


@dataclass
class ChatPanel:
    conversation: gr.State
    chatbot: gr.Chatbot
    message: gr.Textbox
    model: gr.Dropdown
    level: gr.Radio
    status: gr.Markdown
    sent: Any  # the dependencies of the send / submit / load events, for chaining .then(...)
    submitted: Any
    loaded: Any


def chat_panel(service: ChatService, settings: Settings, default_model: str, local: bool = True,
               private: bool = False, feedback: tuple[str, ...] | None = None) -> ChatPanel:
    """Build the chat controls inside the current Blocks context and wire their events.

    ``private`` (the learner page): "Previous conversations" lists, and reopens, only the
    conversations started in this browser session - kept in server-side session state, which a
    client cannot set - never other learners'. The tester view lists them all.
    ``feedback``: per-reply feedback options on the chat (the tester view's inline flag)."""
    store = service.store

    def visible(mine: list[int] | None) -> list[int] | None:
        return list(mine or []) if private else None

    def respond(message: str, conversation_id: int | None, model_spec: str, level: str, mine: list[int] | None):
        mine = list(mine or [])
        history: list[dict[str, str]] = []
        update: ReplyUpdate | None = None
        try:
            model_spec = check_ui_spec(model_spec, settings, local)
        except QuimbotError as exc:
            store.log_event("refused_model_spec", {"spec": str(model_spec)[:300], "reason": str(exc)}, conversation_id)
            yield gr.update(), message, conversation_id, f"⚠️ {display(str(exc))}", gr.update(), mine
            return
        for update in service.send(message, conversation_id=conversation_id, model_spec=model_spec,
                                   level=level, client="app"):
            if update.conversation_id is None:  # rejected before anything was stored
                break
            if not history:
                history = render_turns(store.turns(update.conversation_id))
            if update.done:
                break
            shown = history + ([{"role": "assistant", "content": display(update.text)}] if update.text else [])
            yield shown, "", update.conversation_id, "", gr.update(), mine
        if update is None:
            return
        if update.error:
            status = f"⚠️ {display(update.error)}"
        else:
            s = update.stats
            parts = [f"{s['latency_ms'] / 1000:.1f} s"] + (
                [f"{s['completion_tokens']} tokens"] if s.get("completion_tokens") else [])
            status = f"<small>{display(model_spec)} · {' · '.join(parts)}</small>"
        cid = update.conversation_id
        if cid is not None and cid not in mine:
            mine.append(cid)
        turns = store.turns(cid) if cid else []
        keep_text = message if cid is None else ""
        yield (render_turns(turns), keep_text, cid if cid is not None else conversation_id, status,
               gr.update(choices=conversation_choices(store, visible(mine)), value=cid) if cid else gr.update(), mine)

    def load_conversation(conversation_id: int | None, mine: list[int] | None):
        if conversation_id in (None, ""):
            return [], None, "", gr.update()
        try:
            if private and int(conversation_id) not in (mine or []):
                raise NotFoundError(f"Conversation {conversation_id} was not started in this session; the learner "
                                    "page only reopens its own conversations.")
            conversation = store.get_conversation(int(conversation_id))
        except (QuimbotError, ValueError) as exc:
            return [], None, f"⚠️ {display(str(exc))}", gr.update()
        return (render_turns(conversation["turns"]), conversation["id"],
                f"<small>Conversation #{conversation['id']} · {conversation['level']}</small>",
                gr.update(value=conversation["level"]))

    def new_conversation():
        return gr.update(value=[], feedback_value=[]), None, "", gr.update(value=None)

    def refresh_lists(mine: list[int] | None):
        return gr.update(choices=model_choices(settings)), gr.update(choices=conversation_choices(store, visible(mine)))

    conversation = gr.State(None)
    mine = gr.State([])  # conversation ids this browser session started (server-side)
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            model = gr.Dropdown(choices=model_choices(settings), value=default_model, label="Model",
                                info="Pick a model, or type any spec (e.g. ollama:NAME).",
                                allow_custom_value=True, elem_id="model")
            level = gr.Radio(list(LEVELS), value=DEFAULT_LEVEL, label="Your level", elem_id="level")
            new = gr.Button("New conversation", elem_id="new-conversation")
            past = gr.Dropdown(choices=[] if private else conversation_choices(store), value=None,
                               label="Previous conversations" + (" (this visit)" if private else ""),
                               elem_id="past-conversations")
            refresh = gr.Button("Refresh lists", size="sm")
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", height=460, elem_id="chat", sanitize_html=True,
                                 **({"feedback_options": feedback} if feedback else {}))
            status = gr.Markdown(elem_id="status")
            with gr.Row():
                message = gr.Textbox(placeholder="Write to your tutor and press Enter", show_label=False,
                                     scale=5, elem_id="message", autofocus=True)
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send")

    outputs = [chatbot, message, conversation, status, past, mine]
    inputs = [message, conversation, model, level, mine]
    sent = send.click(respond, inputs, outputs, api_name="send", concurrency_limit=8)
    submitted = message.submit(respond, inputs, outputs, api_visibility="private", concurrency_limit=8)
    loaded = past.input(load_conversation, [past, mine], [chatbot, conversation, status, level],
                        api_name="load_conversation")
    new.click(new_conversation, None, [chatbot, conversation, status, past], api_name="new_conversation")
    refresh.click(refresh_lists, [mine], [model, past], api_name="refresh_lists")
    return ChatPanel(conversation, chatbot, message, model, level, status, sent, submitted, loaded)
