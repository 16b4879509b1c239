"""The real app in headless Chromium (Debian's package, driven by Playwright)."""

import shutil
import sqlite3

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    if not shutil.which("chromium") and not shutil.os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run `bash scripts/setup.sh --dev` as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        yield page
        browser.close()


def test_learner_chats_and_markup_never_runs(running_app, page, tmp_path):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.add_init_script("window.__pwned = false;")
    page.goto(running_app["url"])
    box = page.locator("#message textarea")
    box.wait_for(timeout=60_000)
    hostile = '<img src=x onerror="window.__pwned=true;alert(1)"> <script>window.__pwned=true</script> I has cat'
    box.fill(hostile)
    box.press("Enter")
    bot = page.locator("#chat .message-row.bot-row, #chat [data-testid='bot']").last
    bot.wait_for(timeout=120_000)
    page.wait_for_function(
        "() => { const s = document.querySelector('#status'); return s && s.innerText.trim().length > 0 }",
        timeout=120_000)
    chat_text = page.locator("#chat").inner_text()
    assert "<script>window.__pwned=true</script>" in chat_text  # shown as text
    assert '<img src=x onerror=' in chat_text
    assert page.evaluate("window.__pwned") is False and dialogs == []
    assert page.locator("#chat img[src='x']").count() == 0
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    conn = sqlite3.connect(running_app["db"])
    turns = conn.execute("SELECT role, content, status FROM turns ORDER BY idx").fetchall()
    conn.close()
    assert turns[0] == ("user", hostile, "ok") and turns[1][0] == "assistant" and turns[1][2] == "ok"
    assert turns[1][1].strip() and " ".join(turns[1][1].split()[:3]) in " ".join(chat_text.split())


def test_tester_flags_a_reply_in_the_browser(running_app, page, tmp_path):
    page.goto(running_app["url"] + "tester/")
    box = page.locator("#message textarea")
    box.wait_for(timeout=60_000)
    box.fill("Yesterday I go to the store")
    box.press("Enter")
    page.wait_for_function(
        "() => { const s = document.querySelector('#status'); return s && s.innerText.trim().length > 0 }",
        timeout=120_000)
    # The reply picker fills itself with the new reply, and the detector's suggestions appear.
    page.wait_for_function(
        "() => { const s = document.querySelector('#suggestions'); return s && s.innerText.includes('Detector') }",
        timeout=120_000)
    page.get_by_label("explicit “red-pen” correction (red_pen)").check()
    page.get_by_label("rule dump / grammar lecture (rule_dump)").check()
    page.locator("#flag-note textarea").fill("lectures instead of recasting")
    page.locator("#flag-rewrite textarea").fill("Oh, you went to the store yesterday? What did you buy?")
    page.locator("#tester-name textarea, #tester-name input").first.fill("browser-tester")
    page.locator("#save-flag").click()
    page.wait_for_function(
        "() => document.querySelector('#flag-status').innerText.includes('Saved flag')", timeout=60_000)
    page.screenshot(path=str(tmp_path / "tester.png"), full_page=True)

    conn = sqlite3.connect(running_app["db"])
    rows = conn.execute("SELECT f.reasons, f.tester, f.note, f.rewrite, t.role FROM flags f "
                        "JOIN turns t ON t.id = f.turn_id").fetchall()
    conn.close()
    assert rows == [('["red_pen", "rule_dump"]', "browser-tester", "lectures instead of recasting",
                     "Oh, you went to the store yesterday? What did you buy?", "assistant")]
    assert "browser-tester" in page.locator("#flags-table").inner_text()


def test_learner_page_shows_no_flag_controls(running_app, page):
    page.goto(running_app["url"])
    page.locator("#message textarea").wait_for(timeout=60_000)
    body = page.locator("body").inner_text()
    assert "Send" in body
    for control in ("Save flag", "Reasons", "Review queue", "Export", "Detector"):
        assert control not in body
    assert page.locator("#save-flag, #flag-reasons, #queue").count() == 0


IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"


def hostile_flag(db_path) -> tuple[int, dict]:
    """A conversation whose learner message, tutor reply, flag note, flag rewrite and tester name are markup,
    written with the app's own store before the app starts (so the page's lists already hold it)."""
    from tutor.feedback import Feedback
    from tutor.store import Store

    store = Store.open(db_path)
    texts = {"learner": f"learner says {IMG} {SCRIPT}", "reply": f"tutor replies {IMG} {SCRIPT}",
             "note": f"note {IMG} {SCRIPT} [click](javascript:window.__pwned=4)",
             "rewrite": f"rewrite {IMG} {SCRIPT}",
             "tester": '<img src=y onerror="window.__pwned=3">'}
    cid = store.create_conversation(level="beginner", model_spec="default", client="test")
    store.add_turn(cid, "user", texts["learner"])
    turn = store.add_turn(cid, "assistant", texts["reply"], model_spec="default", level="beginner")
    flag_id = Feedback(store).flag(turn, ["red_pen", "other"], texts["tester"], note=texts["note"],
                                   rewrite=texts["rewrite"])
    store.db.conn.close()
    return flag_id, texts


def assert_shown_as_text(text: str, *expected: str) -> None:
    flat = " ".join(text.split())
    for item in expected:
        assert " ".join(item.split()) in flat, f"{item!r} is not shown as text in {flat[:2000]!r}"


def test_tester_view_shows_markup_in_flags_and_replies_as_text(tmp_path, page):
    """Review queue table, the dialogue and flag info around a flag, and the flags table of a reply: markup in
    a learner message, a reply, a flag note, rewrite and tester name is shown as text and never runs."""
    from conftest import app_server

    flag_id, texts = hostile_flag(tmp_path / "app.db")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with app_server(tmp_path, "--max-tokens", "8") as app:
        page.goto(app["url"] + "tester/")
        page.locator("#message textarea").wait_for(timeout=60_000)

        # Review queue: the table of flags, then the dialogue around the flag with its note and rewrite.
        page.get_by_role("tab", name="Review queue").click()
        page.locator("#apply-filters").click()
        page.wait_for_function("() => document.querySelector('#queue').innerText.includes('rewrite <img')",
                               timeout=60_000)
        assert_shown_as_text(page.locator("#queue").inner_text(), texts["tester"], texts["learner"], texts["reply"],
                             texts["rewrite"])
        page.locator("#open-id input").fill(str(flag_id))
        page.locator("#open-flag").click()
        page.wait_for_function(f"() => document.body.innerText.includes('Flag #{flag_id} by')", timeout=60_000)
        page.wait_for_function("() => document.body.innerText.includes('tutor replies')", timeout=60_000)
        review_text = page.locator("body").inner_text()
        assert_shown_as_text(review_text, f"Flag #{flag_id} by {texts['tester']}", "Rewrite: " + texts["rewrite"],
                             f"Note: note {IMG} {SCRIPT}", texts["learner"], texts["reply"])
        # The note's markdown link is rendered (the info line is Markdown) but DOMPurify drops its javascript: URL.
        assert page.evaluate("[...document.querySelectorAll('a')].filter(a => /^\\s*javascript:/i.test("
                             "a.getAttribute('href') || '')).length") == 0
        page.get_by_text("click", exact=True).click()
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

        # Chat & flag: open the conversation, its reply is picked, the flags on it are listed.
        page.get_by_role("tab", name="Chat & flag").click()
        page.locator("#past-conversations input").click()
        page.get_by_role("option").filter(has_text="learner says").first.click()
        page.wait_for_function("() => document.querySelector('#chat').innerText.includes('tutor replies')",
                               timeout=60_000)
        page.wait_for_function("() => document.querySelector('#flags-table').innerText.includes('rewrite <img')",
                               timeout=60_000)
        assert_shown_as_text(page.locator("#chat").inner_text(), texts["learner"], texts["reply"])
        assert_shown_as_text(page.locator("#flags-table").inner_text(), texts["tester"], texts["note"],
                             texts["rewrite"])
        page.screenshot(path=str(tmp_path / "flags.png"), full_page=True)

        assert page.evaluate("typeof window.__pwned") == "undefined" and dialogs == []
        assert page.locator("img[src='x'], img[src='y']").count() == 0
        assert page.evaluate("[...document.scripts].filter(s => s.text.includes('__pwned')).length") == 0
