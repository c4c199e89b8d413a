"""Screenshots of the four dashboard pages on a real small study: assets/screenshots/{search,results,best_model,analytics}.png.

Runs a second small study in-process (random sampler, for the two-study comparison), starts
`streamlit run app.py` on a free port with MOCA_HOME=<workspace>, runs a search from the Search page in
headless Chromium (playwright), waits for it to finish and photographs every page.

    python assets/make_screenshots.py                        # temporary workspace, ~2-4 min on 2 CPU cores
    python assets/make_screenshots.py --workspace /tmp/shots --trials 10 --epochs 5
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WIDTH = 1400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shoot(page, path: Path, *, settle: float = 2.5) -> None:  # type: ignore[no-untyped-def]
    """Resize the viewport to the page's content (Streamlit scrolls inside its main block) and save a PNG."""
    time.sleep(settle)
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        " return Math.max(m.scrollHeight, document.body.scrollHeight); }"
    )
    page.set_viewport_size({"width": WIDTH, "height": int(min(max(height, 900), 5000))})
    time.sleep(settle)
    page.screenshot(path=str(path))
    print(f"wrote {path} ({height}px)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default=None, help="workspace folder (default: a new temporary one)")
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-samples", type=int, default=600)
    args = parser.parse_args(argv)

    from playwright.sync_api import expect, sync_playwright

    from nas_core import dashboard
    from nas_core.search import SearchConfig, run_search
    from nas_core.tunnel import _stop, start_server, wait_for_server

    expect.set_options(timeout=120_000)
    workspace = Path(args.workspace or tempfile.mkdtemp(prefix="moca_screens_")).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    existing = {s["name"] for s in dashboard.studies(workspace)} if workspace.exists() else set()
    if "digits-random" not in existing:
        print("running the comparison study digits-random ...")
        run_search(SearchConfig(dataset="digits", trials=max(3, args.trials - 2), epochs=args.epochs, train_samples=args.train_samples,
                                workspace=str(workspace), study="digits-random", sampler="random", seed=1))
    port = _free_port()
    log = open(workspace / "streamlit-screens.log", "wb")
    proc = start_server(port=port, workspace=workspace, stdout=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, proc=proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            expect(page.get_by_text("No search has run in this dashboard yet")).to_be_visible()
            for label, value in (("Trials", args.trials), ("Epochs per trial", args.epochs),
                                 ("Training samples (0 = all)", args.train_samples)):
                box = page.get_by_label(label, exact=True)
                box.fill(str(value))
                box.press("Enter")
                expect(box).to_have_value(str(value))
            page.get_by_role("button", name="Start").click()
            expect(page.get_by_text("Finished:")).to_be_visible(timeout=1_800_000)
            _shoot(page, out / "search.png")

            page.set_viewport_size({"width": WIDTH, "height": 1000})
            page.get_by_role("link", name="Results").click()
            expect(page.get_by_text("trials shown.")).to_be_visible()
            _shoot(page, out / "results.png", settle=4)

            page.set_viewport_size({"width": WIDTH, "height": 1000})
            page.get_by_role("link", name="Best Model").click()
            expect(page.get_by_text("Rebuild from the JSON", exact=False)).to_be_attached()
            _shoot(page, out / "best_model.png", settle=4)

            page.set_viewport_size({"width": WIDTH, "height": 1000})
            page.get_by_role("link", name="Analytics").click()
            expect(page.get_by_text("Proxy score vs final accuracy")).to_be_visible()
            _shoot(page, out / "analytics.png", settle=5)
            browser.close()
    finally:
        _stop(proc)
        log.close()
    print(f"workspace: {workspace}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
