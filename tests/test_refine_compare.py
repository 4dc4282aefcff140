"""qcbed.refine.compare: blur, sub-pixel alignment and the image figure of merit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from qcbed.errors import InputError
from qcbed.refine.compare import aligned_zncc, compare_images, gaussian_blur
from qcbed.refine.gof import zncc


def _pattern(n: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=(n, n)), 3.0)


def test_blur_is_a_unit_gaussian_of_that_width() -> None:
    delta = np.zeros((41, 41))
    delta[20, 20] = 1.0
    y, x = np.mgrid[:41, :41]
    for sigma in (1.0, 2.0):           # (sampled kernel: below ~1 px its variance falls short)
        b = gaussian_blur(delta, sigma)
        assert b.sum() == pytest.approx(1.0, abs=1e-12)
        assert (b * (y - 20) ** 2).sum() == pytest.approx(sigma**2, rel=2e-3)
        assert (b * (x - 20) ** 2).sum() == pytest.approx(sigma**2, rel=2e-3)
    assert np.array_equal(gaussian_blur(delta, 0.0), delta)
    with pytest.raises(InputError, match="blur radius"):
        gaussian_blur(delta, -1.0)


@pytest.mark.parametrize("shift", [(0.3, -0.6), (1.4, 0.2), (-1.7, 1.9), (0.0, 0.0)])
def test_alignment_recovers_a_subpixel_shift(shift) -> None:
    img = _pattern()
    moved = ndimage.shift(img, shift, order=3, mode="nearest")
    z, found = aligned_zncc(img, moved, max_shift=2.0)
    assert np.allclose(found, shift, atol=0.02)
    assert z > 0.99999
    if shift != (0.0, 0.0):
        assert zncc(img, moved) < z - 1e-3          # the unaligned ZNCC is lower


def test_alignment_stays_within_its_range_and_respects_the_mask() -> None:
    img = _pattern(seed=1)
    moved = ndimage.shift(img, (3.5, 0.0), order=3, mode="nearest")
    _, found = aligned_zncc(img, moved, max_shift=1.0)
    assert np.all(np.abs(found) <= 1.0)
    # NaN pixels of the simulation (outside the illuminated region) do not count
    sim = img.copy()
    sim[:10] = np.nan
    z, found = aligned_zncc(sim, img, max_shift=2.0)
    assert np.allclose(found, 0.0, atol=0.02) and z > 0.99999
    with pytest.raises(InputError, match="too small"):
        aligned_zncc(img[:6, :6], img[:6, :6], max_shift=2.0)
    with pytest.raises(InputError, match="differ in shape"):
        aligned_zncc(img, img[:-1], max_shift=2.0)


def test_compare_images_matches_reflections_by_hkl() -> None:
    a, b, c = _pattern(seed=2), _pattern(seed=3), _pattern(seed=4)
    sim = np.stack([np.stack([a, b, c]), np.stack([a, c, b])])      # two thicknesses
    sim_hkl = [(0, 0, 0), (1, 1, 1), (2, 2, 0)]
    exp_hkl = [(1, 1, 1), (0, 0, 0), (0, 0, 4)]                      # other order
    exp = np.stack([b, a, c])
    cmp = compare_images(sim, sim_hkl, exp, exp_hkl, thickness=[1000.0, 1200.0],
                         blur_radius=0.0, max_shift=0.0)
    assert [tuple(h) for h in cmp.hkl] == [(0, 0, 0), (1, 1, 1)]
    assert cmp.missing == [(2, 2, 0)]
    assert np.allclose(cmp.zncc[0], 1.0)
    assert cmp.figure_of_merit[0] == pytest.approx(0.0, abs=1e-12)
    assert cmp.figure_of_merit[1] > 0.1 and cmp.best == 0
    d = cmp.as_dict()
    assert d["best_thickness_A"] == 1000.0 and d["not_compared"] == [[2, 2, 0]]
    # the blur lowers the ZNCC of identical images a little, the alignment keeps shift 0
    blurred = compare_images(sim[0], sim_hkl, exp, exp_hkl, blur_radius=1.0, max_shift=2.0)
    assert np.all(blurred.zncc > 0.98) and np.all(blurred.zncc < 1.0)
    assert np.allclose(blurred.shift, 0.0, atol=0.05)
    with pytest.raises(InputError, match="no reflection"):
        compare_images(sim, sim_hkl, exp, [(5, 5, 5)] * 3)
    with pytest.raises(InputError, match="same pixel grid"):
        compare_images(sim, sim_hkl, exp[:, :-1], exp_hkl)


def test_thickness_at_the_minimum_of_the_figure_of_merit() -> None:
    from qcbed.refine.compare import ImageComparison

    t = np.array([1400.0, 1440.0, 1480.0, 1510.0, 1540.0])
    fom = 0.04 + 1e-5 * (t - 1493.0) ** 2             # a parabola with its vertex at 1493 Å
    cmp = ImageComparison(hkl=np.zeros((1, 3), int), thickness=t, zncc=(1 - fom)[:, None],
                          shift=np.zeros((5, 1, 2)), blur_radius=1.0, max_shift=2.0)
    assert cmp.best == 2 and cmp.thickness_at_minimum == pytest.approx(1493.0)
    assert cmp.as_dict()["thickness_at_minimum_A"] == pytest.approx(1493.0)
    edge = ImageComparison(hkl=np.zeros((1, 3), int), thickness=t,
                           zncc=(1 - 1e-5 * t)[:, None], shift=np.zeros((5, 1, 2)),
                           blur_radius=1.0, max_shift=2.0)
    assert edge.best == 0 and edge.thickness_at_minimum is None      # not bracketed


def test_docstring_examples_run() -> None:
    import doctest

    import qcbed.refine.compare as mod

    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 2 and res.failed == 0
