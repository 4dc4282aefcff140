"""Figures of experimental data (Agg backend; figures are returned, never shown)."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from matplotlib.figure import Figure

from qcbed.bloch.geometry import ZoneFrame
from qcbed.crystal import Lattice
from qcbed.errors import InputError
from qcbed.experiment import ROI, CBEDPattern, ExperimentGeometry, LACBEDStack, Region
from qcbed.experiment.plots import plot_comparison, plot_roi

FRAME = ZoneFrame(Lattice(5.431, 5.431, 5.431), (1, -1, 0), (0, 0, -1))
HKL = np.array([[0, 0, 0], [0, 0, 2], [1, 1, 1]])


def _roi(cbed=False):
    rng = np.random.default_rng(0)
    shape = (48, 48)
    geom = ExperimentGeometry(FRAME, shape, gl=12.0, rotation=20.0,
                              mode="cbed" if cbed else "lacbed")
    regs = [Region.rectangle((18, 18), (10, 10), (11, 11), pad=2),
            Region([[5, 5], [5, 12], [12, 8]], 5, 4)]
    if cbed:
        data = CBEDPattern(rng.uniform(1, 50, shape), hkl=HKL, geometry=geom)
    else:
        data = LACBEDStack(rng.uniform(1, 50, (3,) + shape), HKL, geometry=geom)
    return ROI(data, regs, masks=[[True, True, True], [True, False, True]])


@pytest.mark.parametrize("cbed", [False, True])
def test_plot_roi(cbed):
    roi = _roi(cbed)
    for display in (False, True):
        fig = plot_roi(roi, values={"rotation": 21.0}, display=display)
        assert isinstance(fig, Figure) and len(fig.axes) == 1
        assert len(fig.axes[0].lines) >= 2
        fig.savefig(io.BytesIO(), format="png")


def test_plot_comparison():
    roi = _roi()
    exp, _, _ = roi.sample()
    sim = 0.5 * np.nan_to_num(exp) + 3.0
    fig = plot_comparison(roi, sim)
    assert isinstance(fig, Figure)
    assert len([a for a in fig.axes if a.get_images()]) == 9     # 3 discs × 3 images
    title = fig.axes[1].get_title()
    assert "R = 0.000" in title                                   # exact up to c, b
    fig.savefig(io.BytesIO(), format="png")
    fig2 = plot_comparison(roi, sim, region=1)                    # 002 not in region 1
    assert len([a for a in fig2.axes if a.get_images()]) == 6
    with pytest.raises(InputError):
        plot_comparison(roi, sim[:, :5])
    with pytest.raises(InputError):
        plot_comparison(roi, sim, region=5)
