"""Screenshots of every page of the app, taken in Debian's chromium through Playwright.

    python docs/screenshots.py [--data DIR] [--demo-steps N] [--pages home,regimes] [--no-demo]

Starts `streamlit run app.py` on a free localhost port with its own data dir, runs the demo from the Home page
(timing it from the click to the figures; not with --no-demo), then saves docs/screenshots/<page>.png for every
page (or those of --pages), home_top.png (Home's first screen, for the README), and the Tour's steps (only when
every page is taken).  Also used by
tests/test_browser.py (``streamlit_server``, ``launch``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PAGES = {"home": "", "tour": "tour", "train": "train", "spectra": "spectra", "transfer": "transfer", "regimes": "regimes",
         "steady_state": "steady_state",
         "diagnostics": "diagnostics", "runs": "runs"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(data_dir: str, extra_env: dict | None = None, timeout: float = 90.0):
    """Yield the base URL of `streamlit run app.py` serving ``data_dir``; stop it (only it) afterwards."""
    port = free_port()
    env = {**os.environ, "WDSCALE_DATA": str(data_dir), **(extra_env or {})}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() - t0 > timeout:
                log.seek(0)
                raise RuntimeError(f"streamlit did not start:\n{log.read().decode()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True,
                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def run_demo(page, url: str, timeout_ms: float = 300_000) -> float:
    """Open Home, click the demo button, wait for both demo figures; return seconds from click to figures."""
    from playwright.sync_api import expect

    page.goto(url + "/")
    page.wait_for_selector('[data-testid="stApp"]')
    button = page.get_by_role("button", name="Run the demo")
    expect(button).to_be_visible(timeout=60_000)
    t0 = time.time()
    button.click()
    expect(page.get_by_text("Loss vs learning rate, per rule").first).to_be_visible(timeout=timeout_ms)
    expect(page.get_by_text("σ_top vs width").first).to_be_visible(timeout=60_000)
    return time.time() - t0


def rerun_times_while_demo_trains(page, url: str, n_flips: int = 6) -> list[float]:
    """Seconds from each widget click to the page's answer while Home's demo trains: the demo button is clicked,
    then the Train page's Model radio is flipped ``n_flips`` times, each flip timed until the page shows (or stops
    showing) the Transformer's corpus choice (expect's 30 s timeout fails a flip that never answers)."""
    from playwright.sync_api import expect

    page.goto(url + "/")
    button = page.get_by_role("button", name="Run the demo")
    expect(button).to_be_visible(timeout=60_000)
    button.click()
    expect(page.get_by_text("training width").first).to_be_visible(timeout=60_000)
    page.goto(url + "/train")
    expect(page.get_by_role("heading", name="Train a study")).to_be_visible(timeout=60_000)
    corpus = page.get_by_text("Corpus", exact=True)
    times = []
    for k in range(n_flips):
        choice, shown = (("transformer", True), ("synthetic", False))[k % 2]
        t0 = time.perf_counter()
        page.get_by_text(choice, exact=True).first.click()
        (expect(corpus).to_be_visible if shown else expect(corpus).to_be_hidden)(timeout=30_000)
        times.append(time.perf_counter() - t0)
    return times


def demo_still_training(root) -> bool:
    """True while the demo is still training: its last ensemble (the widest width) is not stored yet."""
    from wdscale.models.presets import PRESETS
    from wdscale.training.store import RunStore

    if not (Path(root) / "index.sqlite").exists():
        return True
    return not any(r["width"] == max(PRESETS["synthetic"]["widths"]) for r in RunStore(root).records())


def wait_idle(page, settle: float = 1.5) -> None:
    """Wait for the page's title, then for its script run to end (the first run imports torch: slow)."""
    page.wait_for_selector('[data-testid="stApp"]')
    page.wait_for_selector("h1", timeout=120_000)
    with contextlib.suppress(Exception):
        page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=120_000)
    time.sleep(settle)  # plotly draws after the script finishes


def tour_steps(page, url: str, out: Path | None = None, present: bool = False,
               n_steps: int | None = None) -> list[int]:
    """Walk the Tour from step 1 with its Next button; per step wait for the heading and a drawn figure (an SVG
    inside the plotly chart), optionally save docs/screenshots/tour_step<N>[_present].png.  Returns the steps
    whose page showed an exception (empty when all is well)."""
    from playwright.sync_api import expect

    from wdscale.show.tour import N_STEPS

    n_steps = n_steps or N_STEPS
    page.goto(f"{url}/tour?step=1" + ("&present=1" if present else ""))
    bad = []
    for n in range(1, n_steps + 1):
        expect(page.get_by_role("heading", name=re.compile(rf"^{n}\. "))).to_be_visible(timeout=120_000)
        expect(page.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible(timeout=60_000)
        wait_idle(page, 1.0)
        if page.locator('[data-testid="stException"]').count():
            bad.append(n)
        if out is not None:
            page.screenshot(path=str(Path(out) / f"tour_step{n}{'_present' if present else ''}.png"), full_page=True)
        if n < n_steps:
            page.get_by_role("button", name="Next →").click()
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="data dir (default: a fresh temporary one)")
    ap.add_argument("--demo-steps", default=None, help="WDSCALE_DEMO_STEPS for a quicker demo")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--pages", default=None, help=f"comma-separated, of {', '.join(PAGES)} (default: all, and the Tour)")
    ap.add_argument("--no-demo", action="store_true", help="do not run the demo first (Home as a fresh store shows it)")
    args = ap.parse_args(argv)
    pages = PAGES if not args.pages else {n: PAGES[n] for n in args.pages.split(",")}
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT))
    from wdscale.show.jobs import demo_configs

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = args.data or tempfile.mkdtemp(prefix="wdscale-shots-")
    env = {"WDSCALE_DEMO_STEPS": args.demo_steps} if args.demo_steps else {}
    with streamlit_server(data, env) as url, sync_playwright() as p:
        browser = launch(p)
        # tall viewport: Streamlit scrolls inside its own container, so full_page alone captures one screen
        page = browser.new_page(viewport={"width": 1440, "height": 2400})
        page.goto(url + "/")
        wait_idle(page)
        if not args.no_demo and page.get_by_role("button", name="Run the demo").count():
            print(f"demo: {len(demo_configs())} runs, {demo_configs()[0].steps} steps")
            secs = run_demo(page, url)
            print(f"demo: {secs:.1f} s from click to figures")
        for name, path in pages.items():
            page.goto(f"{url}/{path}")
            wait_idle(page, 3.0)
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            print("saved", out / f"{name}.png")
            if name == "home":  # the README's first screen: the top of Home at a laptop's width
                page.set_viewport_size({"width": 1440, "height": 1200})
                wait_idle(page, 2.0)
                page.screenshot(path=str(out / "home_top.png"))
                page.set_viewport_size({"width": 1440, "height": 2400})
                print("saved", out / "home_top.png")
        for present in (False, True) if pages is PAGES else ():
            tour_steps(page, url, out, present)
            print("saved the tour's steps", "(presenter mode)" if present else "")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
