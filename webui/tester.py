"""The tester view: chat, flag replies, confirm or dismiss suggestions, review queue, export.
Layout and wiring only; the work is done by Feedback and export_stage2."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from core.errors import InputError, QuimbotError
from tutor.arena import Arena
from tutor.catalog import check_ui_spec
from tutor.config import Settings, is_local
from tutor.feedback import REASONS, Feedback, FlagFilters
from tutor.jobs import Jobs
from tutor.prompts import DEFAULT_LEVEL, LEVELS
from tutor.session import ChatService
from tutor.stage2 import export_stage2
from tutor.store import SuggestionStatus, TurnStatus
from webui.chat import chat_panel, display, model_choices, render_turns
from webui.compare_tab import compare_tab
from webui.train_tab import train_tab

FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REASON_CHOICES = [(f"{label} ({code})", code) for code, label in REASONS.items()]
QUEUE_HEADERS = ["flag", "when", "tester", "reasons", "model", "learner", "reply", "rewrite"]
FLAG_OPTION = "Flag this reply"  # the per-reply feedback option on the tester chat: opens the flag form on it


def export_folder(settings: Settings, name: str) -> Path:
    """A folder inside the exports folder; names that could climb out of it are refused."""
    name = (name or "").strip()
    if not FOLDER_NAME.match(name) or ".." in name:
        raise InputError("Folder name: letters, digits, '.', '_' and '-' only (it is created inside the exports "
                         "folder).")
    return Path(settings.exports_dir) / "stage2" / name


def save_flag_confirming(feedback: Feedback, turn_id: int, reasons: list[str], tester: str, note: str | None = None,
                         rewrite: str | None = None) -> tuple[int, list[str]]:
    """Save a tester's flag on a reply (the one way both the inline flag and the form below the chat save one):
    the detector's open suggestions whose reason the flag gives are recorded as confirmed by that tester. The
    others stay open (saving a flag dismisses nothing; "Dismiss ticked" does). (flag id, confirmed reasons)."""
    flag_id = feedback.flag(turn_id, reasons, tester, note=note, rewrite=rewrite)
    given = set(feedback.get(flag_id).reasons)
    confirmed = []
    for suggestion in feedback.suggestions_for_turn(turn_id):
        if suggestion.status == SuggestionStatus.OPEN and suggestion.reason in given:
            feedback.decide(suggestion.id, True, tester)
            confirmed.append(suggestion.reason)
    return flag_id, confirmed


def build_tester_app(service: ChatService, settings: Settings, default_model: str, login: bool,
                     jobs: Jobs | None = None) -> gr.Blocks:
    feedback = Feedback(service.store)
    store = service.store
    arena = Arena(service)
    jobs = jobs or Jobs(store, settings)  # the app's one runner (webui.app); its own in a test building the view

    def who(name: str, request: gr.Request | None) -> str:
        if login:
            user = getattr(request, "username", None)
            if not user:
                raise InputError("Log in as a tester first.")
            return user
        return (name or "").strip()

    def reply_choices(conversation_id):
        if not conversation_id:
            return gr.update(choices=[], value=None)
        turns = feedback.flaggable_replies(int(conversation_id))
        choices = [(f"#{t.id} · {' '.join(t.content.split())[:60]}", t.id) for t in turns]
        return gr.update(choices=choices, value=choices[-1][1] if choices else None)

    def show_reply(turn_id, preselect: bool = False, tester: str = ""):
        """The form on one reply; ``preselect`` (the inline flag) ticks the open suggestions and their reasons,
        or fills in the tester's own flag on it when there is one."""
        if not turn_id:
            return "", gr.update(choices=[], value=[]), [], gr.update(value=[]), "", ""
        turn_id = int(turn_id)
        suggestions = feedback.suggestions_for_turn(turn_id)
        open_ones = [s for s in suggestions if s.status == SuggestionStatus.OPEN]
        lines = [f"- **{REASONS[s['reason']]}** — {display(s['evidence'])} *({s['status']})*" for s in suggestions]
        text = "**Detector suggestions**\n\n" + ("\n".join(lines) if lines else "none")
        choices = [(f"{REASONS[s['reason']]}", s["id"]) for s in open_ones]
        flags = feedback.flags_for_turn(turn_id)
        rows = [[f["id"], f["tester"], ", ".join(f["reasons"]), f["note"] or "", f["rewrite"] or ""] for f in flags]
        if not preselect:
            return text, gr.update(choices=choices, value=[]), rows, gr.update(value=[]), "", ""
        mine = next((f for f in flags if tester and f.tester == tester), None)
        ticked = mine.reasons if mine else sorted({s.reason for s in open_ones})
        return (text, gr.update(choices=choices, value=[s.id for s in open_ones]), rows, gr.update(value=ticked),
                (mine.note or "") if mine else "", (mine.rewrite or "") if mine else "")

    def marked_chat(conversation_id, clicked: int | None = None):
        """The conversation with each flagged reply marked (a line under it, and its flag icon filled).
        ``clicked``: the reply whose flag control was just used; the browser fills its icon on a click, so it
        gets "" first and its real state from the next call (a changed value, which the browser shows)."""
        turns = store.turns(int(conversation_id)) if conversation_id else []
        marks, value = {}, []
        for t in (t for t in turns if t.role == "assistant"):
            flags = feedback.flags_for_turn(t.id) if t.status == TurnStatus.OK else []
            value.append("" if t.id == clicked else FLAG_OPTION if flags else None)
            if flags:
                marks[t.id] = "**Flagged** · *" + "; ".join(f"flag #{f.id} by {display(f.tester)}: "
                                                           + ", ".join(REASONS[r] for r in f.reasons)
                                                           for f in flags) + "*"
        return gr.update(value=render_turns(turns, marks), feedback_value=value)

    def chat_done(conversation_id):
        """After a reply or a reopened conversation: its flags marked, and no status left from another reply."""
        return marked_chat(conversation_id), ""

    def open_inline(conversation_id, name, data: gr.LikeData, request: gr.Request):
        """A reply's flag control: the form opens on that reply (the message index -> its turn)."""
        shown = [t for t in store.turns(int(conversation_id))
                 if t.role in ("user", "assistant")] if conversation_id else []
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        turn = shown[index] if isinstance(index, int) and 0 <= index < len(shown) else None
        if turn is None or turn.role != "assistant" or turn.status != TurnStatus.OK:
            why = "it failed or is not finished" if turn is not None else "it is not in this conversation"
            return (gr.update(), f"⚠️ This message cannot be flagged ({why}); only completed tutor replies can.",
                    *(gr.update() for _ in range(6)), marked_chat(conversation_id, turn and turn.id))
        try:
            tester = who(name, request)
        except QuimbotError:
            tester = ""
        choices = reply_choices(conversation_id)
        words = " ".join(turn.content.split())
        excerpt = display(words[:80] + ("…" if len(words) > 80 else ""))
        return (gr.update(choices=choices["choices"], value=turn.id),
                f"Flagging reply #{turn.id}: “{excerpt}”. The detector's suggestions are ticked; untick what is "
                "wrong, add a rewrite, then **Save flag**.", *show_reply(turn.id, True, tester),
                marked_chat(conversation_id, turn.id))

    def save_flag(turn_id, reasons, note, rewrite, name, request: gr.Request):
        try:
            if not turn_id:
                raise InputError("Pick the reply to flag first.")
            flag_id, confirmed = save_flag_confirming(feedback, int(turn_id), reasons, who(name, request), note=note,
                                                      rewrite=rewrite)
        except QuimbotError as exc:
            return f"⚠️ {display(str(exc))}", gr.update()
        rows = [[f["id"], f["tester"], ", ".join(f["reasons"]), f["note"] or "", f["rewrite"] or ""]
                for f in feedback.flags_for_turn(int(turn_id))]
        said = (" Confirmed the detector's suggestion(s): " + ", ".join(REASONS[r] for r in sorted(set(confirmed)))
                + "." if confirmed else "")
        return f"Saved flag #{flag_id}.{said}", rows

    def suggestions_now(turn_id):
        """The suggestions part of the form after a save: confirmed ones are no longer open."""
        text, choices, *_ = show_reply(turn_id)
        return text, choices

    def decide(turn_id, suggestion_ids, name, confirm: bool, request: gr.Request):
        try:
            tester = who(name, request)
            if confirm and not tester:
                raise InputError("Say who is confirming (a tester name).")
            if not suggestion_ids:
                raise InputError("Tick the suggestions first.")
            for sid in suggestion_ids:
                feedback.decide(int(sid), confirm, tester or "tester")
        except QuimbotError as exc:
            return (f"⚠️ {display(str(exc))}",) + tuple(gr.update() for _ in range(3))
        text, choices, rows, *_ = show_reply(turn_id)
        return ("Confirmed." if confirm else "Dismissed."), text, choices, rows

    def remove_flag(turn_id, flag_id, name, request: gr.Request):
        try:
            if not flag_id:
                raise InputError("Give the number of the flag to remove.")
            flag = feedback.get(int(flag_id))
            tester = who(name, request)
            if login and flag["tester"] != tester:
                raise InputError(f"Flag #{flag['id']} belongs to {flag['tester']}; only they can remove it.")
            feedback.remove(int(flag_id), by=tester or "tester")
        except QuimbotError as exc:
            return f"⚠️ {display(str(exc))}", gr.update()
        _, _, rows, *_ = show_reply(turn_id)
        return f"Removed flag #{int(flag_id)}.", rows

    def filters(reason, model, tester, date_from, date_to) -> FlagFilters:
        return FlagFilters(reason=reason or None, model=(model or "").strip() or None,
                           tester=(tester or "").strip() or None, date_from=(date_from or "").strip() or None,
                           date_to=(date_to or "").strip() or None)

    def review(reason, model, tester, date_from, date_to):
        f = filters(reason, model, tester, date_from, date_to)
        rows = [[r["id"], r["created_at"][:16].replace("T", " "), r["tester"], ", ".join(r["reasons"]),
                 r["checkpoint"] or r["model_spec"], r["learner"] or "", r["reply"], r["rewrite"] or ""]
                for r in feedback.queue(f)]
        counts = feedback.counts(f)
        return (rows, [[k, v] for k, v in counts["reason"].items()],
                [[k, v] for k, v in counts["checkpoint"].items()], f"{len(rows)} flagged replies")

    def open_flag(flag_id):
        try:
            flag = feedback.get(int(flag_id))
        except (QuimbotError, TypeError, ValueError) as exc:
            return [], f"⚠️ {display(str(exc))}"
        turns = store.turns(flag["conversation_id"])
        shown = render_turns(turns)
        idx = [t["id"] for t in turns if t["role"] != "system"].index(flag["turn_id"])
        shown[idx]["content"] = "🚩 " + shown[idx]["content"]
        info = (f"Flag #{flag['id']} by {display(flag['tester'])}: {', '.join(flag['reasons'])}"
                + (f"<br>Rewrite: {display(flag['rewrite'])}" if flag["rewrite"] else "")
                + (f"<br>Note: {display(flag['note'])}" if flag["note"] else ""))
        return shown, info

    def run_export(reason, model, tester, date_from, date_to, folder, include_system):
        try:
            out = export_folder(settings, folder)
            manifest = export_stage2(store, out, filters(reason, model, tester, date_from, date_to),
                                     include_system=bool(include_system))
        except QuimbotError as exc:
            return f"⚠️ {display(str(exc))}"
        files = ", ".join(f"{name}: {info['rows']} rows (+{info['added']})" for name, info in manifest["files"].items())
        rejected = "".join(f"<br>⚠️ {display(r)}" for r in manifest["rejected"])
        return (f"Exported to `{display(str(out))}` — {manifest['rows_added']} new rows, "
                f"{manifest['duplicates_skipped']} duplicates skipped. {display(files)}<br>"
                f"Manifest: `{display(manifest['manifest_path'])}`{rejected}")

    def arena_ask(learner, model_a, model_b, level, name, request: gr.Request):
        hidden = gr.update(interactive=True)
        try:
            model_a, model_b = (check_ui_spec(m, settings, is_local(settings.host)) for m in (model_a, model_b))
            result = arena.ask(learner, model_a, model_b, level, tester=who(name, request) or "tester")
        except QuimbotError as exc:
            return None, "", "", f"⚠️ {display(str(exc))}", *(gr.update(interactive=False),) * 4
        return (result["id"], display(result["first"]), display(result["second"]),
                f"Round {result['id']}: which reply teaches better?", hidden, hidden, hidden, hidden)

    def arena_vote(round_id, vote, name, request: gr.Request):
        locked = gr.update(interactive=False)
        try:
            if not round_id:
                raise InputError("Ask both models first.")
            result = arena.vote(int(round_id), vote, who(name, request) or "tester")
        except QuimbotError as exc:
            return f"⚠️ {display(str(exc))}", gr.update(), *(gr.update(),) * 4
        return (f"Vote saved. Reply 1 was **{display(result['first'])}**, reply 2 was **{display(result['second'])}**.",
                arena_rows(), locked, locked, locked, locked)

    def arena_rows():
        return [[t["model"], t["rounds"], t["wins"], t["losses"], t["ties"], t["both_bad"],
                 round(t["win_rate"], 3) if t["win_rate"] == t["win_rate"] else None,
                 f"{t['ci_low']:.2f}–{t['ci_high']:.2f}"] for t in arena.table()]

    with gr.Blocks(title="Quimbot · tester") as demo:
        gr.Markdown("## Quimbot · tester view")
        with gr.Tab("Chat & flag"):
            chat = chat_panel(service, settings, default_model, local=is_local(settings.host),
                              feedback=(FLAG_OPTION,))
            with gr.Group(elem_id="flag-form"):
                gr.Markdown("### Flag a reply\nUse the flag icon under a tutor reply, or pick the reply here.")
                with gr.Row():
                    with gr.Column():
                        reply = gr.Dropdown(label="Reply", choices=[], elem_id="flag-turn", allow_custom_value=True)
                        suggestions_md = gr.Markdown(elem_id="suggestions")
                        suggestions = gr.CheckboxGroup(label="Open suggestions", choices=[], elem_id="suggestion-ids")
                        with gr.Row():
                            confirm = gr.Button("Confirm ticked", size="sm", elem_id="confirm-suggestions")
                            dismiss = gr.Button("Dismiss ticked", size="sm", elem_id="dismiss-suggestions")
                    with gr.Column():
                        reasons = gr.CheckboxGroup(REASON_CHOICES, label="Reasons", elem_id="flag-reasons")
                        note = gr.Textbox(label="Note", lines=2, elem_id="flag-note")
                        rewrite = gr.Textbox(label="The reply you wanted (optional)", lines=2, elem_id="flag-rewrite")
                        tester = gr.Textbox(label="Your name", value="tester", visible=not login, elem_id="tester-name")
                        save = gr.Button("Save flag", variant="primary", elem_id="save-flag")
                flag_status = gr.Markdown(elem_id="flag-status")
                flags_table = gr.Dataframe(headers=["flag", "tester", "reasons", "note", "rewrite"],
                                           label="Flags on this reply", interactive=False, elem_id="flags-table")
                with gr.Row():
                    remove_id = gr.Number(label="Flag number to remove", precision=0, elem_id="remove-id")
                    remove = gr.Button("Remove flag", size="sm", elem_id="remove-flag")
        with gr.Tab("Review queue"):
            with gr.Row():
                f_reason = gr.Dropdown([("any", "")] + REASON_CHOICES, value="", label="Reason", elem_id="f-reason")
                f_model = gr.Textbox(label="Model / checkpoint contains", elem_id="f-model")
                f_tester = gr.Textbox(label="Tester", elem_id="f-tester")
                f_from = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="f-from")
                f_to = gr.Textbox(label="To (YYYY-MM-DD)", elem_id="f-to")
            apply = gr.Button("Show flags", elem_id="apply-filters")
            summary = gr.Markdown()
            queue = gr.Dataframe(headers=QUEUE_HEADERS, interactive=False, wrap=True, elem_id="queue")
            with gr.Row():
                per_reason = gr.Dataframe(headers=["reason", "flags"], label="Per reason", interactive=False)
                per_checkpoint = gr.Dataframe(headers=["checkpoint", "flags"], label="Per checkpoint",
                                              interactive=False)
            with gr.Row():
                open_id = gr.Number(label="Open flag number", precision=0, elem_id="open-id")
                open_btn = gr.Button("Open dialogue", size="sm", elem_id="open-flag")
            flag_info = gr.Markdown()
            dialogue = gr.Chatbot(label="Dialogue around the flag", height=360, sanitize_html=True)
        with gr.Tab("Arena"):
            gr.Markdown("Two models answer the same learner message; their names stay hidden until you vote.")
            with gr.Row():
                arena_a = gr.Dropdown(choices=model_choices(settings), label="Model", allow_custom_value=True,
                                      elem_id="arena-a")
                arena_b = gr.Dropdown(choices=model_choices(settings), label="Other model", allow_custom_value=True,
                                      elem_id="arena-b")
                arena_level = gr.Radio(list(LEVELS), value=DEFAULT_LEVEL, label="Learner level")
            arena_msg = gr.Textbox(label="Learner message", elem_id="arena-message")
            arena_go = gr.Button("Ask both", variant="primary", elem_id="arena-ask")
            arena_round = gr.State(None)
            with gr.Row():
                reply_1 = gr.Markdown(label="Reply 1", elem_id="arena-reply-1")
                reply_2 = gr.Markdown(label="Reply 2", elem_id="arena-reply-2")
            arena_status = gr.Markdown(elem_id="arena-status")
            with gr.Row():
                vote_buttons = [gr.Button(text, interactive=False, elem_id=f"vote-{code}")
                                for code, text in (("first", "Reply 1 teaches better"),
                                                   ("second", "Reply 2 teaches better"),
                                                   ("tie", "Tie"), ("both_bad", "Both bad"))]
            arena_table = gr.Dataframe(headers=["model", "rounds", "wins", "losses", "ties", "both bad", "win rate",
                                                "95% CI"], value=arena_rows, interactive=False, elem_id="arena-table")
        with gr.Tab("Export"):
            gr.Markdown("Exports the flags matching the review-queue filters as Stage 2 JSONL "
                        "(SFT, preference and unpaired rows), scrubbed of personal data, into "
                        f"`{display(str(Path(settings.exports_dir) / 'stage2'))}/FOLDER`.")
            folder = gr.Textbox(label="Folder", value="flags", elem_id="export-folder")
            include_system = gr.Checkbox(label="Include the system prompt", value=True)
            export = gr.Button("Export Stage 2 data", variant="primary", elem_id="export")
            export_status = gr.Markdown(elem_id="export-status")
        train_tab(jobs, settings, who, tester, demo)  # the Train tab: Stage 2 runs as background jobs
        compare_tab(service, settings, who, login, demo, jobs)  # the Compare tab (compare checkpoints, promote one)

        reply_outputs = [suggestions_md, suggestions, flags_table, reasons, note, rewrite]
        for dep in (chat.sent, chat.submitted, chat.loaded):
            dep.then(reply_choices, [chat.conversation], [reply]).then(show_reply, [reply], reply_outputs).then(
                chat_done, [chat.conversation], [chat.chatbot, flag_status])
        reply.input(show_reply, [reply], reply_outputs)
        chat.chatbot.like(open_inline, [chat.conversation, tester], [reply, flag_status, *reply_outputs, chat.chatbot],
                          api_visibility="private").then(marked_chat, [chat.conversation], [chat.chatbot]).then(
            None, js="() => document.getElementById('flag-form')?.scrollIntoView({behavior: 'smooth'})")
        save.click(save_flag, [reply, reasons, note, rewrite, tester], [flag_status, flags_table], api_name="flag").then(
            suggestions_now, [reply], [suggestions_md, suggestions], api_visibility="private").then(
            marked_chat, [chat.conversation], [chat.chatbot])
        def confirm_ticked(turn_id, suggestion_ids, name, request: gr.Request):
            return decide(turn_id, suggestion_ids, name, True, request)

        def dismiss_ticked(turn_id, suggestion_ids, name, request: gr.Request):
            return decide(turn_id, suggestion_ids, name, False, request)

        decided = [flag_status, suggestions_md, suggestions, flags_table]
        confirm.click(confirm_ticked, [reply, suggestions, tester], decided, api_name="confirm_suggestions").then(
            marked_chat, [chat.conversation], [chat.chatbot])
        dismiss.click(dismiss_ticked, [reply, suggestions, tester], decided, api_name="dismiss_suggestions")
        remove.click(remove_flag, [reply, remove_id, tester], [flag_status, flags_table], api_name="remove_flag").then(
            marked_chat, [chat.conversation], [chat.chatbot])
        filter_inputs = [f_reason, f_model, f_tester, f_from, f_to]
        apply.click(review, filter_inputs, [queue, per_reason, per_checkpoint, summary], api_name="review")
        open_btn.click(open_flag, [open_id], [dialogue, flag_info], api_name="open_flag")
        arena_go.click(arena_ask, [arena_msg, arena_a, arena_b, arena_level, tester],
                       [arena_round, reply_1, reply_2, arena_status, *vote_buttons], api_name="arena_ask")
        for code, button in zip(("first", "second", "tie", "both_bad"), vote_buttons):
            def cast(round_id, name, request: gr.Request, code=code):
                return arena_vote(round_id, code, name, request)
            button.click(cast, [arena_round, tester], [arena_status, arena_table, *vote_buttons],
                         api_name=f"arena_vote_{code}")
        export.click(run_export, [*filter_inputs, folder, include_system], [export_status], api_name="export")
    return demo
