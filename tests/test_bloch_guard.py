"""The fast solver's near-degenerate clusters and the always-on physical guard (issue 17).

Reproduction: Ge0.9Sn0.1 [1-10] at 200 kV with a 613-beam pool, 200 strong beams
and ~413 Bethe beams, where the perturbative absorption step used to return
intensities up to 1e72 (weakly excited, near-degenerate Bloch waves coupled by
absorption got second-order eigenvalue shifts of the wrong sign).
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch import Simulation
from qcbed.bloch import solver as S
from qcbed.bloch.beams import BeamSelection
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel

GESN_KT = np.array([(0.62365, 0.21985), (0.62365, -0.21985), (0.56981, 0.49802),
                    (0.56981, -0.49802), (0.58775, 0.08525), (0.58775, -0.08525),
                    (0.65057, 0.19293), (0.65057, -0.19293)])
OUT = np.array([(0, 0, 2), (0, 0, -2), (1, 1, 1), (-1, -1, 1), (1, 1, -1), (-1, -1, -1),
                (2, 2, 0), (-2, -2, 0), (1, 1, 3), (-1, -1, 3), (2, 2, 2), (0, 0, 4)])


def gesn() -> Crystal:
    a = 5.64613
    return Crystal(Lattice(a, a, a),
                   [Site("Ge1", "Ge", (0, 0, 0), occupancy=0.9, b_iso=0.644),
                    Site("Sn1", "Sn", (0, 0, 0), occupancy=0.1, b_iso=0.644)],
                   "F d -3 m :1")


def gesn_sim(mode: str) -> Simulation:
    return Simulation(gesn(), 200.0, [1, -1, 0], [0, 0, -1], normal=[1, -1, 0],
                      potential=PotentialModel("kirkland", "bird_king"),
                      selection=BeamSelection(sgmin=0.3, omega=30.0, min_strong=200),
                      gmax=3.0, smax=0.02, holz=True, kt_radius=0.673 * np.sqrt(2),
                      min_pool=600, outputs=OUT, mode=mode, executor="serial")


def per_direction_error(i_fast: np.ndarray, i_exact: np.ndarray) -> np.ndarray:
    """max over thickness and beams of |ΔI| per direction, over the max intensity."""
    return np.abs(i_fast - i_exact).max(axis=(0, 2)) / np.abs(i_exact).max()


@pytest.mark.slow
def test_gesn_reproduction_is_finite_and_matches_exact():
    fast, exact = gesn_sim("fast"), gesn_sim("exact")
    assert len(fast.pool) == 613
    sol_f, sol_e = fast.solve(GESN_KT), exact.solve(GESN_KT)
    t = [500.0, 1300.0, 3000.0]
    i_f, i_e = sol_f.intensities(t), sol_e.intensities(t)
    assert np.all(np.isfinite(i_f))
    assert np.nanmax(i_f.sum(axis=-1)) <= 1.0
    err = per_direction_error(i_f, i_e)
    print("GeSn per-direction fast vs exact:", np.array2string(err, precision=2))
    assert err.max() < 1e-3
    counts = sol_f.beam_counts()
    assert counts["rejected"] == 0
    assert counts["clustered"] == len(GESN_KT)   # the clusters are what fixes it
    assert counts["weak_mean"] > 400


def _si(origin_choice: int = 2) -> Crystal:
    a = 5.4307
    xyz = (0.125, 0.125, 0.125) if origin_choice == 2 else (0.0, 0.0, 0.0)
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", xyz, b_iso=0.47)],
                   f"F d -3 m :{origin_choice}")


def _gaas() -> Crystal:
    a = 5.6533
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25, 0.25, 0.25), b_iso=0.5)], 216)


CRYSTALS = {"Si": _si, "GaAs": _gaas}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Si", "GaAs"])
@pytest.mark.parametrize("bethe,gmax,min_strong", [(True, 2.5, 40), (False, 1.6, 0),
                                                    (True, 3.2, 90)])
def test_fast_matches_exact_every_direction_random(name, bethe, gmax, min_strong):
    """Random directions over a wide tilt range: fast within 1e-3 of exact everywhere."""
    rng = np.random.default_rng(hash((name, bethe, gmax)) % 2**32)
    zone, x = ([1, -1, 0], [0, 0, -1]) if rng.random() < 0.5 else ([0, 0, 1], [1, 0, 0])
    radius = 0.6
    kt = rng.uniform(-radius, radius, (40, 2))
    res = {}
    for mode in ("fast", "exact"):
        sim = Simulation(CRYSTALS[name](), 200.0, zone, x,
                         potential=PotentialModel("kirkland", "bird_king"),
                         selection=BeamSelection(sgmin=0.3, omega=30.0, bethe=bethe,
                                                 min_strong=min_strong),
                         gmax=gmax, smax=0.03, kt_radius=radius * np.sqrt(2), mode=mode,
                         executor="serial")
        sol = sim.solve(kt)
        res[mode] = sol.intensities([400.0, 1500.0, 4000.0])
        if mode == "fast":
            counts = sol.beam_counts()
    err = per_direction_error(res["fast"], res["exact"])
    print(name, bethe, gmax, counts, f"worst {err.max():.2e}")
    assert np.all(np.isfinite(res["fast"]))
    assert err.max() < 1e-3
    assert counts["rejected"] == 0


# ------------------------------------------------------------------ the guard
def test_physically_invalid_flags_growth_nan_and_amplitude():
    n = 4
    gam = np.full((4, n), 0.01 + 1e-5j)
    bout = np.tile(np.eye(n)[:2][None], (4, 1, 1)).astype(complex)
    c = np.full((4, n), 0.5 + 0j)
    gam[1, 2] = 0.01 - 1e-4j              # a growing Bloch wave
    c[2, 0] = np.nan                       # not a number
    bout[3, 0] = 3.0                       # Σ|B||c| = 1.5·... > limit
    bad = S.physically_invalid(gam, bout, c)
    assert bad.tolist() == [False, True, True, True]
    # the amplitude bound is for perturbative solutions only
    assert S.physically_invalid(gam, bout, c, check_amplitude=False).tolist() == \
        [False, True, True, False]
    # an unphysical model's own growth is allowed, no more
    assert not S.physically_invalid(gam[1:2], bout[1:2], c[1:2], max_growth=2e-4)[0]


def test_flux_guard_sets_nan():
    inten = np.array([[[0.5, 0.4], [0.7, 0.4], [0.2, 0.1]]])  # (1 t, 3 dirs, 2 beams)
    out = S.flux_guard(inten.copy(), [1000.0])
    assert np.isnan(out[0, 1]).all() and np.isfinite(out[0, [0, 2]]).all()
    # a model that allows growth is held to its own bound
    assert np.isfinite(S.flux_guard(inten.copy(), [1000.0], max_growth=1e-4)).all()


def _small_sim(mode="fast"):
    return Simulation(_si(), 200.0, [1, -1, 0], [0, 0, -1],
                      potential=PotentialModel("kirkland", "bird_king"),
                      gmax=1.5, smax=0.03, kt_radius=0.1, mode=mode, executor="serial")


def test_guard_resolves_corrupted_fast_directions_exactly(monkeypatch):
    sim = _small_sim()
    kt = np.array([[0.01, 0.02], [0.03, -0.01], [-0.02, 0.04]])
    ref = S.solve_chunk(_small_sim("exact").arrays, kt).intensities([1500.0])
    good = S._absorb_perturbatively
    calls = []

    def corrupt(*args):
        gam, bout, c, unsafe, n_cl = good(*args)
        gam = gam.copy()
        if not calls:                       # the first batch's first direction grows
            gam[0, -1] -= 0.01j
        calls.append(len(gam))
        return gam, bout, c, np.zeros_like(unsafe), n_cl

    monkeypatch.setattr(S, "_absorb_perturbatively", corrupt)
    eig = S.solve_chunk(sim.arrays, kt)
    assert eig.n_fallback == 1 and eig.n_rejected == 0
    got = eig.intensities([1500.0])
    assert np.max(np.abs(got - ref)) < 1e-3 * ref.max()


def test_guard_rejects_when_exact_fails_too(monkeypatch):
    sim = _small_sim()
    kt = np.array([[0.01, 0.02], [0.03, -0.01]])
    good_p, good_e = S._absorb_perturbatively, S._solve_exact

    def corrupt_p(*args):
        gam, bout, c, unsafe, n_cl = good_p(*args)
        gam = gam.copy()
        gam[0, 0] -= 0.01j
        return gam, bout, c, unsafe, n_cl

    def corrupt_e(a, kn2):
        gam, vec, c = good_e(a, kn2)
        return gam - 0.01j, vec, c

    monkeypatch.setattr(S, "_absorb_perturbatively", corrupt_p)
    monkeypatch.setattr(S, "_solve_exact", corrupt_e)
    eig = S.solve_chunk(sim.arrays, kt)
    assert eig.n_fallback == 1 and eig.n_rejected == 1
    inten = eig.intensities([1000.0])
    assert np.isnan(inten[0, 0]).all() and np.isfinite(inten[0, 1]).all()
    pc = S.pattern_chunk(sim.arrays, kt, np.array([1000.0]))
    counts = pc.counts()
    assert (counts["directions"], counts["exact_fallback"], counts["rejected"]) == (2, 1, 1)


def test_exact_mode_guard_rejects(monkeypatch):
    sim = _small_sim("exact")
    good_e = S._solve_exact

    def corrupt_e(a, kn2):
        gam, vec, c = good_e(a, kn2)
        gam = gam.copy()
        gam[-1, 0] -= 0.01j
        return gam, vec, c

    monkeypatch.setattr(S, "_solve_exact", corrupt_e)
    eig = S.solve_chunk(sim.arrays, np.array([[0.0, 0.01], [0.01, 0.0]]))
    assert eig.n_rejected == 1
    assert np.isnan(eig.intensities([800.0])[0, 1]).all()


def test_torch_guard_resolves_and_rejects(monkeypatch):
    torch = pytest.importorskip("torch", reason="torch is not installed: the optional GPU "
                                "backend's guard is tested where torch is")
    from qcbed.parallel import gpu

    sim = _small_sim()
    kt = np.array([[0.01, 0.02], [0.03, -0.01], [-0.02, 0.04]])
    ref = S.solve_chunk(sim.arrays, kt)
    good = S._absorb_perturbatively

    def corrupt(*args):
        gam, bout, c, unsafe, n_cl = good(*args)
        assert isinstance(gam, torch.Tensor)      # the shared kernel runs on tensors
        gam = gam.clone()
        gam[2, 0] -= 0.01j
        return gam, bout, c, torch.zeros_like(unsafe), n_cl

    monkeypatch.setattr(S, "_absorb_perturbatively", corrupt)
    got = gpu.solve_chunk_torch(sim.arrays, kt, device="cpu")
    assert got.n_fallback == ref.n_fallback + 1 and got.n_rejected == 0
    assert np.max(np.abs(got.intensities([1500.0]) - ref.intensities([1500.0]))) < 1e-3
    good_e = S._solve_exact

    def corrupt_e(a, kn2):
        gam, vec, c = good_e(a, kn2)
        return gam - 0.01j, vec, c

    monkeypatch.setattr(S, "_solve_exact", corrupt_e)
    got = gpu.pattern_chunk_torch(sim.arrays, kt, np.array([1500.0]), device="cpu")
    assert got.n_rejected == 1 and np.isnan(got.intensities[0, 2]).all()


def test_clusters_are_connected_components():
    big = np.zeros((2, 6, 6), bool)
    for d, j, k in [(0, 0, 3), (0, 3, 5), (0, 1, 2), (1, 4, 5)]:
        big[d, j, k] = big[d, k, j] = True
    found = {(m.shape[1], d, tuple(sorted(r))) for dirs, m in S._clusters(big)
             for d, r in zip(dirs, m)}
    assert found == {(3, 0, (0, 3, 5)), (2, 0, (1, 2)), (2, 1, (4, 5))}


def test_unphysical_absorption_model_warns():
    sim = _small_sim()
    u_abs0 = sim.arrays.u_abs0
    assert sim.arrays.absorption_floor == 0.0 and sim.arrays.max_growth == 0.0
    with pytest.warns(UserWarning, match="absorptive potential is unphysical"):
        s2 = Simulation(_si(), 200.0, [1, -1, 0], [0, 0, -1],
                        potential=PotentialModel("kirkland", "bird_king"), u_abs0=0.0,
                        gmax=1.5, smax=0.03, kt_radius=0.1, executor="serial")
        s2.arrays
    assert u_abs0 > 0 and s2.arrays.max_growth > 0


# ------------------------------------------------------------------ the CLI reports it
GESN_CIF = """data_gesn
_cell_length_a 5.64613
_cell_length_b 5.64613
_cell_length_c 5.64613
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'F d -3 m :1'
_space_group_IT_number 227
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_B_iso_or_equiv
Ge1 Ge 0 0 0 0.9 0.644
Sn1 Sn 0 0 0 0.1 0.644
"""

GESN_INP = """# Ge0.9Sn0.1 [1-10], 200 kV (issue 17 reproduction; an older file: normal_direction)
scatter_factor_method     = 0
holz_flag                 = 1
absorption_method         = 2
min_reflection_pool       = 600
min_strong_beams          = 200
incident_beam_direction   = [1, -1, 0]
x_direction               = [0, 0, -1]
normal_direction          = [1, -1, 0]
initial_thickness         = 1300.0
final_thickness           = 1300.0
delta_thickness           = 10.0
convergence_angle         = 0.673
accelerating_voltage_kv   = 200.0
image_radius              = {radius}
"""


def write_gesn_folder(folder, radius: int = 75):
    """The issue-17 reproduction as a Felix-style folder (no images needed to simulate)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "felix.inp").write_text(GESN_INP.format(radius=radius))
    (folder / "felix.cif").write_text(GESN_CIF)
    (folder / "felix.hkl").write_text("".join(f"[{h}, {k}, {l}]\n" for h, k, l in OUT))
    return folder


def test_cli_simulate_records_solver_counts(tmp_path):
    import h5py
    from click.testing import CliRunner

    from qcbed.cli import main

    d = write_gesn_folder(tmp_path / "gesn", radius=5)
    out = tmp_path / "sim.h5"
    # the settings: Felix's 0.02 pool limit and the legacy thresholds with
    # min_strong_beams 200 (the engine would otherwise choose its own)
    r = CliRunner().invoke(main, ["-q", "--workers", "1", "simulate", str(d), "--out", str(out),
                                  "--smax", "0.02", "--sgmin", "0.3"])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        attrs = dict(f.attrs)
        inten = f["intensity"][()]
    assert attrs["pool_size"] == 613
    assert attrs["rejected"] == 0 and attrs["solved_directions"] > 0
    assert attrs["exact_fallback"] >= 0 and attrs["clustered"] > 0
    assert np.nanmax(np.nansum(inten, axis=1)) <= 1.0
