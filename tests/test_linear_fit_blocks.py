"""The closed-form scale/background fit by blocks equals a dense least-squares solve
of the weighted design [I_t/σ, onehot/σ] (numpy's lstsq), and so do its projections."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.refine.gof import linear_fit


def _dense(sim, exp, var, mask, disc, background, fixed_scale=None):
    m = np.asarray(mask, bool)
    w = 1 / np.sqrt(var[m])
    it, ix = sim[m], exp[m]
    cols = [it * w] if fixed_scale is None else []
    if background == "single":
        cols.append(w)
    elif background == "per_disc":
        d = disc[m]
        cols += [np.where(d == k, w, 0.0) for k in np.unique(d)]
    y = ix * w if fixed_scale is None else (ix - fixed_scale * it) * w
    x = np.stack(cols, axis=1)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return x, beta, x @ beta - y


@pytest.mark.parametrize(("background", "fixed"), [
    ("per_disc", None), ("single", None), ("none", None), ("per_disc", 0.8), ("single", 0.8)])
def test_block_fit_equals_the_dense_solve(background, fixed):
    rng = np.random.default_rng(7)
    shape = (6, 300)
    sim = rng.random(shape) + 0.1
    exp = 2.0 * sim + rng.normal(0, 0.05, shape) + np.arange(6)[:, None] * 0.3
    var = rng.uniform(0.5, 2.0, shape)
    mask = rng.random(shape) > 0.2
    mask[4] = False  # a disc with no used sample has no background
    disc = np.broadcast_to(np.arange(6)[:, None], shape)
    fit = linear_fit(sim, exp, var, mask, disc, background, fixed_scale=fixed)
    x, beta, resid = _dense(sim, exp, var, mask, disc, background, fixed)
    np.testing.assert_allclose(fit.residuals, resid, rtol=1e-10, atol=1e-12)
    coef = np.r_[([] if fixed is not None else [fit.scale]), fit.background]
    np.testing.assert_allclose(coef, beta, rtol=1e-10, atol=1e-12)
    assert fit.n_linear == x.shape[1]
    np.testing.assert_allclose(fit.design, x, rtol=0, atol=0)
    # projections: P⊥ v and u₀ = X (XᵀX)⁻¹ e₀ against the dense formulas
    v = rng.normal(size=(x.shape[0], 3))
    q, _ = np.linalg.qr(x)
    np.testing.assert_allclose(fit.project_out(v), v - q @ (q.T @ v), atol=1e-12)
    np.testing.assert_allclose(fit.project_out(v[:, 0]), v[:, 0] - q @ (q.T @ v[:, 0]),
                               atol=1e-12)
    if fixed is None:
        e0 = np.zeros(x.shape[1])
        e0[0] = 1
        np.testing.assert_allclose(fit.scale_functional, x @ np.linalg.solve(x.T @ x, e0),
                                   rtol=1e-10, atol=1e-14)
    else:
        assert not np.any(fit.scale_functional)
