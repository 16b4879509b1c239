"""What a learner's or tester's browser does with hostile chat text, and what it keeps after a
reload: the real app in headless Chromium (Debian's package, driven by Playwright)."""

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import app_server
from fakes import FakeOpenAI

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]
WAIT_MS = 120_000  # the longest any single wait in the page may take


class Listener:
    """A loopback HTTP server that records every request it gets (it must get none from the app)."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def image(self, name: str) -> str:
        return f"![{name}](http://127.0.0.1:{self.port}/{name}.png)"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def browser():
    if not shutil.os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run `bash scripts/setup.sh --dev` as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def wait_status(page):
    """Until the reply is done: the status line is filled and the fake's reply is shown."""
    page.wait_for_function(
        "() => { const s = document.querySelector('#status'); return s && s.innerText.trim().length > 0 }",
        timeout=WAIT_MS)
    page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('Tell me more')",
                           timeout=WAIT_MS)


def remote_images(page, port: int) -> list[str]:
    return page.evaluate(
        "(port) => [...document.querySelectorAll('img, video, audio, source, iframe, object, embed')]"
        "  .map(e => e.src || e.data || '').filter(s => s.includes(':' + port + '/'))", port)


def test_markdown_images_in_chat_text_are_never_fetched(tmp_path, browser):
    listener = Listener()
    try:
        with FakeOpenAI() as fake:  # its reply repeats the learner's message, image included
            spec = f"openai:{fake.model}?base_url={fake.base_url}"
            with app_server(tmp_path, "--model", spec) as app:
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                # The learner page: a message and a reply that both carry an image.
                page.goto(app["url"])
                box = page.locator("#message textarea")
                box.wait_for(timeout=WAIT_MS)
                box.fill(f"Look {listener.image('learner')} at my cat")
                box.press("Enter")
                wait_status(page)
                assert "⚠️" not in page.locator("#status").inner_text()
                assert f"![learner](http://127.0.0.1:{listener.port}/learner.png)" in page.locator("#chat").inner_text()
                assert remote_images(page, listener.port) == []

                # The tester view: a flag whose note, rewrite and tester name carry images.
                page.goto(app["url"] + "tester/")
                box = page.locator("#message textarea")
                box.wait_for(timeout=WAIT_MS)
                box.fill(f"Again {listener.image('tester-chat')}")
                box.press("Enter")
                wait_status(page)
                page.wait_for_function("() => document.querySelector('#suggestions')?.innerText.includes('Detector')",
                                       timeout=WAIT_MS)
                page.get_by_label("explicit “red-pen” correction (red_pen)").check()
                page.locator("#flag-note textarea").fill(listener.image("note"))
                page.locator("#flag-rewrite textarea").fill(listener.image("rewrite"))
                page.locator("#tester-name textarea, #tester-name input").first.fill(listener.image("name"))
                page.locator("#save-flag").click()
                page.wait_for_function("() => document.querySelector('#flag-status').innerText.includes('Saved flag')",
                                       timeout=WAIT_MS)
                page.wait_for_function("() => document.querySelector('#flags-table').innerText.includes('rewrite.png')",
                                       timeout=WAIT_MS)
                # The review queue and the dialogue around the flag.
                page.get_by_role("tab", name="Review queue").click()
                page.locator("#apply-filters").click()
                page.wait_for_function("() => document.querySelector('#queue').innerText.includes('rewrite.png')",
                                       timeout=WAIT_MS)
                page.locator("#open-id input").fill("1")
                page.locator("#open-flag").click()
                page.wait_for_function("() => document.body.innerText.includes('Rewrite: ![rewrite]')",
                                       timeout=WAIT_MS)
                # No element that loads a URL points at the listener, so nothing can fetch it later.
                assert remote_images(page, listener.port) == []
                shown = page.locator("body").inner_text()
                assert "![note](" in shown and "![name](" in shown

                # Even an image that some renderer let into the page is not fetched (the page's
                # Content-Security-Policy allows no remote images or media).
                blocked = page.evaluate(
                    "(port) => new Promise(done => { const seen = [];"
                    "  document.addEventListener('securitypolicyviolation', e => {"
                    "    seen.push(e.effectiveDirective + ' ' + e.blockedURI); if (seen.length === 3) done(seen); });"
                    "  for (const tag of ['img', 'video', 'audio']) { const e = document.createElement(tag);"
                    "    e.src = `http://127.0.0.1:${port}/csp-${tag}`; document.body.appendChild(e); } })",
                    listener.port)
                assert sorted(b.split()[0] for b in blocked) == ["img-src", "media-src", "media-src"], blocked
                page.screenshot(path=str(tmp_path / "images.png"), full_page=True)

                # The listener works: a page opened on it directly is received.
                control = browser.new_page()
                control.goto(f"http://127.0.0.1:{listener.port}/control", timeout=WAIT_MS)
                assert "/control" in listener.seen
                before = listener.seen[:listener.seen.index("/control")]
                assert before == [], f"the app's pages fetched {before}"
                assert app["proc"].poll() is None
    finally:
        listener.close()


def test_no_conversation_is_left_in_the_browser_for_the_next_learner(tmp_path, browser):
    with FakeOpenAI() as fake:
        spec = f"openai:{fake.model}?base_url={fake.base_url}"
        with app_server(tmp_path, "--model", spec) as app:
            context = browser.new_context()
            page = context.new_page()
            page.goto(app["url"])
            box = page.locator("#message textarea")
            box.wait_for(timeout=WAIT_MS)
            box.fill("My private sentence about Porto")
            page.locator("#send").click()  # the public /send endpoint, which Gradio's run history records
            wait_status(page)
            assert "Porto" in page.locator("#chat").inner_text()
            page.reload()
            page.locator("#message textarea").wait_for(timeout=WAIT_MS)
            page.wait_for_function("() => document.querySelector('#send') !== null", timeout=WAIT_MS)
            assert "Porto" not in page.locator("body").inner_text()
            stored = page.evaluate("async () => JSON.stringify({local: {...localStorage}, session: {...sessionStorage},"
                                   " caches: 'caches' in self ? await caches.keys() : [],"
                                   " idb: indexedDB.databases ? (await indexedDB.databases()).map(d => d.name) : []})")
            assert "Porto" not in stored and "private sentence" not in stored, stored
            runs = page.goto(app["url"] + "gradio_api/runs")
            assert runs.status == 404
            assert "Porto" not in page.content()
            assert app["proc"].poll() is None
