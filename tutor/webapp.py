"""The Gradio UI. Only layout and wiring live here: every handler calls ChatService / Store."""

from __future__ import annotations

import html
import sys
from typing import Any

import gradio as gr

from .backends import BackendPool
from .catalog import list_models
from .config import Settings
from .errors import QuimbotError
from .prompts import DEFAULT_LEVEL, LEVELS
from .session import ChatService, ReplyUpdate
from .store import Store

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def display(text: str) -> str:
    """Chat text as the browser will show it: HTML is escaped, so markup displays as text."""
    return html.escape(text or "", quote=False)


def render_turns(turns: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Stored turns -> Gradio chat messages."""
    shown = []
    for turn in turns:
        if turn["role"] == "user":
            note = "" if turn["status"] == "ok" else f"\n\n*(not sent: {display(turn['error'] or turn['status'])})*"
            shown.append({"role": "user", "content": display(turn["content"]) + note})
        elif turn["role"] == "assistant":
            if turn["status"] in ("ok", "pending"):
                shown.append({"role": "assistant", "content": display(turn["content"])})
            else:
                partial = display(turn["content"]) + "\n\n" if turn["content"] else ""
                shown.append({"role": "assistant",
                              "content": f"{partial}⚠️ {display(turn['error'] or turn['status'])}"})
    return shown


def conversation_choices(store: Store) -> list[tuple[str, int]]:
    choices = []
    for row in store.list_conversations(limit=100):
        title = row["title"] or "(empty)"
        choices.append((f"#{row['id']} · {row['updated_at'][:16].replace('T', ' ')} · {title[:40]}", row["id"]))
    return choices


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    return [(c.label, c.spec) for c in list_models(settings)]


def build_app(service: ChatService, settings: Settings, default_model: str = "default") -> gr.Blocks:
    store = service.store

    def respond(message: str, conversation_id: int | None, model_spec: str, level: str):
        status = ""
        history: list[dict[str, str]] = []
        update: ReplyUpdate | None = None
        for update in service.send(message, conversation_id=conversation_id, model_spec=model_spec,
                                   level=level, client="app"):
            if update.conversation_id is None:  # rejected before anything was stored
                break
            if not history:
                history = render_turns(store.turns(update.conversation_id))
            shown = history + ([{"role": "assistant", "content": display(update.text)}]
                               if update.text and not update.done else [])
            if update.done:
                shown = render_turns(store.turns(update.conversation_id))
            yield shown, "", update.conversation_id, "", gr.update()
        if update is None:
            return
        if update.error:
            status = f"⚠️ {display(update.error)}"
        elif update.stats:
            s = update.stats
            parts = [f"{s['latency_ms'] / 1000:.1f} s"]
            if s.get("completion_tokens"):
                parts.append(f"{s['completion_tokens']} tokens")
            status = f"<small>{display(model_spec)} · {' · '.join(parts)}</small>"
        turns = store.turns(update.conversation_id) if update.conversation_id else []
        keep_text = message if update.conversation_id is None else ""
        yield (render_turns(turns), keep_text, update.conversation_id, status,
               gr.update(choices=conversation_choices(store), value=update.conversation_id))

    def load_conversation(conversation_id: int | None):
        if conversation_id in (None, ""):
            return [], None, "", gr.update()
        try:
            conversation = store.get_conversation(int(conversation_id))
        except (QuimbotError, ValueError) as exc:
            return [], None, f"⚠️ {display(str(exc))}", gr.update()
        return (render_turns(conversation["turns"]), conversation["id"],
                f"<small>Conversation #{conversation['id']} · {conversation['level']}</small>",
                gr.update(value=conversation["level"]))

    def new_conversation():
        return [], None, "", gr.update(value=None)

    def refresh_lists():
        return gr.update(choices=model_choices(settings)), gr.update(choices=conversation_choices(store))

    with gr.Blocks(title="Quimbot") as demo:
        conversation = gr.State(None)
        gr.Markdown("## Quimbot · practise English conversation")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                model = gr.Dropdown(choices=model_choices(settings), value=default_model, label="Model",
                                    info="Pick a model, or type any spec (e.g. ollama:NAME).",
                                    allow_custom_value=True, elem_id="model")
                level = gr.Radio(list(LEVELS), value=DEFAULT_LEVEL, label="Your level", elem_id="level")
                new = gr.Button("New conversation", elem_id="new-conversation")
                past = gr.Dropdown(choices=conversation_choices(store), value=None, label="Previous conversations",
                                   elem_id="past-conversations")
                refresh = gr.Button("Refresh lists", size="sm")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", height=460, elem_id="chat", sanitize_html=True)
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    message = gr.Textbox(placeholder="Write to your tutor and press Enter", show_label=False,
                                         scale=5, elem_id="message", autofocus=True)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")

        outputs = [chatbot, message, conversation, status, past]
        inputs = [message, conversation, model, level]
        send.click(respond, inputs, outputs, api_name="send", concurrency_limit=8)
        message.submit(respond, inputs, outputs, api_visibility="private", concurrency_limit=8)
        past.input(load_conversation, [past], [chatbot, conversation, status, level], api_name="load_conversation")
        new.click(new_conversation, None, [chatbot, conversation, status, past], api_name="new_conversation")
        refresh.click(refresh_lists, None, [model, past], api_name="refresh_lists")
        demo.load(refresh_lists, None, [model, past], api_visibility="private")
    return demo


def launch(settings: Settings, default_model: str = "default", preload: bool = False) -> None:
    store = Store.open(settings.db_path)
    recovered = store.recover_interrupted()
    pool = BackendPool(settings)
    service = ChatService(store, pool, default_model=default_model)
    if preload:
        pool.get(default_model)
    if settings.host not in LOCAL_HOSTS:
        print(f"quimbot: listening on {settings.host}: anyone who can reach this address can chat.",
              file=sys.stderr)
    if recovered:
        print(f"quimbot: marked {recovered} reply(ies) cut off by an earlier stop as interrupted.", file=sys.stderr)
    demo = build_app(service, settings, default_model=default_model)
    demo.queue(default_concurrency_limit=8)
    print(f"quimbot: conversation log {settings.db_path}", file=sys.stderr)
    demo.launch(server_name=settings.host, server_port=settings.port, inbrowser=False, show_error=True)
