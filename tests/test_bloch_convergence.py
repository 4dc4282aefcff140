"""Converged by default: the engine chooses its selection (and pool) for an accuracy target.

The reference is independent of the choice: every pool beam strong (no Bethe
potentials) on the same pool, evaluated on directions that the set-up check
never saw.
"""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from qcbed.bloch import Simulation
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.convergence import sample_directions, selection_directions
from qcbed.cli import main
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel

A = 5.4307
KW = dict(potential=PotentialModel("kirkland", "bird_king"), kt_radius=0.25, gmax=2.2,
          executor="serial", check_thickness=[1200.0])


def si() -> Crystal:
    return Crystal(Lattice(A, A, A), [Site("Si1", "Si", (0.125,) * 3, b_iso=0.47)],
                   "F d -3 m :2")


def error_vs_all_strong(sim: Simulation, kt: np.ndarray, t) -> float:
    ref = sim.with_changes(selection=BeamSelection.all_strong())
    i, r = sim.solve(kt).intensities(t), ref.solve(kt).intensities(t)
    return float(np.max(np.abs(i - r)) / np.max(r))


@pytest.fixture(scope="module")
def auto_sim() -> Simulation:
    return Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], smax=0.05, **KW)


def test_default_selection_meets_the_accuracy_on_unseen_directions(auto_sim):
    conv = auto_sim.convergence
    assert conv.chosen and conv.accuracy == 1e-3
    assert conv.error <= 0.7e-3 and conv.converged
    rng = np.random.default_rng(5)
    r = 0.25 * np.sqrt(rng.uniform(0, 1, 20))
    a = rng.uniform(0, 2 * np.pi, 20)
    kt = np.c_[r * np.cos(a), r * np.sin(a)]
    err = error_vs_all_strong(auto_sim, kt, [1200.0])
    print("chosen", conv.summary(), "unseen directions:", f"{err:.1e}")
    assert err <= 1e-3
    # the legacy thresholds are far from it on the same directions (the test can fail)
    legacy = auto_sim.with_changes(selection=BeamSelection(0.3, 30.0))
    assert error_vs_all_strong(legacy, kt, [1200.0]) > 3e-3


def test_selection_check_samples_the_inner_disc(auto_sim):
    # the ladder's directions: the pool walk's 13 and a ring of 6 at a quarter of the
    # radius (the 13 leave the inner half to the centre alone; docs/validation.md)
    kt = selection_directions((0.1, -0.2), 0.4)
    np.testing.assert_array_equal(kt[:13], sample_directions((0.1, -0.2), 0.4))
    r = np.hypot(*(kt[13:] - (0.1, -0.2)).T)
    np.testing.assert_allclose(r, 0.1, rtol=1e-12)
    assert len(np.unique(np.round(np.arctan2(*(kt[13:] - (0.1, -0.2)).T), 6))) == 6
    # the chosen selection's error is the maximum over all 19
    conv = auto_sim.convergence
    assert conv.n_directions == 19
    sim = auto_sim.with_changes(selection=BeamSelection(conv.sgmin, conv.omega))
    ref = sim.with_changes(selection=BeamSelection.all_strong())
    i = sim.solve(kt19 := selection_directions((0.0, 0.0), 0.25)).intensities([1200.0])
    r19 = ref.solve(kt19).intensities([1200.0])
    err = np.abs(i - r19).max(axis=(0, 2)) / r19.max()
    assert np.isclose(err.max(), conv.error, rtol=1e-6)


def test_fixed_selection_is_honoured_and_its_error_reported():
    with pytest.warns(UserWarning, match="not converged"):
        sim = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], smax=0.05,
                         selection=BeamSelection(0.3, 30.0), **KW)
        conv = sim.convergence
    assert not conv.chosen and conv.sgmin == 0.3 and sim.selection.sgmin == 0.3
    kt = selection_directions((0.0, 0.0), 0.25)
    assert conv.error == pytest.approx(error_vs_all_strong(sim, kt, [1200.0]), rel=1e-6)
    assert conv.pool_error is None


def test_accuracy_none_keeps_the_legacy_defaults():
    sim = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], accuracy=None, **KW)
    assert sim.selection == BeamSelection() and sim.pool_settings["smax"] == 0.05


def test_automatic_pool_reports_its_growth_error():
    sim = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], **KW)
    conv = sim.convergence
    assert conv.chosen and conv.pool_error is not None and conv.smax >= 0.05
    assert any("smax" in s for s in conv.steps)
    d = conv.as_dict()
    json.dumps(d)
    assert d["pool_size"] == len(sim.pool)


def test_tighter_accuracy_takes_more_strong_beams(auto_sim):
    tight = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], smax=0.05, accuracy=1e-4, **KW)
    assert tight.selection.sgmin > auto_sim.selection.sgmin
    assert tight.convergence.error <= 0.7e-4


def test_bad_accuracy_is_refused():
    from qcbed.errors import InputError

    with pytest.raises(InputError, match="accuracy"):
        Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], accuracy=2.0, **KW)


SI_CIF = """data_si
_cell_length_a 5.4307
_cell_length_b 5.4307
_cell_length_c 5.4307
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'F d -3 m :2'
_space_group_IT_number 227
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Si1 Si 0.125 0.125 0.125 0.47
"""

SI_INP = """scatter_factor_method     = 0
holz_flag                 = 1
absorption_method         = 2
min_reflection_pool       = 40
min_strong_beams          = 10
incident_beam_direction   = [1, -1, 0]
x_direction               = [0, 0, -1]
normal                    = [1, -1, 0]
initial_thickness         = 1200.0
final_thickness           = 1200.0
delta_thickness           = 10.0
convergence_angle         = 0.25
accelerating_voltage_kv   = 200.0
image_radius              = 6
g_limit                   = 2.2
"""


def test_cli_simulate_convergence_error_and_all_strong_reference(tmp_path):
    d = tmp_path / "si"
    d.mkdir()
    (d / "felix.inp").write_text(SI_INP)
    (d / "felix.cif").write_text(SI_CIF)
    (d / "felix.hkl").write_text("[1, 1, 1]\n[-1, -1, -1]\n[0, 0, 2]\n[2, 2, 0]\n")
    out, ref = tmp_path / "x.h5", tmp_path / "r.h5"
    r = CliRunner().invoke(main, ["-q", "--workers", "1", "simulate", str(d), "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["-q", "--workers", "1", "simulate", str(d), "--all-strong",
                                  "--out", str(ref)])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f, h5py.File(ref) as g:
        err = float(f.attrs["convergence_error"])
        conv = json.loads(f.attrs["convergence"])
        assert g.attrs["all_strong"] and g.attrs["convergence_error"] == 0.0
        assert f.attrs["pool_size"] == g.attrs["pool_size"]
        i, iref = f["intensity"][()], g["intensity"][()]
    full = float(np.nanmax(np.abs(i - iref)) / np.nanmax(iref))
    print(f"convergence_error {err:.1e}; full grid vs --all-strong {full:.1e}")
    assert conv["chosen_by_engine"] and err <= 1e-3
    assert full <= 1e-3


def test_refined_structure_factors_are_checked_and_the_selection_tightened(auto_sim):
    """The selection chosen for the start structure can miss the target at refined U_g
    (Simulation.converged_variant; the project run repeats its last fine step then)."""
    refined = auto_sim.with_changes()
    # a refined U'(111) 7x Bird-King's makes the absorptive matrix unphysical: the classic
    # Bethe potentials replace the Loewdin terms and the chosen sgmin no longer suffices
    u111 = auto_sim.structure_factor((1, 1, 1))[0]
    with pytest.warns(UserWarning):
        refined.set_structure_factors({(1, 1, 1): (u111, 0.004)})
        c0 = refined.convergence
    assert c0.chosen and c0.pool_error == auto_sim.convergence.pool_error  # record kept
    assert c0.error > 2e-3   # the set-up's choice no longer meets 1e-3 (the test can fail)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tight = refined.converged_variant()
    c1 = tight.convergence
    assert tight is not refined and c1.chosen and c1.error <= 1e-3
    assert c1.sgmin > c0.sgmin and "refined structure" in c1.steps[-1]
    kt = selection_directions((0.0, 0.0), 0.25)
    assert c1.error == pytest.approx(error_vs_all_strong(tight, kt, [1200.0]), rel=1e-6)
    # the tightened selection carried to the un-refined set-up keeps the record
    base = auto_sim.with_selection_of(tight)
    assert base.selection.sgmin == c1.sgmin and base.convergence.chosen
    assert base.structure_factor((1, 1, 1))[0] == auto_sim.structure_factor((1, 1, 1))[0]
    # a converged set-up, and one whose selection a user fixed, are returned unchanged
    assert auto_sim.converged_variant() is auto_sim
    fixed = refined.with_changes(selection=BeamSelection(0.3, 30.0))
    with pytest.warns(UserWarning, match="not converged"):
        assert not fixed.convergence.chosen
    assert fixed.converged_variant() is fixed


def test_variants_check_the_accuracy_on_the_set_up_directions():
    """with_changes keeps the accuracy check's directions (kt_center, kt_radius) and the
    set-up's record: a variant with nothing changed reports the same error."""
    sim = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], smax=0.05, kt_center=(0.3, 0.1),
                     **KW)
    c, v = sim.convergence, sim.with_changes().convergence
    assert v.error == pytest.approx(c.error, rel=1e-9)
    assert v.chosen and v.pool_error == c.pool_error and v.steps == c.steps


def test_grown_pool_variant_adds_beams_and_keeps_the_rest():
    """with_grown_pool (the budget's pool entry): the chosen pool's s_max × 4 from the
    convergence record, the same selection rule, outputs and structure-factor overrides;
    its intensities differ from the pool in use by about the recorded pool error. (Without
    the tail: a set-up with one grows its tail instead, tests/test_bloch_tail_default.py.)"""
    sim = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], **KW, tail=False)
    sim.set_structure_factors({(1, -1, -1): (0.048, 0.0006)})
    var = sim.with_changes()  # a refinement's model: an explicit pool, the record kept
    rec = sim.convergence
    big = var.with_grown_pool(4.0)
    assert big.pool_settings["smax"] == pytest.approx(4 * rec.smax)
    assert len(big.pool) > len(sim.pool)
    assert big.selection == sim.selection
    assert np.array_equal(big.pool.outputs, sim.pool.outputs)
    assert big._overrides == var._overrides == sim._overrides
    kt = sample_directions((0.0, 0.0), 0.25)[:5]
    a = var.solve(kt).intensities([1200.0])
    b = big.solve(kt).intensities([1200.0])
    d = float(np.max(np.abs(a - b)) / np.max(b))
    assert 0 < d < 10 * max(rec.pool_error, 1e-4)
    from qcbed.errors import InputError

    with pytest.raises(InputError):
        var.with_grown_pool(0.5)
    # a pool given by the caller (or a file) has no automatic limits: no growth, no entry
    given = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], pool=sim.pool.hkl[:40],
                       selection=BeamSelection(0.3, 30.0), **KW)
    assert given.automatic_pool_limits is None
    with pytest.raises(InputError, match="no automatic pool"):
        given.with_grown_pool()
    assert var.automatic_pool_limits == (rec.smax, rec.gmax)


def test_pattern_warns_beyond_the_checked_thickness(auto_sim):
    from qcbed.bloch.grids import TiltGrid

    grid = TiltGrid.disc((0.0, 0.0), 0.05, 1)
    assert auto_sim.check_thickness == (1200.0,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto_sim.pattern(grid, [1100.0, 1200.0, 1300.0])     # within 10 % of the check
    with pytest.warns(UserWarning, match=r"checked at 1200 Å; this pattern includes 2400 Å"):
        auto_sim.pattern(grid, [1200.0, 2400.0])
    with pytest.warns(UserWarning, match=r"includes 600 Å, outside"):
        auto_sim.pattern(grid, [600.0, 1200.0])
    # no accuracy claimed (legacy thresholds): nothing to warn about
    legacy = Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], accuracy=None, **KW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        legacy.pattern(grid, 2400.0)
