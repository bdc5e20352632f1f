"""The web explorer (GET /) end to end: a real server, Debian's Chromium driven by playwright.

The page is filled and its Compare button clicked like a user would; the figures it shows are
checked against POST /v1/explain, and an API error must reach the status line. A screenshot
goes to runs/test-artifacts/explorer.png.

Needs the ``playwright`` package (the ``test`` extra) and Chromium at /usr/bin/chromium (Debian's
``chromium`` package; scripts/test.sh installs it when it can). No browser is downloaded
(``playwright install`` is never run): playwright launches that executable. Without either,
the test is skipped with the reason.
"""

import math
import re
from pathlib import Path

import pytest

from grace.server import ServerConfig, create_app
from live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused on a closed
# network and it stalls; none of these change how the page behaves.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_CHARS = 200  # small, so that a too-long text is easy to send
CONFIG = ServerConfig(model="tiny-random", max_new_tokens=6, cache=False, max_chars=MAX_CHARS)
ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "test-artifacts"
TEXT_A = "A man is playing a guitar on stage.\nThe crowd sings along."
TEXT_B = "A musician performs a song for a cheering audience."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed: pip install -e '.[test]' "
                    "(the test extra) to run the browser test")
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    "(apt-get install chromium); playwright drives it, no browser is downloaded")
    return sync_playwright


@pytest.fixture(scope="module")
def server():
    """The real app under uvicorn on a free loopback port, in a background thread."""
    with live_server(create_app(CONFIG)) as url:
        yield url


@pytest.fixture(scope="module")
def page(sync_playwright, server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(server + "/")
            yield page
        finally:
            browser.close()


def _explain(server: str, text_a: str, text_b: str) -> dict:
    import httpx

    response = httpx.post(server + "/v1/explain", json={"text_a": text_a, "text_b": text_b},
                          timeout=60, trust_env=False)
    assert response.status_code == 200, response.text
    return response.json()


def _compare(page, text_a: str, text_b: str) -> None:
    from playwright.sync_api import expect

    page.fill("#text-a", text_a)
    page.fill("#text-b", text_b)
    page.click("#compare")
    expect(page.locator("#compare")).to_be_enabled()  # disabled while the request runs


def test_explorer_shows_the_api_figures_and_errors(page, server):
    from playwright.sync_api import expect

    from grace.explain.render import shown_rationale

    expect(page.locator("#model")).to_contain_text("tiny-random")  # the header, from /health
    _compare(page, TEXT_A, TEXT_B)
    expect(page.locator("#similarity")).to_have_text(re.compile(r"^cosine -?\d+\.\d{4}$"))
    expect(page.locator("#status")).not_to_have_class(re.compile("error"))

    api = _explain(server, TEXT_A, TEXT_B)
    assert page.text_content("#similarity") == f"cosine {api['cosine']:.4f}"
    for side in ("a", "b"):
        spans = page.locator(f"#tokens-{side} .tok")
        values = spans.evaluate_all("els => els.map(e => e.dataset.contribution)")
        values = [float(v) for v in values]
        assert len(values) == len(api[side]["tokens"]) > 0
        assert math.isclose(sum(values), api["cosine"], abs_tol=1e-4)
        titles = spans.evaluate_all("els => els.map(e => e.title)")
        assert [float(t.rsplit(": ", 1)[1]) for t in titles] == values  # the exact value
        shown = spans.all_text_contents()
        assert not any("\n" in s for s in shown)  # newlines are drawn as the return arrow
        assert sum(s.count("\u21b5") for s in shown) == sum(
            t["token"].count("\n") for t in api[side]["tokens"])
        segments = {t["segment"] for t in api[side]["tokens"]}
        labels = page.locator(f"#tokens-{side} .segment-label").all_text_contents()
        assert len(labels) >= len(segments)  # a labelled divider before each segment
        expected = shown_rationale(api[side]["rationale"])  # as the terminal prints it
        assert api[side]["shown"]["rationale"] == expected
        assert page.text_content(f"#rationale-{side}") == expected
        assert page.locator(f"#adding-{side} li").count() >= 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)

    # Model output and user text are text, never markup.
    _compare(page, 'A <img src=x onerror="window.pwned=1"> cat <b>sat</b>.', TEXT_B)
    expect(page.locator("#similarity")).to_have_text(re.compile(r"^cosine "))
    assert page.locator("#result img, #result b").count() == 0
    assert page.evaluate("window.pwned") is None

    # An API error (413: a text longer than max_chars) reaches the status line.
    _compare(page, "x" * (MAX_CHARS + 1), TEXT_B)
    status = page.locator("#status")
    expect(status).to_have_class(re.compile("error"))
    expect(status).to_contain_text(f"has {MAX_CHARS + 1} characters; at most {MAX_CHARS} per text")
    expect(status).to_contain_text("413")
    expect(page.locator("#result")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "explorer-error.png"), full_page=True)


@pytest.mark.parametrize("rationale, shown", [
    ("\n" * 64, "(whitespace only: 64 newlines)"),
    ("", "(no rationale)"),
], ids=["64-newlines", "empty"])
def test_a_whitespace_only_rationale_is_named_not_called_missing(page, server, monkeypatch,
                                                                rationale, shown):
    """Side a's rationale replaced on the server: 64 newlines read "(whitespace only: 64
    newlines)" as in the terminal, an empty one "(no rationale)"; both muted as descriptions."""
    import dataclasses

    import grace.explain.pair as pair
    from playwright.sync_api import expect

    real = pair.explain_pair

    def explain_pair(*args, **kwargs):
        ex = real(*args, **kwargs)
        return dataclasses.replace(ex, a=dataclasses.replace(ex.a, rationale=rationale))

    monkeypatch.setattr(pair, "explain_pair", explain_pair)  # the route imports it per request
    _compare(page, TEXT_A, TEXT_B)
    box = page.locator("#rationale-a")
    expect(box).to_have_text(shown)
    expect(box).to_have_class(re.compile(r"\bempty\b"))


def test_status_says_working_while_waiting(page, server):
    """The request is held by a route handler until the status line has been read."""
    seen = {}

    def hold(route):
        seen["status"] = page.evaluate("document.getElementById('status').textContent")
        seen["disabled"] = page.evaluate("document.getElementById('compare').disabled")
        route.continue_()

    page.route("**/v1/explain", hold)
    try:
        _compare(page, TEXT_A, TEXT_B)
        from playwright.sync_api import expect

        expect(page.locator("#similarity")).to_have_text(re.compile(r"^cosine "))
    finally:
        page.unroute("**/v1/explain")
    assert seen == {"status": "working...", "disabled": True}

