"""Screenshot of a `slicert timeline` HTML page in headless Chromium (offline).

    .venv/bin/python scripts/timeline_screenshot.py RUN_DIR/timeline.html docs/timeline.png \
        [--zoom 4] [--at 0.5] [--width 1400] [--height 0]

Loads the page from file:// with every other request aborted (the page must need no
network), optionally zooms ``--zoom`` x around the fraction ``--at`` of the run, saves the
PNG and prints what the page reports (``window.slicertTimeline``: slices loaded and in
view, blocked requests) as JSON. Uses Debian's /usr/bin/chromium (never `playwright
install`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def screenshot(html: Path, png: Path | None, *, zoom: float = 1.0, at: float = 0.5,
               width: int = 1400, height: int = 0) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from slicert_ops.report.timeline_view import offline_only

    blocked: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height or 400})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            offline_only(page, blocked)
            page.goto(Path(html).resolve().as_uri())
            page.wait_for_function("window.slicertTimeline !== undefined")
            if zoom != 1.0:
                page.evaluate("([z, at]) => { const T = window.slicertTimeline; T.reset();"
                              " T.pan(at - 0.5); T.zoom(z); }", [zoom, at])
            info = page.evaluate("() => { const T = window.slicertTimeline; return {slices:"
                                 " T.slices, instants: T.instants, counters: T.counters,"
                                 " tracks: T.tracks, frame: T.frame, view: T.view}; }")
            if not height:  # fit the page
                page.set_viewport_size({"width": width, "height": int(page.evaluate(
                    "document.documentElement.scrollHeight"))})
            if png is not None:
                Path(png).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return {**info, "blocked_requests": blocked, "page_errors": errors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--zoom", type=float, default=1.0)
    ap.add_argument("--at", type=float, default=0.5, help="zoom centre, fraction of the run")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=0, help="0: fit the page")
    a = ap.parse_args()
    info = screenshot(a.html, a.png, zoom=a.zoom, at=a.at, width=a.width, height=a.height)
    print(json.dumps({k: info[k] for k in ("slices", "frame", "view", "blocked_requests",
                                           "page_errors")}))
    return 1 if info["page_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
