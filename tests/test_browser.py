"""End to end in headless Chromium: compare two crops, build a gallery and search it, see training curves.

Needs the Debian chromium package (/usr/bin/chromium); skipped without it. With REID_SCREENSHOTS=1 it also
saves docs/screenshots/{compare,search,curves,model}.png (synthetic people only). It uses $REID_WEIGHTS when
that file exists (real screenshots), else the tiny test model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_app import make_tiny_weights, serve
from test_plots import write_log

import app

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PEOPLE = sorted(app.EXAMPLES_DIR.glob("*.png"))
TIMEOUT_MS = 60_000  # two busy CPU cores: model calls and first paints can be slow

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
              pytest.mark.skipif(len(PEOPLE) < 6, reason="run examples/make_examples.py first")]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def url(root: Path) -> Iterator[str]:
    env_weights = Path(os.environ.get("REID_WEIGHTS", "")) if os.environ.get("REID_WEIGHTS") else None
    weights = env_weights if env_weights and env_weights.exists() else make_tiny_weights(root / "model.safetensors")
    write_log(root / "runs" / "demo_run" / "log.csv", epochs=12, eval_every=3)
    with serve(app.Settings(weights, root / "store", root / "runs")) as (local_url, _):
        yield local_url


@pytest.fixture(scope="module")
def page(url: str) -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--disable-sync"])
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        pg.goto(url)
        yield pg
        browser.close()


def shot(page: sync_api.Page, name: str) -> None:
    if os.environ.get("REID_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(500)  # let images and plots finish painting
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def by_name(name: str) -> str:
    return str(next(p for p in PEOPLE if p.name == name))


def open_tab(page: sync_api.Page, name: str, ready: str) -> None:
    """Click a tab and wait until its content (the `ready` selector) is on screen: tabs mount lazily."""
    page.get_by_role("tab", name=name).click()
    expect(page.locator(ready)).to_be_visible()


def test_compare(page: sync_api.Page) -> None:
    expect(page.locator("#img-a")).to_be_visible()
    page.locator("#img-a input[type=file]").set_input_files(by_name("0001_c1s1_000001_00.png"))
    page.locator("#img-b input[type=file]").set_input_files(by_name("0001_c2s1_000002_00.png"))
    expect(page.locator("#img-b img")).to_be_visible()
    page.locator("#compare-btn").click()
    verdict = page.locator("#verdict textarea")
    expect(verdict).to_have_value(re.compile(r"^(Same person|Different people): probability \d+\.\d% [≥<] "))
    text = verdict.input_value()
    prob, threshold = (float(x) for x in re.findall(r"(\d+\.\d)%", text))
    assert text.startswith("Same person") == (prob >= threshold)
    expect(page.locator("#heat img")).to_be_visible()
    shot(page, "compare")


def test_gallery_and_search(page: sync_api.Page) -> None:
    open_tab(page, "Search", "#gallery-files")
    page.locator("#gallery-files input[type=file]").set_input_files([str(p) for p in PEOPLE])
    expect(page.locator("#gallery-files tr.file")).to_have_count(len(PEOPLE))  # uploads finished
    page.locator("#add-btn").click()
    expect(page.locator("#gallery-status")).to_contain_text(f"Added {len(PEOPLE)} images")
    query = by_name("0001_c1s1_000001_00.png")
    page.locator("#query input[type=file]").set_input_files(query)
    expect(page.locator("#query img")).to_be_visible()
    page.locator("#search-btn").click()
    expect(page.locator("#search-summary")).to_contain_text("AP =")
    expect(page.locator("#results img")).to_have_count(10)
    expect(page.locator("#results")).to_contain_text("✓ #1 1.000")  # its own copy, first, cosine 1
    shot(page, "search")


def test_training_curves(page: sync_api.Page, root: Path) -> None:
    open_tab(page, "Training curves", "#curves-status")
    expect(page.locator("#curves-status")).to_contain_text("Showing 1 of 1 log(s).")
    plots = page.locator(".js-plotly-plot")
    expect(plots).to_have_count(4)
    expect(page.locator(".js-plotly-plot .legendtext", has_text="rank1")).to_have_count(1)
    shot(page, "curves")

    write_log(root / "runs" / "later_run" / "log.csv", epochs=2)  # a run started after the page loaded
    page.locator("#refresh-btn").click()
    page.locator("#runs input").click()
    expect(page.get_by_role("option", name="later_run")).to_be_visible()
    page.keyboard.press("Escape")
    page.locator("#auto-refresh input").check()
    expect(page.locator("#auto-refresh input")).to_be_checked()
    expect(page.locator(".toast-body")).to_have_count(0)  # no error from toggling the timer


def test_model_tab(page: sync_api.Page) -> None:
    open_tab(page, "Model", "#model-info")
    info = page.locator("#model-info")
    expect(info).to_contain_text("Backbone")
    expect(info).to_contain_text("Same-person threshold")
    shot(page, "model")
