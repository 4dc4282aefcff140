"""Fine refinement on synthetic data made by the engine: recovery, esds, pulls, probe,
analytic gradients and kill-and-resume.

The geometry is PyExtal's Si 111 systematic-row CBED (``Si_systematic.dat``,
196.75 kV, 8.4° off [110]) rebuilt in Python, so these tests do not need the
shared data.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError
from qcbed.refine import DirectData, Refinement, RegionGrid, convolve_probe
from qcbed.scattering.structure_factors import PotentialModel

A = 5.4307
KT_HKL = (12.0152, -12.0152, 26.4176)  # Si_systematic.dat `kt`
OUT = [[1, -1, -1], [-1, 1, 1], [2, -2, -2]]
TRUE = {"thickness": 1500.0, "U111": 0.0473504, "Uabs111": 0.0007937, "U222": -0.00092322}


def si_crystal():
    return Crystal(Lattice(A, A, A), [Site("Si", "Si", (0.125,) * 3, b_iso=0.4668)],
                   space_group_from_number(227, 2))


def systematic_sim(mode="exact", **kw):
    cr = si_crystal()
    base = Simulation(cr, 196.75, [1, 1, 0], [1, -1, -1], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal(KT_HKL)
    kw.setdefault("gmax", 2.0)
    kw.setdefault("smax", 0.03)
    return Simulation(cr, 196.75, [1, 1, 0], [1, -1, -1], kt_center=kt0, kt_radius=0.3,
                      outputs=OUT, mode=mode, potential=PotentialModel("kirkland", "bird_king"),
                      selection=BeamSelection(0.3, 30.0), **kw), kt0


def line_directions(kt0, n=40, rows=(-0.03, 0.0, 0.03)):
    g = np.sqrt(3) / A
    xs = np.linspace(-0.45, 0.45, n) * g
    return np.concatenate([np.stack([xs, np.full_like(xs, y)], 1) for y in rows]) + kt0


def set_truth(sim):
    sim.set_structure_factors({(1, -1, -1): (TRUE["U111"], TRUE["Uabs111"]),
                               (2, -2, -2): (TRUE["U222"], 0.0)})


def synthetic_data(sim, kt, rng, counts=2.0e4, background=40.0):
    inten = sim.solve(kt).intensities([TRUE["thickness"]])[0].T  # (n_out, n_pts)
    obs = rng.poisson(counts * inten + background).astype(float)
    return DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0))


def make_refinement(sim, data, start=1.03, **kw):
    ref = Refinement(sim, data, background="per_disc", **kw)
    ref.add_thickness(TRUE["thickness"] * start)
    ref.add_structure_factor((1, -1, -1), value=TRUE["U111"] * start,
                             value_abs=TRUE["Uabs111"] / start)
    ref.add_structure_factor((2, -2, -2), refine_uabs=False, value=TRUE["U222"] * start,
                             value_abs=0.0)
    return ref


@pytest.fixture(scope="module")
def truth_setup():
    sim, kt0 = systematic_sim()
    kt = line_directions(kt0)
    sim_true = sim.with_changes()
    set_truth(sim_true)
    return sim, sim_true, kt, kt0


def test_analytic_gradients_match_finite_differences(truth_setup):
    sim, sim_true, kt, _ = truth_setup
    kt = kt[::13]
    names = ["U111", "Uabs111", "U222"]
    # derivatives with respect to the signed real values (phase 0 at this origin)
    coefs = [sim_true.sf_coefficients(h, phase=0.0) for h in ((1, -1, -1), (1, -1, -1),
                                                              (2, -2, -2))]
    z = np.zeros_like(coefs[0])
    du = np.stack([coefs[0], z, coefs[2]])
    dua = np.stack([z, coefs[1], z])
    eig = sim_true.solve_eigen(kt, (du, dua))
    t = TRUE["thickness"]
    inten, d_p, d_t = eig.gradients(t)

    def intensities(values, thickness=t):
        s = sim.with_changes()
        s.set_structure_factors({(1, -1, -1): (values[0], values[1]),
                                 (2, -2, -2): (values[2], 0.0)})
        return s.solve(kt).intensities([thickness])[0]

    v0 = np.array([TRUE["U111"], TRUE["Uabs111"], TRUE["U222"]])
    assert np.allclose(intensities(v0), inten, atol=1e-13)
    for k, name in enumerate(names):
        h = 1e-6 * max(abs(v0[k]), 1e-3)
        vp, vm = v0.copy(), v0.copy()
        vp[k] += h
        vm[k] -= h
        fd = (intensities(vp) - intensities(vm)) / (2 * h)
        rel = np.abs(fd - d_p[:, k]).max() / np.abs(fd).max()
        print(f"d I / d {name}: analytic vs central difference, max rel. dev. {rel:.1e}")
        assert rel < 1e-6
    fd_t = (intensities(v0, t + 1e-3) - intensities(v0, t - 1e-3)) / 2e-3
    assert np.abs(fd_t - d_t).max() / np.abs(fd_t).max() < 1e-6


def test_gradients_in_blocks_of_directions_equal_all_at_once(truth_setup, monkeypatch):
    """EigenChunk.gradients makes its (directions, n, n) temporaries block by block
    (GRADIENT_BLOCK_BYTES): one direction per block gives the same numbers, for one
    thickness and for one thickness per direction."""
    import qcbed.bloch.chunks as chunks

    _, sim_true, kt, _ = truth_setup
    kt = kt[::11]
    coefs = [sim_true.sf_coefficients(h, phase=0.0) for h in ((1, -1, -1), (2, -2, -2))]
    eig = sim_true.solve_eigen(kt, (np.stack(coefs), np.zeros((2, *coefs[0].shape))))
    t_each = TRUE["thickness"] + np.linspace(-50.0, 50.0, eig.n_dir)
    whole = [eig.gradients(TRUE["thickness"]), eig.gradients(t_each)]
    assert chunks.GRADIENT_BLOCK_BYTES // (6 * 16 * eig.gamma.shape[1] ** 2) >= eig.n_dir
    monkeypatch.setattr(chunks, "GRADIENT_BLOCK_BYTES", 1)
    for ref, t in zip(whole, (TRUE["thickness"], t_each)):
        got = eig.gradients(t)
        for a, b in zip(got, ref):
            assert np.array_equal(a, b)


def test_systematic_row_recovery_from_three_percent_off(truth_setup):
    sim, sim_true, kt, _ = truth_setup
    rng = np.random.default_rng(2024)
    data = synthetic_data(sim_true, kt, rng)
    ref = make_refinement(sim, data)
    res = ref.fit("lm", max_iter=30)
    print(res.summary())
    t = res.value("thickness")
    u111 = res.value("U(1,-1,-1)")
    u222 = res.value("U(2,-2,-2)")
    assert abs(t / TRUE["thickness"] - 1) < 0.002
    assert abs(u111 / TRUE["U111"] - 1) < 0.001
    assert abs(u222 - TRUE["U222"]) < 2 * res.esd("U(2,-2,-2)")
    assert 0.8 < res.chi2 < 1.25
    # every fitted parameter is counted: 4 refined + scale + 4 backgrounds
    assert res.dof == res.n_used - 4 - 1 - 4
    assert res.correlation.shape == (4, 4)
    assert np.allclose(np.diag(res.correlation), 1.0)
    # the shared result interface (RefinementOutcome, as scipy's OptimizeResult)
    assert res.success and res.nit == res.n_iterations and res.nfev == res.n_solves
    assert res.names == res.free_names and res.x[res.names.index("thickness")] == t
    assert res.x_esd[res.names.index("U(2,-2,-2)")] == res.esd("U(2,-2,-2)")
    assert res.correlation_matrix is res.correlation
    assert res.model.shape == res.experiment.shape == data.intensity.shape


@pytest.mark.slow
def test_pulls_have_unit_spread(truth_setup):
    """(refined − true)/esd over noise realisations: the esds are honest."""
    sim, sim_true, _, kt0 = truth_setup
    kt = line_directions(kt0, n=24)
    clean = sim_true.solve(kt).intensities([TRUE["thickness"]])[0].T
    truth = {"thickness": TRUE["thickness"], "U(1,-1,-1)": TRUE["U111"],
             "Uabs(1,-1,-1)": TRUE["Uabs111"], "U(2,-2,-2)": TRUE["U222"]}
    pulls = {k: [] for k in truth}
    rng = np.random.default_rng(7)
    for _ in range(16):
        obs = rng.poisson(2.0e4 * clean + 40.0).astype(float)
        data = DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0))
        res = make_refinement(sim, data, start=1.02).fit("lm", max_iter=20)
        for k, v in truth.items():
            pulls[k].append((res.value(k) - v) / res.esd(k))
    all_pulls = np.concatenate([np.asarray(v) for v in pulls.values()])
    spread = float(np.std(all_pulls))
    print("pull std per parameter:", {k: round(float(np.std(v)), 2) for k, v in pulls.items()},
          f"all: {spread:.2f}, mean {np.mean(all_pulls):+.2f}")
    assert 0.7 <= spread <= 1.4
    assert abs(np.mean(all_pulls)) < 0.5


def test_larbed_probe_is_recovered():
    """A LACBED-like image grid blurred by a 2-D Voigt probe: σ and γ come back."""
    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    sim = Simulation(cr, 200, [1, -1, 0], [0, 0, -1], gmax=1.6, smax=0.02, kt_radius=0.3,
                     holz=False, outputs=[[0, 0, 2], [1, 1, 1], [2, 2, 0]], mode="exact",
                     potential=PotentialModel("kirkland", "bird_king"))
    pad, ny, nx = 8, 28, 36
    grid = TiltGrid.regular((0.04, 0.02), (0.006, 0.0), (0.0, -0.006), (ny + 2 * pad, nx + 2 * pad))
    kt = grid.points
    t_true, sigma, gamma = 1200.0, 1.6, 0.4
    inten = sim.solve(kt).intensities([t_true])[0].T
    blurred = convolve_probe(inten.reshape(-1, ny + 2 * pad, nx + 2 * pad), sigma, gamma)
    rng = np.random.default_rng(3)
    obs = rng.poisson(5e4 * blurred.reshape(len(inten), -1) + 20.0).astype(float)
    data = DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0),
                      regions=[RegionGrid(0, (ny + 2 * pad, nx + 2 * pad), pad)])
    ref = Refinement(sim, data, background="single", probe=(1.0, 1.0))
    ref.add_thickness(t_true * 1.01)
    res = ref.fit("lm", max_iter=40)
    print(res.summary())
    assert abs(res.value("probe.sigma") - sigma) < 0.1 * sigma
    assert abs(res.value("probe.gamma") - gamma) < 0.15
    assert abs(res.value("thickness") - t_true) < 0.005 * t_true


def test_kill_and_resume_gives_the_same_result(truth_setup, tmp_path):
    sim, sim_true, kt, _ = truth_setup
    data = synthetic_data(sim_true, kt[::2], np.random.default_rng(11))
    full = make_refinement(sim, data, checkpoint=tmp_path / "full.h5").fit("lm", max_iter=30)

    class Killed(Exception):
        pass

    calls = {"n": 0}

    def kill_after_two(_record):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed

    ck = tmp_path / "killed.h5"
    with pytest.raises(Killed):
        make_refinement(sim, data, checkpoint=ck).fit("lm", max_iter=30, callback=kill_after_two)
    assert ck.exists()
    resumed = make_refinement(sim, data, checkpoint=ck).fit("lm", max_iter=30, resume=True)
    for p in full.parameters.free:
        assert resumed.value(p.name) == pytest.approx(p.value, rel=1e-10, abs=1e-15)
    assert resumed.n_iterations == full.n_iterations
    assert len(resumed.history) == len(full.history)


def test_nested_scheme_and_derivative_free_outer(truth_setup):
    sim, sim_true, kt, _ = truth_setup
    data = synthetic_data(sim_true, kt[::3], np.random.default_rng(5))
    lm = make_refinement(sim, data).fit("lm", max_iter=30)
    nested = make_refinement(sim, data).fit("nested", outer="lm", max_iter=30)
    for name in ("thickness", "U(1,-1,-1)", "U(2,-2,-2)"):
        assert nested.value(name) == pytest.approx(lm.value(name), rel=1e-4, abs=2e-6)
    nm = make_refinement(sim, data, start=1.01)
    nm.params["Uabs(1,-1,-1)"].refine = False
    res = nm.fit("nested", outer="nelder-mead", max_iter=60)
    assert res.value("U(1,-1,-1)") == pytest.approx(lm.value("U(1,-1,-1)"), rel=2e-3)


def test_refinement_rejects_bad_set_ups(truth_setup):
    sim, sim_true, kt, _ = truth_setup
    data = synthetic_data(sim_true, kt[::4], np.random.default_rng(1))
    ref = Refinement(sim, data)
    with pytest.raises(InputError, match="thickness"):
        ref.evaluate()
    with pytest.raises(InputError, match="nothing to refine"):
        r2 = Refinement(sim, data)
        r2.add_thickness(1000.0, refine=False)
        r2.fit()
    bad = DirectData([[3, 3, 3]], kt[:5], np.ones((1, 5)), np.ones((1, 5)))
    with pytest.raises(InputError, match="output"):
        Refinement(sim, bad)


def test_parameter_registry_symmetry_constraints():
    from qcbed.refine.parameters import (
        allowed_displacements,
        allowed_u_tensors,
        apply_cell,
        cell_parameters,
    )

    tio2 = Crystal(Lattice(4.594, 4.594, 2.959),
                   [Site("Ti", "Ti", (0, 0, 0), b_iso=0.4),
                    Site("O", "O", (0.3053, 0.3053, 0), b_iso=0.5)],
                   space_group_from_number(136))
    # rutile: Ti on mmm (no free coordinate), O on m.2m (x, x, 0): one direction [110]
    assert allowed_displacements(tio2, 0).shape[0] == 0
    d = allowed_displacements(tio2, 1)
    assert d.shape[0] == 1 and np.allclose(np.abs(d[0]), [2**-0.5, 2**-0.5, 0])
    # U tensors: U11 = U22, U33, U12 free (three parameters) for both sites
    for i in (0, 1):
        basis, coeff = allowed_u_tensors(tio2, i)
        assert len(basis) == 3
        u = np.tensordot(coeff, basis, 1)
        assert np.allclose(u, u.T) and u[0, 0] == pytest.approx(u[1, 1])
        assert u[0, 0] == pytest.approx(tio2.sites[i].b_iso / (8 * np.pi**2), rel=1e-9)
    # cubic Si: one isotropic tensor
    assert len(allowed_u_tensors(si_crystal(), 0)[0]) == 1
    # tetragonal cell: a and c only; a change keeps a = b
    cp = cell_parameters(tio2)
    assert [p.name for p in cp] == ["cell.a", "cell.c"]
    new = apply_cell(tio2, {"a": 4.6}, "tetragonal")
    assert new.lattice.b == 4.6 and new.lattice.c == 2.959


def test_orientation_and_anisotropic_parameters_refine(truth_setup):
    sim, sim_true, kt, _ = truth_setup
    data = synthetic_data(sim_true, kt[::3] + np.array([0.0004, 0.0]),
                          np.random.default_rng(9))
    data.kt = kt[::3]  # the data were made 0.0004 Å⁻¹ further along x than it says
    ref = make_refinement(sim, data, start=1.0)
    ref.params["Uabs(1,-1,-1)"].refine = False
    ref.add_orientation()
    res = ref.fit("lm", max_iter=30)
    assert res.value("tilt.x") == pytest.approx(0.0004, abs=4 * res.esd("tilt.x"))
    ref2 = make_refinement(sim, data, start=1.0)
    ps = ref2.add_u_aniso("Si")
    assert len(ps) == 1 and ps[0].value == pytest.approx(0.4668 / (8 * np.pi**2), rel=1e-6)
