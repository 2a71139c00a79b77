"""One self-contained HTML page to explore a run: every image, every method's map for each of the top-k classes,
a class and a method switch, an opacity slider and each cell's value on hover. No server and no network: the
image, the maps and the colour tables are inside the page, the drawing is a few lines of JavaScript on a canvas.

Maps are drawn at their own resolution (a patch map as its patch grid, shown patch-exact), on the colour scale
of the figures: diverging and centred at 0 for signed methods, sequential for unsigned ones, saturating at the
99.5th percentile over the classes shown, with opacity following ``|value|``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from caap.io import atomic_write_bytes
from caap.viz.heatmap import CLIP, SIGNED_CMAP, UNSIGNED_CMAP


@dataclass
class PageMethod:
    """One method's maps of one image: ``maps`` ``[K, h, w]`` (one per class shown), ``signed`` as the method."""

    maps: np.ndarray
    signed: bool


@dataclass
class PageImage:
    """One image of the page: its name, its pixels as PNG bytes, the classes shown (index, name, probability)
    and each method's maps for those classes."""

    name: str
    png: bytes
    classes: Sequence[tuple[int, str, float]]
    methods: dict[str, PageMethod] = field(default_factory=dict)


def script_json(value) -> str:
    """JSON safe inside an HTML ``<script>`` element: ``<``, ``>``, ``&`` and U+2028/U+2029 written as ``\\uXXXX``
    escapes (still the same JSON), so no file or class name (``</script>``, ``<!--<script``) can end or change the
    script's parsing state."""
    text = json.dumps(value, ensure_ascii=False)
    for char in ("<", ">", "&", "\u2028", "\u2029"):
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _lut(name: str) -> list[str]:
    """256 ``rrggbb`` colours of a matplotlib colour map."""
    rgb = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(int)
    return ["".join(f"{int(v):02x}" for v in c) for c in rgb]


def _scale(maps: np.ndarray, signed: bool, clip: float) -> list[float]:
    """``[low, high]`` of the colour scale, shared by the classes of one method and image."""
    if signed:
        top = float(np.percentile(np.abs(maps), clip)) or float(np.abs(maps).max()) or 1.0
        return [-top, top]
    low = float(np.percentile(maps, 100 - clip))
    top = float(np.percentile(maps, clip))
    return [low, top if top > low else low + 1.0]


def page_data(images: Sequence[PageImage], clip: float = CLIP) -> dict:
    """The JSON the page draws from (values to 6 significant digits)."""
    out = []
    for im in images:
        methods = {}
        for name, m in im.methods.items():
            maps = np.asarray(m.maps, dtype=np.float64)
            methods[name] = {"signed": bool(m.signed), "grid": list(maps.shape[1:]),
                             "scale": _scale(maps, m.signed, clip),
                             "maps": [[float(f"{v:.6g}") for v in c.ravel()] for c in maps]}
        out.append({"name": im.name, "png": base64.b64encode(im.png).decode(),
                    "classes": [{"index": int(i), "name": str(n), "prob": float(p)} for i, n, p in im.classes],
                    "methods": methods})
    return {"images": out, "luts": {"signed": _lut(SIGNED_CMAP), "unsigned": _lut(UNSIGNED_CMAP)}, "clip": clip}


def explorer_html(images: Sequence[PageImage], title: str = "caap explorer", clip: float = CLIP) -> str:
    """The page: ``images`` with their methods' maps (see the module docstring)."""
    data = script_json(page_data(images, clip))
    return _TEMPLATE.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", data)


MAX_SIDE = 112  # pixel maps are averaged down to at most this many cells a side (the page stays small)


def page_maps(maps: torch.Tensor) -> np.ndarray:
    """``[K, h, w]`` maps as the page shows them: patch maps as they are, pixel maps averaged to ``MAX_SIDE``."""
    h, w = maps.shape[-2:]
    if max(h, w) > MAX_SIDE:
        factor = -(-max(h, w) // MAX_SIDE)
        maps = F.avg_pool2d(maps[:, None].float(), factor, ceil_mode=True)[:, 0]
    return maps.float().numpy()


def page_image(name: str, pixels: np.ndarray, classes: Sequence[tuple[int, str, float]],
               methods: dict[str, PageMethod]) -> PageImage:
    """A page entry from the input's ``[H, W, 3]`` pixels in [0, 1]."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return PageImage(name, buf.getvalue(), list(classes), methods)


def write_page(entries: Sequence[PageImage], out: str | Path, title: str) -> Path:
    """Write ``out/explore.html`` atomically."""
    return atomic_write_bytes(Path(out) / "explore.html", explorer_html(entries, title).encode())


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{TITLE}}</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
 .bar { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin-bottom: 10px; }
 #stage { position: relative; width: 448px; height: 448px; }
 #stage img, #stage canvas { position: absolute; left: 0; top: 0; width: 448px; height: 448px; }
 #overlay { image-rendering: pixelated; cursor: crosshair; }
 #value { font-family: ui-monospace, monospace; min-width: 22em; }
 #legend { width: 448px; height: 12px; margin-top: 6px; }
 small { color: #666; }
</style></head><body>
<h3>{{TITLE}}</h3>
<div class="bar">
 <label>image <select id="image"></select></label>
 <label>method <select id="method"></select></label>
 <label>class <select id="cls"></select></label>
 <label>opacity <input id="opacity" type="range" min="0" max="100" value="85"></label>
</div>
<div id="stage"><img id="photo" alt="input"><canvas id="overlay"></canvas></div>
<canvas id="legend" width="256" height="1"></canvas>
<div class="bar"><span id="scale"></span><span id="value">hover a cell</span></div>
<small>Maps at their own resolution (patch maps patch-exact); colour scale shared by the classes of a method,
saturating at the <span id="clip"></span>th percentile; opacity follows |value|. Written by caap.</small>
<script type="application/json" id="caap-data">{{DATA}}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("caap-data").textContent);
const $ = (id) => document.getElementById(id);
const state = { image: 0, method: null, cls: 0 };
window.caapState = state;
function current() {
  const im = DATA.images[state.image];
  return { im: im, m: im.methods[state.method] };
}
function rgb(hex) { return [0, 2, 4].map((i) => parseInt(hex.substr(i, 2), 16)); }
function fill(select, items, chosen) {
  select.innerHTML = "";
  items.forEach(([value, text]) => { const o = document.createElement("option"); o.value = value;
    o.textContent = text; select.appendChild(o); });
  select.value = chosen;
}
function draw() {
  const { im, m } = current();
  const values = m.maps[state.cls], [h, w] = m.grid, [low, high] = m.scale;
  const lut = m.signed ? DATA.luts.signed : DATA.luts.unsigned;
  const canvas = $("overlay"), ctx = canvas.getContext("2d");
  canvas.width = w; canvas.height = h;
  const img = ctx.createImageData(w, h), alpha = $("opacity").value / 100;
  for (let i = 0; i < values.length; i++) {
    const v = Math.min(Math.max(values[i], low), high);
    const t = (v - low) / (high - low);
    const [r, g, b] = rgb(lut[Math.round(t * 255)]);
    const weight = m.signed ? Math.abs(v) / high : (v - low) / (high - low);
    img.data.set([r, g, b, Math.round(255 * alpha * Math.min(Math.max(weight, 0), 1))], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  canvas.dataset.method = state.method;
  canvas.dataset.cls = String(im.classes[state.cls].index);
  const legend = $("legend").getContext("2d");
  lut.forEach((hex, i) => { legend.fillStyle = "#" + hex; legend.fillRect(i, 0, 1, 1); });
  $("scale").textContent = `${state.method}: ${low.toPrecision(3)} … ${high.toPrecision(3)}` +
    (m.signed ? " (signed, 0 = white)" : " (unsigned)");
}
function showImage() {
  const im = DATA.images[state.image];
  $("photo").src = "data:image/png;base64," + im.png;
  const names = Object.keys(im.methods);
  if (!names.includes(state.method)) state.method = names[0];
  fill($("method"), names.map((n) => [n, n]), state.method);
  state.cls = Math.min(state.cls, im.classes.length - 1);
  fill($("cls"), im.classes.map((c, i) => [i, `${c.name} (class ${c.index}, p=${c.prob.toFixed(3)})`]), state.cls);
  draw();
}
function hover(event) {
  const { m } = current(), [h, w] = m.grid, box = $("overlay").getBoundingClientRect();
  const col = Math.min(w - 1, Math.floor((event.clientX - box.left) / box.width * w));
  const row = Math.min(h - 1, Math.floor((event.clientY - box.top) / box.height * h));
  const v = m.maps[state.cls][row * w + col];
  $("value").textContent = `row ${row}, col ${col}: ${v.toPrecision(4)}`;
  $("value").dataset.value = String(v);
}
fill($("image"), DATA.images.map((im, i) => [i, im.name]), 0);
$("clip").textContent = String(DATA.clip);
$("image").onchange = (e) => { state.image = Number(e.target.value); showImage(); };
$("method").onchange = (e) => { state.method = e.target.value; draw(); };
$("cls").onchange = (e) => { state.cls = Number(e.target.value); draw(); };
$("opacity").oninput = draw;
$("overlay").addEventListener("mousemove", hover);
window.caapShown = () => { const { im, m } = current();
  return { method: state.method, cls: im.classes[state.cls].index, values: m.maps[state.cls] }; };
showImage();
</script></body></html>
"""
