"""Every dashboard page in a real headless Chromium, reached as a learner does: from Home.

One `streamlit run viz_app/Home.py` server for the module (stopped in a `finally`), Debian's
/usr/bin/chromium driven by Playwright (never `playwright install`: it would download a
browser). Each page's default view must show no exception and no warning, log no console error
(a failed request included: the dashboard works offline), put no literal None or nan in a table,
and offer no "Deploy". Screenshots go to test-artifacts/screenshots/ for a person to look at.

Pages are opened from Home's sidebar, as the launcher's URL leads a learner. Keep it that way:
loading a page's own URL first makes Streamlit probe `/<Page>/_stcore/health` and
`/<Page>/_stcore/host-config` (404s in the console, then it finds the root; a Streamlit bug,
streamlit/streamlit#7074), which this test would report as console errors. A few other views
(the sidebar option a learner tries next) are held to the same rules.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minirt.ports import free_port
from vizlib.registry import PAGES  # on sys.path through tests/viz_app/conftest.py

ROOT = Path(__file__).resolve().parents[2]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = ROOT / "test-artifacts" / "screenshots"
# (name in the test id and the screenshot, URL path, the page's title shown as <h1>)
TARGETS = [("Home", "", "minirt workbench")] + [(p.url_path, p.url_path, p.title) for p in PAGES]


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", "viz_app/Home.py",
        "--server.headless", "true", "--server.address", "127.0.0.1",
        "--server.port", str(port), "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    # Own process group: stopping it stops anything the server started too.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
                pytest.fail(f"streamlit did not start (exit {proc.poll()}):\n{out[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def browser_page(server_url):
    """A Chromium tab on Home, and the console errors it logs (the test empties the list)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():  # a failure, not a skip: the test command installs it (as root)
        pytest.fail("Debian's Chromium is missing: run `apt-get install -y chromium` as root")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 2200})
            errors: list[str] = []
            tab.on(
                "console", lambda m: m.type == "error" and errors.append(f"{m.text} {m.location}")
            )
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            tab.goto(server_url, wait_until="domcontentloaded")
            yield tab, errors
        finally:
            browser.close()


def table_cells(tab) -> list[str]:
    """The text of every cell of every table and dataframe on the page. A dataframe's grid is drawn
    on a canvas; its accessible twin holds the same text, except that a missing value the canvas
    draws as "None" is "" there."""
    cells = tab.locator(
        '[data-testid="stTable"] td, [data-testid="stTable"] th, '
        '[data-testid="stDataFrame"] td, [data-testid="stDataFrame"] th'
    )
    return [t.strip() for t in cells.all_inner_texts()]


def nav_link(tab, server_url: str, path: str):
    """The sidebar's link to a page. Past 12 pages Streamlit shows the first 10 and a "View n
    more" button; a learner clicks it to reach the rest, and so does the test."""
    more = tab.locator('[data-testid="stSidebarNavViewButton"]')
    if more.count() and more.first.inner_text().endswith("more"):
        more.first.click()
    return tab.locator(f'[data-testid="stSidebarNavLink"][href="{server_url}/{path}"]').first


def settle(tab) -> None:
    """Wait until the script has run to the end (a live engine run included) and Vega has drawn
    every chart (it draws after the script)."""
    tab.wait_for_timeout(300)  # a click's rerun starts after a round trip to the server
    tab.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=45_000
    )
    charts = tab.locator('[data-testid="stVegaLiteChart"]')
    for i in range(charts.count()):
        charts.nth(i).locator("canvas, svg").first.wait_for(timeout=15_000)


def screenshot(tab, name: str) -> None:
    """The whole page: the app scrolls inside its main section, so the window is made as tall as
    that section first (a full-page screenshot alone stops at the window's height)."""
    height = tab.locator('[data-testid="stMain"]').evaluate("e => e.scrollHeight")
    tab.set_viewport_size({"width": 1400, "height": min(max(2200, height + 40), 12_000)})
    tab.wait_for_timeout(500)  # charts redraw at the new size
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    tab.set_viewport_size({"width": 1400, "height": 2200})


def assert_clean(tab, errors: list[str], name: str) -> None:
    """No exception, warning or error box, no None/nan table cell, no Deploy, no console error."""
    exceptions = tab.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    warnings = tab.locator(
        '[data-testid="stAlertContentWarning"], [data-testid="stAlertContentError"]'
    )
    assert warnings.count() == 0, f"{name}: {warnings.all_inner_texts()}"
    bad = [c for c in table_cells(tab) if c in ("", "None", "nan", "NaN", "<NA>")]
    assert not bad, f"{name}: {len(bad)} table cells read {sorted(set(bad))}"
    assert tab.get_by_text("Deploy", exact=True).count() == 0
    assert not errors, f"{name}: console errors {errors}"


@pytest.mark.parametrize(("name", "path", "title"), TARGETS, ids=[t[0] for t in TARGETS])
def test_page_renders_in_chromium_without_an_exception(server_url, browser_page, name, path, title):
    tab, errors = browser_page
    errors.clear()
    nav_link(tab, server_url, path).click()
    tab.get_by_role("heading", level=1).filter(has_text=title).wait_for(timeout=30_000)
    settle(tab)
    screenshot(tab, name)
    assert_clean(tab, errors, name)


# A page's other views a learner meets first: (page, the sidebar option that opens the view).
VIEWS = [
    ("Speculative_decoding", "Cost model"),
    ("Scheduler", "swap"),
    ("Streams", "Live simulator"),
    ("Roofline_and_batching", "Upload a result file"),
    ("Serving", "Live mode"),
]


@pytest.mark.parametrize(("path", "option"), VIEWS, ids=[f"{p}-{o}" for p, o in VIEWS])
def test_a_pages_other_view_renders_cleanly_too(server_url, browser_page, path, option):
    tab, errors = browser_page
    nav_link(tab, server_url, path).click()
    settle(tab)
    errors.clear()
    tab.locator('[data-testid="stSidebar"]').get_by_text(option, exact=True).first.click()
    settle(tab)
    name = f"{path}-{option.replace(' ', '_')}"
    screenshot(tab, name)
    assert_clean(tab, errors, name)
