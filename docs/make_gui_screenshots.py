"""Regenerate the screenshots of docs/gui.md (needs chromium, playwright and ../shared/data).

    python docs/make_gui_screenshots.py

Drives the app exactly as tests/test_gui_app.py does, on the demo (explore with a
line profile, ROI editing, a whole-plan refinement, its results) and on the Si
D-LACBED folder; writes small palette PNGs to docs/img/.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from qcbed.gui.server import start_in_thread
from qcbed.gui.session import open_session

OUT = Path(__file__).resolve().parent / "img"
SHARED = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def save(page, name: str, width: int = 1100) -> None:
    png = page.screenshot(full_page=False)
    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im = im.quantize(colors=192, method=Image.Quantize.MEDIANCUT)
    im.save(OUT / f"{name}.png", optimize=True)
    print(name, (OUT / f"{name}.png").stat().st_size // 1024, "kB")


def drag(page, sel: str, f0, f1) -> None:
    box = page.locator(sel).bounding_box()
    x0, y0 = box["x"] + f0[0] * box["width"], box["y"] + f0[1] * box["height"]
    x1, y1 = box["x"] + f1[0] * box["width"], box["y"] + f1[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=6)
    page.mouse.up()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    chromium = shutil.which("chromium")
    wd = Path(tempfile.mkdtemp())
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        # ---------------------------------------------------------------- demo
        s = open_session(None, workdir=wd / "demo", executor="serial")
        srv, url = start_in_thread(s)
        page = b.new_page(viewport={"width": 1400, "height": 880})
        page.goto(url)
        page.wait_for_function("document.querySelector('#img-sim').naturalWidth > 0")
        page.click("#tab-refine")
        page.click("#run-plan")
        page.wait_for_function("document.querySelector('#run-state').dataset.state"
                               " === 'finished'", timeout=300000)
        time.sleep(2.0)
        save(page, "gui-refine")
        page.click("#tab-results")
        page.wait_for_function("document.querySelectorAll('#res-figs img').length > 0")
        time.sleep(1.0)
        save(page, "gui-results")
        page.click("nav button[data-tab=explore]")
        s.wait_full(60)
        page.select_option("#refl", "2")
        page.click("#tool button[data-tool=profile]")
        drag(page, ".panel[data-kind=exp] .viewport", (0.2, 0.5), (0.8, 0.5))
        time.sleep(1.5)
        save(page, "gui-explore-demo")
        page.click("#tool-roi")
        drag(page, ".panel[data-kind=exp] .viewport", (0.25, 0.66), (0.45, 0.86))
        time.sleep(1.5)
        save(page, "gui-roi")
        srv.shutdown()
        # ---------------------------------------------------------------- Si
        folder = SHARED / "data" / "si-110-dlacbed"
        if folder.is_dir():
            s = open_session(folder, workdir=wd / "si")
            srv, url = start_in_thread(s)
            page.goto(url)
            page.wait_for_function("document.querySelector('#img-sim').naturalWidth > 0")
            s.wait_full(300)
            page.select_option("#refl", "3")
            page.click("#tool button[data-tool=profile]")
            drag(page, ".panel[data-kind=exp] .viewport", (0.5, 0.1), (0.5, 0.9))
            time.sleep(2.0)
            save(page, "gui-explore-si")
            srv.shutdown()
        b.close()


if __name__ == "__main__":
    main()
