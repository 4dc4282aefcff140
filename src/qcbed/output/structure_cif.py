"""The refined structure as a CIF (written through gemmi), with standard uncertainties.

One data block holds

* the cell (``_cell_length_*``, ``_cell_angle_*``), the symmetry (H-M symbol, number
  and every operation as ``_space_group_symop_operation_xyz``);
* the atom sites (``_atom_site_fract_*``, ``_atom_site_U_iso_or_equiv``,
  ``_atom_site_occupancy``) and, where present, ``_atom_site_aniso_U_*``;
* κ and P_v of the kappa model in the loop ``_atom_rho_multipole_*`` of the CIF
  electron-density (rho) dictionary (``_atom_rho_multipole_kappa``,
  ``_atom_rho_multipole_coeff_Pv``);
* the refined structure factors twice: X-ray F_g (electrons, Mott–Bethe inverse of the
  refined U_g; Mott 1930, Bethe 1930, Spence & Zuo 1992 eq. 2.13) as the core
  ``_refln_`` loop (``F_meas`` = refined, ``F_calc`` = independent-atom model,
  ``phase_calc``), and the electron U_g, U′_g (Å⁻²) as the loop ``_qcbed_refln_``;
* the experiment: ``_diffrn_radiation_type electron``, the wavelength, the accelerating
  voltage and the thickness (``_qcbed_*`` local items) with their s.u.

Every value that was refined carries its standard uncertainty in the CIF way,
``5.4310(2)``, rounded by the IUCr rule of 19 (two digits when the leading digits
of the s.u. are ≤ 19, one otherwise; *Notes for authors*, Acta Cryst.). Derived
quantities (coordinates that follow a free one, e.g. y = x on (x, x, z),
U^{ij} from the independent components, U_iso = B/8π², λ from the voltage) get their s.u. by
linear propagation with the full covariance matrix of the refinement.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import gemmi
import numpy as np

from .._core.files import atomic_write_text
from .._version import __version__
from ..crystal import Crystal
from ..errors import InputError

__all__ = ["cif_from_refinement", "cif_from_run", "format_su", "refined_cif_document",
           "write_refined_cif"]

_EIGHT_PI2 = 8.0 * np.pi**2


# ------------------------------------------------------------------------- numbers
def format_su(value: float, su: float | None) -> str:
    """``value(su)`` in CIF notation, the s.u. rounded by the IUCr rule of 19.

    Parameters
    ----------
    value : float
    su : float or None
        Standard uncertainty; None, 0 or non-finite writes the value alone
        (eight significant digits).

    Examples
    --------
    >>> format_su(5.43102, 0.00023)
    '5.4310(2)'
    >>> format_su(0.04735, 0.000152)
    '0.04735(15)'
    """
    if su is None or not np.isfinite(su) or su <= 0:
        return f"{value:.8g}"
    exp = math.floor(math.log10(su))
    lead = su / 10**exp
    digits = 2 if round(lead * 10) <= 19 else 1
    dec = -(exp - digits + 1)
    q = round(su * 10**dec)
    if q >= (100 if digits == 2 else 10):  # rounding carried a digit
        dec -= 1
        q = round(su * 10**dec)
    if dec <= 0:
        return f"{round(value, dec):.0f}({q * 10**(-dec)})"
    return f"{value:.{dec}f}({q})"


def _op_triplet(rot: np.ndarray, tran: np.ndarray) -> str:
    """'x,y,z'-style operation from a rotation (integers) and a translation."""
    out = []
    for i in range(3):
        terms = ""
        for j, ax in enumerate("xyz"):
            c = int(round(rot[i, j]))
            if c:
                terms += ("+" if c > 0 and terms else "-" if c < 0 else "") + (
                    ax if abs(c) == 1 else f"{abs(c)}*{ax}")
        t = Fraction(float(tran[i]) % 1.0).limit_denominator(48)
        if t:
            terms += f"+{t}"
        out.append(terms or "0")
    return ",".join(out)


# ------------------------------------------------------------------------- model
def _cov_lookup(names: Sequence[str], cov: np.ndarray | None):
    index = {n: i for i, n in enumerate(names)}

    def var(weights: Mapping[str, float]) -> float | None:
        """Variance of Σ w_p p (None when no weighted parameter was refined)."""
        idx = [(index[n], w) for n, w in weights.items() if n in index and w != 0]
        if not idx or cov is None:
            return None
        i = np.array([k for k, _ in idx])
        w = np.array([x for _, x in idx])
        return float(max(w @ cov[np.ix_(i, i)] @ w, 0.0))

    return var


def refined_cif_document(crystal: Crystal, parameters: Any = (), *,
                         free_names: Sequence[str] = (), covariance: np.ndarray | None = None,
                         structure_factors: Sequence[Mapping[str, Any]] = (),
                         voltage_kv: float | None = None, potential: str = "",
                         block_name: str | None = None, comment: str = "") -> gemmi.cif.Document:
    """A gemmi CIF document of a refined structure (see the module docstring).

    Parameters
    ----------
    crystal : Crystal
        The refined crystal (cell, sites, B or U^{ij}, occupancies as refined).
    parameters : iterable of Parameter
        The refinement's parameters (name, value, esd, refine, target): ``cell.*``,
        ``B(label)``, ``x(label)``/``y(label)``/``z(label)``, ``occ(label)``,
        ``U11(label)`` … ``U23(label)``, ``kappa(T)``, ``Pv(T)``, ``thickness`` and
        ``voltage`` are written with their s.u.
    free_names, covariance : sequence of str, ndarray
        Free parameter names and their covariance matrix (the refinement's
        ``free_names``, ``covariance``); without them the s.u. of each parameter
        is its own esd and derived quantities ignore correlations.
    structure_factors : sequence of dict
        Rows of :func:`qcbed.output.sf_table.structure_factor_table` (``hkl``, ``U``,
        ``U_esd``, ``U_iam``, ``U_abs``, ``U_abs_esd``, ``Fx``, ``Fx_esd``,
        ``Fx_iam``, ``phase_deg``, ``d``, ``s``).
    voltage_kv : float, optional
        Accelerating voltage (kV), refined or not.
    potential : str
        Description of the scattering-factor model (``PotentialModel.describe()``).
    block_name : str, optional
        Data-block name (default: from the crystal name).
    comment : str
        Free text stored in ``_qcbed_refine_special_details``.
    """
    params = {p.name: p for p in parameters}
    if covariance is None or not len(free_names):
        free_names = [n for n, p in params.items() if p.refine and p.esd is not None]
        covariance = np.diag([params[n].esd ** 2 for n in free_names]) if free_names else None
    var = _cov_lookup(list(free_names), None if covariance is None else np.asarray(covariance))

    def su_of(weights: Mapping[str, float]) -> float | None:
        v = var(weights)
        return None if v is None else math.sqrt(v)

    name = block_name or "".join(c if c.isalnum() else "_" for c in (crystal.name or "qcbed"))
    doc = gemmi.cif.Document()
    b = doc.add_new_block(name or "qcbed")
    q = gemmi.cif.quote
    b.set_pair("_audit_creation_method", q(f"qcbed {__version__} (QCBED refinement)"))
    if crystal.name:
        b.set_pair("_chemical_name_common", q(crystal.name))
    if comment:
        b.set_pair("_qcbed_refine_special_details", q(comment))
    if potential:
        b.set_pair("_qcbed_refine_scattering_model", q(potential))

    # ------------------------------------------------------------------ cell
    lat = crystal.lattice
    system = ""
    for p in params.values():
        if p.name.startswith("cell.") and p.target:
            system = p.target[2]
    linked = {"a": ("a",), "b": ("b",), "c": ("c",), "alpha": ("alpha",),
              "beta": ("beta",), "gamma": ("gamma",)}
    if system == "cubic":
        linked.update(b=("a",), c=("a",))
    elif system in ("tetragonal", "hexagonal") or (system == "trigonal" and "cell.c" in params):
        linked.update(b=("a",))
    elif system == "trigonal":
        linked.update(b=("a",), c=("a",), beta=("alpha",), gamma=("alpha",))
    for (key, tag), value in zip((("a", "_cell_length_a"), ("b", "_cell_length_b"),
                                  ("c", "_cell_length_c"), ("alpha", "_cell_angle_alpha"),
                                  ("beta", "_cell_angle_beta"), ("gamma", "_cell_angle_gamma")),
                                 lat.parameters):
        src = [f"cell.{k}" for k in linked[key] if f"cell.{k}" in params]
        b.set_pair(tag, format_su(float(value), su_of({src[0]: 1.0}) if src else None))
    vol_su = None
    if "cell.a" in params and system == "cubic":
        s = su_of({"cell.a": 1.0})
        vol_su = None if s is None else 3 * lat.a**2 * s
    b.set_pair("_cell_volume", format_su(float(lat.volume), vol_su))

    # ------------------------------------------------------------------ symmetry
    sg = crystal.space_group
    if sg is not None:
        b.set_pair("_space_group_name_H-M_alt", q(sg.hm))
        b.set_pair("_space_group_IT_number", str(sg.number))
        b.set_pair("_space_group_crystal_system", sg.crystal_system_str())
    rot, tran = crystal.operations
    loop = b.init_loop("_space_group_symop_", ["id", "operation_xyz"])
    for i, (r, t) in enumerate(zip(rot, tran), 1):
        loop.add_row([str(i), q(_op_triplet(r, t))])

    # ------------------------------------------------------------------ sites
    loop = b.init_loop("_atom_site_", ["label", "type_symbol", "fract_x", "fract_y", "fract_z",
                                       "U_iso_or_equiv", "adp_type", "occupancy",
                                       "site_symmetry_multiplicity"])
    aniso_rows = []
    for i, st in enumerate(crystal.sites):
        xyz_w: list[dict[str, float]] = [{}, {}, {}]
        for p in params.values():
            if p.target and p.target[0] == "xyz" and p.target[1] == i:
                for ax in range(3):
                    xyz_w[ax][p.name] = float(p.target[2][ax])
        coords = [format_su(float(st.xyz[ax]), su_of(xyz_w[ax])) for ax in range(3)]
        if st.u_aniso is not None:
            u = np.asarray(st.u_aniso, dtype=float)
            # U_eq = (1/3) Σ_ij U^{ij} a*_i a*_j (a_i·a_j) (Fischer & Tillmanns 1988)
            nrec = np.asarray(lat.reciprocal_parameters, dtype=float)
            weq = np.outer(nrec, nrec) * np.asarray(lat.metric) / 3.0
            ueq = float(np.sum(u * weq))
            uw: dict[tuple[int, int], dict[str, float]] = {
                (a, c): {} for a in range(3) for c in range(3)}
            for p in params.values():
                if p.target and p.target[0] == "Uaniso" and p.target[1] == i:
                    t = np.asarray(p.target[2])
                    for a in range(3):
                        for c in range(3):
                            uw[(a, c)][p.name] = float(t[a, c])
            ueq_w: dict[str, float] = {}
            for (a, c), ws in uw.items():
                for n, w in ws.items():
                    ueq_w[n] = ueq_w.get(n, 0.0) + w * weq[a, c]
            uiso = format_su(ueq, su_of(ueq_w))
            adp = "Uani"
            aniso_rows.append([st.label] + [format_su(float(u[a, c]), su_of(uw[(a, c)]))
                                            for a, c in ((0, 0), (1, 1), (2, 2), (0, 1),
                                                         (0, 2), (1, 2))])
        else:
            bname = f"B({st.label})"
            s = su_of({bname: 1.0 / _EIGHT_PI2}) if bname in params else None
            uiso = format_su(st.b_iso / _EIGHT_PI2, s)
            adp = "Uiso"
        oname = f"occ({st.label})"
        occ = format_su(st.occupancy, su_of({oname: 1.0}) if oname in params else None)
        loop.add_row([st.label, st.element, *coords, uiso, adp, occ,
                      str(crystal.site_multiplicity(i))])
    if aniso_rows:
        loop = b.init_loop("_atom_site_aniso_", ["label", "U_11", "U_22", "U_33", "U_12",
                                                 "U_13", "U_23"])
        for row in aniso_rows:
            loop.add_row(row)

    # ------------------------------------------------------------------ kappa
    kap = sorted({p.target[1] for p in params.values() if p.target and p.target[0] == "kappa"})
    if kap:
        loop = b.init_loop("_atom_rho_multipole_", ["atom_label", "kappa", "coeff_Pv"])
        for t in kap:
            pk, pp = params[f"kappa({t})"], params[f"Pv({t})"]
            loop.add_row([t, format_su(pk.value, su_of({pk.name: 1.0})),
                          format_su(pp.value, su_of({pp.name: 1.0}))])

    # ------------------------------------------------------------------ experiment
    b.set_pair("_diffrn_radiation_type", q("electron"))
    if "voltage" in params:
        voltage_kv = params["voltage"].value
    if voltage_kv is not None:
        from ..constants import wavelength

        lam = float(wavelength(voltage_kv))
        vsu = su_of({"voltage": 1.0}) if "voltage" in params else None
        lam_su = None
        if vsu is not None:
            dv = 1e-4 * voltage_kv
            lam_su = abs(float(wavelength(voltage_kv + dv)) - float(wavelength(voltage_kv - dv))
                         ) / (2 * dv) * vsu
        b.set_pair("_diffrn_radiation_wavelength", format_su(lam, lam_su))
        b.set_pair("_qcbed_diffrn_accelerating_voltage_kV", format_su(voltage_kv, vsu))
    if "thickness" in params:
        p = params["thickness"]
        b.set_pair("_qcbed_refine_thickness_A", format_su(p.value, su_of({p.name: 1.0})))

    # ------------------------------------------------------------------ structure factors
    if structure_factors:
        loop = b.init_loop("_refln_", ["index_h", "index_k", "index_l", "d_spacing",
                                       "sint/lambda", "F_meas", "F_sigma", "F_calc",
                                       "phase_calc"])
        loop2 = b.init_loop("_qcbed_refln_", ["index_h", "index_k", "index_l", "U_meas",
                                              "U_sigma", "U_iam", "Uabs_meas", "Uabs_sigma",
                                              "Uabs_iam", "phase"])
        for r in structure_factors:
            h = [str(int(x)) for x in r["hkl"]]
            na = "."
            loop.add_row(h + [f"{r['d']:.5f}", f"{r['s']:.5f}", f"{r['Fx']:.5f}",
                              na if r.get("Fx_esd") is None else f"{r['Fx_esd']:.5f}",
                              f"{r['Fx_iam']:.5f}", f"{r['phase_deg']:.2f}"])
            loop2.add_row(h + [f"{r['U']:.7e}",
                               na if r.get("U_esd") is None else f"{r['U_esd']:.3e}",
                               f"{r['U_iam']:.7e}", f"{r['U_abs']:.7e}",
                               na if r.get("U_abs_esd") is None else f"{r['U_abs_esd']:.3e}",
                               f"{r['U_abs_iam']:.7e}", f"{r['phase_deg']:.2f}"])
    return doc


def write_refined_cif(path: str | os.PathLike, crystal: Crystal, parameters: Any = (),
                      **kw: Any) -> Path:
    """Write :func:`refined_cif_document` to ``path`` (atomically); returns the path."""
    doc = refined_cif_document(crystal, parameters, **kw)
    return atomic_write_text(path, doc.as_string())


def cif_from_refinement(refinement: Any, result: Any, path: str | os.PathLike, *,
                        comment: str = "") -> Path:
    """The refined CIF of a Python :class:`~qcbed.refine.Refinement` and its result.

    The crystal is the refinement's working crystal (refined cell, coordinates, B,
    U^{ij}, occupancies); the structure-factor loops list every U_g parameter with
    its independent-atom value from the set-up it started from.
    """
    from types import SimpleNamespace

    from .sf_table import structure_factor_table

    if result is None:
        raise InputError("no refinement result to write", tag="result")
    refinement._apply_structure()  # the working set-up at the final parameters
    sim = refinement.sim
    iam = {}
    for p in result.parameters:
        if p.target and p.target[0] == "U":
            h = p.target[1]
            iam[",".join(str(x) for x in h)] = refinement.sim0.structure_factor(h)
    rows = structure_factor_table(SimpleNamespace(fine=result, simulation=sim, iam=iam))
    return write_refined_cif(path, sim.crystal, result.parameters,
                             free_names=result.free_names, covariance=result.covariance,
                             structure_factors=rows, voltage_kv=sim.voltage_kv,
                             potential=sim.potential.describe(), comment=comment)


def cif_from_run(run: Any, path: str | os.PathLike,
                 rows: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """The refined CIF of a project run (``qcbed refine``), beside its hkl table."""
    from .sf_table import structure_factor_table

    res = run.fine
    sim = run.simulation
    crystal = sim.crystal if sim is not None else run.setup.crystal
    return write_refined_cif(
        path, crystal, res.parameters if res is not None else (),
        free_names=res.free_names if res is not None else (),
        covariance=res.covariance if res is not None else None,
        structure_factors=structure_factor_table(run) if rows is None else rows,
        voltage_kv=float(run.state["voltage_kv"]),
        potential=sim.potential.describe() if sim is not None else "",
        block_name=None, comment=f"project {run.setup.project.name}")
