"""Inline flags in the tester chat, in headless Chromium: each tutor reply has its own flag control, which opens
the flag form on that reply with the detector's suggestions ticked; a saved flag shows on the message."""

import json
import sqlite3
import time

import httpx
import pytest
import test_browser
from test_browser import assert_shown_as_text, hostile_flag

pytestmark = [pytest.mark.slow, pytest.mark.browser]
page = test_browser.page  # the headless Chromium fixture
FILLED_FLAG = "M4,2H28l-5.8,9L28,20H6v10H4V2z"  # Gradio's flag icon once a feedback option is chosen
BOT = "#chat [data-testid='bot']"
LEARNER_MESSAGES = ["Yesterday I go to the store", "I has two brother", "She don't like apples", "My friends was happy"]


def flag_controls(page):
    """The flag control under each tutor reply, in order (the learner's messages have none)."""
    return page.locator("#chat .extra-feedback")


def click_flag(page, n: int) -> None:
    """The flag control of the n-th tutor reply: its flag icon, then the option it offers."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    control = flag_controls(page).nth(n)
    option = control.get_by_role("button", name="Flag this reply")
    for _ in range(3):  # the option shows while the icon is hovered; a chat scrolling under the pointer hides it
        control.scroll_into_view_if_needed()
        control.locator("button[aria-label='Feedback']").hover()
        try:
            option.click(timeout=5_000)
            return
        except PlaywrightTimeout:
            continue
    option.click(timeout=5_000)


def chatbot_props(url: str) -> dict:
    config = httpx.get(url.rstrip("/") + "/config", timeout=10).json()
    return next(c["props"] for c in config["components"] if c.get("props", {}).get("elem_id") == "chat")


def send(page, db, text: str, replies: int) -> list[int]:
    """Send a learner message; once its reply is stored and the form has picked it, the replies' turn ids."""
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")
    deadline = time.monotonic() + 180
    while len(ids := [r[0] for r in db.execute("SELECT id FROM turns WHERE role = 'assistant' AND status = 'ok' "
                                              "ORDER BY id")]) < replies:
        assert time.monotonic() < deadline, f"no reply to {text!r} within 180 s"
        time.sleep(0.5)
    page.wait_for_function(f"() => document.querySelector('#flag-turn input').value.startsWith('#{ids[-1]} ')",
                           timeout=120_000)
    return ids


def test_inline_flag_opens_the_form_on_that_reply_and_shows_on_it(running_app, page, tmp_path):
    assert chatbot_props(running_app["url"] + "tester/")["likeable"] is True
    assert not chatbot_props(running_app["url"]).get("likeable")  # learners get no flag control

    page.goto(running_app["url"] + "tester/")
    page.locator("#message textarea").wait_for(timeout=60_000)
    db = sqlite3.connect(running_app["db"])
    # Chat until an earlier reply (not the newest, which the dropdown path picks) has detector suggestions.
    for n, text in enumerate(LEARNER_MESSAGES, 1):
        replies = send(page, db, text, n)
        suggested = {t: sorted({r[0] for r in db.execute("SELECT reason FROM suggestions WHERE turn_id = ? AND "
                                                         "status = 'open'", [t])}) for t in replies[:-1]}
        target = next((t for t in replies[:-1] if suggested[t]), None)
        if target is not None:
            break
    assert target is not None, "the detector should have suggested flags on one of the untrained model's replies"
    suggested, position = suggested[target], replies.index(target)
    assert page.locator(f"#chat .extra-feedback svg path[d='{FILLED_FLAG}']").count() == 0

    click_flag(page, position)
    page.wait_for_function(f"() => document.querySelector('#flag-status').innerText.includes('Flagging reply "
                           f"#{target}')", timeout=60_000)
    assert page.locator("#flag-turn input").input_value().startswith(f"#{target} ")
    reasons = page.locator("#flag-reasons input[type=checkbox]")
    ticked = sorted(reasons.nth(i).evaluate("e => e.closest('label').innerText").rsplit("(", 1)[1].rstrip(")")
                    for i in range(reasons.count()) if reasons.nth(i).is_checked())
    assert ticked == suggested
    open_boxes = page.locator("#suggestion-ids input[type=checkbox]")
    assert open_boxes.count() == len(suggested) and all(open_boxes.nth(i).is_checked()
                                                         for i in range(open_boxes.count()))
    assert "Detector suggestions" in page.locator("#suggestions").inner_text()
    # Opening the form is not a flag yet: the message's flag icon stays unfilled.
    assert page.locator(f"#chat .extra-feedback svg path[d='{FILLED_FLAG}']").count() == 0
    page.screenshot(path=str(tmp_path / "inline-form.png"), full_page=True)

    rewrite = "Oh, you went to the store yesterday? What did you buy?"
    page.locator("#flag-rewrite textarea").fill(rewrite)
    page.locator("#tester-name textarea, #tester-name input").first.fill("inline-tester")
    page.locator("#save-flag").click()
    page.wait_for_function("() => document.querySelector('#flag-status').innerText.includes('Saved flag #1')",
                           timeout=60_000)
    page.wait_for_function(f"() => document.querySelectorAll(\"{BOT}\")[{position}].innerText.includes('flag #1 "
                           "by inline-tester')", timeout=60_000)
    for n in range(len(replies)):  # the flag shows on that reply only: a line under it, its flag icon filled
        assert ("Flagged" in page.locator(BOT).nth(n).inner_text()) == (n == position)
        assert flag_controls(page).nth(n).locator(f"svg path[d='{FILLED_FLAG}']").count() == (n == position)
    assert "inline-tester" in page.locator("#flags-table").inner_text()
    page.screenshot(path=str(tmp_path / "inline-saved.png"), full_page=True)

    # The flag control of a reply the tester flagged already opens their flag, to edit; the icon stays filled.
    page.locator("#flag-rewrite textarea").fill("")
    click_flag(page, position)
    page.wait_for_function(f"() => document.querySelector('#flag-rewrite textarea').value === {json.dumps(rewrite)}",
                           timeout=60_000)
    page.wait_for_function(f"() => document.querySelectorAll('#chat .extra-feedback')[{position}]"
                           f".querySelector(\"svg path[d='{FILLED_FLAG}']\") !== null", timeout=60_000)

    rows = db.execute("SELECT turn_id, reasons, tester, rewrite FROM flags").fetchall()
    db.close()
    assert [(r[0], json.loads(r[1]), r[2], r[3]) for r in rows] == [(target, suggested, "inline-tester", rewrite)]


def test_inline_flag_refuses_a_failed_reply_and_shows_flags_as_text(tmp_path, page):
    from conftest import app_server

    from tutor.store import Store, TurnStatus

    _, texts = hostile_flag(tmp_path / "app.db")
    store = Store.open(tmp_path / "app.db")
    cid = store.create_conversation(level="beginner", model_spec="default", client="test")
    store.add_turn(cid, "user", "failed one: I goed home")
    store.add_turn(cid, "assistant", "", status=TurnStatus.ERROR, error="the model server did not answer",
                   model_spec="default", level="beginner")
    store.db.conn.close()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with app_server(tmp_path, "--max-tokens", "8") as app:
        page.goto(app["url"] + "tester/")
        page.locator("#message textarea").wait_for(timeout=60_000)

        page.locator("#past-conversations input").click()
        page.get_by_role("option").filter(has_text="failed one").first.click()
        page.wait_for_function("() => document.querySelector('#chat').innerText.includes('did not answer')",
                               timeout=60_000)
        click_flag(page, 0)
        page.wait_for_function("() => document.querySelector('#flag-status').innerText.includes('cannot be "
                               "flagged')", timeout=60_000)
        assert "only completed tutor replies" in page.locator("#flag-status").inner_text()
        assert flag_controls(page).nth(0).locator(f"svg path[d='{FILLED_FLAG}']").count() == 0
        page.screenshot(path=str(tmp_path / "inline-refused.png"), full_page=True)

        # A reopened conversation shows its flag on the reply; the tester's name (markup) is shown as text.
        page.locator("#past-conversations input").click()
        page.get_by_role("option").filter(has_text="learner says").first.click()
        page.wait_for_function("() => document.querySelector('#chat').innerText.includes('flag #1 by')",
                               timeout=60_000)
        assert_shown_as_text(page.locator(BOT).nth(0).inner_text(), f"Flagged · flag #1 by {texts['tester']}")
        assert page.locator("#flag-status").inner_text().strip() == ""  # the refusal was about the other reply
        assert flag_controls(page).nth(0).locator(f"svg path[d='{FILLED_FLAG}']").count() == 1
        page.screenshot(path=str(tmp_path / "inline-reopened.png"), full_page=True)
        assert page.evaluate("typeof window.__pwned") == "undefined" and dialogs == []
        assert page.locator("img[src='x'], img[src='y']").count() == 0

    db = sqlite3.connect(tmp_path / "app.db")
    assert db.execute("SELECT count(*) FROM flags").fetchone()[0] == 1  # the refused click added nothing
    db.close()


RED_PEN_REPLY = ("That is wrong. The correct form is \"went\", not \"go\". Remember: the past tense of go is went. "
                 "You should say: Yesterday I went to the store.")


def seeded_replies(db_path, learners: list[str]) -> list[tuple[int, list[str]]]:
    """One conversation a learner message, each answered with a red-pen reply whose detector suggestions are
    stored (as the app stores them after a reply), written before the app starts. (turn id, suggested reasons)."""
    from tutor.feedback import Feedback
    from tutor.store import Store

    store = Store.open(db_path)
    feedback, out = Feedback(store), []
    for learner in learners:
        cid = store.create_conversation(level="beginner", model_spec="default", client="test")
        store.add_turn(cid, "user", learner)
        turn = store.add_turn(cid, "assistant", RED_PEN_REPLY, model_spec="default", level="beginner")
        out.append((turn, sorted(s.reason for s in feedback.suggest(turn))))
    store.db.conn.close()
    return out


def suggestion_states(db, turn_id: int) -> dict[str, tuple[str, str | None]]:
    return {reason: (status, by) for reason, status, by in
            db.execute("SELECT reason, status, decided_by FROM suggestions WHERE turn_id = ?", [turn_id])}


def test_saving_a_flag_confirms_the_suggestions_it_gives_inline_and_below_the_chat(tmp_path, page):
    from conftest import app_server

    (inline, suggested), (below, _) = seeded_replies(tmp_path / "app.db", ["inline one: Yesterday I go to the store",
                                                                          "below one: Yesterday I go to the store"])
    assert suggested == ["no_follow_up", "red_pen", "rule_dump"], suggested  # the detector's verdict on the reply
    with app_server(tmp_path, "--max-tokens", "8") as app:
        page.goto(app["url"] + "tester/")
        page.locator("#message textarea").wait_for(timeout=60_000)
        page.locator("#past-conversations input").click()
        page.get_by_role("option").filter(has_text="inline one").first.click()
        page.wait_for_function("() => document.querySelector('#chat').innerText.includes('The correct form')",
                               timeout=60_000)
        click_flag(page, 0)
        page.wait_for_function(f"() => document.querySelector('#flag-status').innerText.includes('Flagging reply "
                               f"#{inline}')", timeout=60_000)
        reasons = page.locator("#flag-reasons label")
        ticked = sorted(reasons.nth(i).inner_text().rsplit("(", 1)[1].rstrip(")") for i in range(reasons.count())
                        if reasons.nth(i).locator("input").is_checked())
        assert ticked == suggested  # the detector's suggestions, pre-ticked
        reasons.filter(has_text="(rule_dump)").locator("input").uncheck()  # the tester disagrees with one
        page.locator("#flag-rewrite textarea").fill("Oh, you went to the store yesterday? What did you buy?")
        page.locator("#tester-name textarea, #tester-name input").first.fill("inline-tester")
        page.locator("#save-flag").click()
        page.wait_for_function("() => document.querySelector('#flag-status').innerText.includes(\"Confirmed the "
                               "detector's suggestion(s)\")", timeout=60_000)
        status = page.locator("#flag-status").inner_text()
        assert "Saved flag #1" in status and "red-pen" in status and "no follow-up" in status
        assert "rule dump" not in status
        page.wait_for_function("() => document.querySelector('#suggestions').innerText.includes('(confirmed)')",
                               timeout=60_000)
        open_boxes = page.locator("#suggestion-ids label")
        assert open_boxes.count() == 1 and "rule dump" in open_boxes.first.inner_text()  # still open, not dismissed
        page.screenshot(path=str(tmp_path / "inline-confirmed.png"), full_page=True)

        # The form below the chat saves through the same function: a suggested reason it gives is confirmed.
        client = app["client"]("tester/")
        status, _ = client.predict(below, ["red_pen", "other"], "lectures", "", "form-tester", api_name="/flag")
        assert status == "Saved flag #2. Confirmed the detector's suggestion(s): explicit “red-pen” correction."

    db = sqlite3.connect(tmp_path / "app.db")
    assert suggestion_states(db, inline) == {"red_pen": ("confirmed", "inline-tester"),
                                             "no_follow_up": ("confirmed", "inline-tester"),
                                             "rule_dump": ("open", None)}
    assert suggestion_states(db, below) == {"red_pen": ("confirmed", "form-tester"), "no_follow_up": ("open", None),
                                            "rule_dump": ("open", None)}
    flags = {turn: json.loads(reasons) for turn, reasons in db.execute("SELECT turn_id, reasons FROM flags")}
    db.close()
    assert flags == {inline: ["no_follow_up", "red_pen"], below: ["other", "red_pen"]}
