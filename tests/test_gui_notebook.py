"""Notebook views: ``_repr_html_``/``plot()`` of stacks, patterns, ROIs, refinement results,
and the app's panels embedded as iframes."""

from __future__ import annotations

import re
import urllib.request

import numpy as np
import pytest
from matplotlib.figure import Figure


@pytest.fixture(scope="module")
def demo_setup(demo_project_factory):
    from qcbed.project import build_setup, load_project

    return build_setup(load_project(demo_project_factory()), executor="serial")


def _n_img(s: str) -> int:
    return len(re.findall(r"<img src='data:image/png;base64,", s))


def test_lacbed_stack_views():
    from qcbed.experiment import LACBEDStack

    rng = np.random.default_rng(3)
    hkl = np.array([[0, 0, 0], [1, 1, 1], [-1, -1, -1], [2, 2, 0]])
    st = LACBEDStack(rng.random((4, 20, 30)) * 50 + 1, hkl, source="synthetic")
    h = st._repr_html_()
    assert "LACBEDStack" in h and "4 × 20 × 30 px" in h
    assert _n_img(h) == 4
    for lab in ("(0 0 0)", "(1 1 1)", "(-1 -1 -1)", "(2 2 0)"):
        assert lab in h
    fig = st.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert [a.get_title() for a in fig.axes] == ["(0 0 0)", "(1 1 1)", "(-1 -1 -1)", "(2 2 0)"]
    assert len(st.plot(hkl=[[1, 1, 1]]).axes) == 1


def test_png_is_exact_for_a_grey_ramp():
    """The encoder maps vmin→0 and vmax→255 and makes NaN transparent."""
    import io

    from PIL import Image

    from qcbed.experiment.notebook import png_bytes

    a = np.array([[0.0, 0.5, 1.0, np.nan]])
    im = np.asarray(Image.open(io.BytesIO(png_bytes(a, 0.0, 1.0, "gray"))))
    assert im.shape == (1, 4, 4)
    assert im[0, 0, 0] == 0 and im[0, 2, 0] == 255 and abs(int(im[0, 1, 0]) - 127.5) <= 1
    assert im[0, :3, 3].tolist() == [255, 255, 255] and im[0, 3, 3] == 0


def test_pattern_roi_and_result_views(demo_setup):
    from qcbed.refine.fine import Refinement

    s = demo_setup
    h = s.data._repr_html_()
    assert "CBEDPattern" in h and _n_img(h) == 1
    assert isinstance(s.data.plot(), Figure)
    roi = s.roi()
    h = roi._repr_html_()
    assert "ROI" in h and f"<td style='text-align:left'>{roi.n_points}</td>" in h
    assert h.count("<polygon") == len(roi.region_list) and h.count("<circle") == roi.n_points
    assert "<image href='data:image/png;base64," in h
    fig = roi.plot()
    assert isinstance(fig, Figure) and "ROI on" in fig.axes[0].get_title()
    ref = Refinement(s.simulation(mode="fast"), roi)
    ref.add_thickness(1600.0)
    res = ref.fit(max_iter=2)
    h = res._repr_html_()
    assert "RefinementResult" in h and "thickness" in h
    assert f"{res.parameters['thickness'].value:.7g}" in h
    assert "correlation" in h
    fig = res.plot()
    assert isinstance(fig, Figure) and len(fig.axes) >= 3


def test_app_panel_embeds_in_a_notebook(tmp_path):
    from qcbed.experiment import LACBEDStack
    from qcbed.gui.notebook import show
    from qcbed.gui.session import Session

    st = LACBEDStack(np.ones((1, 8, 8)) + np.arange(64.0).reshape(8, 8),
                     np.array([[0, 0, 0]]))
    app = show(Session(title="nb", kind="stack", stack=st, workdir=tmp_path))
    try:
        h = app._repr_html_()
        assert "<iframe" in h and "tab=explore" in h and app.url in h
        with urllib.request.urlopen(app.src, timeout=5) as r:
            assert b"<title>qcbed</title>" in r.read()
        assert "tab=refine" in app.panel("refine").src
        with pytest.raises(Exception, match="unknown panel"):
            app.panel("nope")
    finally:
        app.close()
