"""End to end in a real browser: `streamlit run app.py` + headless Chromium run a 3-trial digits search from the
Search page, then download the best config on Best Model and rebuild it with the same parameter count; and (slow)
the pages on a workspace of 5,000 trials, timed until they stop updating."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium) — no browser to drive")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Streamlit server on a free port with MOCA_HOME=<tmp workspace>; only this process group is killed."""
    with _serve(tmp_path / "ws", tmp_path) as running:
        yield running


@contextlib.contextmanager
def _serve(workspace: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    env = {**os.environ, "MOCA_HOME": str(workspace), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = (tmp_path / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "streamlit did not start in 60 s"
            time.sleep(0.2)
        yield url, workspace
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def test_search_then_download_the_best_config(server: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from nas_core.evaluate import count_params
    from nas_core.export import build_model, load_config

    url, workspace = server
    expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly; every wait is on a condition
    t0 = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
            page.set_default_timeout(60_000)
            # A deep link as the server's very first request still gets the navigation and the shared sidebar.
            page.goto(url + "/results")
            expect(page.get_by_text("No studies in")).to_be_visible()
            expect(page.get_by_role("textbox", name="Workspace")).to_have_value(str(workspace))
            page.goto(url)
            expect(page.get_by_text("No search has run in this dashboard yet")).to_be_visible()
            for label, value in (("Trials", 3), ("Epochs per trial", 2), ("Training samples (0 = all)", 300)):
                box = page.get_by_label(label, exact=True)
                box.fill(str(value))
                box.press("Enter")
                expect(box).to_have_value(str(value))
            start = page.get_by_role("button", name="Start")
            expect(start).to_be_enabled()
            start.click()
            expect(page.get_by_text("Started digits-seed-cnn: 3 trials on digits.")).to_be_visible()

            # Another tab (or a refresh) shows the same search, from the server's runner registry.
            second = browser.new_page()
            second.goto(url)
            expect(second.get_by_text(re.compile(r"digits-seed-cnn: (running|finished)"))).to_be_visible()
            second.close()

            expect(page.get_by_text("Finished: 3 complete")).to_be_visible(timeout=240_000)
            expect(page.get_by_text("3 / 3 trials")).to_be_visible()

            page.get_by_role("link", name="Best Model").click()
            expect(page.get_by_role("heading", name="Best Model")).to_be_visible()
            expect(page.get_by_text(re.compile(r"^Trial \d+$"))).to_be_visible()
            page.get_by_role("tab", name="Downloads").click()
            with page.expect_download() as info:
                page.get_by_role("button", name="Config JSON").click()
            download = info.value
            target = tmp_path / download.suggested_filename
            download.save_as(target)
        finally:
            browser.close()
    elapsed = time.perf_counter() - t0
    print(f"browser flow took {elapsed:.1f} s")

    assert re.fullmatch(r"digits-seed-cnn_trial\d+\.json", target.name)
    config = load_config(target)
    model = build_model(config)
    assert count_params(model) == int(config.metrics["params"])
    best = load_config(workspace / "digits-seed-cnn" / "best_config.json")
    assert config.architecture == best.architecture  # the default pick is the study's best-accuracy config


@pytest.mark.slow
def test_pages_at_scale_in_chromium(tmp_path: Path) -> None:
    """Results, Best Model and Analytics on 5 studies x 1,000 trials (benchmarks/dashboard.py's helper), in Chromium:
    each renders without an exception; the seconds until each stops updating go to benchmarks/results/dashboard_browser.json
    (figures, not asserts: speed goals live in the benchmarks)."""
    from playwright.sync_api import expect, sync_playwright

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dashboard import fill_workspace  # type: ignore[import-not-found]

    studies, trials = int(os.environ.get("MOCA_BENCH_STUDIES", "5")), int(os.environ.get("MOCA_BENCH_TRIALS", "1000"))
    workspace = tmp_path / "ws"
    fill_workspace(workspace, studies=studies, trials=trials)
    figures: dict[str, dict[str, float]] = {}
    with _serve(workspace, tmp_path) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(300_000)
            expect.set_options(timeout=300_000)
            external: list[str] = []
            page.on("request", lambda r: external.append(r.url) if not r.url.startswith(url) and r.url.startswith("http") else None)
            page.goto(url)
            expect(page.get_by_role("heading", name="Search", exact=True)).to_be_visible()
            icon = page.locator("link[rel='shortcut icon'], link[rel='icon']").first.get_attribute("href") or ""
            assert not icon.startswith("http") or icon.startswith(url), icon  # the favicon is served by the app itself
            # the background read of every study's trials (a sidebar caption while it runs) is over before timing pages
            expect(page.get_by_text("Reading the studies' trials into memory")).to_have_count(0)
            _settled(page)
            for name, link, ready in (("results", "Results", "Download CSV"), ("best_model", "Best Model", "Pareto front"),
                                      ("analytics", "Analytics", "Top 5 side by side")):
                for visit in ("first", "again"):  # navigate as a user does: the sidebar link, then back to Search
                    t0 = time.perf_counter()
                    page.get_by_role("link", name=link).click()
                    expect(page.get_by_text(ready, exact=True).first).to_be_visible()
                    _settled(page)
                    figures.setdefault(name, {})[f"{visit}_s"] = round(time.perf_counter() - t0, 2)
                    assert not page.locator("[data-testid='stException']").count(), name
                    page.get_by_role("link", name="Search").click()
                    expect(page.get_by_role("heading", name="Search", exact=True)).to_be_visible()
                    _settled(page)
            assert not external, external[:5]  # nothing fetched from the internet (favicon, fonts)
        finally:
            browser.close()
    out = ROOT / "benchmarks" / "results" / "dashboard_browser.json"
    out.write_text(json.dumps({"studies": studies, "trials_per_study": trials, "pages": figures,
                               "load_average": [round(x, 2) for x in os.getloadavg()],
                               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=2) + "\n")
    print(json.dumps(figures))


def _settled(page: object) -> None:
    """Wait until Streamlit's "running" indicator is gone (the script run ended and nothing is pending)."""
    from playwright.sync_api import expect

    expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0)  # type: ignore[attr-defined]
