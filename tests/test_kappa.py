"""Kappa charge-density model: Hartree–Fock orbital data, closed-form transforms, ITC
comparison, Mott–Bethe limits, IAM limit, structure factors and a synthetic κ recovery."""

from __future__ import annotations

import json
from importlib import resources
from math import factorial

import numpy as np
import pytest
from scipy.integrate import quad

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError
from qcbed.refine import DirectData, Refinement
from qcbed.scattering import elastic_form_factor
from qcbed.scattering.kappa import (
    KappaSite,
    kappa_electron_factor,
    kappa_elements,
    kappa_xray_factor,
    orbital_xray_factor,
    valence_electrons,
)
from qcbed.scattering.parameterisations import xray_form_factor
from qcbed.scattering.structure_factors import PotentialModel, structure_factors

A = 5.4307
C_MB = 0.0239337  # 1/(8π² a₀) in Å


def _table() -> dict:
    path = resources.files("qcbed") / "scattering" / "tables" / "clementi_roetti.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _radial(shell: dict, k: int):
    """R(r) of orbital k of a shell by direct evaluation (r in bohr)."""
    n = np.asarray(shell["n"])
    z = np.asarray(shell["zeta"])
    c = np.asarray(shell["coefficients"][k])
    norm = np.array([(2 * zi) ** (ni + 0.5) / np.sqrt(factorial(2 * ni)) for ni, zi in zip(n, z)])
    return lambda r: float(np.sum(c * norm * r ** (n - 1) * np.exp(-z * r)))


def si_crystal() -> Crystal:
    return Crystal(Lattice(A, A, A), [Site("Si1", "Si", (0.125,) * 3, b_iso=0.4668)],
                   space_group_from_number(227, 2))


# ------------------------------------------------------------------ orbital data
def test_published_orbitals_are_normalised_and_fill_the_atom() -> None:
    """Transcription check: every orbital of the table integrates to 1 (five-digit
    coefficients: ±3·10⁻⁴) by quadrature, and the occupations add up to Z."""
    tab = _table()["elements"]
    assert {"Si", "O", "Li", "C", "N", "Al", "Ga", "As"} <= set(tab)
    for el, e in tab.items():
        assert sum(e["occupation"].values()) == e["Z"], el
        for sh in e["shells"].values():
            for k, orb in enumerate(sh["orbitals"]):
                r = _radial(sh, k)
                norm = quad(lambda x, r=r: r(x) ** 2 * x**2, 0, 80, limit=400)[0]
                assert norm == pytest.approx(1.0, abs=3e-4), (el, orb)


def test_closed_form_transform_matches_quadrature() -> None:
    """Eq. (2) against a direct numerical j₀ transform of the Si 3p and 1s densities."""
    sh = _table()["elements"]["Si"]["shells"]
    for shell, k, orb in ((sh["p"], 1, "3p"), (sh["s"], 0, "1s")):
        r = _radial(shell, k)
        for s in (0.0, 0.2, 0.7, 1.5):
            kk = 4 * np.pi * s * 0.529177210903

            def j0(x: float, kk: float = kk) -> float:
                return 1.0 if kk * x < 1e-12 else np.sin(kk * x) / (kk * x)

            num = quad(lambda x, r=r, j0=j0: r(x) ** 2 * x**2 * j0(x), 0, 80, limit=800)[0]
            num /= quad(lambda x, r=r: r(x) ** 2 * x**2, 0, 80, limit=400)[0]
            assert orbital_xray_factor("Si", orb, s) == pytest.approx(num, abs=2e-6)


def test_neutral_atoms_have_z_electrons_and_itc_xray_factors() -> None:
    s = np.linspace(0.0, 2.0, 41)
    for el in kappa_elements():
        z = _table()["elements"][el]["Z"]
        assert kappa_xray_factor(el, 0.0) == pytest.approx(z, abs=1e-9)
    # ITC Vol. C Table 6.1.1.4 (Cromer–Mann fits of relativistic HF atoms), s ≤ 2 Å⁻¹:
    # measured max |Δf| = 0.020 e (Si), 0.008 (O), 0.004 (Li), 0.023 (C), 0.041 (N), 0.020 (Al)
    for el, tol in (("Si", 0.03), ("O", 0.02), ("Li", 0.01), ("C", 0.035), ("N", 0.05),
                    ("Al", 0.03)):
        assert np.max(np.abs(kappa_xray_factor(el, s) - xray_form_factor(el, s))) < tol, el


def test_kappa_and_population_act_as_in_coppens() -> None:
    s = np.array([0.0, 0.1, 0.2, 0.3])
    # P_v sets the electron count; κ > 1 contracts the valence shell (larger f at s > 0)
    assert kappa_xray_factor("Si", 0.0, 1.0, 3.0) == pytest.approx(13.0)
    f1 = kappa_xray_factor("Si", s, 1.0)
    f2 = kappa_xray_factor("Si", s, 1.1)
    assert f2[0] == pytest.approx(f1[0]) and np.all(f2[1:] > f1[1:])
    # f(s; κ) = f_core(s) + P_v f_val(s/κ): scaling s and κ together leaves the valence
    core = kappa_xray_factor("Si", s, 1.0, 0.0)
    val = (kappa_xray_factor("Si", s, 1.0) - core) / 4.0
    val_k = (kappa_xray_factor("Si", 1.2 * s, 1.2) - kappa_xray_factor("Si", 1.2 * s, 1.0, 0.0))
    assert np.allclose(val_k / 4.0, val, atol=1e-12)
    assert valence_electrons("Si") == 4 and valence_electrons("O") == 6
    with pytest.raises(InputError):
        KappaSite("Si1", kappa=0.0)
    with pytest.raises(InputError):
        kappa_xray_factor("Xx", s)


def test_mott_bethe_limits() -> None:
    # continuous at s → 0 (series), Z C/s² at large s, independent Kirkland IAM within 3 %
    fe = kappa_electron_factor("Si", np.array([0.0, 5e-5, 2e-4, 1e-3]))
    assert np.allclose(fe, fe[0], rtol=1e-4)
    big = kappa_electron_factor("Si", np.array([20.0]))[0]
    assert big == pytest.approx(C_MB * 14 / 400.0, rel=2e-3)
    s = np.linspace(0.0, 1.5, 16)
    kir = elastic_form_factor("Si", s, "kirkland")
    assert np.max(np.abs(elastic_form_factor("Si", s, "kappa") / kir - 1)) < 0.03
    # an ion (P_v = 3): one valence electron less, f_e(ion) − f_e(atom) = C f_val(s)/s²,
    # which tends to the Coulomb tail C q/s² (q = 1) as f_val(s) → 1 at small s
    for s1 in (0.05, 0.5):
        ion = kappa_electron_factor("Si", np.array([s1]), 1.0, 3.0)[0]
        neutral = kappa_electron_factor("Si", np.array([s1]), 1.0, 4.0)[0]
        f_val = (kappa_xray_factor("Si", s1) - kappa_xray_factor("Si", s1, 1.0, 0.0)) / 4
        assert ion - neutral == pytest.approx(C_MB * f_val / s1**2, rel=1e-4)
    f_val_small = (kappa_xray_factor("Si", 0.05) - kappa_xray_factor("Si", 0.05, 1.0, 0.0)) / 4
    assert f_val < 0.5 < f_val_small


def test_iam_limit_and_structure_factors() -> None:
    cr = si_crystal()
    hkl = [[1, 1, 1], [2, 2, 0], [3, 1, 1], [4, 0, 0], [0, 0, 0]]
    free = structure_factors(cr, hkl, 200, PotentialModel("kappa", "none"))
    explicit = structure_factors(cr, hkl, 200, PotentialModel(
        "kappa", "none", kappa=(KappaSite("Si1", 1.0, 4.0),)))
    assert np.allclose(explicit.u, free.u, rtol=1e-12, atol=1e-15)
    kir = structure_factors(cr, hkl, 200, PotentialModel("kirkland", "none"))
    assert np.allclose(free.u[:4].real, kir.u[:4].real, rtol=0.01)
    contracted = structure_factors(cr, hkl, 200, PotentialModel(
        "kappa", "none", kappa=(KappaSite("Si", 1.05),)))
    assert abs(contracted.u[0]) < abs(free.u[0]) * 0.97  # valence 111 term: Mott–Bethe sign
    with pytest.raises(InputError):
        PotentialModel("kirkland", "none", kappa=(KappaSite("Si1", 1.05),))


def test_kappa_is_recovered_from_synthetic_cbed() -> None:
    """Si 111 systematic row at 196.75 kV made with κ(Si1) = 1.04: thickness and κ refined
    from κ = 1 recover the truth within 3 esd."""
    cr = si_crystal()
    pm = PotentialModel("kappa", "proportional", xi=0.03)
    base = Simulation(cr, 196.75, [1, 1, 0], [1, -1, -1], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal((12.0152, -12.0152, 26.4176))
    sim = Simulation(cr, 196.75, [1, 1, 0], [1, -1, -1], kt_center=kt0, kt_radius=0.3,
                     outputs=[[1, -1, -1], [-1, 1, 1], [2, -2, -2]], potential=pm,
                     selection=BeamSelection(0.3, 30.0), gmax=2.0, smax=0.03)
    truth = sim.with_changes(potential=pm.with_kappa({"Si1": {"kappa": 1.04}}))
    g = np.sqrt(3) / A
    xs = np.linspace(-0.45, 0.45, 30) * g
    kt = np.concatenate([np.stack([xs, np.full_like(xs, y)], 1) for y in (-0.03, 0.03)]) + kt0
    inten = truth.solve(kt).intensities([1500.0])[0].T
    rng = np.random.default_rng(3)
    obs = rng.poisson(2e4 * inten + 40).astype(float)
    ref = Refinement(sim, DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0)))
    ref.add_thickness(1520.0)
    ps = ref.add_kappa("Si1")
    assert [p.name for p in ps] == ["kappa(Si1)", "Pv(Si1)"] and not ps[1].refine
    res = ref.fit("lm", max_iter=30)
    assert res.value("kappa(Si1)") == pytest.approx(1.04, abs=3 * res.esd("kappa(Si1)"))
    assert res.esd("kappa(Si1)") < 0.01
    assert res.value("thickness") == pytest.approx(1500.0, abs=3 * res.esd("thickness"))
    with pytest.raises(InputError):
        Refinement(base, DirectData(sim.outputs, kt, obs, obs)).add_kappa("Si1")


def test_kappa_parameters_in_a_project_file(tmp_path) -> None:
    """κ(Si1) named in a project file: validated, refined from the CLI, carried between
    steps, reported with its esd in result.json and in the CIF's rho loop."""
    import json

    import gemmi
    from click.testing import CliRunner

    from qcbed.cli import main
    from qcbed.demo import make_demo

    path, _ = make_demo(tmp_path / "demo", fast=True, executor="serial")
    text = path.read_text()
    assert 'elastic = "kirkland"' in text and 'absorption = "bird_king"' in text
    text = text.replace('elastic = "kirkland"', 'elastic = "kappa"').replace(
        'absorption = "bird_king"', 'absorption = "proportional"\nxi = 0.013')
    text = text.replace('refine = ["thickness", "shift.row", "shift.col"]',
                        'refine = ["thickness", "kappa(Si1)", "shift.row", "shift.col"]')
    text = text.replace('refine = ["thickness", "U(1,1,1)", "Uabs(1,1,1)", "U(2,2,2)", '
                        '"shift.row", "shift.col"]',
                        'refine = ["thickness", "U(2,2,2)", "kappa(Si1)", "shift.row", '
                        '"shift.col"]')
    assert text.count("kappa(Si1)") == 2
    (tmp_path / "demo" / "k.toml").write_text(text)
    run = CliRunner()
    r = run.invoke(main, ["validate", str(tmp_path / "demo" / "k.toml")])
    assert r.exit_code == 0, r.output
    bad = text.replace('elastic = "kappa"', 'elastic = "kirkland"')
    (tmp_path / "demo" / "bad.toml").write_text(bad)
    r = run.invoke(main, ["validate", str(tmp_path / "demo" / "bad.toml")])
    assert r.exit_code == 2 and "need the kappa model" in r.output
    (tmp_path / "demo" / "bad2.toml").write_text(text.replace("kappa(Si1)", "kappa(Xx1)"))
    r = run.invoke(main, ["validate", str(tmp_path / "demo" / "bad2.toml")])
    assert r.exit_code == 2 and "unknown site label or element" in r.output
    # --no-budget: the error budget swaps the elastic model (to lobato), which has no κ
    r = run.invoke(main, ["--quiet", "--workers", "1", "refine", str(tmp_path / "demo" /
                                                                      "k.toml"),
                          "--out", str(tmp_path / "out"), "--no-budget"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    k = next(p for p in res["parameters"] if p["name"] == "kappa(Si1)")
    assert k["refined"] and 0 < k["esd"] < 0.05 and abs(k["value"] - 1.0) < 0.1
    state = json.loads((tmp_path / "out" / "run_state.json").read_text())["state"]
    assert state["kappa"]["Si1"]["kappa"] == pytest.approx(k["value"])
    b = gemmi.cif.read_file(str(tmp_path / "out" / "refined.cif")).sole_block()
    row = b.find("_atom_rho_multipole_", ["atom_label", "kappa", "coeff_Pv"])[0]
    assert row[0] == "Si1" and "(" in row[1] and "(" not in row[2]
    assert float(row[1].split("(")[0]) == pytest.approx(k["value"], abs=2 * k["esd"])
