"""Every dashboard page in a real headless Chromium: it renders and shows no exception.

One `streamlit run viz_app/Home.py` server for the module (stopped in a `finally`), Debian's
/usr/bin/chromium driven by Playwright (never `playwright install`: it would download a
browser). Screenshots go to test-artifacts/screenshots/ for a person to look at.
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
def page():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():  # a failure, not a skip: the test command installs it (as root)
        pytest.fail("Debian's Chromium is missing: run `apt-get install -y chromium` as root")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 2200})
        finally:
            browser.close()


@pytest.mark.parametrize(("name", "path", "title"), TARGETS, ids=[t[0] for t in TARGETS])
def test_page_renders_in_chromium_without_an_exception(server_url, page, name, path, title):
    page.goto(f"{server_url}/{path}", wait_until="domcontentloaded")
    page.get_by_role("heading", level=1).filter(has_text=title).wait_for(timeout=30_000)
    # The script has run to the end (a live engine run included) when the app says so.
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=45_000
    )
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    for i in range(charts.count()):  # Vega draws after the script: wait for each canvas/svg
        charts.nth(i).locator("canvas, svg").first.wait_for(timeout=15_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
