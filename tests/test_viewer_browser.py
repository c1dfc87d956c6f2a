"""The viewer in a real browser: Playwright driving headless Chromium (Debian's /usr/bin/chromium;
no browser download) against ``ec2er view`` serving a tiny run made without any model. Open the
run, filter dialogues, open one, click an item and see its turns marked, open curation and the
evaluation view, check that generated markup shows as text, watch a new results file appear live.
Screenshots go to the test's tmp_path.

This test never skips in CI: without Chromium or Playwright it fails, naming what to install
(``make test`` installs both where they are missing). Only ``EC2ER_SKIP_BROWSER_TESTS=1`` skips it,
for a machine that cannot have a browser, and never where ``CI`` is set (as CI services set it);
nothing in the repository sets it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_viewer_api import DIALOGUES, FAILED, PAYLOAD, make_run

from ec2er.schemas.facts import GenerationFiles

CHROMIUM = Path(os.environ.get("EC2ER_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WAIT_MS = 10_000

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
if os.environ.get("EC2ER_SKIP_BROWSER_TESTS") == "1" and not IN_CI:
    pytest.skip("EC2ER_SKIP_BROWSER_TESTS=1", allow_module_level=True)


try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture fails, naming what to install
    expect = None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]' (never `playwright install`)")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} missing: apt-get install chromium (`make test` does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """``ec2er view`` on a free port, serving a run whose generation still runs."""
    run = make_run(tmp_path_factory.mktemp("browser") / "run")
    progress = run / "generate" / GenerationFiles.PROGRESS
    doc = json.loads(progress.read_text()) | {"state": "running", "updated": time.time(), "started": time.time() - 30,
                                              "dialogues": DIALOGUES - 4, "fraction": 0.6, "eta_s": 20}
    progress.write_text(json.dumps(doc))
    server = subprocess.Popen([sys.executable, "-m", "ec2er.cli", "view", str(run), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, f"ec2er view said: {line}{server.stdout.read() if server.poll() is not None else ''}"
        yield run, f"http://127.0.0.1:{found.group(1)}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def page(browser, tmp_path: Path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    problems: list[str] = []
    p.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: problems.append(str(e)))
    p.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    yield p
    p.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
    assert problems == [], problems  # no script error, no resource or policy (CSP) refused


def _no_markup_ran(page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("script").count() == 1  # app.js alone
    assert page.locator("img[src='x']").count() == 0


def test_filter_open_a_dialogue_and_mark_an_items_turns(served, page, tmp_path: Path) -> None:
    run, base = served
    page.goto(base)
    page.locator("#tabs a", has_text="Dialogues").wait_for()
    page.screenshot(path=str(tmp_path / "overview.png"))
    page.click("#tabs a:has-text('Dialogues')")
    rows = page.locator("main tbody tr")
    # counts are Playwright's retrying expects: a view renders in steps (the overview's table is
    # replaced by the list, rows come after the table), and a plain count can run between two
    expect(rows).to_have_count(DIALOGUES)
    page.select_option("select[name=status]", "failed")
    expect(rows).to_have_count(FAILED)
    expect(page.locator("main tbody tr .badge.bad")).to_have_count(FAILED)
    page.screenshot(path=str(tmp_path / "dialogues-failed.png"))

    page.select_option("select[name=status]", "")
    page.fill("input[name=q]", "onerror")
    page.press("input[name=q]", "Enter")
    expect(rows).to_have_count(1)
    assert PAYLOAD in page.locator("main tbody tr").first.inner_text()
    _no_markup_ran(page)

    page.locator("main tbody tr a").first.click()
    turns = page.locator("#turns .turn")
    turns.first.wait_for()
    assert PAYLOAD in turns.nth(1).inner_text() and PAYLOAD in page.locator(".item").first.inner_text()
    _no_markup_ran(page)
    assert page.locator("#turns .turn.evidence").count() == 0
    page.locator(".item").first.click()  # an EU item the extractor drew from turns 0 and 1
    expect(page.locator("#turns .turn.evidence")).to_have_count(2)
    marked = page.eval_on_selector_all("#turns .turn.evidence", "ts => ts.map(t => t.dataset.index)")
    assert marked == ["0", "1"]
    expect(page.locator(".item.selected")).to_have_count(1)
    page.screenshot(path=str(tmp_path / "dialogue-item-marked.png"), full_page=True)


def test_a_dialogue_shows_its_crisis_safety_record(served, page, tmp_path: Path) -> None:
    _, base = served
    page.goto(base)
    page.click("#tabs a:has-text('Dialogues')")
    expect(page.locator("main tbody tr")).to_have_count(DIALOGUES)
    risky = page.locator("main tbody tr", has=page.locator(".badge.bad", has_text="high · unsafe"))
    expect(risky).to_have_count(1)
    expect(page.locator("main tbody tr .badge", has_text="no risk")).to_have_count(DIALOGUES - FAILED - 1)
    risky.locator("a").first.click()
    expect(page.locator("#safety")).to_contain_text("unsafe")
    expect(page.locator("#safety tbody tr")).to_have_count(1)
    expect(page.locator("#turns .turn.risk")).to_have_count(1)
    assert "wish I was dead" in page.locator("#turns .turn.risk").inner_text()
    page.screenshot(path=str(tmp_path / "dialogue-safety.png"), full_page=True)


def test_a_page_that_finishes_loading_after_a_click_does_not_cover_the_page_clicked_to(served, page) -> None:
    """The overview's own fetch of the run is held until the dialogues list, clicked to meanwhile,
    has shown: the overview finishing last must not replace it (CI once counted 11 rows of the
    overview's tables for the 12 dialogues)."""
    _, base = served
    held = []
    # the page's first fetch of the run draws the tabs; the second is the overview's: hold that one
    page.route(re.compile(r".*/api/run$"),
               lambda route: held.append(route) if len(held) < 2 else route.continue_())
    page.goto(base)
    while len(held) < 1:
        page.wait_for_timeout(20)
    held[0].continue_()
    page.locator("#tabs a", has_text="Dialogues").wait_for()
    while len(held) < 2:
        page.wait_for_timeout(20)
    page.click("#tabs a:has-text('Dialogues')")
    expect(page.locator("main tbody tr")).to_have_count(DIALOGUES)
    held[1].continue_()
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)  # the overview's last fetches and its render, were it to happen
    expect(page.locator("main h1")).to_have_text("Dialogues")
    expect(page.locator("main tbody tr")).to_have_count(DIALOGUES)


def test_curation_shows_each_decision_and_what_a_reject_matched(served, page, tmp_path: Path) -> None:
    _, base = served
    page.goto(base + "#/curation?decision=rejected")
    page.get_by_text("Benchmark scenario about a lost dog.").wait_for()  # read from the benchmark folder
    expect(page.get_by_text("the kept near-duplicate")).to_have_count(1)
    page.screenshot(path=str(tmp_path / "curation.png"), full_page=True)


def test_evaluation_side_by_side_disagreements_and_unparsed_share(served, page, tmp_path: Path) -> None:
    _, base = served
    page.goto(base + "#/evaluation")
    groups = page.locator(".prediction-group")
    expect(groups).to_have_count(4)
    page.locator("svg rect.unparsed").nth(1).wait_for()  # the chart marks replies never in format (2+)
    page.check("input[name=disagree]")
    expect(groups).to_have_count(2)
    assert [groups.nth(k).get_attribute("data-qid") for k in range(2)] == ["2", "3"]
    expect(groups.nth(0).locator(".pred")).to_have_count(2)  # base and adapter side by side
    assert PAYLOAD in groups.nth(1).inner_text()  # a reply carrying markup, as text
    _no_markup_ran(page)
    groups.nth(0).locator("summary", has_text="prompt").click()
    assert "Item 2" in groups.nth(0).locator("pre.prompt").last.inner_text()
    page.screenshot(path=str(tmp_path / "evaluation.png"), full_page=True)


def test_training_loss_and_the_tokens_that_carry_loss(served, page, tmp_path: Path) -> None:
    _, base = served
    page.goto(base + "#/training")
    page.locator("#loss-chart polyline").first.wait_for()
    expect(page.locator(".preview .span.trained")).to_have_count(1)
    assert "Sadness" in page.locator(".preview .span.trained").inner_text()
    page.screenshot(path=str(tmp_path / "training.png"), full_page=True)


def test_new_dialogues_show_while_the_run_writes_them_and_a_failed_poll_is_retried(served, browser) -> None:
    """The header shows a generation that wrote progress.json within the last minute as live. The
    run's writer refreshes that file as it goes; here the test does, just before it looks (so a
    slow machine, long after the fixture started, sees the same). The page's first progress poll
    fails (a server restarting): the next one must still come."""
    run, base = served
    progress = run / "generate" / GenerationFiles.PROGRESS
    progress.write_text(json.dumps(json.loads(progress.read_text()) | {"updated": time.time()}))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.set_default_timeout(WAIT_MS)
    polls: list[str] = []

    def first_poll_fails(route) -> None:
        polls.append(route.request.url)
        route.abort() if len(polls) == 1 else route.continue_()

    page.route(re.compile(r".*/api/progress(\?.*)?$"), first_poll_fails)
    try:
        page.goto(base + "#/dialogues?newest=1")
        page.locator("main tbody tr").first.wait_for()
        page.locator("#live .dot").wait_for()  # the header says generation is running: polled again
        assert len(polls) >= 2
        results = run / "generate" / GenerationFiles.RESULTS
        (results / "c-002.parquet").write_bytes((results / "a-000.parquet").read_bytes())
        os.utime(results / "c-002.parquet", (2.1e9, 2.1e9))
        expect(page.locator("main tbody tr")).to_have_count(DIALOGUES + 8, timeout=WAIT_MS)
    finally:
        context.close()
    # the aborted poll is the only thing the console complains of
    assert all("ERR_FAILED" in p or "progress" in p for p in problems), problems
