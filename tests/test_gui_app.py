"""The app in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The server runs in a thread of the test process on a free port; every test drives
the page as a user would (slider, mouse drags, buttons) and checks the outcome in
the page and on disk. Screenshots go to ``test-artifacts/gui/`` (or
``$QCBED_ARTIFACTS/gui``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - CI installs it
    sync_playwright = None

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="browser tests need Debian's chromium (apt-get install chromium) and playwright "
           "(pip install playwright); .ci/run installs both")

ARTIFACTS = Path(os.environ.get("QCBED_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts")) / "gui"


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    p = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(p), full_page=True)
    return p


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or sync_playwright is None:
        pytest.skip("browser tests need chromium and playwright")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo(demo_project_factory):
    from qcbed.gui.server import start_in_thread
    from qcbed.gui.session import open_session

    proj = demo_project_factory()
    wd = proj.parent
    s = open_session(proj, workdir=wd, executor="serial")
    srv, url = start_in_thread(s)
    yield s, url, wd
    srv.shutdown()


def _page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.querySelector('#img-sim').naturalWidth > 0")
    page.wait_for_function("document.querySelector('#img-exp').naturalWidth > 0")
    page.wait_for_function("document.querySelector('#img-diff').naturalWidth > 0")
    page.errors = errors
    return page


def _wait_version_change(page, before: int, timeout: float = 20000) -> None:
    page.wait_for_function(
        f"document.querySelector('#img-sim').dataset.version > {before}", timeout=timeout)


@needs_browser
def test_demo_renders_and_slider_changes_simulation(browser, demo):
    s, url, _wd = demo
    page = _page(browser, url)
    assert "demo" in page.inner_text("#title")
    # the three images, the ZNCC table (one row per reflection) and the gallery
    assert page.locator("#zncc tbody tr").count() == len(s.hkl)
    assert page.locator("#gallery figure").count() == len(s.hkl)
    sizes = page.evaluate("['exp','sim','diff'].map(k => document.querySelector('#img-'+k)"
                          ".naturalWidth)")
    assert all(w >= 10 for w in sizes)
    _shot(page, "demo-explore")
    # a slider move (a click on the thickness track) changes the simulated image
    before_png = page.locator("#img-sim").screenshot()
    t0 = s.state()["params"]["thickness"]
    v0 = int(page.eval_on_selector("#img-sim", "e => +e.dataset.version || 0"))
    rng = page.locator(".param[data-key=thickness] input[type=range]")
    box = rng.bounding_box()
    page.mouse.click(box["x"] + 0.8 * box["width"], box["y"] + box["height"] / 2)
    _wait_version_change(page, v0)
    t1 = s.state()["params"]["thickness"]
    assert t1 > t0 * 1.1
    assert float(page.input_value(".param[data-key=thickness] input[type=number]")) == \
        pytest.approx(t1, rel=1e-4)
    page.wait_for_timeout(300)
    after_png = page.locator("#img-sim").screenshot()
    assert after_png != before_png
    _shot(page, "demo-thickness-changed")
    assert not page.errors


@needs_browser
def test_roi_drawn_in_page_is_in_exported_project(browser, demo):
    from qcbed.project import build_setup, load_project

    s, url, wd = demo
    page = _page(browser, url)
    page.click("#tool-roi")
    page.fill("#roi-step", "1")
    vp = page.locator(".panel[data-kind=exp] .viewport")
    box = vp.bounding_box()
    n0 = len(s.state()["regions"])
    # drag a new rectangle in the lower-left of the experiment panel
    x0, y0 = box["x"] + 0.08 * box["width"], box["y"] + 0.70 * box["height"]
    x1, y1 = box["x"] + 0.30 * box["width"], box["y"] + 0.92 * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#roi-info').textContent.includes('valid')")
    regions = s.state()["regions"]
    assert len(regions) == n0 + 1
    new = np.array(regions[-1]["corners"])
    ext = s.info()["extent"]
    # the corners are where the mouse went, in display pixels (to the pixel)
    expect_r = ext[0] + np.array([0.70, 0.92]) * (ext[1] - ext[0])
    expect_c = ext[2] + np.array([0.08, 0.30]) * (ext[3] - ext[2])
    assert new[0] == pytest.approx([expect_r[0], expect_c[0]], abs=1.0)
    assert new[1] == pytest.approx([expect_r[0], expect_c[1]], abs=1.0)
    assert new[2] == pytest.approx([expect_r[1], expect_c[0]], abs=1.0)
    # sample points are drawn
    assert page.locator(".panel[data-kind=exp] svg g.samples circle").count() > 20
    _shot(page, "demo-roi")
    out = wd / "exported.toml"
    page.fill("#export-path", str(out))
    page.click("#export")
    page.wait_for_function("document.querySelector('#export-msg').textContent"
                           ".includes('exported.toml')")
    proj = load_project(out)
    got = np.array(proj.roi["regions"][-1]["corners"])
    assert got == pytest.approx(new, abs=1e-3)
    assert list(proj.roi["regions"][-1]["samples"]) == regions[-1]["samples"]
    assert proj.thickness == pytest.approx(s.state()["params"]["thickness"])
    setup = build_setup(proj, executor="serial")            # a valid, runnable project
    assert len(setup.regions) == n0 + 1
    # move the new region by dragging inside it: the project follows
    vp.scroll_into_view_if_needed()
    box = vp.bounding_box()
    x0, y0 = box["x"] + 0.08 * box["width"], box["y"] + 0.70 * box["height"]
    x1, y1 = box["x"] + 0.30 * box["width"], box["y"] + 0.92 * box["height"]
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2 + 0.05 * box["width"], (y0 + y1) / 2, steps=4)
    page.mouse.up()
    for _ in range(100):
        moved = np.array(s.state()["regions"][-1]["corners"])
        if not np.allclose(moved, new):
            break
        time.sleep(0.1)
    dc = 0.05 * (ext[3] - ext[2])
    assert moved[:, 1] - new[:, 1] == pytest.approx([dc] * 3, abs=0.6)
    assert moved[:, 0] == pytest.approx(new[:, 0], abs=0.6)
    assert not page.errors


@needs_browser
def test_refinement_from_page_finishes_and_shows_result(browser, demo):
    s, url, _wd = demo
    page = _page(browser, url)
    page.click("#tab-refine")
    page.fill("#max-iter", "2")
    page.click("#run-fine")
    page.wait_for_function("['running','finished'].includes("
                           "document.querySelector('#run-state').dataset.state)")
    page.wait_for_function("document.querySelector('#run-state').dataset.state === 'finished'",
                           timeout=120000)
    # χ² per iteration and the parameters of the last one are shown
    assert page.locator("#chi2 path").count() >= 1
    assert page.locator("#run-params tr").count() >= 3
    assert "GOF" in page.inner_text("#run-summary")
    _shot(page, "demo-refine")
    page.click("#tab-results")
    page.wait_for_function("document.querySelectorAll('#res-params tr').length > 2",
                           timeout=30000)
    text = page.inner_text("#res-params")
    assert "thickness" in text and "U(1,1,1)" in text
    assert page.locator("#res-corr table td").count() >= 4
    page.wait_for_function("document.querySelectorAll('#res-figs img').length > 0")
    _shot(page, "demo-results")
    # the run wrote what 'qcbed refine' writes
    out = Path(s.job.out_dir)
    for f in ("result.json", "results.h5", "structure_factors.hkl", "report.html"):
        assert (out / f).is_file(), f
    assert not page.errors


@needs_browser
@pytest.mark.shared_data
def test_si_felix_folder_renders(browser, si_dlacbed_dir, tmp_path):
    from qcbed.gui.server import start_in_thread
    from qcbed.gui.session import open_session

    s = open_session(si_dlacbed_dir, workdir=tmp_path, executor="serial",
                     full_resolution=False)
    srv, url = start_in_thread(s)
    try:
        page = _page(browser, url)
        assert page.locator("#zncc tbody tr").count() == len(s.hkl) == 39
        w = page.evaluate("document.querySelector('#img-exp').naturalWidth")
        assert w == 152                                     # the experiment at full size
        z = s.state()["zncc"]
        assert np.nanmax(np.array(z, dtype=float)) > 0.3    # the simulation matches somewhere
        page.select_option("#refl", "1")
        page.wait_for_timeout(500)
        _shot(page, "si-felix-explore")
        # an orientation change re-simulates the preview
        v0 = int(page.eval_on_selector("#img-sim", "e => +e.dataset.version || 0"))
        before = page.locator("#img-sim").screenshot()
        num = page.locator(".param[data-key='tilt0.0'] input[type=number]")
        num.fill(str(s.state()["params"]["tilt0"][0] + 0.02))
        num.dispatch_event("change")
        _wait_version_change(page, v0, timeout=30000)
        page.wait_for_timeout(300)
        assert page.locator("#img-sim").screenshot() != before
        assert not page.errors
    finally:
        srv.shutdown()


def _free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def test_cli_serves_on_localhost(tmp_path):
    """``qcbed gui PATH --port PORT --no-browser`` serves the page on 127.0.0.1:PORT."""
    from qcbed.experiment import LACBEDStack
    from qcbed.larbed.stack import save_stack

    rng = np.random.default_rng(5)
    proj = save_stack(LACBEDStack(rng.random((2, 16, 16)) * 10 + 1,
                                  np.array([[0, 0, 0], [1, 1, 1]])), tmp_path / "s.h5")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), QCBED_WORKERS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from qcbed.cli import main; main()", "gui", str(proj),
         "--port", str(port), "--no-browser"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        html = None
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    html = r.read().decode()
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        assert html is not None, proc.stdout.read() if proc.poll() is not None else "no reply"
        assert "<title>qcbed</title>" in html
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5) as r:
            assert b'"kind": "stack"' in r.read()
        # bound to localhost only: not reachable on another address of this machine
        host_ip = socket.gethostbyname(socket.gethostname())
        if not host_ip.startswith("127."):
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{host_ip}:{port}/", timeout=1)
    finally:
        proc.terminate()
        proc.wait(10)
