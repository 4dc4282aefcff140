"""Checking a project before a long run (:func:`validate_project`)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._core.guard import limit_scope
from .._core.parameters import parse_parameter_name
from ..errors import InputError
from ..experiment import copies_summary
from ..refine.parameters import STRUCTURAL_KINDS, check_structural_name, u_aniso_parameters
from .parse import load_project
from .safety import (
    check_output_folder,
    check_resources,
    estimate_resources,
    resource_summary,
)
from .schema import Project
from .setup import Setup, _err, build_setup, retag_dataset_error


# ====================================================================== validation
@dataclass
class ValidationReport:
    """Outcome of :func:`validate_project`.

    Attributes
    ----------
    checks : list of (str, str)
        (class of check, what was found) for every passed check.
    errors : list of InputError
    warnings : list of str
    """

    checks: list[tuple[str, str]] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    beam_counts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        lines = [f"ok    {c:<11s} {msg}" for c, msg in self.checks]
        lines += [f"warn  {w}" for w in self.warnings]
        lines += [f"ERROR {e}" for e in self.errors]
        lines.append("project is valid" if self.ok else f"{len(self.errors)} error(s)")
        return "\n".join(lines)


def validate_project(path_or_project: str | os.PathLike | Project, *, executor: Any = "serial"
                     ) -> ValidationReport:
    """Check a project before a long run: file, data, geometry, ROI, beams, parameters.

    Every class of problem gives an :class:`InputError` naming the key, the expected
    and the found value; the checks stop at the first class that fails when later
    ones depend on it.
    """
    rep = ValidationReport()
    try:
        proj = path_or_project if isinstance(path_or_project, Project) else \
            load_project(path_or_project)
    except InputError as exc:
        rep.errors.append(exc)
        return rep
    rep.checks.append(("file", f"{proj.source}: sections and keys, {len(proj.coarse)} coarse "
                               f"and {len(proj.fine)} fine steps"
                       + (f", {len(proj.datasets)} datasets (joint refinement)"
                          if proj.joint else "")))
    inputs: list = []
    for k in range(len(proj.datasets)):
        view = proj.dataset_view(k) if proj.joint else proj
        n0 = len(rep.checks)
        try:
            ok = _validate_dataset(view, executor, rep, inputs)
        except InputError as exc:
            rep.errors.append(retag_dataset_error(exc, k) if proj.joint else exc)
            ok = False
        if proj.joint:  # name the dataset in its checks
            rep.checks[n0:] = [(c, f"[{proj.datasets[k].name}] {m}") for c, m in rep.checks[n0:]]
        if not ok:
            return rep
    try:
        check_output_folder(proj.output, source=proj.source, overwrite=proj.overwrite,
                            inputs=inputs)
    except InputError as exc:
        rep.errors.append(exc)
    return rep


def _validate_dataset(proj: Project, executor: Any, rep: ValidationReport, inputs: list
                      ) -> bool:
    """The checks of one dataset (``proj``: the project or one dataset's view); False when
    a check failed that later ones depend on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            setup = build_setup(proj, executor=executor)
        finally:
            rep.warnings.extend(str(w.message) for w in caught
                                if issubclass(w.category, UserWarning))
    inputs.extend(setup.input_files)
    rep.checks.append(("data", f"{type(setup.data).__name__} {tuple(setup.data.shape)}, "
                               f"{len(setup.hkl)} reflections compared"))
    rep.checks.append(("geometry", f"pixel size {setup.geometry.pixel_size:.4g} 1/A, "
                                   f"g_x length {setup.geometry.g_x_length:.4g} 1/A"))
    pl = setup.plasmon_losses()
    if pl is not None:
        rep.checks.append(("inelastic", f"not energy-filtered: plasmon losses with E_p "
                                        f"{pl.energy_ev:.2f} eV ({pl.energy_source}), theta_E "
                                        f"{1e3 * pl.theta_e:.4f} mrad, theta_c "
                                        f"{1e3 * pl.theta_c:.2f} mrad, lambda_p "
                                        f"{pl.mfp:.0f} A (t/lambda_p "
                                        f"{(proj.thickness or 0.0) / pl.mfp:.2f} at the start)"))
    limit = proj.engine["memory_limit"]
    with limit_scope(limit):
        check_resources(estimate_resources(proj, len(setup.hkl)), source=proj.source)
        _check_roi(setup, rep)
        sim = _check_beams(setup, rep)
        n_strong = int(rep.beam_counts.get("strong_max", 0)) or None
        items = estimate_resources(proj, len(setup.hkl), n_strong=n_strong,
                                   n_pool=len(sim.pool))
        check_resources(items, source=proj.source)
        rep.checks.append(("resources", resource_summary(items, limit)))
        _check_parameters(setup, sim, rep)
    return True


def _check_roi(setup: Setup, rep: ValidationReport) -> None:
    roi = setup.roi()
    s = roi.sample_details()
    n_used = roi._used.sum(axis=1)
    for k, h in enumerate(setup.hkl):
        if n_used[k] and s.n_valid[k] == 0:
            raise _err(setup.project, f"no sample of reflection {tuple(int(x) for x in h)} "
                       "falls inside the image", "roi.regions",
                       expected="regions inside the image (display pixels)",
                       found=f"{int(s.n_outside[k])} outside, {int(s.n_masked[k])} masked")
    frac = float(s.n_outside.sum()) / max(float(n_used.sum()), 1.0)
    if frac > 0:
        rep.warnings.append(f"roi.regions: {int(s.n_outside.sum())} of {int(n_used.sum())} "
                            f"samples ({100 * frac:.1f} %) fall outside the image and are "
                            "excluded")
    copies = copies_summary(roi.multiplicity)
    rep.checks.append(("roi", f"{len(setup.regions)} region(s), {roi.n_points} points, "
                              f"{int(s.valid.sum())} valid samples"
                       + (f"; {copies}" if copies else "")))


def _check_beams(setup: Setup, rep: ValidationReport):
    try:
        sim = setup.simulation()
    except InputError as exc:
        raise _err(setup.project, exc.reason, "engine", expected=exc.expected,
                   found=exc.found) from None
    rot, tran = setup.crystal.operations
    cen = tran[np.all(rot == np.eye(3, dtype=int), axis=(1, 2))]
    tag = "roi.hkl" if setup.project.roi["hkl"] is not None else "data.hkl"
    for h in setup.hkl:
        if np.any(np.abs(np.exp(2j * np.pi * (cen @ h)) - 1) > 1e-6):
            raise _err(setup.project, "reflection is absent by the lattice centring (never "
                       "excited)", tag, expected="reflections allowed by the lattice",
                       found=tuple(int(v) for v in h))
    pool = {tuple(int(v) for v in h) for h in sim.pool.hkl}
    for h in setup.hkl:
        if tuple(int(v) for v in h) not in pool:
            raise _err(setup.project, "compared reflection is not in the beam pool",
                       "engine.pool", expected="every reflection of roi.hkl in the pool",
                       found=tuple(int(v) for v in h))
    centre, radius = setup.pool_range()
    # the centre and a ring of directions over the tilt range: beam counts and
    # what the solver had to do there (exact re-solves, rejected directions)
    ang = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    ring = np.asarray(centre, float) + 0.9 * radius * np.c_[np.cos(ang), np.sin(ang)]
    counts = sim.solve(np.vstack([np.asarray(centre, float)[None], ring])).beam_counts()
    rep.beam_counts = counts
    if counts["exact_fallback"] or counts["rejected"]:
        rep.warnings.append(f"engine: of 9 sample directions {counts['exact_fallback']} "
                            f"needed the exact solver and {counts['rejected']} were "
                            "rejected by the physical guard")
    rep.checks.append(("beams", f"pool {len(sim.pool)} beams (k_t radius {radius:.3g} 1/A), "
                                f"{sim.pool.n_out} outputs, up to {counts['strong_max']} "
                                f"strong over 9 directions of the tilt range; "
                                f"{sim.potential.describe()}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # reported below instead
        conv = sim.convergence
    if conv.converged:
        rep.checks.append(("convergence", conv.summary()))
    else:
        rep.warnings.append(f"engine: not converged: {conv.summary()}")
    return sim


def _start_value(setup: Setup, sim, name: str) -> float | None:
    """Start value of a refinable parameter before any step (None: not known here)."""
    kind, detail, canon = parse_parameter_name(name)
    g = setup.geometry
    if kind == "thickness":
        return float(setup.project.thickness)
    if kind == "voltage":
        return float(setup.voltage_kv)
    if kind in ("B", "occ", "xyz"):
        label = detail if kind != "xyz" else detail[0]
        st = next((s for s in setup.crystal.sites if s.label == label), None)
        if st is None:
            return None
        return float(st.b_iso if kind == "B" else st.occupancy if kind == "occ"
                     else st.xyz[detail[1]])
    if kind == "Uij":
        ps = {p.name: p.value for p in u_aniso_parameters(setup.crystal, detail[0])}
        return ps.get(canon)
    if kind == "cell":
        return float(getattr(setup.crystal.lattice, detail))
    if kind in ("U", "Uabs"):
        u = sim.structure_factor(detail)[0 if kind == "U" else 1]
        return float((u * np.exp(-1j * sim.default_phase(detail))).real)
    if canon in ("shift.row", "shift.col"):
        return float(g.shift[0 if canon.endswith("row") else 1])
    if canon in ("rotation", "gl"):
        return float(getattr(g, canon))
    if kind in ("tilt", "thickness_gradient"):
        return 0.0
    return None


def _check_parameters(setup: Setup, sim, rep: ValidationReport) -> None:
    proj = setup.project
    crystal = setup.crystal
    labels = [s.label for s in crystal.sites]
    roi_shift = {tuple(h) for h in proj.roi["disc_shifts"]}
    n = 0
    for i, st in enumerate(proj.fine):
        tag = f"plan.fine[{i}].refine"
        for name in st.refine + list(st.bounds) + list(st.scales):
            kind, detail, canon = parse_parameter_name(name, source=proj.source, tag=tag)
            if kind in ("U", "Uabs", "phase", "phase_abs"):
                if crystal.is_systematically_absent(detail):
                    raise _err(proj, "reflection is forbidden by the space group (U_g ≡ 0)",
                               tag, expected="an allowed reflection", found=canon)
                eq = crystal.equivalent_reflections(detail, friedel=True).hkl
                if not np.any(sim.table.lookup(eq) >= 0):
                    raise _err(proj, "the beam pool never couples this reflection", tag,
                               expected="U_g of a difference of pool beams (raise gmax/smax)",
                               found=canon)
                if kind in ("phase", "phase_abs") and crystal.is_centrosymmetric:
                    raise _err(proj, "phases of a centrosymmetric crystal are fixed", tag,
                               expected="U(h,k,l) or Uabs(h,k,l)", found=canon)
            elif kind in STRUCTURAL_KINDS:
                try:
                    check_structural_name(crystal, kind, detail, canon)
                except InputError as exc:
                    raise _err(proj, exc.reason, tag, expected=exc.expected,
                               found=exc.found if kind != "B" else canon) from None
            elif kind == "kappa":
                if sim.potential.elastic != "kappa":
                    raise _err(proj, "κ and P_v need the kappa model", tag,
                               expected="engine.elastic = 'kappa'", found=sim.potential.elastic)
                elements = sorted({s.element for s in crystal.sites})
                if detail not in labels and detail.capitalize() not in elements:
                    raise _err(proj, "unknown site label or element", tag,
                               expected=labels + elements, found=canon)
            elif kind == "sampling" and detail is not None and detail not in roi_shift:
                raise _err(proj, "disc shift not declared in roi.disc_shifts", tag,
                           expected=f"{list(detail)} in roi.disc_shifts", found=canon)
            n += 1
        for k, (lo, hi) in st.bounds.items():
            start = _start_value(setup, sim, k)
            if start is None or (k == "thickness" and proj.coarse):
                continue  # set by an earlier step
            if not lo <= start <= hi:
                raise _err(proj, f"start value of {k} outside its bounds",
                           f"plan.fine[{i}].bounds.{k}", expected=f"[{lo:g}, {hi:g}]",
                           found=start)
    for i, st in enumerate(proj.coarse):
        tag = f"plan.coarse[{i}]"
        if st.reflections is not None:
            known = {tuple(int(v) for v in h) for h in setup.hkl}
            for h in st.reflections:
                if tuple(h) not in known:
                    raise _err(proj, "template reflection is not compared",
                               tag + ".reflections", expected="reflections of roi.hkl",
                               found=tuple(h))
        if st.step == "b_iso" and st.labels:
            for lab in st.labels:
                if lab not in labels:
                    raise _err(proj, "unknown site label", tag + ".labels", expected=labels,
                               found=lab)
    rep.checks.append(("parameters", f"{n} parameter references in {len(proj.fine)} fine "
                                     f"step(s), {len(proj.coarse)} coarse step(s)"))


