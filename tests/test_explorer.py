"""The HTML explorer (issue 15), driven in a real headless browser (Playwright with the system Chromium): switch
class and method, and check that the page shows the right map; hover a cell and read its value."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from caap import methods
from caap.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs Debian's chromium)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``caap explore`` on two images with three methods and the top-3 classes of a tiny test ViT."""
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("explore")
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    weights = root / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(root / name)
    out = root / "out"
    assert main(["explore", str(root / "a.png"), str(root / "b.png"),
                "--model", "test_vit", "--weights", str(weights), "--methods", "caap:layers=2:4,gae,saliency",
                "--top-k", "3", "--out", str(out)]) == 0
    return model, weights, root, out / "explore.html"


@contextlib.contextmanager
def opened(page_path: Path):
    """The page in headless Chromium (Playwright), closed on exit."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(page_path.as_uri())
            yield page
        finally:
            browser.close()


def expected_map(model, weights, root: Path, image: str, spec: str, cls: int) -> np.ndarray:
    from caap.bench.explain import load_model
    from caap.data.images import load_image
    from caap.viz.explorer import page_maps

    loaded = load_model("test_vit", str(weights))
    x = loaded.transform(load_image(root / image))[None]
    att = methods.build(spec, loaded.model, normalization=loaded.normalization).explain(x, target=cls)
    return page_maps(att.scores)[0].ravel()


def test_the_page_is_self_contained(run):
    html = run[3].read_text()
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert html.count("data:image/png;base64,") == 1 and '"png": "' in html  # the images travel inside


@needs_browser
def test_switching_class_and_method_shows_the_right_map(run):
    model, weights, root, page_path = run
    with opened(page_path) as page:
        first = page.evaluate("window.caapShown()")
        assert first["method"] == "caap:layers=2:4"
        page.select_option("#cls", "2")  # the third class
        page.select_option("#method", "gae")
        shown = page.evaluate("window.caapShown()")
        assert shown["method"] == "gae" and shown["cls"] != first["cls"]
        assert page.get_attribute("#overlay", "data-method") == "gae"
        assert page.get_attribute("#overlay", "data-cls") == str(shown["cls"])
        expected = expected_map(model, weights, root, "a.png", "gae", shown["cls"])
        np.testing.assert_allclose(shown["values"], expected, rtol=1e-5, atol=1e-6)
        assert not np.allclose(shown["values"], first["values"])
        # the canvas really shows it: one pixel per patch, opacity from |value|
        alpha = page.evaluate("""() => { const c = document.getElementById('overlay');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)
                        .filter((_, i) => i % 4 === 3); }""")
        assert len(alpha) == expected.size and np.argmax(alpha) == np.argmax(np.abs(expected))
        # hover the centre of patch (row 1, col 2) of the 10 x 10 grid
        box = page.locator("#overlay").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 2.5 / 10, box["y"] + box["height"] * 1.5 / 10)
        assert float(page.get_attribute("#value", "data-value")) == pytest.approx(expected[1 * 10 + 2], rel=1e-5)
        page.select_option("#image", "1")  # the second image, same method and class slot
        other = page.evaluate("window.caapShown()")
        assert other["method"] == "gae" and not np.allclose(other["values"], shown["values"])


def test_explain_writes_the_page_with_html(run, tmp_path, capsys):
    _, weights, root, _ = run
    assert main(["explain", str(root / "a.png"), "--model", "test_vit", "--weights", str(weights), "--method", "gae",
                 "--top-k", "2", "--html", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "explore.html").read_text()
    assert '"gae"' in html and html.count('"index"') == 2


HOSTILE = "x<!--<script>y&z\u2028w\u2029.png"  # no "/": a file name


def shown_names(page_path: Path) -> dict:
    """The page in headless Chromium: whether its script ran, and the image and class names it lists."""
    with opened(page_path) as page:
        ran = page.evaluate("typeof window.caapShown === 'function'")
        images = page.evaluate("Array.from(document.querySelectorAll('#image option')).map(o => o.textContent)")
        classes = page.evaluate("Array.from(document.querySelectorAll('#cls option')).map(o => o.textContent)")
        return {"ran": ran, "images": images, "classes": classes}


@needs_browser
def test_hostile_file_and_class_names_neither_blank_nor_break_the_page(run, tmp_path):
    """issue 28: a file or class name with ``<!--<script`` used to leave the page blank (the data block escaped
    ``</`` only, so the browser never ran the page's script). Names now travel as \\uXXXX escapes."""
    from caap.viz.explorer import PageImage, PageMethod, explorer_html

    png = (run[2] / "a.png").read_bytes()
    page = tmp_path / "unit.html"
    page.write_text(explorer_html([PageImage(HOSTILE, png, [(0, "cat<!--<script>", 0.6), (1, "</script>dog", 0.4)],
                                             {"m": PageMethod(np.ones((2, 2, 2)), True)})]))
    assert "<!--" not in page.read_text().split('id="caap-data">', 1)[1].split("</script>", 1)[0]
    seen = shown_names(page)
    assert seen["ran"] and any(HOSTILE in name for name in seen["images"])
    assert any("cat<!--<script>" in c for c in seen["classes"]) and any("</script>dog" in c for c in seen["classes"])
    _, weights, root, _ = run
    hostile = tmp_path / HOSTILE
    hostile.write_bytes((root / "a.png").read_bytes())
    assert main(["explain", str(hostile), "--model", "test_vit", "--weights", str(weights), "--method", "gae",
                 "--html", "--out", str(tmp_path / "out")]) == 0
    seen = shown_names(tmp_path / "out" / "explore.html")
    assert seen["ran"] and any(HOSTILE.rsplit(".", 1)[0] in name for name in seen["images"])


SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "explore.png"
VIEWPORT = {"width": 760, "height": 610}


@needs_browser
def test_the_docs_screenshot_is_this_pages(tmp_path):
    """docs/figures/explore.png is taken here: ``caap explore`` on two glyph images of the embedded demo model
    (offline), exact and fast CAAP, LeGrad and GAE, the second method shown, in headless Chromium at a fixed
    viewport. The shot must show the page (not blank: many colours); the stored one must be a shot of this page at
    this viewport. ``CAAP_WRITE_SCREENSHOT=1 pytest tests/test_explorer.py -k screenshot`` writes it."""
    import os

    from caap.data.synthetic import SyntheticConfig, generate

    paths = []
    for i in (1, 6):
        paths.append(tmp_path / f"glyph{i}.png")
        Image.fromarray(generate(SyntheticConfig(), i).image).save(paths[-1])
    out = tmp_path / "out"
    assert main(["explore", *map(str, paths), "--model", "caap-demo", "--methods", "caap,caap_fast,legrad,gae",
                 "--top-k", "3", "--out", str(out)]) == 0
    shot = tmp_path / "explore.png"
    with opened(out / "explore.html") as page:
        page.set_viewport_size(VIEWPORT)
        page.select_option("#method", "caap_fast")
        page.screenshot(path=str(shot), full_page=False)
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape[:2] == (VIEWPORT["height"], VIEWPORT["width"])
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 500  # maps and images, not a blank page
    if os.environ.get("CAAP_WRITE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
    stored = np.asarray(Image.open(SCREENSHOT).convert("RGB"))
    assert stored.shape == picture.shape
