"""Analytic derivatives of the Löwdin terms and factor (qcbed.bloch.lowdin_jacobian)
against central differences of the whole transformation
(qcbed.bloch.lowdin.derivatives_central),
for centrosymmetric Si and non-centrosymmetric GaAs, elastic and absorptive parameters."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch import lowdin, lowdin_jacobian, solver
from qcbed.bloch.solver import solve_chunk
from test_bloch_fast_derivatives import _gaas, _setup, _si


@pytest.mark.parametrize("crystal", [_si, _gaas], ids=["Si", "GaAs"])
@pytest.mark.parametrize("mode,density", [("exact", None), ("fast", None), ("fast", -1.0)],
                         ids=["exact", "fast", "fast-dense"])
def test_analytic_lowdin_derivatives_match_central_differences(crystal, mode, density,
                                                                monkeypatch):
    if density is not None:  # every product dense (the path for dense derivative tables)
        monkeypatch.setattr(lowdin_jacobian, "SPARSE_DENSITY", density)
    sim, der = _setup(crystal)
    arrays = sim.with_changes(mode=mode).arrays
    assert arrays.lowdin
    kt = np.random.default_rng(7).uniform(-0.2, 0.2, (5, 2))
    calls = []

    def spy(fn):
        def wrapped(*a, **k):
            out = fn(*a, **k)
            calls.append(out)
            return out
        return wrapped

    monkeypatch.setattr(solver, "lowdin_derivatives", spy(lowdin_jacobian.derivatives))
    analytic = solve_chunk(arrays, kt, der)
    monkeypatch.setattr(solver, "lowdin_derivatives", spy(lowdin.derivatives_central))
    central = solve_chunk(arrays, kt, der)
    assert len(calls) >= 2 and len(calls) % 2 == 0
    half = len(calls) // 2
    for (da_a, l_a), (da_c, l_c) in zip(calls[:half], calls[half:]):
        # the matrices: central differences of polynomials of degree ≤ 4 (step 1e-4)
        assert np.abs(da_a - da_c).max() <= 1e-6 * np.abs(da_c).max()
        # L_p: central differences of F's diagonal (≈ 1) over a step of ~1e-5 carry
        # ~1e-11 of round-off (L is ~1e-7 here)
        assert np.abs(l_a - l_c).max() <= 1e-6 * np.abs(l_c).max() + 1e-10
        assert np.abs(l_c).max() > 0
    _, g_a, _ = analytic.gradients(1500.0)
    _, g_c, _ = central.gradients(1500.0)
    assert np.abs(g_a - g_c).max() <= 1e-6 * np.abs(g_c).max()
