"""Refined structure out as CIF (gemmi): s.u. notation, every refined structural parameter,
structure-factor loops, read back with gemmi and with qcbed's own CIF reader."""

from __future__ import annotations

import re

import gemmi
import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.io import read_cif
from qcbed.output.structure_cif import (
    cif_from_refinement,
    format_su,
    refined_cif_document,
    write_refined_cif,
)
from qcbed.refine import DirectData, Refinement
from qcbed.refine.parameters import Parameter, ParameterSet, cell_parameters, site_parameters
from qcbed.scattering.structure_factors import PotentialModel

A = 5.4307


def su_of(text: str) -> tuple[float, float | None]:
    """Value and s.u. of a CIF number such as '5.4310(2)' (independent of the writer)."""
    m = re.fullmatch(r"(-?\d+)(?:\.(\d+))?(?:\((\d+)\))?", text)
    assert m, text
    value = float(text.split("(")[0])
    if m.group(3) is None:
        return value, None
    dec = len(m.group(2) or "")
    return value, int(m.group(3)) * 10.0**-dec


def test_format_su_rule_of_19() -> None:
    assert format_su(5.43102, 0.00023) == "5.4310(2)"
    assert format_su(0.04735, 0.000152) == "0.04735(15)"
    assert format_su(0.04731, 0.000196) == "0.0473(2)"  # 19.6 → rounds to 20 → one digit
    assert format_su(1523.4, 12.0) == "1523(12)"
    assert format_su(1523.4, 37.0) == "1520(40)"
    assert format_su(1.0, None) == "1" and format_su(2.5, 0.0) == "2.5"


def rutile() -> Crystal:
    return Crystal(Lattice(4.594, 4.594, 2.959),
                   [Site("Ti1", "Ti", (0.0, 0.0, 0.0), b_iso=0.4),
                    Site("O1", "O", (0.3048, 0.3048, 0.0), b_iso=0.5, occupancy=0.98)],
                   space_group_from_number(136))


def test_every_refined_structural_parameter_has_its_su() -> None:
    cr = rutile()
    ps = ParameterSet()
    ps.extend(cell_parameters(cr))
    ps.extend(site_parameters(cr, b_iso=True, xyz=True, occupancy=True))
    ps.add(Parameter("voltage", 200.0, "structure", 0.05, 195.0, 205.0, "kV",
                     target=("voltage",)))
    names = [p.name for p in ps]
    # O at 4f (x, x, 0): x free, y follows; Ti at 2a: fixed
    assert "x(O1)" in names and "y(O1)" not in names and "x(Ti1)" not in names
    esd = {"cell.a": 2e-4, "cell.c": 3e-4, "B(Ti1)": 0.01, "B(O1)": 0.02,
           "x(O1)": 1.5e-4, "occ(O1)": 0.004, "voltage": 0.3, "occ(Ti1)": 0.003}
    for p in ps:
        p.esd = esd.get(p.name)
        p.refine = p.name in esd
    doc = refined_cif_document(cr, ps, voltage_kv=200.0, potential="elastic=kirkland")
    text = doc.as_string()
    b = gemmi.cif.read_string(text).sole_block()
    a, sa = su_of(b.find_value("_cell_length_a"))
    assert a == pytest.approx(4.594) and sa == pytest.approx(2e-4)
    assert su_of(b.find_value("_cell_length_b"))[1] == pytest.approx(2e-4)  # b ≡ a
    assert su_of(b.find_value("_cell_length_c"))[1] == pytest.approx(3e-4)
    assert su_of(b.find_value("_cell_angle_alpha"))[1] is None
    t = b.find("_atom_site_", ["label", "fract_x", "fract_y", "fract_z", "U_iso_or_equiv",
                               "occupancy"])
    rows = {r[0]: r for r in t}
    # x(O1) moves the site along (1, 1, 0): x and y carry the same s.u.
    assert su_of(rows["O1"][1]) == (pytest.approx(0.3048), pytest.approx(1.5e-4))
    assert su_of(rows["O1"][2]) == (pytest.approx(0.3048), pytest.approx(1.5e-4))
    assert su_of(rows["O1"][3])[1] is None  # z fixed by symmetry
    u, su = su_of(rows["O1"][4])
    assert u == pytest.approx(0.5 / (8 * np.pi**2), abs=1e-4)
    assert su == pytest.approx(0.02 / (8 * np.pi**2), rel=0.2)
    assert su_of(rows["O1"][5]) == (pytest.approx(0.98), pytest.approx(0.004))
    assert b.find_value("_diffrn_radiation_type") == "electron"
    lam, lam_su = su_of(b.find_value("_diffrn_radiation_wavelength"))
    assert lam == pytest.approx(0.02508, abs=1e-5)
    # dλ/dV = −λ (1 + eV/mc²)/(2V(1 + eV/2mc²)) = −λ/(2V)·1.3914/1.1957 at 200 kV
    assert lam_su == pytest.approx(0.02508 / 400 * (1.3914 / 1.1957) * 0.3, rel=0.1)
    assert su_of(b.find_value("_qcbed_diffrn_accelerating_voltage_kV")) == (
        pytest.approx(200.0), pytest.approx(0.3))
    # qcbed's reader takes the file back: the same structure, and the s.u. it reports
    cr2, meta = read_cif(_write(text), return_metadata=True)
    assert cr2.space_group_number == 136 and len(cr2.atoms) == len(cr.atoms)
    assert np.allclose(cr2.lattice.parameters, cr.lattice.parameters, atol=1e-4)
    assert cr2.sites[1].b_iso == pytest.approx(0.5, abs=8 * np.pi**2 * su)  # rounded to s.u.
    assert meta["esd"]["_cell_length_a"] == pytest.approx(2e-4)


def _write(text: str):
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    (d / "x.cif").write_text(text)
    return d / "x.cif"


def test_anisotropic_sites_write_the_aniso_loop(tmp_path) -> None:
    cr = rutile()
    from qcbed.refine.parameters import allowed_u_tensors

    basis, coeff = allowed_u_tensors(cr, 1)
    u = np.einsum("k,kij->ij", coeff * 1.2, basis)
    u[0, 1] = u[1, 0] = 0.001
    sites = list(cr.sites)
    from dataclasses import replace

    sites[1] = replace(sites[1], u_aniso=u)
    cr = cr.replace(sites=sites)
    from qcbed.refine.parameters import u_aniso_parameters

    ps = u_aniso_parameters(cr, "O1")
    assert [p.name for p in ps] == ["U11(O1)", "U33(O1)", "U12(O1)"]
    assert [p.value for p in ps] == pytest.approx([u[0, 0], u[2, 2], 0.001])
    for k, p in enumerate(ps):
        p.esd = 1e-4 * (k + 1)
    path = write_refined_cif(tmp_path / "a.cif", cr, ps)
    b = gemmi.cif.read_file(str(path)).sole_block()
    t = b.find("_atom_site_aniso_", ["label", "U_11", "U_22", "U_33", "U_12", "U_13", "U_23"])
    assert len(t) == 1 and t[0][0] == "O1"
    u11, s11 = su_of(t[0][1])
    assert u11 == pytest.approx(u[0, 0], abs=1e-5) and s11 == pytest.approx(1e-4)
    assert su_of(t[0][2])[1] == pytest.approx(1e-4)  # U_22 ≡ U_11
    assert su_of(t[0][4]) == (pytest.approx(0.001), pytest.approx(3e-4))
    assert su_of(t[0][6])[1] is None  # U_23 = 0 by symmetry
    cr2 = read_cif(path)
    assert np.allclose(cr2.sites[1].u_aniso, u, atol=1e-5)


def test_refinement_writes_cif_with_structure_factor_loops(tmp_path) -> None:
    """A synthetic Si refinement (thickness, U(1,-1,-1), κ) written from Python and read back."""
    cr = Crystal(Lattice(A, A, A), [Site("Si1", "Si", (0.125,) * 3, b_iso=0.4668)],
                 space_group_from_number(227, 2))
    pm = PotentialModel("kappa", "proportional", xi=0.03)
    base = Simulation(cr, 196.75, [1, 1, 0], [1, -1, -1], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal((12.0152, -12.0152, 26.4176))
    sim = Simulation(cr, 196.75, [1, 1, 0], [1, -1, -1], kt_center=kt0, kt_radius=0.3,
                     outputs=[[1, -1, -1], [-1, 1, 1], [2, -2, -2]], potential=pm,
                     selection=BeamSelection(0.3, 30.0), gmax=2.0, smax=0.03)
    g = np.sqrt(3) / A
    xs = np.linspace(-0.45, 0.45, 30) * g
    kt = np.concatenate([np.stack([xs, np.full_like(xs, y)], 1) for y in (-0.03, 0.03)]) + kt0
    u_true = sim.structure_factor((1, -1, -1))[0].real * 1.02
    truth = sim.with_changes()
    truth.set_structure_factors({(1, -1, -1): u_true})
    inten = truth.solve(kt).intensities([1500.0])[0].T
    obs = np.random.default_rng(5).poisson(2e4 * inten + 40).astype(float)
    ref = Refinement(sim, DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0)))
    ref.add_thickness(1510.0)
    ref.add_structure_factor((1, -1, -1), refine_uabs=False)
    ref.add_kappa("Si1", kappa=False)
    res = ref.fit("lm", max_iter=20)
    path = cif_from_refinement(ref, res, tmp_path / "si.cif")
    b = gemmi.cif.read_file(str(path)).sole_block()
    assert b.find_value("_space_group_IT_number") == "227"
    assert len(b.find_values("_space_group_symop_operation_xyz")) == 192
    th, th_su = su_of(b.find_value("_qcbed_refine_thickness_A"))
    assert th == pytest.approx(res.value("thickness"), abs=th_su)
    assert th_su == pytest.approx(res.esd("thickness"), rel=0.3)
    # κ loop (rho dictionary): κ fixed → no s.u.
    k = b.find("_atom_rho_multipole_", ["atom_label", "kappa", "coeff_Pv"])
    assert k[0][0] == "Si1" and su_of(k[0][1]) == (1.0, None)
    # U_g loop and the X-ray F_g loop (Mott–Bethe), refined vs IAM
    t = b.find("_qcbed_refln_", ["index_h", "index_k", "index_l", "U_meas", "U_sigma",
                                 "U_iam"])
    row = next(r for r in t if [int(r[0]), int(r[1]), int(r[2])] == [1, -1, -1])
    assert float(row[3]) == pytest.approx(res.value("U(1,-1,-1)"), rel=1e-6)
    assert float(row[4]) == pytest.approx(res.esd("U(1,-1,-1)"), rel=1e-3)
    assert float(row[3]) == pytest.approx(u_true, abs=4 * float(row[4]))
    f = b.find("_refln_", ["index_h", "index_k", "index_l", "F_meas", "F_sigma", "F_calc"])
    frow = next(r for r in f if [int(r[0]), int(r[1]), int(r[2])] == [1, -1, -1])
    # independent Mott–Bethe: F_x = Σ Z T e^{…} − s² F_e / C with F_e = πΩU/γ
    from qcbed.constants import MOTT_BETHE_PREFACTOR, relativistic_gamma

    s = np.sqrt(3) / A / 2
    fe = np.pi * A**3 * float(row[3]) / relativistic_gamma(196.75)
    nuc = 8 * 14 * np.exp(-0.4668 * s**2) / np.sqrt(2)  # |Σ e^{-2πi g·r}| = 8/√2 for 111
    # (nuclear and electron terms share the phase of 111: |F_x| = |nuc| − s²|F_e|/C)
    fx = nuc - s**2 * abs(fe) / MOTT_BETHE_PREFACTOR
    assert abs(float(frow[3])) == pytest.approx(fx, rel=1e-3)
    assert abs(float(frow[3])) == pytest.approx(60.0, abs=4.0)  # Si 111 X-ray F ≈ 59-61 e
    assert float(frow[4]) > 0 and float(frow[5]) != float(frow[3])
    assert read_cif(path).space_group_number == 227
