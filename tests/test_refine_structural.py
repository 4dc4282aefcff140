"""Structural parameters on synthetic data made by the engine: coordinates, occupancy,
B, U^{ij}, cell and voltage (rutile), U_g and an independent U′_g phase (GaAs 111).

Each test makes data with a known change, starts the refinement from the unchanged
value (more than 5 esd away) and asserts that the refined value is within 3 esd of the
truth. Small pools and 64 directions keep each fit to a few seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError
from qcbed.refine import DirectData, Refinement
from qcbed.refine.parameters import free_coordinates, free_u_components
from qcbed.scattering.structure_factors import PotentialModel

RUTILE_OUT = [[0, 0, 0], [1, 1, 0], [2, 0, 0], [2, 1, 0], [2, 2, 0], [-1, -1, 0], [3, 1, 0]]
T_TRUE = 800.0
#: strong beams by excitation error only: the ω·|U_g| criterion would move beams between
#: strong and Bethe-weak as a structural parameter changes |U_g|, a step in the model
#: (seen: occ(O1) 0.9201 → 0.9202 changed an intensity by 7.5e-3) that biases a fit
STRONG_BY_SG = BeamSelection(0.3, None)


def rutile(x: float = 0.3048, a: float = 4.594, **o1) -> Crystal:
    """TiO2 rutile, P4_2/mnm: Ti at 2a (fixed), O at 4f (x, x, 0)."""
    return Crystal(Lattice(a, a, 2.959),
                   [Site("Ti1", "Ti", (0.0, 0.0, 0.0), b_iso=0.4),
                    Site("O1", "O", (x, x, 0.0), **{"b_iso": 0.5, **o1})],
                   space_group_from_number(136))


def rutile_sim(crystal: Crystal, voltage: float = 200.0) -> Simulation:
    """Near [001], 200 kV, k_t around (0.3, 0.2, 0) in reciprocal-lattice units."""
    base = Simulation(crystal, voltage, [0, 0, 1], [1, 0, 0], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal((0.3, 0.2, 0.0))
    return Simulation(crystal, voltage, [0, 0, 1], [1, 0, 0], kt_center=kt0, kt_radius=0.2,
                      outputs=RUTILE_OUT, mode="exact",
                      potential=PotentialModel("kirkland", "bird_king"),
                      selection=STRONG_BY_SG, gmax=1.5, smax=0.03)


def directions(sim: Simulation) -> np.ndarray:
    g = np.linspace(-0.1, 0.1, 8)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + sim.kt_from_reciprocal(
        (0.3, 0.2, 0.0))


def poisson_data(truth: Simulation, kt: np.ndarray, thickness: float, seed: int,
                 counts: float = 2.0e4) -> DirectData:
    inten = truth.solve(kt).intensities([thickness])[0].T
    obs = np.random.default_rng(seed).poisson(counts * inten + 40.0).astype(float)
    return DirectData(truth.outputs, kt, obs, np.maximum(obs, 1.0))


def recover(start: Simulation, add, seed: int = 1, **truth) -> tuple:
    """Data from ``start`` changed by ``truth`` (``crystal=``, ``voltage_kv=``; same beam
    pool, as the refinement's model), then a fit of the thickness and the parameters
    ``add(ref)`` adds. Returns (result, names of the refined parameters)."""
    data = poisson_data(start.with_changes(**truth), directions(start), T_TRUE, seed)
    ref = Refinement(start, data)
    ref.add_thickness(T_TRUE * 1.01)
    names = [p.name for p in add(ref) if p.refine]
    res = ref.fit("lm", max_iter=25)
    assert res.value("thickness") == pytest.approx(T_TRUE, abs=3 * res.esd("thickness"))
    return res, names


def assert_recovered(res, name: str, true: float, start: float) -> None:
    esd = res.esd(name)
    assert esd is not None and esd > 0
    assert abs(start - true) > 5 * esd, "the start must be far from the truth"
    assert res.value(name) == pytest.approx(true, abs=3 * esd)


def test_coordinate_along_the_free_direction() -> None:
    res, names = recover(rutile_sim(rutile()), crystal=rutile(x=0.3068), add=
                         lambda r: r.add_coordinates("O1"))
    assert names == ["x(O1)"]  # (x, x, 0): only x is free, y follows it
    assert_recovered(res, "x(O1)", 0.3068, 0.3048)


def test_occupancy() -> None:
    res, _ = recover(rutile_sim(rutile()), crystal=rutile(occupancy=0.92), add=
                     lambda r: [r.add_occupancy("O1")])
    assert_recovered(res, "occ(O1)", 0.92, 1.0)


def test_isotropic_displacement() -> None:
    res, _ = recover(rutile_sim(rutile()), crystal=rutile(b_iso=0.9), add=
                     lambda r: [r.add_b_iso("O1")])
    assert_recovered(res, "B(O1)", 0.9, 0.5)


def test_anisotropic_displacement_within_site_symmetry() -> None:
    u_iso = 0.5 / (8 * np.pi**2)
    u_true = np.array([[0.012, 0.003, 0.0], [0.003, 0.012, 0.0], [0.0, 0.0, u_iso]])
    res, names = recover(rutile_sim(rutile()), crystal=rutile(u_aniso=u_true), add=
                         lambda r: r.add_u_aniso("O1", ["U11", "U12"]))
    assert names == ["U11(O1)", "U12(O1)"]
    assert res.parameters["U33(O1)"].refine is False
    assert_recovered(res, "U11(O1)", 0.012, u_iso)
    assert_recovered(res, "U12(O1)", 0.003, 0.0)


def test_cell_parameter_of_the_crystal_system() -> None:
    res, names = recover(rutile_sim(rutile()), crystal=rutile(a=4.624), add=
                         lambda r: r.add_cell(["cell.a"]))
    assert names == ["cell.a"]
    assert res.parameters["cell.c"].refine is False  # tetragonal: a and c independent
    assert_recovered(res, "cell.a", 4.624, 4.594)


def test_voltage() -> None:
    res, _ = recover(rutile_sim(rutile()), voltage_kv=204.0, add=
                     lambda r: [r.add_voltage()])
    assert_recovered(res, "voltage", 204.0, 200.0)


def test_fixed_components_are_refused_with_the_free_ones() -> None:
    sim = rutile_sim(rutile())
    data = poisson_data(sim, directions(sim)[:4], T_TRUE, 0)
    ref = Refinement(sim, data)
    with pytest.raises(InputError, match=r"y\(O1\) is fixed") as e:
        ref.add_coordinates("O1", ["y"])
    assert e.value.expected == ["x(O1)"]
    with pytest.raises(InputError, match="Ti1") as e:
        ref.add_coordinates("Ti1", ["z"])
    with pytest.raises(InputError, match="not independent") as e:
        ref.add_u_aniso("O1", ["U22"])
    assert e.value.expected == ["U11(O1)", "U33(O1)", "U12(O1)"]
    with pytest.raises(InputError, match="tetragonal") as e:
        ref.add_cell(["cell.b"])
    assert e.value.expected == ["cell.a", "cell.c"]
    with pytest.raises(InputError, match="unknown site label"):
        ref.add_occupancy("O7")


def test_free_components_follow_the_wyckoff_position() -> None:
    cr = rutile()
    assert free_coordinates(cr, 0)[0] == []
    axes, vec = free_coordinates(cr, 1)
    assert axes == [0] and np.allclose(vec, [[1, 1, 0]])
    names, tensors = free_u_components(cr, 1)
    assert names == ["U11", "U33", "U12"]
    assert np.allclose(tensors[0], np.diag([1, 1, 0]))  # U22 follows U11
    # a general position of P1 leaves all three coordinates and six U^{ij} free
    p1 = Crystal(Lattice(4, 5, 6, 80, 85, 95), [Site("A", "O", (0.1, 0.2, 0.3))],
                 space_group_from_number(1))
    assert free_coordinates(p1, 0)[0] == [0, 1, 2]
    assert free_u_components(p1, 0)[0] == ["U11", "U22", "U33", "U12", "U13", "U23"]
    # diamond Si at 8a (-43m): fixed, U isotropic
    si = Crystal(Lattice(5.43, 5.43, 5.43), [Site("Si", "Si", (0.125,) * 3)],
                 space_group_from_number(227, 2))
    assert free_coordinates(si, 0)[0] == []
    names, tensors = free_u_components(si, 0)
    assert names == ["U11"] and np.allclose(tensors[0], np.eye(3))


# ---------------------------------------------------------------- GaAs 111 phases
GAAS_A = 5.6533
GAAS_OUT = [[0, 0, 0], [1, -1, -1], [-1, 1, 1], [2, -2, -2], [-2, 2, 2]]
H111 = (1, -1, -1)


def gaas_setup():
    """GaAs (F-43m, Ga at 0, As at ¼¼¼), 200 kV, 111 systematic row ~8° off [110]."""
    cr = Crystal(Lattice(GAAS_A, GAAS_A, GAAS_A),
                 [Site("Ga1", "Ga", (0, 0, 0), b_iso=0.6),
                  Site("As1", "As", (0.25, 0.25, 0.25), b_iso=0.6)],
                 space_group_from_number(216))
    base = Simulation(cr, 200.0, [1, 1, 0], [1, -1, -1], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal((12.0, -12.0, 26.4))
    sim = Simulation(cr, 200.0, [1, 1, 0], [1, -1, -1], kt_center=kt0, kt_radius=0.3,
                     outputs=GAAS_OUT, mode="exact",
                     potential=PotentialModel("kirkland", "bird_king"),
                     selection=STRONG_BY_SG, gmax=2.0, smax=0.03)
    xs = np.linspace(-0.45, 0.45, 40) * np.sqrt(3) / GAAS_A
    kt = np.concatenate([np.stack([xs, np.full_like(xs, y)], 1)
                         for y in (-0.03, 0.0, 0.03)]) + kt0
    return sim, kt


def gaas_fit(phase_shift: float, phase_abs_shift: float, independent: bool, seed: int):
    sim, kt = gaas_setup()
    u, ua = sim.structure_factor(H111)
    assert not sim.crystal.is_centrosymmetric and abs(np.angle(u)) > 0.1  # complex U_111
    ph = np.angle(u) + np.radians(phase_shift)
    ph_abs = np.angle(ua) + np.radians(phase_abs_shift)
    truth = sim.with_changes()
    truth.set_structure_factors({H111: (abs(u) * np.exp(1j * ph), abs(ua) * np.exp(1j * ph_abs))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rotated U′ may make the model slightly unphysical
        data = poisson_data(truth, kt, 1200.0, seed)
        ref = Refinement(sim, data)
        ref.add_thickness(1212.0)
        ref.add_structure_factor(H111, refine_phase=True, refine_phase_abs=independent)
        res = ref.fit("lm", max_iter=30)
    return res, np.degrees(ph), np.degrees(ph_abs), np.degrees(np.angle(u))


def test_gaas_111_phase_is_recovered() -> None:
    """The existing U_g phase refinement (U′_g shares the phase)."""
    res, ph, _, ph0 = gaas_fit(3.0, 3.0, independent=False, seed=2)
    assert "phase_abs(1,-1,-1)" not in res.parameters
    assert_recovered(res, "phase(1,-1,-1)", ph, ph0)
    assert res.esd("phase(1,-1,-1)") < 0.3


def test_gaas_111_independent_absorptive_phase_is_recovered() -> None:
    res, ph, ph_abs, ph0 = gaas_fit(3.0, 12.0, independent=True, seed=3)
    assert_recovered(res, "phase(1,-1,-1)", ph, ph0)
    assert_recovered(res, "phase_abs(1,-1,-1)", ph_abs, ph_abs - 12.0)
    # with U′_g forced to share U_g's phase, the same data fit worse
    shared, *_ = gaas_fit(3.0, 12.0, independent=False, seed=3)
    assert shared.chi2 > res.chi2 * 1.05


def test_phases_of_a_centrosymmetric_crystal_are_refused() -> None:
    sim = rutile_sim(rutile())
    ref = Refinement(sim, poisson_data(sim, directions(sim)[:4], T_TRUE, 0))
    with pytest.raises(InputError, match="centrosymmetric"):
        ref.add_structure_factor((1, 1, 0), refine_phase_abs=True)


# ---------------------------------------------------------------- project files
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from qcbed.demo import make_demo

    d = tmp_path_factory.mktemp("struct_demo")
    path, truth = make_demo(d, fast=True, executor="serial")
    return path, truth


def _with_refine(path, names: list[str], out: str, max_iter: int | None = None):
    text = path.read_text()
    if max_iter is not None:
        assert text.count("max_iter = 12") == 1
        text = text.replace("max_iter = 12", f"max_iter = {max_iter}")
    old = 'refine = ["thickness", "U(1,1,1)", "Uabs(1,1,1)", "U(2,2,2)", "shift.row", "shift.col"]'
    assert old in text
    new = "refine = [" + ", ".join(f'"{n}"' for n in
                                   ["thickness", "U(1,1,1)", "Uabs(1,1,1)", "U(2,2,2)", *names,
                                    "shift.row", "shift.col"]) + "]"
    p = path.parent / out
    p.write_text(text.replace(old, new))
    return p


def test_project_file_names_structural_parameters(demo) -> None:
    from qcbed.project import load_project, validate_project

    path, _ = demo
    names = ["B(Si1)", "occ(Si1)", "U11(Si1)", "cell.a", "voltage"]
    p = _with_refine(path, names, "struct_ok.toml")
    assert all(n in load_project(p).refined_names for n in names)
    rep = validate_project(p)
    assert rep.ok, rep.text()


@pytest.mark.parametrize("name, message, expected", [
    ("x(Si1)", "fixed by the site symmetry of Si1", "no coordinate: the site is fixed"),
    ("U12(Si1)", "not independent under the site symmetry", ["U11(Si1)"]),
    ("U33(Si1)", "not independent under the site symmetry", ["U11(Si1)"]),
    ("cell.c", "fixed by the cubic crystal system", ["cell.a"]),
    ("occ(Ge1)", "unknown site label", ["Si1"]),
    ("phase_abs(1,1,1)", "centrosymmetric", "U(h,k,l) or Uabs(h,k,l)"),
])
def test_project_file_structural_name_errors(demo, name, message, expected) -> None:
    from qcbed.project import validate_project

    path, _ = demo
    rep = validate_project(_with_refine(path, [name], "struct_bad.toml"))
    assert not rep.ok
    err = rep.errors[0]
    assert isinstance(err, InputError) and message in str(err), str(err)
    assert err.tag == "plan.fine[1].refine" and str(err.source).endswith("struct_bad.toml")
    assert err.expected == expected


def test_project_file_unknown_parameter_name_is_an_input_error(demo) -> None:
    from qcbed.project import load_project

    path, _ = demo
    with pytest.raises(InputError) as e:
        load_project(_with_refine(path, ["Uiso(Si1)"], "struct_unknown.toml"))
    assert e.value.tag == "plan.fine[1].refine" and e.value.found == "Uiso(Si1)"
    assert "x(label)" in str(e.value.expected) and "U11(label)" in str(e.value.expected)


def test_project_run_refines_u_aniso_and_cell_and_writes_them(demo, tmp_path) -> None:
    """U11(Si1) and cell.a named in a project file: refined by ``qcbed refine``, carried
    in the run state, reported with esds in result.json and with s.u. in refined.cif."""
    import json

    import gemmi
    from click.testing import CliRunner

    from qcbed.cli import main

    path, _ = demo
    p = _with_refine(path, ["U11(Si1)", "cell.a"], "struct_run.toml", max_iter=2)
    r = CliRunner().invoke(main, ["--quiet", "--workers", "1", "refine", str(p), "--out",
                                  str(tmp_path / "out"), "--no-budget"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    ps = {q["name"]: q for q in res["parameters"]}
    u11, a = ps["U11(Si1)"], ps["cell.a"]
    assert u11["refined"] and a["refined"]
    assert 0 < u11["esd"] < 0.01 and 0 < a["esd"] < 0.05
    assert abs(a["value"] - 5.4307) < 5 * a["esd"] + 0.01
    state = json.loads((tmp_path / "out" / "run_state.json").read_text())["state"]
    assert state["sites"]["Si1"]["u_aniso"][0][0] == pytest.approx(u11["value"])
    assert state["cell"]["a"] == pytest.approx(a["value"])
    b = gemmi.cif.read_file(str(tmp_path / "out" / "refined.cif")).sole_block()
    row = b.find("_atom_site_aniso_", ["label", "U_11", "U_22", "U_12"])[0]
    assert row[0] == "Si1"
    for k in (1, 2):  # U22 ≡ U11 on the cubic site, same s.u.
        v, s = row[k].split("(")
        assert float(v) == pytest.approx(u11["value"], abs=2 * u11["esd"])
        assert s.endswith(")")
    assert "(" not in row[3]  # U12 = 0 by symmetry: no s.u.
    cell_a = b.find_value("_cell_length_a")
    assert "(" in cell_a and float(cell_a.split("(")[0]) == pytest.approx(a["value"], abs=1e-3)


def test_run_state_carries_refined_sites_between_steps() -> None:
    """What a fine step stores in ``state['sites']`` is the next step's crystal."""
    from types import SimpleNamespace

    from qcbed.project.run import ProjectRun

    u = np.diag([0.01, 0.01, 0.006])
    state = {"b_iso": {"O1": 0.7}, "sites": {"O1": {"xyz": [0.31, 0.31, 0.0],
                                                     "occupancy": 0.95,
                                                     "u_aniso": u.tolist()}}}
    cr = ProjectRun._crystal(None, SimpleNamespace(crystal=rutile()), state)
    o1 = cr.sites[1]
    assert o1.xyz == (0.31, 0.31, 0.0) and o1.occupancy == 0.95 and o1.b_iso == 0.7
    assert np.allclose(o1.u_aniso, u) and cr.sites[0] == rutile().sites[0]
    # a coordinate parameter made from that crystal starts at the carried value
    assert [p.value for p in Refinement(rutile_sim(cr), poisson_data(
        rutile_sim(cr), directions(rutile_sim(cr))[:2], T_TRUE, 0)).add_coordinates("O1")
            ] == [0.31]


RUTILE_CIF = """data_TiO2
_cell_length_a 4.594
_cell_length_b 4.594
_cell_length_c 2.959
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'P 42/m n m'
_space_group_IT_number 136
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_B_iso_or_equiv
Ti1 Ti 0 0 0 1.0 0.4
O1 O 0.3048 0.3048 0 1.0 0.5
"""


def test_project_file_validates_free_coordinates_of_a_crystal(demo) -> None:
    """A rutile crystal behind the demo's geometry: x(O1), occ(O1), U12(O1), cell.c are
    accepted by ``qcbed validate``; y(O1), U23(O1), cell.b are refused naming the free."""
    from qcbed.project import validate_project

    path, _ = demo
    (path.parent / "rutile.cif").write_text(RUTILE_CIF)
    ok = _with_refine(path, ["x(O1)", "occ(O1)", "U12(O1)", "cell.c"], "rutile_ok.toml")
    ok.write_text(ok.read_text().replace('source = "si.cif"', 'source = "rutile.cif"'))
    rep = validate_project(ok)
    assert rep.ok, rep.text()
    for name, expected in (("y(O1)", ["x(O1)"]), ("U23(O1)", ["U11(O1)", "U33(O1)", "U12(O1)"]),
                           ("cell.b", ["cell.a", "cell.c"])):
        bad = _with_refine(path, [name], "rutile_bad.toml")
        bad.write_text(bad.read_text().replace('source = "si.cif"', 'source = "rutile.cif"'))
        err = validate_project(bad).errors[0]
        assert err.tag == "plan.fine[1].refine" and err.expected == expected, str(err)
        assert err.found == name and "rutile_bad.toml" in str(err)
