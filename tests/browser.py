"""Open a page in a real headless Chromium (Debian's package) and report what a reader would meet.

Playwright drives the browser over the DevTools protocol; we point it at the system's chromium, since
its own browser download is not available everywhere. `python -m tests.browser PAGE.html SHOT.png [HEIGHT]`
checks a page and saves a screenshot of its top, HEIGHT pixels tall if given (docs/report_html.png:
`python -m tests.browser results/demo/report.html docs/report_html.png 2935`).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium")
# Without these, Chromium keeps trying to reach Google's services (updates, sync, QUIC probes), which
# on a machine without network show up as noise and delays; the sandbox needs privileges CI lacks.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 1600}
IMAGES_JS = "() => Array.from(document.images, i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"


@dataclass
class PageCheck:
    """What the browser saw: console errors (and failed loads), and each <img> as (alt, decoded width)."""

    errors: list[str]
    images: list[tuple[str, int]]

    @property
    def broken(self) -> list[str]:
        return [alt for alt, width in self.images if width == 0]


def check_page(page_file: Path, screenshot: Path | None = None, height: int = VIEWPORT["height"]) -> PageCheck:
    """Load `page_file` in headless Chromium (a fresh profile each time); errors, images, optional screenshot."""
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={**VIEWPORT, "height": height})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            page.on("requestfailed", lambda request: errors.append(f"failed to load {request.url[:80]}"))
            page.goto(Path(page_file).resolve().as_uri(), wait_until="load")
            # An image counts as shown only once fully decoded: complete and with a real width.
            images = [(image["alt"], image["width"] if image["complete"] else 0) for image in page.evaluate(IMAGES_JS)]
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return PageCheck(errors, images)


def main(argv: list[str]) -> int:
    height = int(argv[2]) if len(argv) > 2 else VIEWPORT["height"]
    check = check_page(Path(argv[0]), Path(argv[1]) if len(argv) > 1 else None, height)
    print(f"{len(check.images)} images, {len(check.broken)} not decoded, {len(check.errors)} console errors")
    for line in check.errors + [f"not decoded: {alt}" for alt in check.broken]:
        print("  " + line)
    return 1 if check.errors or check.broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
