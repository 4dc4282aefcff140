"""Pattern symmetry in the fine step: a symmetric ROI grid, only irreducible directions
solved, and the same χ², residuals, Jacobian and refined values as solving every one."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.bloch.symmetry import reduce_grid
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.experiment import ROI, ExperimentGeometry, LACBEDStack, Region
from qcbed.experiment.symmetric_grid import symmetric_region
from qcbed.refine.fine import Refinement
from qcbed.scattering.structure_factors import PotentialModel

OUT = [[0, 0, 0], [0, 0, 2], [0, 0, -2], [1, 1, 1], [1, 1, -1], [-1, -1, 1], [-1, -1, -1],
       [2, 2, 0], [-2, -2, 0]]
N = 48  # image side (px)


@pytest.fixture(scope="module")
def sim():
    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                 space_group_from_number(227, 1))
    return Simulation(cr, 200, [1, -1, 0], [0, 0, -1], outputs=OUT, gmax=1.6, smax=0.02,
                      kt_radius=0.15, holz=False, mode="exact", accuracy=None,
                      potential=PotentialModel("kirkland", "bird_king"),
                      selection=BeamSelection(1.0, 40))


@pytest.fixture(scope="module")
def data(sim):
    """Noisy LACBED images of the pattern, its geometry (Felix-like: rotation −90°)."""
    geom = ExperimentGeometry(sim.frame, (N, N), rotation=-90.0, gl=200.0,
                              tilt0=(0.00035, -0.0005))  # ≈ half a pixel off
    inten = sim.solve(geom.tilt_grid().kt).intensities(1300.0)[0]
    rng = np.random.default_rng(3)
    stack = LACBEDStack(rng.poisson(np.moveaxis(inten, -1, 0) * 5e3).astype(float), OUT,
                        geometry=geom)
    return stack, geom


def _ops(sim):
    return [s for _, s in sim.pattern_symmetry()]


def test_symmetric_region_closes_the_grid_under_2mm(sim, data):
    _, geom = data
    reg = Region.rectangle((12.0, 12.0), (24.0, 24.0), (13, 13))
    pts = geom.display_to_kt(reg.points()).reshape(-1, 2)
    ops = sim.pattern_symmetry()
    assert len(ops) == 4
    step = float(np.linalg.norm(pts[1] - pts[0]))
    assert len(reduce_grid(pts, ops, sim.outputs, 1e-6 * step).representatives) == len(pts)
    moved, shift = symmetric_region(reg, geom, _ops(sim))
    assert np.all(np.abs(shift) <= 1.0 + 1e-9) and np.any(shift != 0)  # < one 2-px step
    pts2 = geom.display_to_kt(moved.points()).reshape(-1, 2)
    red = reduce_grid(pts2, ops, sim.outputs, 1e-6 * step)
    # 13 x 13 about the zone axis (within a sample of the centre): ≈ a quarter solved
    assert len(red.representatives) <= (13 * 13) // 3
    # a grid rotated against the mirrors: only the two-fold axis (k_t -> -k_t) maps its
    # lattice onto itself; about half the directions are solved
    a = np.radians(23.4)
    e1, e2 = 24.0 * np.array([np.cos(a), np.sin(a)]), 24.0 * np.array([-np.sin(a), np.cos(a)])
    c0 = np.array([24.0, 24.0]) - (e1 + e2) / 2
    tilted = Region(np.array([c0, c0 + e2, c0 + e1]), 13, 13)
    moved, _ = symmetric_region(tilted, geom, _ops(sim))
    pts3 = geom.display_to_kt(moved.points()).reshape(-1, 2)
    red = reduce_grid(pts3, ops, sim.outputs, 1e-6 * step)
    assert (13 * 13) // 2 <= len(red.representatives) <= (13 * 13) // 2 + 13
    # mirrors only (no two-fold), rotated grid: nothing maps it, the region is left alone
    mirrors = [s for s in _ops(sim) if abs(np.linalg.det(s) + 1) < 1e-9]
    assert len(mirrors) == 2
    same, s0 = symmetric_region(tilted, geom, mirrors)
    assert same is tilted and not np.any(s0)


def _refinement(sim, stack, geom, use_symmetry: bool, tilt: float = 0.0,
                forbidden: bool = False, mode: str = "exact") -> Refinement:
    reg, _ = symmetric_region(Region.rectangle((12.0, 12.0), (24.0, 24.0), (9, 9)), geom,
                              _ops(sim))
    roi = ROI(stack, reg, geom, refine=("shift.row", "shift.col"))
    ref = Refinement(sim.with_changes(mode=mode), roi, use_symmetry=use_symmetry,
                     model_step=1)
    ref.add_thickness(1250.0)
    ref.add_structure_factor((1, 1, 1))
    for h in ((2, 2, 0), (2, 2, 2)):  # 222: zero in the IAM, allowed by the space group
        ref.add_structure_factor(h, refine_uabs=False)
    if forbidden:  # 002: forbidden by the d-glide; a non-zero U′(002) breaks two operations
        ref.add_structure_factor((0, 0, 2), refine_u=False, refine_uabs=True)
    if tilt:
        ref.add_orientation(refine=False)
        ref.params["tilt.x"].value = tilt
        ref.params["tilt.y"].value = -0.7 * tilt
    return ref


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_symmetric_fine_step_is_exact(sim, data, mode):
    stack, geom = data
    full = _refinement(sim, stack, geom, False, mode=mode)
    sym = _refinement(sim, stack, geom, True, mode=mode)
    names = [p.name for p in full.params.free]
    assert {"U(1,1,1)", "Uabs(1,1,1)", "U(2,2,2)", "thickness", "shift.row"} <= set(names)
    r1, j1, _, m1 = full._residuals(names, None, True)
    r2, j2, _, m2 = sym._residuals(names, None, True)
    assert sym.symmetry_counts["operations"] == 4
    assert sym.symmetry_counts["solved"] <= 81 // 3 < full.symmetry_counts["solved"] == 81
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(r2, r1, rtol=1e-10, atol=1e-10 * np.abs(r1).max())
    np.testing.assert_allclose(j2, j1, rtol=1e-10, atol=1e-10 * np.abs(j1).max())
    # a fit: the same path, χ² and refined values
    a = full.fit(max_iter=4)
    b = sym.fit(max_iter=4)
    assert b.chi2 == pytest.approx(a.chi2, rel=1e-10)
    for n in names:
        assert b.value(n) == pytest.approx(a.value(n), rel=1e-9, abs=1e-12)
        assert b.esd(n) == pytest.approx(a.esd(n), rel=1e-8)


def test_symmetry_needs_the_directions_and_the_derivative_tables(sim, data):
    stack, geom = data
    # a tilt moves every direction off the symmetric grid: everything is solved (a tilt
    # along x alone keeps the mirror y -> -y: half would be solved)
    ref = _refinement(sim, stack, geom, True, tilt=0.3 * 0.0025)
    ref.evaluate()
    assert ref.symmetry_counts["solved"] == ref.symmetry_counts["samples"] == 81
    # the derivative table of U′(002) is not invariant under the d-glide and the
    # two-fold screw: only the two other operations are used, and the result is the same
    full = _refinement(sim, stack, geom, False, forbidden=True)
    sym = _refinement(sim, stack, geom, True, forbidden=True)
    names = [p.name for p in full.params.free]
    assert "Uabs(0,0,2)" in names
    r1, j1, _, _ = full._residuals(names, None, True)
    r2, j2, _, _ = sym._residuals(names, None, True)
    assert sym.symmetry_counts["operations"] == 2 and sym.symmetry_counts["solved"] < 81
    np.testing.assert_allclose(r2, r1, rtol=1e-10, atol=1e-10 * np.abs(r1).max())
    np.testing.assert_allclose(j2, j1, rtol=1e-10, atol=1e-10 * np.abs(j1).max())
    # a derivative table that is not invariant (one reflection without its
    # equivalents) removes the operations that do not keep it
    m = len(sim.table.hkl)
    row = {tuple(h): i for i, h in enumerate(sim.table.hkl)}
    du = np.zeros(m, complex)
    du[row[(1, 1, 1)]] = 1.0
    kept = sim.pattern_symmetry((du, np.zeros(m, complex)))
    assert 1 <= len(kept) < 4
    # the table of U(111) linked to its equivalents (with their phases) keeps all four
    coef = sim.sf_coefficients((1, 1, 1), phase=sim.default_phase((1, 1, 1)))
    assert np.count_nonzero(coef) == 4
    assert len(sim.pattern_symmetry((coef, np.zeros(m, complex)))) == 4


def test_automatic_pool_is_closed_under_the_zone_symmetry():
    """A tilt disc off the zone axis used to keep (11,11,3) without its mirror image
    (11,11,-3) (the Si D-LACBED default): then no mirror was usable."""
    from qcbed.bloch.beams import BeamPool
    from qcbed.bloch.symmetry import zone_rotations

    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0))],
                 space_group_from_number(227, 1))
    sim = Simulation(cr, 200, [1, -1, 0], [0, 0, -1], outputs=OUT, gmax=1.6, smax=0.02,
                     kt_radius=0.15, holz=False, accuracy=None)
    rots = [r for r, _ in zone_rotations(sim.crystal, sim.frame)]
    assert len(rots) == 4
    for smax, centre in ((0.05, (0.03, 0.0)), (0.08, (0.03, 0.0)), (0.05, (0.03, -0.02))):
        pool = BeamPool.automatic(sim.crystal, sim.frame, sim.k_in, gmax=3.0, smax=smax,
                                  kt_center=centre, kt_radius=0.0927, holz=True)
        have = {tuple(h) for h in pool.hkl}
        for r in rots:
            assert {tuple(h) for h in pool.hkl @ r} == have
    # a disc far from the zone axis (no operation maps it onto itself): nothing added
    far = dict(gmax=3.0, smax=0.05, kt_radius=0.0927, holz=True)
    a = BeamPool.automatic(sim.crystal, sim.frame, sim.k_in, kt_center=(0.9, 0.4), **far)
    assert len(a.hkl) < len({tuple(h) for r in rots for h in a.hkl @ r})


def _project(tmp_path, sim, stack, geom, symmetric: bool) -> dict:
    from pathlib import Path

    import qcbed.demo

    files = []
    for k in range(len(OUT)):
        f = tmp_path / f"img{k}.npy"
        np.save(f, stack.images[k])
        files.append(str(f))
    return {
        "project": {"name": "symmetric fine grid", "output": str(tmp_path / f"res{symmetric}"),
                    "overwrite": True},
        "crystal": {"source": str(Path(qcbed.demo.__file__).parent / "si.cif")},
        "data": {"kind": "lacbed", "files": files, "hkl": OUT, "variance": "poisson"},
        "geometry": {"voltage_kv": 200.0, "zone": [1, -1, 0], "x_axis": [0, 0, -1],
                     "normal": [1, -1, 0], "mode": "lacbed", "rotation": -90.0,
                     "gl": 200.0, "tilt0": [float(v) for v in geom.tilt0]},
        # a region whose grid the pattern symmetry does not map onto itself as drawn
        "roi": {"regions": [{"corners": [[15.3, 15.3], [15.3, 31.3], [31.3, 15.3]],
                             "samples": [9, 9]}], "symmetric": symmetric},
        "engine": {"mode": "exact", "gmax": 1.6, "smax": 0.02, "holz": False,
                   "sgmin": 1.0, "omega": 40.0, "elastic": "kirkland",
                   "absorption": "bird_king", "executor": "serial"},
        "plan": {"thickness": 1250.0, "budget": False,
                 "fine": [{"name": "U", "refine": ["thickness", "U(1,1,1)", "U(2,2,0)",
                                                   "shift.row", "shift.col"],
                           "max_iter": 12}]},  # converged: the grids are compared
    }


def test_project_run_moves_the_region_and_solves_the_orbits(sim, data, tmp_path):
    from qcbed.project import ProjectRun, parse_project

    stack, geom = data
    out = {}
    for symmetric in (True, False):
        logs: list[str] = []
        run = ProjectRun(parse_project(_project(tmp_path, sim, stack, geom, symmetric),
                                       source=str(tmp_path / "p.toml"), base_dir=tmp_path),
                         progress=False, log=logs.append)
        res = run.run().fine
        out[symmetric] = (res, run._last_refinement, logs)
    res, ref, logs = out[True]
    moved = [s for s in logs if "moved by" in s]
    assert len(moved) == 1 and "4 operations" in moved[0] and "of 81 directions" in moved[0]
    assert ref.symmetry_counts["solved"] <= 81 // 3 and "pattern symmetry" in res.message
    res0, ref0, logs0 = out[False]
    assert ref0.symmetry_counts["solved"] == 81 and not any("moved" in s for s in logs0)
    # the moved grid compares other data positions (< 1 sample away): close, not equal
    for n in ("U(1,1,1)", "thickness"):
        assert abs(res.value(n) - res0.value(n)) < 2 * res0.esd(n)
    assert res.value("U(1,1,1)") != res0.value("U(1,1,1)")
