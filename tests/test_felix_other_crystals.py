"""Felix inputs of crystals other than Si: the features of the public Felix-python inputs.

Issue 12: datasets of other crystals from the source of the Si data (LiNbO3 R3c,
wurtzite, GeSn, BaTiO3, an organic crystal, ...) are held back and will be simulated
with the defaults. The CIF and felix.inp features those inputs use are exercised
here with fixtures written for qcbed (no file of that repository is used): mixed and
partial occupancy, formulas that disagree with the sites, negative refined B,
tab-indented ``_symmetry_equiv_pos_as_xyz`` loops with trailing blanks, an empty
``data_`` name, a number as the H-M symbol, ``1/2+x`` operations, exponents like
``5.6e-005``, ``'.'`` U_iso beside anisotropic U, rhombohedral groups in hexagonal
axes, coordinates above 1, Felix 1.3 ``normal_direction`` files and ``Debye_model``.
The end-to-end test builds a synthetic Felix folder of a polar crystal with a mixed
site and runs import-felix, validate and simulate on it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from felix_synth import felix_image_name, make_felix_folder, write_dm3
from qcbed.cli import main
from qcbed.errors import InputError
from qcbed.io import read_felix
from qcbed.io.cif import read_cif_string

# ---------------------------------------------------------------------- fixtures
#: Wurtzite (P6_3mc, polar) with a mixed cation site: 80 % Ga, 20 % In (a made-up
#: alloy; cell and z(N) near GaN's). Explicit operations in ICSD style.
WURTZITE_MIXED = """
data_gainn
_chemical_name_common 'gallium indium nitride (made up for a test)'
_chemical_formula_sum 'Ga0.8 In0.2 N1'
_cell_length_a 3.25(1)
_cell_length_b 3.25(1)
_cell_length_c 5.25(1)
_cell_angle_alpha 90.
_cell_angle_beta 90.
_cell_angle_gamma 120.
_cell_formula_units_Z 2
_space_group_name_H-M_alt 'P 63 m c'
_space_group_IT_number 186
loop_
_space_group_symop_id
_space_group_symop_operation_xyz
1 'x, y, z'
2 '-y, x-y, z'
3 '-x+y, -x, z'
4 '-x, -y, z+1/2'
5 'y, -x+y, z+1/2'
6 'x-y, x, z+1/2'
7 '-y, -x, z'
8 '-x+y, y, z'
9 'x, x-y, z'
10 'y, x, z+1/2'
11 'x-y, -y, z+1/2'
12 '-x, -x+y, z+1/2'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
_atom_site_occupancy
Ga1 Ga3+ 0.33333 0.66667 0 0.45(2) 0.8
In1 In3+ 0.33333 0.66667 0 0.45(2) 0.2
N1 N3- 0.33333 0.66667 0.377(1) 0.50(3) 1.
"""

#: A perovskite-like monoclinic P2_1 cell written like a refinement program's export:
#: empty data_ name, '?' around the name, a number as the H-M symbol, tab-indented
#: operations with trailing blanks, charges after the sign, exponent notation and a
#: negative refined B. Made up for the test.
P21_EXPORT = (
    "\ndata_\n_chemical_name_mineral ?ABO3_P21?\n_cell_length_a 5.70\n_cell_length_b 7.90\n"
    "_cell_length_c 5.71\n_cell_angle_alpha 90\n_cell_angle_beta 110.5\n"
    "_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 4\nloop_\n"
    "\t_symmetry_equiv_pos_as_xyz\n\t 'x, y, z '\n\t '-x, y+1/2, -z '\nloop_\n"
    "_atom_site_label\n_atom_site_type_symbol\n_atom_site_symmetry_multiplicity\n"
    "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\n"
    "_atom_site_B_iso_or_equiv\n"
    "Sr1_1 Sr+2   2 -0.0021 0.2507 4.5e-005 1 0.31\n"
    "Zr1_1 Zr+4   2 0.0123 -0.0003 0.5011 1 -0.25\n"
    "O1_1 O-2   2 0.0302 0.2402 0.4871 1 0.62\n"
    "O2_1 O-2   2 0.7391 0.0470 0.7313 1 -1.1\n"
    "O2_2 O-2   2 0.2611 0.5468 0.7687 1 0.62\n"
)

#: LiTaO3-like R3c in hexagonal axes, explicit operations with the R centring; U_iso
#: '.' where anisotropic U are given. Coordinates made up near the LiNbO3 type.
R3C_ANISO = """data_r3c
_chemical_formula_sum 'Li1 Ta1 O3'
_cell_length_a 5.154
_cell_length_b 5.154
_cell_length_c 13.78
_cell_angle_alpha 90.
_cell_angle_beta 90.
_cell_angle_gamma 120.
_cell_formula_units_Z 6
_space_group_name_H-M_alt 'R 3 c'
loop_
_space_group_symop_operation_xyz
'x, y, z'
'-y, x-y, z'
'-x+y, -x, z'
'-y, -x, z+1/2'
'x, x-y, z+1/2'
'-x+y, y, z+1/2'
'x+2/3, y+1/3, z+1/3'
'-y+2/3, x-y+1/3, z+1/3'
'-x+y+2/3, -x+1/3, z+1/3'
'-y+2/3, -x+1/3, z+5/6'
'x+2/3, x-y+1/3, z+5/6'
'-x+y+2/3, y+1/3, z+5/6'
'x+1/3, y+2/3, z+2/3'
'-y+1/3, x-y+2/3, z+2/3'
'-x+y+1/3, -x+2/3, z+2/3'
'-y+1/3, -x+2/3, z+1/6'
'x+1/3, x-y+2/3, z+1/6'
'-x+y+1/3, y+2/3, z+1/6'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_U_iso_or_equiv
_atom_site_occupancy
Li1 Li1+ 0 0 0.2790(5) 0.0110(9) 1.
Ta1 Ta5+ 0 0 0 . 1.
O1 O2- 0.0502(3) 0.3421(3) 0.0712(1) . 1.
loop_
_atom_site_aniso_label
_atom_site_aniso_type_symbol
_atom_site_aniso_U_11
_atom_site_aniso_U_22
_atom_site_aniso_U_33
_atom_site_aniso_U_12
_atom_site_aniso_U_13
_atom_site_aniso_U_23
Ta1 Ta5+ 0.0021(1) 0.0021(1) 0.0017(1) 0.00105 0 0
O1 O2- 0.0041(4) 0.0044(4) 0.0052(5) 0.0023(3) -0.0004(3) 0.0002(3)
"""


def _read(text: str, **kw):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        crystal = read_cif_string(text, source="test.cif", **kw)
    return crystal, [str(w.message) for w in rec]


def _contents(crystal) -> dict[str, float]:
    out: dict[str, float] = {}
    for el, occ in zip(crystal.atoms.elements, crystal.atoms.occupancy):
        out[el] = out.get(el, 0.0) + float(occ)
    return {k: round(v, 6) for k, v in out.items()}


# ---------------------------------------------------------------------- CIF features
def test_mixed_site_wurtzite_expands_and_stays_polar() -> None:
    c, msgs = _read(WURTZITE_MIXED)
    assert msgs == []                     # Ga + In share one site: no overlap warning
    assert c.space_group_number == 186 and not c.is_centrosymmetric
    assert _contents(c) == {"Ga": 1.6, "In": 0.4, "N": 2.0}   # Z = 2 formula units
    assert len(c.atoms.frac) == 6
    assert [s.charge for s in c.sites] == [3, 3, -3]


def test_formula_that_the_sites_do_not_hold_is_reported() -> None:
    # an element of the formula on no site (ICSD's Ge98Sn2 lists Ge only, occupancy 0.98)
    text = WURTZITE_MIXED.replace("In1 In3+ 0.33333 0.66667 0 0.45(2) 0.2\n", "")
    c, msgs = _read(text)
    assert len(c.sites) == 2
    assert any("do not match the formula 'Ga0.8 In0.2 N1' (In on no site)" in m
               and "Ga 1.6" in m for m in msgs), msgs
    # the sites are still used as written
    assert _contents(c) == {"Ga": 1.6, "N": 2.0}


def test_operations_of_the_other_origin_choice_are_reported() -> None:
    # diamond-type coordinates of origin choice 1 with the operations of origin choice 2:
    # 16 atoms instead of Z x 1 = 8 (the composition still agrees, the count does not)
    import gemmi

    ops = "".join(f"'{op.triplet()}'\n" for op in gemmi.SpaceGroup("F d -3 m:2").operations())
    text = ("data_c\n_chemical_formula_sum 'C'\n_cell_formula_units_Z 8\n"
            + "".join(f"_cell_length_{x} 3.567\n" for x in "abc")
            + "".join(f"_cell_angle_{x} 90\n" for x in ("alpha", "beta", "gamma"))
            + "loop_\n_space_group_symop_operation_xyz\n" + ops
            + "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n"
              "_atom_site_fract_z\n_atom_site_B_iso_or_equiv\nC1 0 0 0 0.2\n")
    c, msgs = _read(text)
    assert len(c.atoms.frac) == 16
    assert any("holds 16 atoms but Z × formula = 8 × 1 = 8" in m and "origin choice" in m
               for m in msgs), msgs
    good, msgs1 = _read(text.replace("C1 0 0 0 0.2", "C1 0.125 0.125 0.125 0.2"))
    assert len(good.atoms.frac) == 8 and not any("Z ×" in m for m in msgs1)


def test_two_full_atoms_on_one_place_are_reported() -> None:
    text = WURTZITE_MIXED.replace("0.45(2) 0.2\n", "0.45(2) 1.0\n")
    _, msgs = _read(text)
    assert any("Ga1, In1 overlap" in m and "total occupancy above 1" in m for m in msgs), msgs


def test_refinement_export_style_p21() -> None:
    c, msgs = _read(P21_EXPORT)
    assert c.space_group_number == 4 and len(c.operations[0]) == 2
    assert len(c.atoms.frac) == 10
    assert c.sites[0].xyz[2] == pytest.approx(4.5e-5)
    assert [s.charge for s in c.sites] == [2, 4, -2, -2, -2]
    # negative refined B: unphysical, read as 0 with a warning naming the sites
    assert [s.b_iso for s in c.sites] == [0.31, 0.0, 0.62, 0.0, 0.62]
    neg = [m for m in msgs if "negative isotropic displacement" in m]
    assert len(neg) == 1 and "Zr1_1 (-0.25 Å²)" in neg[0] and "O2_1 (-1.1 Å²)" in neg[0]


def test_rhombohedral_hexagonal_axes_with_aniso_and_dot_uiso() -> None:
    c, msgs = _read(R3C_ANISO)
    assert msgs == []
    assert c.space_group_symbol == "R 3 c:H" and not c.is_centrosymmetric
    assert _contents(c) == {"Li": 6.0, "Ta": 6.0, "O": 18.0}
    li, ta, o = c.sites
    assert li.u_aniso is None and li.b_iso == pytest.approx(8 * np.pi**2 * 0.011)
    assert ta.u_aniso is not None and o.u_aniso is not None
    # U_iso '.' with U_ij: B = 8 pi^2 U_eq (U_eq of a uniaxial tensor in hexagonal axes)
    assert ta.b_iso == pytest.approx(8 * np.pi**2 * (2 * 0.0021 + 0.0017) / 3, rel=1e-3)


def test_coordinates_above_one_and_tag_without_value() -> None:
    # P6_3/mmc-type O at x, 2x with 2x > 1 (as written by some programs), and a tag
    # without a value just before a loop (ICSD exports)
    text = WURTZITE_MIXED.replace(
        "_cell_formula_units_Z 2\n", "_cell_formula_units_Z 2\n_citation_title\n\n").replace(
        "N1 N3- 0.33333 0.66667 0.377(1)", "N1 N3- 1.33333 1.66667 0.377(1)")
    c, msgs = _read(text)
    assert any("_citation_title has no value" in m for m in msgs)
    assert _contents(c) == {"Ga": 1.6, "In": 0.4, "N": 2.0}
    assert np.all((c.atoms.frac >= 0) & (c.atoms.frac < 1))


# ---------------------------------------------------------------------- felix.inp
INP_V13 = """# Input file for Felix version :master: v1.3
# ------------------------------------

# ------------------------------------

# Control flags
write_flag                = 1
scatter_factor_method     = {sfm}
holz_flag                 = 0
absorption_method         = 2
byte_size                 = 2
{debye}
# Radius of the beam in pixels
image_radius              = {radius}

# Beam selection criteria
min_reflection_pool       = {pool}
min_strong_beams          = {strong}
min_weak_beams            = 0
g_limit                   = 0.0

# Crystal settings
debye_waller_constant     = 0.0
absorption_per            = 10.0

# Microscope settings
convergence_angle         = {conv}
incident_beam_direction   = [1, -1, 0]
x_direction               = [0, 0, -1]
normal_direction          = [1, -1, 0]
accelerating_voltage_kv   = 200.0
acceptance_angle          = 0.0

# Image output options
initial_thickness         = {t0}
final_thickness           = {t1}
delta_thickness           = 10.0
precision                 = -0.00002

# Refinement specific flags
refine_mode               = 'J'
refine_method             = 0
correlation_type          = 2
image_processing          = 3
blur_radius               = 0.7
atomic_sites              = [0,1,2]
refinement_scale          = 0.05
n_jobs                    = -1
"""


def _inp(**kw) -> str:
    vals = dict(sfm=0, debye="", radius=42, pool=100, strong=20, conv=0.7, t0=1200.0,
                t1=1200.0)
    vals.update(kw)
    return INP_V13.format(**vals)


def test_felix_13_inp_with_debye_model(tmp_path: Path) -> None:
    # Debye_model = 1 keeps the anisotropic U; 0 replaces them by the isotropic B
    d1 = make_felix_folder(tmp_path / "aniso", inp=_inp(debye="Debye_model = 1"),
                           cif=R3C_ANISO, hkl=[(0, 0, 12), (2, 2, -3)])
    f1 = read_felix(d1)
    assert f1.debye_model == 1 and f1.crystal.sites[1].u_aniso is not None
    assert np.array_equal(f1.normal, [1, -1, 0]) and f1.image_radius == 42
    assert f1.raw["refine_mode"] == "J" and f1.raw["atomic_sites"] == [0, 1, 2]
    assert f1.raw["precision"] == -0.00002 and f1.raw["n_jobs"] == -1
    assert np.array_equal(f1.thicknesses, [1200.0])
    d0 = make_felix_folder(tmp_path / "iso", inp=_inp(debye="Debye_model = 0"),
                           cif=R3C_ANISO, hkl=[(0, 0, 12)])
    with pytest.warns(UserWarning, match=r"felix\.inp:12: Debye_model = 0 .*Ta1, O1"):
        f0 = read_felix(d0)
    assert all(s.u_aniso is None for s in f0.crystal.sites)
    assert f0.crystal.sites[1].b_iso == pytest.approx(f1.crystal.sites[1].b_iso)
    bad = make_felix_folder(tmp_path / "bad", inp=_inp(debye="Debye_model = 2"),
                            cif=R3C_ANISO, hkl=[(0, 0, 12)])
    with pytest.raises(InputError, match=r"felix\.inp:12 \[debye_model\].*one of \[0, 1\]"):
        read_felix(bad)


def test_kappa_for_heavy_elements_falls_back(tmp_path: Path) -> None:
    # LiNbO3's felix.inp asks for the kappa model (4); qcbed's has no Ta/Nb orbitals
    d = make_felix_folder(tmp_path, inp=_inp(sfm=4), cif=R3C_ANISO, hkl=[(0, 0, 12)])
    with pytest.warns(UserWarning, match=r"no Hartree-Fock orbitals for Ta; the Kirkland"):
        f = read_felix(d)
    assert f.scattering_factors == "kirkland"


def test_import_felix_states_an_estimated_plasmon_energy(tmp_path: Path) -> None:
    """import-felix assumes unfiltered images; for a crystal with a d-block element (Ta)
    the project's comment gives the free-electron ESTIMATE of E_p and asks for the
    measured value (the set-up's use of it: test_plasmon.py)."""
    rng = np.random.default_rng(0)
    hkl = [(0, 0, 12), (2, 2, -3)]
    imgs = {g: rng.uniform(0.1, 1.0, (12, 12)) for g in [(0, 0, 0), *hkl]}
    d = make_felix_folder(tmp_path / "LiTaO3_12x12", inp=_inp(radius=6), cif=R3C_ANISO,
                          hkl=hkl, stem="LiTaO3", images=imgs)
    proj = tmp_path / "p.toml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        r = CliRunner().invoke(main, ["import-felix", str(d), "--out", str(proj)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    text = proj.read_text()
    assert "energy_filtered = false" in text
    assert "free-electron ESTIMATE counting the s and d electrons of Ta" in text, text


# ---------------------------------------------------------------------- end to end
def test_polar_mixed_site_folder_end_to_end(tmp_path: Path) -> None:
    """A synthetic Felix folder of a polar crystal with a mixed site: qcbed simulates the
    images at a known thickness (written as DM3, named like Felix's), then import-felix,
    validate and simulate must read it back pixel for pixel."""
    from qcbed.bloch.simulation import Simulation
    from qcbed.experiment import read_felix_images

    hkl = [(0, 0, 2), (0, 0, -2), (1, 1, 0), (-1, -1, 0), (1, 1, 2), (-1, -1, -2)]
    inp = _inp(radius=6, pool=20, strong=8, conv=0.3, t0=300.0, t1=300.0).replace(
        "g_limit                   = 0.0", "g_limit                   = 1.5")   # fast
    d = make_felix_folder(tmp_path / "GaInN_12x12", inp=inp, cif=WURTZITE_MIXED, hkl=hkl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # holz_flag = 0 remark
        sim = Simulation.from_felix(d)
        truth = sim.pattern(sim.defaults.grid, np.array([300.0]), progress=False)[0]
    assert truth.shape == (7, 12, 12) and np.all(np.isfinite(truth))
    for g, img in zip(sim.outputs, truth):
        write_dm3(d / felix_image_name("GaInN", g), img.astype("f4"))
    # polar: 002 and 00-2 differ (no centre of symmetry; Friedel's law fails dynamically)
    i002, i00m2 = truth[1], truth[2]
    assert np.abs(i002 - i00m2).max() > 0.05 * max(i002.max(), i00m2.max())

    stack = read_felix_images(d)
    assert [tuple(h) for h in stack.hkl] == [(0, 0, 0), *hkl]
    assert np.allclose(stack.images, truth, rtol=1e-6, atol=1e-7)

    runner = CliRunner()
    proj = tmp_path / "p.toml"
    r = runner.invoke(main, ["import-felix", str(d), "--out", str(proj), "--roi-step", "1"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "7 reflections of 7 images (12, 12)" in r.output
    r = runner.invoke(main, ["validate", str(proj)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "convergence error" in r.output
    out = tmp_path / "x.h5"
    r = runner.invoke(main, ["--workers", "1", "simulate", str(d), "-t", "300", "--out",
                             str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert f"qcbed compare {out} {d}" in r.output        # the hint: the folder has images
    with h5py.File(out) as f:
        err = float(f.attrs["convergence_error"])
        again = f["intensity"][()][0]
        names = [tuple(h) for h in f["hkl"][()]]
    assert names == [(0, 0, 0), *hkl]
    assert 0 <= err <= 1e-3
    assert np.allclose(again, truth, rtol=1e-9, atol=1e-12)

    # qcbed compare: the folder's images against the simulation, shapes identical
    js = tmp_path / "cmp.json"
    r = runner.invoke(main, ["compare", str(out), str(d), "--blur", "0", "--json", str(js)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "7 reflections compared" in r.output
    rep = json.loads(js.read_text())
    assert rep["figure_of_merit"][0] < 1e-9 and rep["best_thickness_A"] == 300.0
    assert rep["max_shift_px"] == 2.0                    # felix.inp: correlation_type 2
    assert rep["convergence_error"] == pytest.approx(err) and "engine error" in r.output
    assert all(abs(v) < 0.05 for x in rep["reflections"] for v in x["shift_px"][0])
    r = runner.invoke(main, ["compare", str(out), str(d), "--no-align", "--json", str(js)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    rep = json.loads(js.read_text())
    # image_processing 3 is no blur of Felix's; not aligned: the images as they are
    assert rep["max_shift_px"] == 0.0 and rep["blur_radius_px"] == 0.0
    assert rep["figure_of_merit"][0] < 1e-9
    # a polar crystal's 002 and 00-2 are not interchangeable: swapped, the ZNCC drops
    from qcbed.refine.compare import compare_images

    swapped = stack.hkl.copy()
    swapped[[1, 2]] = swapped[[2, 1]]
    cmp = compare_images(again, names, stack.images, swapped, blur_radius=0.0,
                         max_shift=0.0)
    assert cmp.zncc[0, 1] < 0.99 and cmp.zncc[0, 0] > 1 - 1e-9
    r = runner.invoke(main, ["compare", str(out), str(tmp_path)])
    assert r.exit_code == 2 and "error:" in r.output


def test_felix_folder_checks_every_thickness_of_its_scan(tmp_path: Path) -> None:
    """The engine's accuracy holds where the folder's images are simulated: every
    thickness of felix.inp's scan (initial, initial + delta, ... <= final), not only its
    ends; the pattern at those thicknesses does not warn, one beyond them does."""
    from qcbed.bloch.simulation import Simulation

    hkl = [(0, 0, 2), (0, 0, -2), (1, 1, 0), (-1, -1, 0)]
    inp = _inp(radius=4, pool=20, strong=8, conv=0.3, t0=300.0, t1=345.0).replace(
        "g_limit                   = 0.0", "g_limit                   = 1.5")
    d = make_felix_folder(tmp_path / "scan", inp=inp, cif=WURTZITE_MIXED, hkl=hkl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # holz_flag = 0 remark
        sim = Simulation.from_felix(d)
    scan = (300.0, 310.0, 320.0, 330.0, 340.0)
    assert tuple(sim.defaults.thickness) == scan
    assert sim.check_thickness == scan
    assert sim.convergence.thickness == scan
    assert sim.convergence.error <= 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.pattern(sim.defaults.grid, sim.defaults.thickness)
    with pytest.warns(UserWarning, match="checked at 300–340 Å; this pattern includes 600 Å"):
        sim.pattern(sim.defaults.grid, [600.0])


# ---------------------------------------------------------------------- large cells
def _si_sim(**kw):
    from qcbed.bloch import Simulation
    from qcbed.crystal import Crystal, Lattice, Site
    from qcbed.scattering.structure_factors import PotentialModel

    a = 5.4307
    si = Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0.125,) * 3, b_iso=0.47)], "F d -3 m :2")
    return Simulation(si, 200.0, [1, -1, 0], [0, 0, -1],
                      potential=PotentialModel("kirkland", "bird_king"), kt_radius=0.25,
                      gmax=2.2, executor="serial", check_thickness=[1200.0], **kw)


def test_pool_growth_above_the_adoption_limit_is_measured(monkeypatch) -> None:
    """Large cells (LiNbO3: a 623-beam pool whose growth has 840-1437 beams) used to get
    pool_error = 0.0, 'converged', with no growth checked at all. Growth up to
    MAX_CHECK_POOL_SIZE is now measured (not adopted); when none can be, the pool error
    is None (unknown) with a warning."""
    import qcbed.bloch.convergence as cv

    # the pool-growth walk (tail=False; with the default tail the pool stays and the
    # tail grows)
    ref = _si_sim(tail=False).convergence
    monkeypatch.setattr(cv, "MAX_POOL_SIZE", 1)        # every grown pool is "too large"
    conv = _si_sim(tail=False).convergence
    assert conv.pool_size < ref.pool_size             # growth measured, never adopted
    assert any("measured, not adopted" in s for s in conv.steps), conv.steps
    assert conv.pool_error is not None and conv.pool_error > 0
    monkeypatch.setattr(cv, "MAX_CHECK_POOL_SIZE", 1)  # and none can be measured
    with pytest.warns(UserWarning, match=r"could not be checked for growth .* unknown"):
        none = _si_sim(tail=False).convergence
    assert none.pool_error is None
    assert all(s.endswith("not checked") for s in none.steps if "->" in s and "smax" in s)


def test_inverting_a_polar_crystal_swaps_g_and_minus_g() -> None:
    """Non-centrosymmetric crystals: the structure inverted through the origin (x → −x,
    operations {R|t} → {R|−t}) has U′_g = U_−g. For zero-layer beams and a normal along
    the beam, the Bloch equations at k_t with beam g are those of the original at −k_t
    with beam −g (S_g(k_t) = S_−g(−k_t)), so I′_g(k_t) = I_−g(−k_t) exactly, absorption
    included. A wrong phase sign, a dropped conjugate or Friedel averaging fails it."""
    from qcbed.bloch import Simulation
    from qcbed.bloch.beams import BeamSelection
    from qcbed.crystal import Crystal
    from qcbed.scattering.structure_factors import PotentialModel

    c, _ = _read(WURTZITE_MIXED)
    rot, tran = c.operations
    inv = Crystal(c.lattice, [s.__class__(s.label, s.element, tuple(-x for x in s.xyz),
                                          s.occupancy, s.b_iso, s.u_aniso, s.charge)
                              for s in c.sites], operations=(rot, -tran))
    outputs = [(0, 0, 2), (0, 0, -2), (1, 1, 0), (-1, -1, 0), (1, 1, 2), (-1, -1, -2)]
    kw = dict(potential=PotentialModel("kirkland", "bird_king"), outputs=outputs, holz=False,
              gmax=2.0, kt_radius=0.2, selection=BeamSelection.all_strong(), accuracy=None,
              executor="serial")
    a = Simulation(c, 200.0, [1, -1, 0], [0, 0, 1], **kw)
    b = Simulation(inv, 200.0, [1, -1, 0], [0, 0, 1], **kw)
    assert len(a.pool) == len(b.pool)
    kt = np.array([[0.03, -0.05], [0.11, 0.02], [-0.07, 0.09]])
    t = [400.0]
    ia = a.solve(kt).intensities(t)[0]          # (n_kt, n_out)
    ib = b.solve(-kt).intensities(t)[0]
    names = [tuple(h) for h in a.outputs]
    swap = [names.index(tuple(-v for v in h)) for h in names]
    assert np.allclose(ib[:, swap], ia, rtol=1e-7, atol=1e-10)
    # and the polar crystal is not its own inverse: I_g(k_t) != I_-g(-k_t) for itself
    ia_minus = a.solve(-kt).intensities(t)[0]
    assert np.abs(ia_minus[:, swap] - ia).max() > 1e-3 * ia.max()


def test_folder_without_felix_hkl_and_with_another_cif_name(tmp_path: Path) -> None:
    # the public LiNbO3_84x84 folder holds felix.inp and images only: the reflections come
    # from the image names, the crystal from the folder's only CIF
    d = make_felix_folder(tmp_path / "LiTaO3_84x84", inp=_inp(), cif=R3C_ANISO,
                          hkl=[(0, 0, 6)], stem="LiTaO3",
                          images={h: np.zeros((84, 84), "f4")
                                  for h in [(0, 0, 0), (0, 0, 12), (2, 2, -3), (3, 3, 6)]})
    (d / "felix.hkl").unlink()
    (d / "felix.cif").rename(d / "LiTaO3.cif")
    with pytest.warns(UserWarning) as rec:
        f = read_felix(d)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "only CIF LiTaO3.cif is used" in msgs and "3 reflections of the image names" in msgs
    assert {tuple(h) for h in f.hkl} == {(0, 0, 12), (2, 2, -3), (3, 3, 6)}
    assert f.hkl_path is None and f.cif_path == d / "LiTaO3.cif"
    (d / "other.cif").write_text(R3C_ANISO)
    with pytest.raises(InputError, match=r"missing felix\.cif.*LiTaO3\.cif.*other\.cif"):
        read_felix(d)


def test_large_automatic_pools_are_capped_nearest_bragg_then_shortest() -> None:
    """The engine's accuracy check solves the pool with every beam strong (N³ per
    direction): BaTiO3 P2_1 at gmax 3 / smax 0.05 had 2 679 beams (the set-up ran for
    more than 8 minutes in its first reference), C9H11NO3 6 101 and Eu4Cd25 30 177 (a
    54 GiB coupling table, refused). Automatic pools now start from at most
    MAX_POOL_SIZE beams."""
    from qcbed.bloch.beams import BeamPool
    from qcbed.bloch.geometry import ZoneFrame

    c, _ = _read(WURTZITE_MIXED)
    frame = ZoneFrame(c.lattice, (-1.0, 1.0, 0.0), (0.0, 0.0, -1.0))
    k = 25.1
    kw = dict(gmax=3.0, smax=0.05, kt_center=(0.0, 0.0))
    # a narrow disc: the beams nearest the Bragg condition are kept (smax lowered)
    full = BeamPool.automatic(c, frame, k, kt_radius=0.02, **kw)
    cap = BeamPool.automatic(c, frame, k, kt_radius=0.02, max_size=40, **kw)
    assert len(full) > 40 and 40 <= len(cap) <= 44 and cap.meta["capped_from"] == len(full)
    assert cap.meta["smax"] < 0.05 and cap.meta["gmax"] == 3.0
    assert {tuple(h) for h in cap.hkl} <= {tuple(h) for h in full.hkl}
    # a wide disc (every beam reaches Bragg somewhere): the shortest beams are kept
    wide = BeamPool.automatic(c, frame, k, kt_radius=1.4, max_size=40, **kw)
    assert 40 <= len(wide) <= 60 and wide.meta["gmax"] < 3.0 and wide.meta["smax"] == 0.05
    assert np.max(c.lattice.g_length(wide.hkl)) <= wide.meta["gmax"] + 1e-9
    # no cap below the floor (Felix's min_reflection_pool) and none when not asked
    floor = BeamPool.automatic(c, frame, k, kt_radius=0.02, max_size=40, min_size=len(full),
                               **kw)
    assert len(floor) == len(full) and "capped_from" not in floor.meta


def test_simulation_caps_its_automatic_pool_with_a_warning(monkeypatch) -> None:
    import qcbed.bloch.simulation as simmod

    monkeypatch.setattr(simmod, "MAX_POOL_SIZE", 60)
    with pytest.warns(UserWarning, match=r"automatic beam pool .* has \d+ beams .* the \d+ "
                                         r"nearest the Bragg condition or shortest are used"):
        sim = _si_sim()
    first = int(sim.convergence.steps[0].split(":")[0].split()[1])   # "pool N: sgmin ..."
    assert 60 <= first <= 80                 # the check started from the capped pool
    # a pool the user fixes (smax given) is never capped
    assert "capped_from" not in _si_sim(smax=0.05).pool.meta


@pytest.mark.parametrize("cif, ibd, xd, hkl", [
    (R3C_ANISO, (1, -1, 0), (0, 0, -1), [(0, 0, 12), (2, 2, -3)]),   # LiNbO3's geometry
    (P21_EXPORT, (-1, 1, 0), (1, 1, 0), [(1, 1, 0), (0, 0, 1)]),       # felix1.inp, beta 110.5
])
def test_non_cubic_felix_pixels_have_felix_incident_directions(tmp_path, cif, ibd, xd,
                                                               hkl) -> None:
    """Hexagonal and monoclinic cells: every pixel's incident direction, from Felix's own
    frame formulas (tests/test_felix_conventions.py), is qcbed's (zone = −beam)."""
    from qcbed.bloch.geometry import ZoneFrame
    from qcbed.bloch.grids import TiltGrid
    from qcbed.constants import wavelength
    from test_felix_conventions import _felix_incident_directions, _qcbed_incident_directions

    inp = _inp(radius=6, conv=0.3).replace("[1, -1, 0]", str(list(ibd))).replace(
        "[0, 0, -1]", str(list(xd)))
    d = make_felix_folder(tmp_path, inp=inp, cif=cif, hkl=hkl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fx = read_felix(d)
    lat = fx.crystal.lattice
    assert np.array_equal(fx.incident_beam_direction, ibd)
    k = 1.0 / wavelength(200.0)
    want = _felix_incident_directions(lat, ibd, xd, 0.3, 6, k)
    frame = ZoneFrame(lat, tuple(fx.zone), tuple(fx.x_direction), tuple(fx.zone_normal))
    got = _qcbed_incident_directions(frame, TiltGrid.felix(0.3, 6), k)
    assert np.abs(got[1:] - want[1:]).max() < 1e-12
