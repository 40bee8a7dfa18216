"""Real browser: a model file of $WDSCALE_MODELS (a copy of examples/nanogpt.py) is loaded on the Train page (its
classes table and measured ETA), trained as a tiny study with live progress, and its spectra are drawn on the
Spectra page under the file's own parameter names."""
import shutil

import pytest

from _browser import ROOT, shots  # noqa: E402  (skips the module without a browser)

pytestmark = pytest.mark.browser


def fill(page, label: str, value: str) -> None:
    """Type into a Streamlit text or number input and commit it (Enter), as a user does."""
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    page.wait_for_timeout(400)  # the rerun it starts


def open_model_file(page, url: str, widths="32,64", steps="3", lrs="0.01,0.02", wds="0.1") -> None:
    from playwright.sync_api import expect

    page.goto(url + "/train")
    expect(page.get_by_role("heading", name="Train a study")).to_be_visible(timeout=60_000)
    page.get_by_text("Your model file", exact=True).click()
    expect(page.get_by_text("Model file", exact=True).first).to_be_visible(timeout=30_000)
    fill(page, "Widths d (comma list; the smallest is the proxy d₀)", widths)
    fill(page, "Steps", steps)
    fill(page, "Proxy grid: lrs η₀ (comma list)", lrs)
    fill(page, "Proxy grid: weight decays λ₀ (torch weight_decay, comma list)", wds)


def test_model_file_study_trains_and_its_spectra_show(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "nanogpt.py", folder / "nanogpt.py")
    env = {"WDSCALE_MODELS": str(folder), "WDSCALE_CACHE": str(tmp_path / "cache"), "WDSCALE_TORCH_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    with shots.streamlit_server(tmp_path / "runs", env) as url, sync_playwright() as p:
        browser = shots.launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        open_model_file(page, url)
        load = page.get_by_role("button", name="Load nanogpt.py")
        expect(load).to_be_visible(timeout=30_000)
        expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(0)  # listed, not imported
        load.click()

        # before training: settings and the classes table, the ETA measured here
        expect(page.get_by_text("ETA ≈").first).to_be_visible(timeout=90_000)
        expect(page.get_by_text("measured here", exact=False).first).to_be_visible()
        expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(2)
        expect(page.get_by_text("Classes", exact=False).first).to_be_visible()
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        expect(page.locator('[data-testid="stAlertContentError"]')).to_have_count(0)

        page.get_by_role("button", name="Train", exact=True).click()
        expect(page.get_by_text("training width", exact=False).first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("done:", exact=False).first).to_be_visible(timeout=150_000)
        expect(page.get_by_text("proxy d0=32", exact=False).first).to_be_visible(timeout=30_000)  # the summary
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)

        # the Spectra page, through the page link (the same session), under the file's own names
        page.get_by_text("Spectra: this study's matrices", exact=False).click()
        expect(page.get_by_text("Final spectrum of blocks.0.c_attn.weight").first).to_be_visible(timeout=60_000)
        expect(page.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible(timeout=30_000)
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        browser.close()
