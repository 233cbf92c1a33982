"""End to end in headless Chromium, at a desktop width (1280 px) and a phone width (400 px): every tab, an
invalid upload after clicking an example, and the layout checks that failed on a phone (verdict far below its
button, cut result tiles, the Model tab's squeezed table, plot titles under the modebar, labels under their
toolbars, table columns cut off, captions over the result pictures, legends squashing their plots).

Needs the Debian chromium package (/usr/bin/chromium); skipped without it. With REID_SCREENSHOTS=1 it also
saves docs/screenshots/{compare,search,videos,curves,model}-{1280,400}.png (synthetic people only). It uses
$REID_WEIGHTS when that file exists (real screenshots), else the tiny test model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import box_detector, make_clip, make_tiny_weights, serve, write_log

import app
from space.curves import SHIPPED_LOG
from space.search import MIN_ADAPT_IMAGES, RESULT_COLUMNS

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PEOPLE = sorted(app.EXAMPLES_DIR.glob("*.png"))
TIMEOUT_MS = 60_000  # two busy CPU cores: model calls and first paints can be slow
WIDTHS = (1280, 400)

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
              pytest.mark.skipif(len(PEOPLE) < 6, reason="run examples/make_examples.py first")]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def url(root: Path) -> Iterator[str]:
    env_weights = Path(os.environ.get("REID_WEIGHTS", "")) if os.environ.get("REID_WEIGHTS") else None
    if env_weights and env_weights.exists():
        weights = env_weights
    else:
        weights = make_tiny_weights(root / "weights" / "model.safetensors")
        write_log(weights.with_name("train_log.csv"), epochs=8, eval_every=99)  # no evaluation, as the shipped
    write_log(root / "runs" / "demo_run" / "log.csv", epochs=12, eval_every=3)
    with serve(app.Settings(weights, root / "store", root / "runs")) as (local_url, demo):
        demo.reid_app.videos._detector = box_detector  # the synthetic clips' people, boxed at once
        yield local_url


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                     "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture(scope="module", params=WIDTHS, ids=lambda w: f"{w}px")
def page(request: pytest.FixtureRequest, browser: sync_api.Browser, url: str) -> Iterator[sync_api.Page]:
    pg = browser.new_page(viewport={"width": request.param, "height": 900})
    pg.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    pg.goto(url)
    yield pg
    pg.close()


def width(page: sync_api.Page) -> int:
    return page.viewport_size["width"]


def shot(page: sync_api.Page, name: str) -> None:
    if os.environ.get("REID_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        for close in page.locator(".toast-close").all():  # an earlier step's toast is not part of this picture
            close.click()
        page.wait_for_timeout(800)  # let images and plots finish painting
        page.screenshot(path=str(SHOTS / f"{name}-{width(page)}.png"), full_page=True)


def by_name(name: str) -> str:
    return str(next(p for p in PEOPLE if p.name == name))


def open_tab(page: sync_api.Page, name: str, ready: str) -> None:
    """Click a tab and wait until its content (the `ready` selector) is on screen: tabs mount lazily."""
    page.get_by_role("tab", name=name).click()
    expect(page.locator(ready)).to_be_visible()


def example(page: sync_api.Page, elem_id: str, k: int = 0) -> None:
    """Click the k-th example of a gr.Examples block (a table row, or a tile when it has one input)."""
    page.locator(f"#{elem_id}").locator(".tr-body, .gallery-item").nth(k).click()


def box(page: sync_api.Page, selector: str) -> dict[str, float]:
    b = page.locator(selector).first.bounding_box()
    assert b is not None, selector
    return b


def no_overflow(page: sync_api.Page, selector: str) -> None:
    """Nothing inside `selector` wider than the viewport (a phone would have to scroll sideways)."""
    widest = page.evaluate(f"""() => Math.max(...[...document.querySelectorAll('{selector} *')]
                                   .map(e => e.getBoundingClientRect().right))""")
    assert widest <= width(page) + 1, (selector, widest)


def apart(a: dict[str, float], b: dict[str, float]) -> bool:
    """Two boxes that do not overlap (1 px of slack)."""
    return (a["x"] + a["width"] <= b["x"] + 1 or b["x"] + b["width"] <= a["x"] + 1
            or a["y"] + a["height"] <= b["y"] + 1 or b["y"] + b["height"] <= a["y"] + 1)


def labels_clear(page: sync_api.Page) -> None:
    """No component's label under its own toolbar buttons, upload icon or status badge (at 400 px the heat map's
    toolbar covered its label, the log upload's icon hid under its label)."""
    hits = page.evaluate("""() => {
        const box = e => e.getBoundingClientRect();
        const hit = (a, b) => a.width > 0 && b.width > 0 && a.left < b.right - 1 && b.left < a.right - 1
                              && a.top < b.bottom - 1 && b.top < a.bottom - 1;
        const out = [];
        for (const label of document.querySelectorAll('[data-testid=block-label], [data-testid=block-info]')) {
            const block = label.closest('.block');
            for (const other of block ? block.querySelectorAll('.icon-button, .icon-wrap, .error') : []) {
                if (!label.contains(other) && hit(box(label), box(other)))
                    out.push(label.textContent.trim() + ' / ' + (other.getAttribute('aria-label') || other.className));
            }
        }
        return out;
    }""")
    assert hits == []


def plot_areas_at_least(page: sync_api.Page, px: float) -> None:
    """Every plot's drawing area keeps its height, whatever its legend (8 entries left ~50 px on a phone)."""
    for plot in page.locator(".js-plotly-plot").all():
        area = plot.locator(".nsewdrag").first.bounding_box()
        assert area and area["height"] >= px, area


def plot_titles_clear_of_modebar(page: sync_api.Page) -> None:
    for plot in page.locator(".js-plotly-plot").all():
        title, bar = plot.locator(".gtitle"), plot.locator(".modebar")
        if title.count() and bar.count():
            t, m = title.first.bounding_box(), bar.first.bounding_box()
            if t and m and m["width"] > 0:
                apart = (t["x"] + t["width"] <= m["x"] or m["x"] + m["width"] <= t["x"]
                         or t["y"] + t["height"] <= m["y"] or m["y"] + m["height"] <= t["y"])
                assert apart, (t, m)


def header_cells_visible(page: sync_api.Page, selector: str, headers: list[str]) -> None:
    """Every header cell of the table inside the table's visible box, its text not cut (at 400 px 'cosine' was
    cut and 'match' scrolled out of sight)."""
    cells = page.evaluate(f"""() => {{
        const block = document.querySelector('{selector}').getBoundingClientRect();
        return [...document.querySelectorAll('{selector} thead th')].map(th => {{
            const r = th.getBoundingClientRect();
            return [th.innerText.trim(), r.left - block.left, block.right - r.right, th.scrollWidth - th.clientWidth];
        }});
    }}""")
    assert [c[0] for c in cells] == headers, cells
    assert all(left >= -1 and right >= -1 and cut <= 1 for _, left, right, cut in cells), cells


def empty_scores(page: sync_api.Page) -> None:
    """The score and cosine fields say nothing before a comparison (a "0" read like a result)."""
    for field in ("#score :is(input, textarea)", "#cosine :is(input, textarea)"):
        expect(page.locator(field)).to_have_value("")
        expect(page.locator(field)).to_have_attribute("placeholder", "—")


@pytest.mark.slow
def test_compare(page: sync_api.Page, root: Path) -> None:
    expect(page.locator("#img-a")).to_be_visible()
    empty_scores(page)
    page.locator("#img-a input[type=file]").set_input_files(by_name("person-A_c1.png"))
    page.locator("#img-b input[type=file]").set_input_files(by_name("person-A_c2.png"))
    expect(page.locator("#img-b img")).to_be_visible()
    page.locator("#compare-btn").click()
    verdict = page.locator("#verdict textarea")
    expect(verdict).to_have_value(re.compile(r"^(Same person|Different people): pair score \d\.\d{3} [≥<] threshold "))
    expect(page.locator("#score :is(input, textarea)")).to_have_value(re.compile(r"^\d\.\d+$"))
    text = verdict.input_value()
    prob, threshold = (float(x) for x in re.findall(r"(\d\.\d{3})", text)[:2])
    assert text.startswith("Same person") == (prob >= threshold)
    expect(page.locator("#parts img")).to_be_visible()
    gap = box(page, "#verdict")["y"] - (box(page, "#compare-btn")["y"] + box(page, "#compare-btn")["height"])
    assert gap < 150, gap  # the verdict right under (or beside) its button, at any width
    no_overflow(page, "#verdict")
    labels_clear(page)
    shot(page, "compare")

    # an example, then an upload that is no image: the handler's one-line error, not Gradio's preprocess error
    example(page, "compare-examples", 1)  # person-A_c1 and person-B_c1
    expect(page.locator("#img-b img")).to_have_attribute("src", re.compile("person-B_c1"))  # the example landed
    bogus = root / "not_an_image.jpg"
    bogus.write_text("this is not a picture")
    page.locator("#img-a input[type=file]").set_input_files(str(bogus))
    note_a, note_b = page.locator("#note-a"), page.locator("#note-b")
    expect(note_a).to_contain_text("not_an_image.jpg: not a readable image")  # said beside its input, at once
    expect(page.locator("#img-a img")).to_have_count(0)  # and the file removed: no broken picture
    expect(verdict).to_have_value("")  # new input: the old verdict is gone
    empty_scores(page)  # and its numbers
    a, note = box(page, "#img-a"), box(page, "#note-a")
    assert a["x"] - 1 <= note["x"] and note["x"] + note["width"] <= a["x"] + a["width"] + 1, (a, note)  # its column
    assert 0 <= note["y"] - (a["y"] + a["height"]) < 40, (a, note)  # right under it
    page.locator("#img-b button[aria-label='Remove Image']").click()
    expect(page.locator("#img-b img")).to_have_count(0)
    page.locator("#compare-btn").click()
    expect(note_b).to_have_text("⚠️ Upload an image of Person B.")  # Compare answered, in the notes
    expect(note_a).to_contain_text("not_an_image.jpg: not a readable image")  # the reason stays
    expect(page.locator(".toast-body")).to_have_count(0)  # no toast that closes by itself
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)  # no bare "Error" badges on the outputs
    expect(verdict).to_have_value("")
    labels_clear(page)
    page.locator("#img-a input[type=file]").set_input_files(by_name("person-A_c1.png"))
    expect(note_a).to_have_text("")  # the input changed: its note goes


@pytest.mark.slow
def test_gallery_and_search(page: sync_api.Page, root: Path) -> None:
    open_tab(page, "Search", "#gallery-files")
    expect(page.locator("#gallery-status")).to_contain_text("Your private gallery")
    assert "/" not in page.locator("#gallery-status").inner_text()  # no server path on the page
    page.locator("#gallery-files input[type=file]").set_input_files([str(p) for p in PEOPLE])
    expect(page.locator("#gallery-files tr.file")).to_have_count(len(PEOPLE))  # uploads finished
    page.locator("#add-btn").click()
    expect(page.locator("#gallery-status")).to_contain_text(f"Added {len(PEOPLE)} images")
    example(page, "search-examples")  # example query person-A_c1
    expect(page.locator("#query img")).to_be_visible()
    page.locator("#search-btn").click()
    expect(page.locator("#search-summary")).to_contain_text("AP =")
    tiles = page.locator("#results img")
    expect(tiles).to_have_count(10)
    expect(page.locator("#results")).to_contain_text("✓ #1 1.000")  # its own copy, first, cosine 1
    grid = box(page, "#results")
    for k in range(tiles.count()):  # every tile whole, inside the grid (not cut at the right edge)
        t = tiles.nth(k).bounding_box()
        assert t and t["x"] >= grid["x"] - 1 and t["x"] + t["width"] <= grid["x"] + grid["width"] + 1, (k, t)
    captions = page.evaluate("""() => [...document.querySelectorAll('#results .caption-label')]
                                 .filter(e => e.scrollWidth > e.clientWidth + 1).length""")
    assert captions == 0  # no "#2 0.…"
    label = page.locator("#results label")
    assert label.count() == 0 or not label.first.is_visible()  # no label over the first row's heads
    captions, bottom = page.locator("#results .caption-label"), 0.0
    for k in range(tiles.count()):  # big enough to see, the rank and score under the picture, not over it
        t, c = tiles.nth(k).bounding_box(), captions.nth(k).bounding_box()
        assert t and c and t["width"] >= 88 and t["height"] >= 1.8 * t["width"], (k, t)
        assert c["y"] >= t["y"] + t["height"] - 1, (k, t, c)
        bottom = max(bottom, c["y"] + c["height"])
    assert grid["y"] + grid["height"] - bottom < 48, (grid, bottom)  # no empty area under the tiles
    expect(page.locator("#results button[aria-label*='Download']")).to_have_count(0)  # no icon over a tile
    header_cells_visible(page, "#results-table", RESULT_COLUMNS)
    expect(page.locator("#results-table [role=grid]")).to_have_attribute("aria-rowcount", "11")  # header + 10
    viewport = box(page, "#results-table .virtual-table-viewport")
    assert page.evaluate("""() => { const v = document.querySelector('#results-table .virtual-table-viewport');
                                    return v.scrollHeight <= v.clientHeight + 2; }"""), viewport
    inner = page.evaluate("""() => [...document.querySelectorAll('#results-table *')]
                             .filter(e => e.scrollHeight > e.clientHeight + 2 && e.clientHeight > 0
                                          && getComputedStyle(e).overflowY !== 'visible').length""")
    assert inner == 0  # all ten rows on the page, none in an inner scroll box
    no_overflow(page, "#results")
    labels_clear(page)
    shot(page, "search")

    # Adapt with fewer crops than it needs: the page said how many; the refusal sits beside the button, and the
    # status, summary, tiles and table stay as they were, with no error badge
    expect(page.locator("#adapt-help")).to_contain_text(f"at least {MIN_ADAPT_IMAGES}")
    if len(PEOPLE) < MIN_ADAPT_IMAGES:
        summary = page.locator("#search-summary").inner_text()
        page.locator("#adapt-btn").click()
        expect(page.locator("#adapt-note")).to_contain_text(f"Add at least {MIN_ADAPT_IMAGES} crops")
        expect(page.locator("#search-summary")).to_have_text(summary)
        expect(tiles).to_have_count(10)
        expect(page.get_by_text("Error", exact=True)).to_have_count(0)
        expect(page.locator(".toast-body")).to_have_count(0)
        note, button = box(page, "#adapt-note"), box(page, "#adapt-btn")
        assert 0 <= note["y"] - (button["y"] + button["height"]) < 160, (button, note)  # beside (under) its button

    # the example people again: one line says they are all there already
    page.locator("#add-examples-btn").click()
    status = page.locator("#gallery-status")
    expect(status).to_contain_text("Added 0 images")
    expect(status).to_contain_text(f"{len(PEOPLE)} files: already in the gallery")
    assert status.inner_text().count("already in the gallery") == 1

    # an unreadable query: removed as it lands, its note stays (as Compare's inputs)
    bogus = root / f"broken_query_{width(page)}.jpg"
    bogus.write_text("this is not a picture")
    page.locator("#query input[type=file]").set_input_files(str(bogus))
    note = page.locator("#query-note")
    expect(note).to_contain_text(f"{bogus.name}: not a readable image")
    expect(page.locator("#query img")).to_have_count(0)
    expect(page.locator("#search-summary")).to_have_text("")  # the results of the old query went with it
    page.locator("#search-btn").click()
    expect(note).to_contain_text(f"{bogus.name}: not a readable image")  # the reason stays
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    labels_clear(page)


@pytest.mark.slow
def test_videos(page: sync_api.Page, root: Path) -> None:
    """Two clips of one (synthetic) person: Find people shows one tile seen in both cameras; a click on it says
    where and when it appears, with a tile per appearance; Self-train refuses too few crops beside its button."""
    open_tab(page, "Videos", "#video-files")
    clips = [make_clip(root / f"{cam}_{width(page)}.mp4") for cam in ("hall", "door")]
    page.locator("#video-files input[type=file]").set_input_files([str(c) for c in clips])
    expect(page.locator("#video-files tr.file")).to_have_count(2)  # uploads finished
    page.locator("#find-people-btn").click()
    summary = page.locator("#video-summary")
    expect(summary).to_contain_text("1 person found, 1 of them in more than one camera")
    expect(summary).to_contain_text(f"hall_{width(page)}: 16 frames, 1 person tracked")
    tiles = page.locator("#video-people img")
    expect(tiles).to_have_count(1)
    expect(page.locator("#video-people")).to_contain_text(f"door_{width(page)}, hall_{width(page)}")
    assert "/" not in summary.inner_text()  # no server path on the page
    tiles.first.click()
    expect(page.locator("#video-where")).to_contain_text("appears 2 time(s)")
    expect(page.locator("#video-seen img")).to_have_count(2)
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    no_overflow(page, "#video-people")
    no_overflow(page, "#video-seen")
    labels_clear(page)
    shot(page, "videos")
    # the self-training panel: too few crops is said beside its button; back to the shared model regroups
    page.locator("#video-self-train-btn").click()
    expect(page.locator("#video-self-train-note")).to_contain_text(
        "Self-training needs at least 100 crops (your videos' 2 tracklets give 16)")
    page.locator("#video-shared-model-btn").click()
    expect(page.locator("#video-where")).to_have_text("")  # appearances found before went
    expect(summary).to_contain_text("1 person found, 1 of them in more than one camera")
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)


@pytest.mark.slow
def test_training_curves(page: sync_api.Page, root: Path) -> None:
    open_tab(page, "Training curves", "#curves-status")
    expect(page.locator("#curves-status")).to_contain_text("Showing 1 of 1 log(s).")
    plots = page.locator(".js-plotly-plot")
    expect(plots).to_have_count(4)
    expect(page.locator(".js-plotly-plot .legendtext", has_text="rank1")).to_have_count(1)
    plot_titles_clear_of_modebar(page)
    plot_areas_at_least(page, 150)
    labels_clear(page)
    page.locator("#runs input").click()
    page.get_by_role("option", name=SHIPPED_LOG).click()  # the weights' own log is offered; and a second run
    page.keyboard.press("Escape")
    status = page.locator("#curves-status")
    expect(status).to_contain_text("Showing 2 of 2 log(s).")
    # trained without periodic evaluation: the figures recorded with the weights, as the Model tab states them
    expect(status).to_contain_text(re.compile(r"Shipped weights at epoch \d+: Rank-1 \d+\.\d %, mAP \d+\.\d %"))
    expect(page.locator(".js-plotly-plot .legendtext", has_text=SHIPPED_LOG)).to_have_count(4)  # one a panel
    plot_titles_clear_of_modebar(page)
    plot_areas_at_least(page, 140)
    labels_clear(page)
    shot(page, "curves")

    write_log(root / "runs" / f"later_run_{width(page)}" / "log.csv", epochs=2)  # started after page load
    page.locator("#refresh-btn").click()
    page.locator("#runs input").click()
    expect(page.get_by_role("option", name=f"later_run_{width(page)}")).to_be_visible()
    page.keyboard.press("Escape")
    page.locator("#auto-refresh input").check()
    expect(page.locator("#auto-refresh input")).to_be_checked()


@pytest.mark.slow
def test_model_tab(page: sync_api.Page) -> None:
    open_tab(page, "Model", "#model-info")
    info = page.locator("#model-info")
    expect(info).to_contain_text("Backbone")
    expect(info).to_contain_text("Same-person threshold (pair score) with test-time flip")
    expect(page.locator("#model-scores")).to_contain_text("pair score")  # one vocabulary: a score, as the verdict says
    expect(page.locator("#model-scores")).not_to_contain_text("probability")
    text = info.inner_text()
    assert "train_command" not in text and "mAP_official" not in text and "/" not in text.split("Weights")[1][:40]
    expect(page.locator("#model-roc .js-plotly-plot")).to_be_visible()
    expect(page.locator("#model-cmc .js-plotly-plot")).to_be_visible()
    expect(page.locator("#model-scores .js-plotly-plot")).to_be_visible()
    no_overflow(page, "#model-info")
    plot_titles_clear_of_modebar(page)
    labels_clear(page)
    shot(page, "model")
