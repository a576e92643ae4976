"""The playground (GET /) in a real headless Chromium against a real server.

Debian's chromium (`make browser`), driven by Playwright's Python API with
executable_path=/usr/bin/chromium (Playwright's own browser download is never used). The server
serves the session's digits-cnn (tests/conftest.py), the tiny folk-lstm of test_folk_lstm.py,
the tiny sentiment-tiny of test_batch_text.py (built once per session, whichever asks first)
and a tiny topic-tiny. Every request the page makes is checked: none may leave localhost,
and the console must stay free of errors. Screenshots of each panel go to the session's
temporary folder (printed), for people to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import prerequisite, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TINY_TOPIC = {"epochs": 1, "train_limit": 400, "baseline": False, "vocab_size": 1000, "hidden_size": 32, "threads": 1}

try:
    from playwright import sync_api as playwright_api
except ImportError:
    playwright_api = None


@pytest.fixture(autouse=True, scope="module")
def _browser_installed():
    prerequisite(None if playwright_api else "Playwright is not installed: pip install playwright (the dev extra)")
    prerequisite(None if Path(CHROMIUM).is_file() else "chromium is not installed: `make browser` installs Debian's "
                 "(as root: apt-get install chromium)")


@pytest.fixture(scope="module")
def playground(digits_artifact, artifacts_root):
    from export.build import build
    from tests.integration.test_batch_text import TINY_TEXT
    from tests.integration.test_folk_lstm import LIMITS, TINY

    build("folk-lstm", TINY, root=artifacts_root, progress=False)
    build("sentiment-tiny", TINY_TEXT, root=artifacts_root, progress=False)
    build("topic-tiny", TINY_TOPIC, root=artifacts_root, progress=False)
    with serve(["digits-cnn", "folk-lstm", "sentiment-tiny", "topic-tiny"], LIMITS, root=artifacts_root) as (url, _):
        yield url


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """One headless Chromium with a fresh profile for the module; each test opens its own tab."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900}, accept_downloads=True)
        try:
            yield context
        finally:
            context.close()  # stops the browser process (and its children)


class Tab:
    """A fresh tab on the playground that records console errors and every request, and refuses
    (aborts) any request that is not to localhost."""

    def __init__(self, context, url: str):
        self.errors, self.outside, self.requests = [], [], []
        self.page = context.new_page()
        self.page.route("**/*", self._route)
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url + "/")
        self.page.wait_for_selector("body[data-ready=true]", timeout=15_000)

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        if urlparse(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()


@pytest.fixture
def tab(context, playground):
    """This test's tab. Afterwards, for every test: the page made requests, none left localhost,
    and the console stayed free of errors (a test that provokes one removes it from tab.errors)."""
    tab = Tab(context, playground)
    yield tab
    tab.page.close()
    assert tab.requests, "the page made no request at all"
    assert not tab.outside, f"requests to the internet: {tab.outside}"
    assert not tab.errors, f"console errors: {tab.errors}"


@pytest.fixture
def page(tab):
    return tab.page


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("playground-screenshots")
    print(f"\nplayground screenshots: {folder}")
    return folder


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes on the drawing pad, in fractions of its size."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def test_a_drawn_digit_is_classified_and_shown_as_the_model_sees_it(page, shots):
    page.select_option("#image-model", "digits-cnn")
    # a 7, drawn small and off-centre as people do: the server lays it out as MNIST was made
    with page.expect_response("**/classify_image") as answered:
        draw(page, [[(0.15, 0.15), (0.5, 0.15), (0.3, 0.6)]])
    served = answered.value.json()["predictions"][0]
    label = page.locator("[data-testid=image-label]")
    label.wait_for(timeout=10_000)
    # the page shows the server's answer: its label (one of the model's ten) and its top 3
    assert re.fullmatch(r"[0-9]", label.inner_text()) and label.inner_text() == served["label"]
    assert page.locator("#image-result .bar-row").count() == len(served["top_k"]) == 3
    assert page.locator("#image-result .bar-row").first.inner_text().startswith(served["top_k"][0]["label"])
    meta = page.locator("#image-result .meta").inner_text()
    assert "digits-cnn" in meta and re.search(r"\d+ ms", meta)
    # the 28x28 preview shows the digit laid out as MNIST was made: its centre of mass in the middle
    total, cy, cx = page.evaluate("""() => {
        const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        let total = 0, cy = 0, cx = 0;
        for (let i = 0; i < 784; i++) { const v = d[4 * i]; total += v; cy += v * Math.floor(i / 28); cx += v * (i % 28); }
        return [total, cy / total, cx / total]; }""")
    assert total > 0 and abs(cy - 13.5) <= 1.5 and abs(cx - 13.5) <= 1.5, (total, cy, cx)
    page.locator("#digits").screenshot(path=str(shots / "digits.png"))
    page.click("#clear-pad")
    assert page.locator("#image-result").inner_text() == ""


def test_a_review_gets_both_text_results(page, shots):
    page.fill("#text-input", "A warm, funny and moving film; the cast is wonderful and the script sparkles.")
    with page.expect_response("**/classify_text") as first:
        page.click("#classify-text")
    for model in ("sentiment-tiny", "topic-tiny"):
        page.locator(f"[data-testid=text-label-{model}]").wait_for(timeout=10_000)
    cards = page.locator("#text-result .card")
    assert cards.count() == 2
    for i in range(2):
        text = cards.nth(i).inner_text()
        assert "tokens" in text and "truncated" in text
    assert page.locator("[data-model=topic-tiny] .bar-row").count() == 5
    answered = first.value.json()
    shown = page.locator(f"[data-testid=text-label-{answered['model']}]").inner_text()
    assert shown == answered["predictions"][0]["label"]  # the page shows what the server said
    page.locator("#text").screenshot(path=str(shots / "text.png"))


def test_a_tune_streams_renders_as_sheet_music_and_plays(page, shots):
    page.fill("#tune-prompt", "X:1\nT:Test\nM:4/4\nL:1/8\nK:D\n")
    page.fill("#tune-seed", "5")  # a tune the tiny model writes that abcjs both renders and times
    page.click("#generate")
    page.locator("#tune-status", has_text="stopped").wait_for(timeout=30_000)
    assert page.locator("#tune-text").inner_text().startswith("X:1")
    notes = page.locator("#sheet svg .abcjs-note")
    notes.first.wait_for(timeout=10_000)
    assert notes.count() > 0, page.locator("#tune-text").inner_text()
    page.click("#play")
    assert page.locator("#tune-status").get_attribute("data-playing") == "true"
    page.click("#stop")
    page.locator("#tunes").screenshot(path=str(shots / "tunes.png"))


def test_server_errors_are_readable_on_the_page(tab):
    page = tab.page
    page.fill("#tune-temperature", "-1")
    page.click("#generate")
    error = page.locator("#tune-status .error")
    error.wait_for(timeout=10_000)
    assert "temperature" in error.inner_text() and error.inner_text().startswith("400")
    # Chromium logs every 4xx response as a console error: this one was asked for, and is the only one
    assert tab.errors and all("status of 400" in message for message in tab.errors), tab.errors
    tab.errors.clear()


def test_models_panel_lists_the_served_models_and_live_latency(page, shots):
    rows = page.locator("#model-table tbody tr")
    rows.first.wait_for(timeout=10_000)
    assert rows.count() == 4
    assert "int8" in page.locator("#model-table").inner_text()
    # this test's own request, so the latency table has a row for it whatever ran before
    with page.expect_response("**/classify_image"):
        draw(page, [[(0.5, 0.2), (0.5, 0.8)]])
    page.evaluate("refreshLatency()")
    row = page.locator("#latency-table tr", has_text="/classify_image")
    row.wait_for(timeout=10_000)
    assert re.search(r"\d+(\.\d)? ms", row.inner_text()), row.inner_text()
    page.locator("#models").screenshot(path=str(shots / "models.png"))


def test_keyboard_reaches_every_control(page):
    page.locator("body").focus()
    reached = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id"))
    assert {"image-model", "classify-drawing", "clear-pad", "upload", "text-input", "classify-text",
            "tune-prompt", "tune-seed", "generate"} <= reached


def test_narrow_mobile_viewport_has_no_sideways_scrolling(page, shots):
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "mobile.png"), full_page=True)


def test_api_docs_are_served_here_and_load_nothing_from_outside(tab, playground, shots):
    page = tab.page
    before = len(tab.requests)
    page.goto(playground + "/docs")
    page.wait_for_selector("text=/classify_image", timeout=15_000)
    docs_requests = tab.requests[before:]
    # the docs page, its script and the OpenAPI document, all from this server (tab checks: nothing outside)
    assert any(urlparse(u).path == "/docs.json" for u in docs_requests), docs_requests
    assert all(urlparse(u).hostname in LOCAL_HOSTS for u in docs_requests if u.startswith("http"))
    assert page.locator(".opblock").count() >= 10  # every operation rendered by swagger-ui
    page.screenshot(path=str(shots / "docs.png"))
