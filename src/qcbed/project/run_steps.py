"""Building one fine step's :class:`~qcbed.refine.fine.Refinement` from a project and its
run state, and carrying the refined values back into the run state (a mix-in of
:class:`~qcbed.project.run.ProjectRun`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._core.hkl import hkl_key
from .._core.parameters import parse_parameter_name
from ..bloch.symmetry import reduce_grid
from ..errors import InputError
from ..experiment.symmetric_grid import symmetric_region
from ..refine.fine import Refinement
from ..refine.parameters import STRUCTURAL_KINDS, check_structural_name
from .schema import FineStep, Project
from .setup import Setup, _err


def _step_tag(proj: Project, canon: str) -> str:
    """``plan.fine[i].refine`` of the first fine step naming a parameter."""
    i = next((k for k, st in enumerate(proj.fine) if canon in st.refine), 0)
    return f"plan.fine[{i}].refine"


class FineStepBuilding:
    """Fine-step construction and the run-state carry of a project run.

    Uses the run's ``project``, ``progress``, ``_sim(setup, base, state)`` and
    ``_geometry(setup, state)``.
    """

    project: Project
    progress: Any
    log: Any

    def _build_refinement(self, setup: Setup, base, state: dict, step: FineStep, i: int,
                          ckpt: Path | None, names: list[str], regions: list | None = None):
        """The Refinement of one fine step on one dataset: (ref, roi, iam, sf_done).

        ``names``: every parameter refined anywhere in the plan (canonical, no dataset
        index); those not in ``step.refine`` take part fixed.
        """
        proj = self.project
        sim = self._sim(setup, base, state)
        geom = self._geometry(setup, state)
        masks = setup.masks if regions is None else np.repeat(setup.masks[:1],
                                                               len(regions), 0)
        regions = setup.regions if regions is None else regions
        if proj.roi["symmetric"]:
            regions = self._symmetric_regions(regions, geom, sim, i)
        roi = setup.roi(geom, refine=(), regions=regions, masks=masks)
        probe = None
        if proj.gof["probe"] is not None:
            probe = tuple(state["probe"]) if state.get("probe") else tuple(proj.gof["probe"])
        ref = Refinement(sim, roi, gof=proj.gof["metric"], background=proj.gof["background"],
                         probe=probe, jacobian=step.jacobian, checkpoint=ckpt,
                         progress=self.progress,
                         plasmon=setup.plasmon_losses(state["voltage_kv"]))
        if "plasmon.lambda_scale" in ref.params:
            ref.params["plasmon.lambda_scale"].value = float(
                state.get("plasmon_lambda_scale", 1.0))
        refine = set(step.refine)
        iam: dict[str, tuple[complex, complex]] = {}
        sf_done: set[tuple[int, int, int]] = set()
        for n in names:
            kind, detail, canon = parse_parameter_name(n)
            if kind == "thickness":
                ref.add_thickness(state["thickness"], refine=canon in refine)
            elif kind == "thickness_gradient" and "thickness.dkx" not in ref.params:
                for p in ref.add_thickness_gradient(
                        refine=False, value=tuple(state.get("thickness_gradient", (0.0, 0.0)))):
                    p.refine = p.name in refine
            elif kind in ("U", "Uabs", "phase", "phase_abs") and detail not in sf_done:
                sf_done.add(detail)
                hk = hkl_key(detail)
                u0, ua0 = base.structure_factor(detail)
                iam[hk] = (u0, ua0)
                phased = [f"{x}({hk})" for x in ("phase", "phase_abs") if f"{x}({hk})" in names]
                ref.add_structure_factor(detail, refine_u=f"U({hk})" in refine,
                                         refine_uabs=f"Uabs({hk})" in refine,
                                         refine_phase=f"phase({hk})" in names,
                                         refine_phase_abs=f"phase_abs({hk})" in names)
                for x in phased:
                    ref.params[x].refine = x in refine
            elif kind in STRUCTURAL_KINDS and canon not in ref.params:
                try:
                    check_structural_name(sim.crystal, kind, detail, canon)
                except InputError as exc:
                    raise _err(proj, exc.reason, _step_tag(proj, canon), expected=exc.expected,
                               found=exc.found) from None
                if kind == "B":
                    ref.add_b_iso(detail, refine=canon in refine)
                    ref.params[canon].value = state["b_iso"].get(detail,
                                                                 ref.params[canon].value)
                elif kind == "xyz":
                    ref.add_coordinates(detail[0], ["xyz"[detail[1]]], refine=canon in refine)
                elif kind == "occ":
                    ref.add_occupancy(detail, refine=canon in refine)
                elif kind == "Uij":
                    for p in ref.add_u_aniso(detail[0], (), refine=False):
                        p.refine = p.name in refine
                else:  # cell: every independent parameter takes part
                    for p in ref.add_cell(refine=False):
                        p.refine = p.name in refine
            elif kind == "kappa" and canon not in ref.params:
                for p in ref.add_kappa(detail, kappa=False, pv=False):  # start: sim.potential
                    p.refine = p.name in refine
            elif kind == "voltage":
                ref.add_voltage(refine=canon in refine)
            elif kind == "tilt" and "tilt.x" not in ref.params:
                for p in ref.add_orientation(refine=False):
                    p.refine = p.name in refine
        if "thickness" not in ref.params:
            ref.add_thickness(state["thickness"], refine=False)
        for p in ref.params:
            if p.kind in ("sampling", "probe"):
                p.refine = p.name in refine
            if p.name in step.bounds:
                p.lower, p.upper = step.bounds[p.name]
                if not p.lower <= p.value <= p.upper:
                    raise _err(proj, "start value outside its bounds",
                               f"plan.fine[{i}].bounds.{p.name}",
                               expected=f"[{p.lower:g}, {p.upper:g}]", found=p.value)
            if p.name in step.scales:
                p.scale = step.scales[p.name]
        missing = [n for n in step.refine if n not in ref.params]
        if missing:
            raise _err(proj, "parameter is not available for this data", f"plan.fine[{i}].refine",
                       expected=[p.name for p in ref.params], found=missing[0])
        return ref, roi, iam, sf_done

    def _symmetric_regions(self, regions: list, geom, sim, i: int) -> list:
        """Each region moved by < 1 sample so that the pattern symmetry maps its k_t
        grid onto itself (:func:`~qcbed.experiment.symmetric_grid.symmetric_region`),
        where that lets the fine step solve fewer directions; the others as they are."""
        ops = sim.pattern_symmetry()
        if len(ops) < 2:
            return list(regions)
        out = []
        for k, reg in enumerate(regions):
            moved, shift = symmetric_region(reg, geom, [s for _, s in ops])
            pts = geom.display_to_kt(moved.points()).reshape(-1, 2)
            step = float(np.min(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
            n_rep = len(reduce_grid(pts, ops, sim.outputs, 1e-6 * step).representatives)
            if moved is reg or n_rep == len(pts):
                out.append(reg)
                continue
            out.append(moved)
            how = (f"moved by ({shift[0]:+.3f}, {shift[1]:+.3f}) px so that"
                   if np.any(shift) else "as it is:")
            self.log(f"fine {i + 1}: region {k + 1} {how} the pattern symmetry ({len(ops)} "
                     f"operations) maps its k_t grid onto itself: {n_rep} of {len(pts)} "
                     "directions to solve")
        return out

    def _carry(self, ref, ps, state: dict, sf_done) -> None:
        """Carry a fine step's values (``ps``, the dataset's own names) into ``state``."""
        probe = "probe.sigma" in ps
        state["thickness"] = float(ps["thickness"].value)
        if "thickness.dkx" in ps:
            state["thickness_gradient"] = [float(ps["thickness.dkx"].value),
                                           float(ps["thickness.dky"].value)]
        for p in ps:
            if p.kind == "sampling":
                gs = state["geometry"]
                if p.name in ("rotation", "gl"):
                    gs[p.name] = float(p.value)
                elif p.name.startswith("shift."):
                    gs["shift"][0 if p.name.endswith("row") else 1] = float(p.value)
                else:
                    _, disc, canon = parse_parameter_name(p.name)
                    if disc is not None:
                        cur = gs["disc_shifts"].setdefault(hkl_key(disc), [0.0, 0.0])
                        cur[0 if canon.endswith(".row") else 1] = float(p.value)
            elif p.name.startswith("B("):
                state["b_iso"][p.name[2:-1]] = float(p.value)
            elif p.target and p.target[0] in ("kappa", "Pv"):
                state.setdefault("kappa", {}).setdefault(p.target[1], {})[p.target[0]] = \
                    float(p.value)
            elif p.target and p.target[0] in ("xyz", "occ", "Uaniso"):
                st = ref.sim.crystal.sites[p.target[1]]  # the working crystal at the result
                state.setdefault("sites", {})[st.label] = {
                    "xyz": [float(v) for v in st.xyz], "occupancy": float(st.occupancy),
                    "u_aniso": None if st.u_aniso is None else
                    np.asarray(st.u_aniso, dtype=float).tolist()}
            elif p.name.startswith("cell."):
                state.setdefault("cell", {})[p.name[5:]] = float(p.value)
                state["cell_system"] = p.target[2]
            elif p.name == "voltage":
                state["voltage_kv"] = float(p.value)
            elif p.name in ("tilt.x", "tilt.y"):
                # a tilt shifts every simulated k_t: fold it into the geometry's tilt0
                state["geometry"]["tilt0"][0 if p.name == "tilt.x" else 1] += float(p.value)
        if probe:
            state["probe"] = [float(ps["probe.sigma"].value), float(ps["probe.gamma"].value)]
        if "plasmon.lambda_scale" in ps:
            state["plasmon_lambda_scale"] = float(ps["plasmon.lambda_scale"].value)
        for hk in sf_done:
            u, ua = ref.sim.structure_factor(hk)
            state["structure_factors"][hkl_key(hk)] = [u.real, u.imag, ua.real, ua.imag]
