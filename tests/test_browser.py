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
        timeout=60_000)
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
