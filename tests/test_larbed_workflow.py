"""LARBED end to end from the command line: a 4-D dataset made by the engine →
``qcbed extract`` (with the k_t of the reference tilt) → ``qcbed import-larbed`` →
``qcbed validate`` → ``qcbed refine``, which recovers the thickness and two U_g within
their esds; the refined CIF comes out beside the hkl table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.cli import main
from qcbed.crystal import Crystal, Lattice
from qcbed.crystal.structure import Site
from qcbed.larbed import SpotMap, SpotPredictor, TiltCalibration
from qcbed.larbed.synthetic import SpotRenderer, synthetic_larbed, write_npy_stream
from qcbed.scattering.structure_factors import PotentialModel

A = 5.4307
NY = NX = 12
STEP = 0.03                  # Å⁻¹ per tilt step
KT_CENTRE = (0.012, -0.021)  # Å⁻¹ at the grid centre
DOSE = 5.0e4
DET = (112, 112)
REF = ((NY - 1) / 2, (NX - 1) / 2)
KREF_ERROR = (2 * STEP, -2 * STEP)  # error of the k_t given to extract --kt-reference
# the project's pool: around the grid as extract places it (off by KREF_ERROR), the whole
# grid widened by the coarse step's search margin (4 steps), + 5 steps
POOL_CENTRE = (KT_CENTRE[0] + KREF_ERROR[0], KT_CENTRE[1] + KREF_ERROR[1])
POOL_RADIUS = ((NY - 1) / 2 + 4) * STEP * np.sqrt(2) + 5 * STEP
THICKNESS = 900.0
CIF = f"""data_si
_cell_length_a {A}
_cell_length_b {A}
_cell_length_c {A}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_IT_number 227
_space_group_name_H-M_alt 'F d -3 m'
_space_group_IT_coordinate_system_code 1
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Si1 Si 0 0 0 0.5
"""
HKL = [(0, 0, 0), (2, 2, 0), (-2, -2, 0), (2, -2, 0), (-2, 2, 0), (4, 0, 0), (-4, 0, 0),
       (0, 4, 0), (0, -4, 0)]


@pytest.fixture(scope="module")
def larbed_files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("larbed_wf")
    (d / "si.cif").write_text(CIF)
    si = Crystal(Lattice(A, A, A), [Site("Si1", "Si", (0, 0, 0), b_iso=0.5)], 227)
    # the engine set-up of the project that import-larbed writes (same automatic pool over
    # the ROI and the coarse search field ± 5 tilt steps, the strong-beam rules the engine
    # chooses for its accuracy at the start thickness): the test measures the workflow, not
    # the convergence of the engine (another pool or selection: U_g ~0.5 %)
    sim = Simulation(si, 200.0, [0, 0, 1], [2, 2, 0],
                     potential=PotentialModel("kirkland", "proportional", 0.08),
                     gmax=2.5, smax=0.03, holz=False, outputs=np.array(HKL),
                     kt_center=POOL_CENTRE, kt_radius=POOL_RADIUS, check_thickness=[960.0],
                     accuracy=0.01)
    u220, u400 = (sim.structure_factor(h)[0].real for h in ((2, 2, 0), (4, 0, 0)))
    truth_u = {"U(2,2,0)": 1.04 * u220, "U(4,0,0)": 0.95 * u400}
    sim.set_structure_factors({(2, 2, 0): truth_u["U(2,2,0)"], (4, 0, 0): truth_u["U(4,0,0)"]})
    grid = TiltGrid.regular(KT_CENTRE, (STEP, 0.0), (0.0, -STEP), (NY, NX))
    truth = np.nan_to_num(sim.pattern(grid, THICKNESS)[0])           # (9, NY, NX)
    camera = SpotMap.from_frame(sim.frame, origin=(55.3, 56.6), pixel_size=1 / 40.0,
                                rotation_deg=17.0, flip=True, reference_tilt=REF)
    m = camera.kt_matrix
    scan = TiltCalibration(np.column_stack([m @ (0.0, -STEP), m @ (STEP, 0.0)]),
                           origin=(55.3, 56.6), reference=REF)
    rng = np.random.default_rng(7)
    beam = scan.beam_positions((NY, NX))
    vacuum = synthetic_larbed(np.ones((1, NY, NX)), beam[None], beam,
                              SpotRenderer(DET, dose=DOSE, background=3.0, halo=0.0), rng)
    pos = SpotPredictor(camera, scan).grid_positions(np.array(HKL), (NY, NX))
    data = synthetic_larbed(truth, pos, pos[0],
                            SpotRenderer(DET, dose=DOSE, background=4.0, halo=8.0,
                                         halo_width=60.0), rng)
    write_npy_stream(d / "scan.npy", data.shape, np.float32, [data])
    write_npy_stream(d / "vacuum.npy", vacuum.shape, np.float32, [vacuum])
    ref = (NY // 2, NX // 2)
    p0, p1, p2 = camera.positions([[0, 0, 0], [2, 2, 0], [-2, 2, 0]]) + \
        scan.matrix @ (np.array(ref) - REF)
    return {"dir": d, "p": (p0, p1, p2), "kt_ref": grid.kt[ref], "truth": truth_u,
            "pool": {tuple(int(v) for v in h) for h in sim.pool.hkl},
            "selection": sim.selection}


def test_extract_import_refine_recovers_thickness_and_ug(larbed_files) -> None:
    d: Path = larbed_files["dir"]
    p0, p1, p2 = larbed_files["p"]
    # the reference tilt's k_t given 2 tilt steps off in x and y: the coarse step finds it
    kx, ky = larbed_files["kt_ref"] + np.array(KREF_ERROR)
    run = CliRunner()
    args = ["extract", str(d / "scan.npy"), "-o", str(d / "stack.h5"),
            "--zone", "0", "0", "1",
            "--g1", "2", "2", "0", f"{p1[0]:.4f}", f"{p1[1]:.4f}",
            "--g2", "-2", "2", "0", f"{p2[0]:.4f}", f"{p2[1]:.4f}",
            "--origin", f"{p0[0]:.4f}", f"{p0[1]:.4f}", "--vacuum", str(d / "vacuum.npy"),
            *[a for h in HKL for a in ("--hkl", ",".join(map(str, h)))],
            "--disc-radius", "4", "--annulus", "6", "9", "--no-refine", "--no-locate",
            "--voltage", "200", "--cell", str(A), str(A), str(A), "90", "90", "90",
            "--kt-reference", f"{kx:.6f}", f"{ky:.6f}", "--quiet"]
    r = run.invoke(main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    r = run.invoke(main, ["import-larbed", str(d / "stack.h5"), "--cif", str(d / "si.cif"),
                          "--thickness", "960", "--absorption", "proportional", "--xi", "0.08",
                          "--no-holz", "--accuracy", "0.01", "-o", str(d / "si.toml"),
                          "--output-dir", str(d / "out")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    text = (d / "si.toml").read_text()
    assert 'format = "lacbed_h5"' in text and "U(2,2,0)" in text and "U(4,0,0)" in text
    # --roi-step auto: the step from the noise correlation across the tilt grid, with its
    # reason in the ROI comment
    from qcbed.experiment.resolution import noise_correlation
    from qcbed.larbed import load_stack

    r = run.invoke(main, ["import-larbed", str(d / "stack.h5"), "--cif", str(d / "si.cif"),
                          "--thickness", "960", "--roi-step", "auto", "-o",
                          str(d / "auto.toml")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    st = load_stack(d / "stack.h5")
    step = noise_correlation(st.images, st.mask).step
    auto = (d / "auto.toml").read_text()
    assert "roi_step = 'auto'" in auto and f"every ceil(sqrt(A)) = {step} tilts" in auto
    r = run.invoke(main, ["import-larbed", str(d / "stack.h5"), "--cif", str(d / "si.cif"),
                          "--thickness", "960", "--roi-step", "two", "-o",
                          str(d / "bad.toml")])
    assert r.exit_code != 0 and "--roi-step" in r.output
    r = run.invoke(main, ["validate", str(d / "si.toml")])
    assert r.exit_code == 0, r.output
    from qcbed.project import build_setup, load_project

    psim = build_setup(load_project(d / "si.toml"), executor="serial").simulation()
    assert {tuple(int(v) for v in h) for h in psim.pool.hkl} == larbed_files["pool"]
    assert psim.selection == larbed_files["selection"]
    r = run.invoke(main, ["--quiet", "--workers", "1", "refine", str(d / "si.toml")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = json.loads((d / "out" / "result.json").read_text())
    th = res["thickness"]
    assert abs(th["value"] - THICKNESS) < 3 * th["esd"], th
    assert th["esd"] < 10.0
    ps = {p["name"]: p for p in res["parameters"]}
    for name, true in larbed_files["truth"].items():
        p = ps[name]
        assert abs(p["value"] - true) < 3 * p["esd"], (name, p, true)
        assert p["esd"] < 0.01 * abs(true)
    assert 0.7 < res["chi2"] < 1.5
    t0 = res["orientation"]["tilt0"]  # k_t at the grid centre (reference display pixel)
    assert np.hypot(t0[0] - KT_CENTRE[0], t0[1] - KT_CENTRE[1]) < 0.05 * STEP
    assert (d / "out" / "refined.cif").is_file()
    print("LARBED workflow:", th, {n: (ps[n]["value"], ps[n]["esd"], larbed_files["truth"][n])
                                   for n in larbed_files["truth"]}, res["chi2"])


def test_extract_project_option_and_errors(larbed_files, tmp_path) -> None:
    d: Path = larbed_files["dir"]
    p0, p1, p2 = larbed_files["p"]
    base = ["extract", str(d / "scan.npy"), "-o", str(tmp_path / "s.h5"),
            "--zone", "0", "0", "1",
            "--g1", "2", "2", "0", f"{p1[0]:.4f}", f"{p1[1]:.4f}",
            "--g2", "-2", "2", "0", f"{p2[0]:.4f}", f"{p2[1]:.4f}",
            "--origin", f"{p0[0]:.4f}", f"{p0[1]:.4f}", "--vacuum", str(d / "vacuum.npy"),
            "--hkl", "0,0,0", "--hkl", "2,2,0", "--no-refine", "--quiet"]
    r = CliRunner().invoke(main, [*base, "--kt-reference", "0.01", "0"])
    assert r.exit_code != 0 and "--kt-reference needs --cell" in r.output
    r = CliRunner().invoke(main, [*base, "--project", str(tmp_path / "p.toml")])
    assert r.exit_code != 0 and "--project needs" in r.output
    r = CliRunner().invoke(main, [*base, "--project", str(tmp_path / "p.toml"), "--voltage",
                                  "200", "--cell", str(A), str(A), str(A), "90", "90", "90",
                                  "--cif", str(d / "si.cif"), "--thickness", "900"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert 'files = ["' in (tmp_path / "p.toml").read_text()
    # a stack without geometry cannot make a project
    r = CliRunner().invoke(main, [*base[:3], str(tmp_path / "nogeo.h5"), *base[4:]])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["import-larbed", str(tmp_path / "nogeo.h5"), "--cif",
                                  str(d / "si.cif"), "--thickness", "900", "-o",
                                  str(tmp_path / "q.toml")])
    assert r.exit_code != 0 and "no tilt geometry" in r.output
