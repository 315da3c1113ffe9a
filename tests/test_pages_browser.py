"""The evidence pages in a real headless Chromium: they draw, the stylesheet and scripts
load under the pages' CSP from file://, the index filters work, badges keep their contrast.

Chromium comes from Debian's package (/usr/bin/chromium). When it is missing these
tests fail rather than skip, so CI cannot pass without exercising a browser.
"""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from datetime import date
from pathlib import Path

import lxml.html
import pytest

from atlas.pages import render_pages

CHROMIUM = Path("/usr/bin/chromium")
FIXTURE_ROWS = Path(__file__).parent / "fixtures" / "pages" / "evidence_rows.json"
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_CONTRAST = 4.5  # WCAG AA for normal-size text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
            "Install it with `apt-get install -y chromium` (CI's script does this)."
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser-site")
    rows = json.loads(FIXTURE_ROWS.read_text("utf-8"))
    result = render_pages(rows, out, accessed=date(2025, 1, 31))
    assert not result.skipped
    return out


def run_browser(chromium: Path, tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    completed = subprocess.run(
        [str(chromium), *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, f"chromium exited {completed.returncode}: {completed.stderr[-2000:]}"
    return completed.stdout


def dump_dom(chromium: Path, tmp_path: Path, url: str, *extra: str) -> lxml.html.HtmlElement:
    dom = run_browser(chromium, tmp_path, *extra, "--dump-dom", url)
    assert "<html" in dom, f"no DOM dumped for {url}"
    return lxml.html.fromstring(dom)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the (still filtered) scanlines of a PNG, checking every CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    chunks: list[tuple[bytes, bytes]] = []
    position = 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r} chunk"
        chunks.append((kind, body))
        position += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])
    assert depth == 8, f"unexpected bit depth {depth}"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 1 + width * channels
    assert len(pixels) == stride * height, "image data does not match its header"
    return width, height, [pixels[i * stride : (i + 1) * stride] for i in range(height)]


def distinct_scanlines(rows: list[bytes]) -> int:
    """Blank areas filter to identical scanlines, so this counts lines that carry content."""
    return len(set(rows))


def test_study_page_screenshot_is_a_drawn_page(chromium, site, tmp_path):
    shot = tmp_path / "paper.png"
    run_browser(
        chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600",
        (site / "papers" / "99000001.html").as_uri(),
    )
    assert shot.stat().st_size > 30_000
    width, height, rows = read_png(shot)
    assert (width, height) == (1200, 1600)
    assert distinct_scanlines(rows) > 300


def test_study_page_screenshot_at_phone_width(chromium, site, tmp_path):
    shot = tmp_path / "phone.png"
    run_browser(
        chromium, tmp_path, f"--screenshot={shot}", "--window-size=390,844",
        (site / "papers" / "41074089.html").as_uri(),
    )
    width, height, rows = read_png(shot)
    assert (width, height) == (390, 844)
    assert distinct_scanlines(rows) > 200


def test_index_filters_come_alive_and_list_every_row(chromium, site, tmp_path):
    doc = dump_dom(chromium, tmp_path, (site / "index.html").as_uri())
    assert doc.get("data-filters") == "ready", "the index script did not run"
    form = doc.xpath("//form[@id='filters']")[0]
    assert form.get("hidden") is None
    assert {e.get("name") for e in form.xpath(".//select | .//input")} == {"pem", "criteria", "from", "to", "q"}
    rows = doc.xpath("//table[@id='studies']/tbody/tr")
    assert len(rows) == 8
    assert not [r for r in rows if r.get("hidden") is not None]
    assert doc.xpath("//p[@id='count']")[0].text_content() == "Showing 8 of 8 studies"


def test_index_filter_from_query_string(chromium, site, tmp_path):
    doc = dump_dom(chromium, tmp_path, (site / "index.html").as_uri() + "?pem=required")
    visible = [r.get("data-pem") for r in doc.xpath("//tbody/tr[not(@hidden)]")]
    hidden = [r.get("data-pem") for r in doc.xpath("//tbody/tr[@hidden]")]
    assert visible == ["required"] * 3
    assert len(hidden) == 5 and "required" not in hidden
    assert doc.xpath("//p[@id='count']")[0].text_content() == "Showing 3 of 8 studies"


def test_index_filter_from_hash_combines_criteria_and_years(chromium, site, tmp_path):
    doc = dump_dom(chromium, tmp_path, (site / "index.html").as_uri() + "#criteria=ccc_2003&from=2019&to=2024")
    visible = [r.get("id") for r in doc.xpath("//tbody/tr[not(@hidden)]")]
    assert visible == ["pmid-31978945"]
    assert doc.xpath("//p[@id='count']")[0].text_content() == "Showing 1 of 8 studies"


def test_index_title_search_from_hash(chromium, site, tmp_path):
    doc = dump_dom(chromium, tmp_path, (site / "index.html").as_uri() + "#q=CORONAVIRUS")
    assert [r.get("id") for r in doc.xpath("//tbody/tr[not(@hidden)]")] == ["pmid-31978945"]


HARNESS = """<!doctype html><html><head><meta charset="utf-8"></head><body>
<iframe id="desktop" style="width:1200px;height:900px" src="{page}"></iframe>
<iframe id="phone" style="width:390px;height:800px" src="{page}"></iframe>
<iframe id="index" style="width:390px;height:800px" src="{index}"></iframe>
<pre id="result"></pre>
<script>
function luminance(rgb) {{
  var c = rgb.match(/[0-9.]+/g).slice(0, 3).map(function (v) {{
    v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  }});
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}}
function contrast(a, b) {{
  var x = luminance(a), y = luminance(b);
  return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
}}
function background(el, win) {{
  for (; el && el.nodeType === 1; el = el.parentElement) {{
    var bg = win.getComputedStyle(el).backgroundColor;
    var parts = bg.match(/[0-9.]+/g);
    if (parts && (parts.length < 4 || parseFloat(parts[3]) > 0)) {{ return bg; }}
  }}
  return "rgb(255, 255, 255)";
}}
function report(frame) {{
  var doc = frame.contentDocument, win = frame.contentWindow;
  var items = [];
  doc.querySelectorAll(".badge, .retraction, .explainer, .withheld, .provenance").forEach(function (el) {{
    var style = win.getComputedStyle(el);
    var bg = background(el, win);
    items.push({{cls: el.className, color: style.color, background: bg, contrast: contrast(style.color, bg)}});
  }});
  return {{items: items, overflow: doc.documentElement.scrollWidth - doc.documentElement.clientWidth,
          copyButtons: doc.querySelectorAll("button.copy").length}};
}}
window.addEventListener("load", function () {{
  document.getElementById("result").textContent = JSON.stringify({{
    desktop: report(document.getElementById("desktop")),
    phone: report(document.getElementById("phone")),
    index: report(document.getElementById("index"))
  }});
}});
</script></body></html>
"""


def test_badges_are_styled_with_enough_contrast_and_phones_do_not_scroll_sideways(chromium, site, tmp_path):
    harness = site / "harness.html"
    harness.write_text(HARNESS.format(page="papers/99000001.html", index="index.html"), "utf-8")
    try:
        doc = dump_dom(chromium, tmp_path, harness.as_uri(), "--allow-file-access-from-files")
    finally:
        harness.unlink()
    result = json.loads(doc.xpath("//pre[@id='result']")[0].text_content())
    desktop = result["desktop"]
    by_class = {item["cls"]: item for item in desktop["items"]}
    # the stylesheet loaded under the page's CSP: badges have their tinted backgrounds
    assert by_class["badge pem pem-required"]["background"] == "rgb(227, 243, 232)"
    assert by_class["retraction"]["background"] == "rgb(253, 231, 231)"
    assert desktop["copyButtons"] == 2, "the page script did not add its copy buttons"
    for view in ("desktop", "phone", "index"):
        for item in result[view]["items"]:
            assert item["contrast"] >= MIN_CONTRAST, (view, item)
        assert result[view]["overflow"] <= 0, f"{view} view scrolls sideways by {result[view]['overflow']}px"
    index_classes = {item["cls"] for item in result["index"]["items"]}
    assert {"badge pem pem-required", "badge pem pem-not_required", "badge retracted"} <= index_classes
