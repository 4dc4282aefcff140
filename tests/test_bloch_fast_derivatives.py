"""Analytic structure-factor derivatives from the ``fast`` solver (qcbed.bloch.eigen_derivatives).

G_p = C⁻¹ ∂H C with C the perturbative eigenvectors (elastic ``eigh`` times the
similarity steps of the absorption) must give the derivatives of the fast
intensities (central differences of the fast solver itself) and agree with the
exact solver's Jacobian, with the Bethe and Löwdin shares of ∂H included
(centrosymmetric Si and non-centrosymmetric GaAs, weak beams present); a synthetic
refinement with the fast Jacobian must land on the exact path's values and esds.
"""

from __future__ import annotations

import numpy as np
import pytest

from crystals import gaas as _gaas
from crystals import si as _si
from qcbed.bloch import Simulation
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.solver import solve_chunk
from qcbed.refine import DirectData
from qcbed.scattering.structure_factors import PotentialModel
from test_refine_synthetic import line_directions, make_refinement, set_truth, systematic_sim

T = 1500.0




def _setup(crystal):
    sim = Simulation(crystal(), 200.0, [1, -1, 0], [0, 0, -1],
                     potential=PotentialModel("kirkland", "bird_king"),
                     selection=BeamSelection(sgmin=4.0, omega=30.0),
                     gmax=2.0, smax=0.2, kt_radius=0.3, executor="serial", accuracy=None)
    hkl = [(1, 1, 1), (1, 1, 1), (2, 2, 0)]
    m = len(sim.table.hkl)
    du, dua = np.zeros((3, m), complex), np.zeros((3, m), complex)
    du[0] = sim.sf_coefficients(hkl[0], phase=0.0)
    dua[1] = sim.sf_coefficients(hkl[1], phase=0.0)
    du[2] = sim.sf_coefficients(hkl[2], phase=0.0)
    return sim, (du, dua)


def _central_differences(arrays, kt, du, dua, p, step=1e-6):
    """Central differences of the intensities at T in the direction (du[p], dua[p])."""
    u0, ua0 = arrays.u.copy(), arrays.u_abs.copy()
    fd = []
    for sgn in (1.0, -1.0):
        arrays.u[:] = u0 + sgn * step * du[p]
        arrays.u_abs[:] = ua0 + sgn * step * dua[p]
        arrays.refresh()
        fd.append(solve_chunk(arrays, kt).intensities([T])[0])
    arrays.u[:], arrays.u_abs[:] = u0, ua0
    arrays.refresh()
    return (fd[0] - fd[1]) / (2 * step)


@pytest.mark.parametrize("crystal", [_si, _gaas], ids=["Si", "GaAs"])
def test_fast_derivatives_match_finite_differences_and_exact(crystal):
    sim, (du, dua) = _setup(crystal)
    kt = np.random.default_rng(5).uniform(-0.2, 0.2, (6, 2))
    fast = sim.arrays
    exact = sim.with_changes(mode="exact").arrays
    assert fast.mode == "fast" and fast.lowdin
    eig = solve_chunk(fast, kt, (du, dua))
    assert eig.n_weak.min() > 0 and eig.n_fallback == 0
    inten, grad, _ = eig.gradients(T)
    # the derivatives do not change the solution
    assert np.allclose(inten, solve_chunk(fast, kt).intensities([T])[0], atol=1e-12)
    _, grad_x, _ = solve_chunk(exact, kt, (du, dua)).gradients(T)
    for p in range(3):
        fd_x = _central_differences(exact, kt, du, dua, p)
        fd_f = _central_differences(fast, kt, du, dua, p)
        scale = np.abs(fd_x).max()
        err_x_fd = np.abs(grad_x[:, p] - fd_x).max() / scale
        err_f_fd = np.abs(grad[:, p] - fd_f).max() / scale
        err_f_x = np.abs(grad[:, p] - grad_x[:, p]).max() / scale
        print(f"{crystal.__name__} p{p}: exact analytic vs exact central differences "
              f"{err_x_fd:.1e}; fast analytic vs fast central differences {err_f_fd:.1e}, "
              f"vs exact analytic {err_f_x:.1e}")
        # ∂H with its Bethe and Löwdin shares (the same code in both modes), against
        # the smooth exact solver
        assert err_x_fd < 1e-6
        # the fast intensities carry their own perturbative error (≲ 1e-4 of the
        # maximum), whose variation with U shows in their central differences; the
        # analytic derivative follows the exact solver's more closely
        assert err_f_fd < 3e-3
        assert err_f_x < 1e-3


def test_fast_refinement_agrees_with_exact_within_a_tenth_of_an_esd():
    sim_x, kt0 = systematic_sim(mode="exact")
    sim_x = sim_x.with_changes(selection=BeamSelection(sgmin=4.0, omega=30.0))
    assert sim_x.arrays.lowdin
    truth = sim_x.with_changes()
    set_truth(truth)
    kt = line_directions(kt0, n=30)
    inten = truth.solve(kt).intensities([T])[0].T
    obs = np.random.default_rng(11).poisson(2.0e4 * inten + 40.0).astype(float)
    data = DirectData(truth.outputs, kt, obs, np.maximum(obs, 1.0))
    res = {}
    for mode in ("exact", "fast"):
        ref = make_refinement(sim_x.with_changes(mode=mode), data, model_step=1)
        res[mode] = ref.fit("lm", max_iter=30)
        assert res[mode].success
    names = res["exact"].names
    assert "U(1,-1,-1)" in names and "Uabs(1,-1,-1)" in names
    for name in names:
        v_x, e_x = res["exact"].value(name), res["exact"].esd(name)
        v_f, e_f = res["fast"].value(name), res["fast"].esd(name)
        print(f"{name}: exact {v_x:.7g} ± {e_x:.2g}, fast {v_f:.7g} ± {e_f:.2g}, "
              f"shift {(v_f - v_x) / e_x:+.3f} esd")
        assert abs(v_f - v_x) < 0.1 * e_x
        assert abs(e_f / e_x - 1) < 0.02
