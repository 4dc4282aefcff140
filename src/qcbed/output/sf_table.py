"""The refined structure-factor table of a run: refined U_g, U′_g beside the IAM, F_e, F_x.

One row per refined reflection, used by ``structure_factors.hkl``, ``result.json``,
``results.h5`` (:mod:`qcbed.output.results`) and the refined CIF
(:mod:`qcbed.output.structure_cif`). F_e = πΩU/γ (Å); F_x from the Mott–Bethe formula
(:func:`qcbed.scattering.structure_factors.xray_structure_factors`); values are signed
amplitudes along the phase φ (docs/conventions.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.hkl import key_hkl
from ..constants import MOTT_BETHE_PREFACTOR, relativistic_gamma
from ..scattering.structure_factors import xray_structure_factors

__all__ = ["structure_factor_table"]


def structure_factor_table(run: Any) -> list[dict[str, Any]]:
    """Refined structure factors beside the IAM, one dict per refined reflection.

    Keys: ``hkl``, ``g`` (|g|, Å⁻¹), ``s`` (Å⁻¹), ``d`` (Å), ``phase_deg`` (φ),
    ``U``, ``U_esd``, ``U_iam``, ``U_abs``, ``U_abs_esd``, ``U_abs_iam`` (Å⁻², signed
    amplitudes along φ), ``Fe``, ``Fe_esd``, ``Fe_iam`` (Å), ``Fx``, ``Fx_esd``,
    ``Fx_iam`` (electrons; Mott–Bethe), ``refined`` (which of U, U_abs, phase).
    """
    res = run.fine
    if res is None or run.simulation is None:
        return []
    sim = run.simulation
    crystal = sim.crystal
    v = sim.voltage_kv
    gamma = float(relativistic_gamma(v))
    omega = crystal.lattice.volume
    rows = []
    for key, (u_iam, ua_iam) in run.iam.items():
        h = key_hkl(key)
        name = f"U({key})"
        p = res.parameters[name] if name in res.parameters else None
        pa = res.parameters[f"Uabs({key})"] if f"Uabs({key})" in res.parameters else None
        phase = float(p.target[2]) if p is not None else sim.default_phase(h)
        if f"phase({key})" in res.parameters:
            phase = float(np.radians(res.parameters[f"phase({key})"].value))
        u, ua = sim.structure_factor(h)
        rot = np.exp(-1j * phase)
        fx = xray_structure_factors(crystal, [h, h], [u, u_iam], v)
        g = float(crystal.lattice.g_length(h))
        s = 0.5 * g
        fe_per_u = np.pi * omega / gamma
        fx_per_u = s**2 / MOTT_BETHE_PREFACTOR * fe_per_u
        u_esd = None if p is None or p.esd is None or not p.refine else float(p.esd)
        ua_esd = None if pa is None or pa.esd is None or not pa.refine else float(pa.esd)
        refined = [lab for lab, q in (("U", p), ("U_abs", pa)) if q is not None and q.refine]
        if f"phase({key})" in res.parameters and res.parameters[f"phase({key})"].refine:
            refined.append("phase")
        rows.append({
            "hkl": list(h), "g": g, "s": s, "d": 1.0 / g if g > 0 else float("inf"),
            "phase_deg": float(np.degrees(phase)),
            "U": float((u * rot).real), "U_esd": u_esd, "U_iam": float((u_iam * rot).real),
            "U_abs": float((ua * rot).real), "U_abs_esd": ua_esd,
            "U_abs_iam": float((ua_iam * rot).real),
            "Fe": float((u * rot).real * fe_per_u), "Fe_esd": None if u_esd is None else
            u_esd * fe_per_u, "Fe_iam": float((u_iam * rot).real * fe_per_u),
            "Fx": float((fx[0] * rot).real), "Fx_esd": None if u_esd is None else
            u_esd * fx_per_u, "Fx_iam": float((fx[1] * rot).real),
            "refined": refined})
    rows.sort(key=lambda r: (r["g"], r["hkl"]))
    return rows
