"""Running a project's plan (:class:`ProjectRun`, :func:`run_project`, :func:`resume_run`):
coarse steps, fine steps, checkpoints, the run state and the results."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import numpy as np

from .._core.files import atomic_write_text
from .._core.guard import format_bytes, limit_scope, memory_limit
from .._core.hkl import hkl_key, key_hkl
from .._core.jsonio import dumps
from .._core.tomlcompat import tomllib
from ..errors import InputError, QcbedError
from ..experiment import ROI, Region, copies_summary
from ..output.results import write_results
from ..refine.coarse import CoarseRefinement
from ..refine.parameters import apply_cell
from .parse import load_project, parse_project
from .run_steps import FineStepBuilding
from .safety import (
    changed_inputs,
    check_output_folder,
    check_resources,
    estimate_resources,
    file_hashes,
    fine_step_bytes,
    read_run_state,
    run_is_finished,
)
from .schema import RUN_STATE, CoarseStep, FineStep, Project
from .setup import Setup, build_dataset_setups, build_setup

_LOG = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`run_project` returns.

    Attributes
    ----------
    setup : Setup
    state : dict
        Final values (thickness, voltage, B, geometry, structure factors).
    fine : RefinementResult or None
        The last fine step's result (esd, correlation, model patterns).
    coarse : list of dict
        Coarse-step outcomes.
    history : list of dict
        Every fine iteration of every step (``step`` names the step).
    out_dir : Path
    files : dict
        Written files by role (``hdf5``, ``json``, ``hkl_table``, ``report``…).
    elapsed_s : float
    roi : ROI or None
        The last fine step's dataset (region images for the report).
    simulation : Simulation or None
        The last fine step's engine set-up (with the refined structure factors).
    iam : dict
        IAM (U, U′) of every refined reflection, keyed by 'h,k,l'.
    datasets : list of dict
        Joint refinements only (several ``[[data]]`` blocks): per dataset ``index``,
        ``name``, ``setup``, ``state``, ``roi``, ``simulation`` and ``result`` (its
        :class:`~qcbed.refine.fine.RefinementResult` at the joint solution). ``setup``,
        ``state``, ``roi`` and ``simulation`` above are dataset 0's.
    """

    setup: Setup
    state: dict
    fine: Any
    coarse: list[dict]
    history: list[dict]
    out_dir: Path
    files: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    roi: Any = None
    simulation: Any = None
    iam: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    accuracy: dict = field(default_factory=dict)
    datasets: list[dict] = field(default_factory=list)


class ProjectRun(FineStepBuilding):
    """Runs a project's plan: coarse steps, then fine steps, then the results.

    Parameters
    ----------
    project : Project
    out_dir : path, optional
        Output folder (default ``project.output``).
    executor : optional
        Engine executor spec (overrides ``engine.executor``).
    progress : bool
        Progress bars.
    log : callable, optional
        ``log(str)`` for step summaries (default: the ``qcbed.project.run`` logger at
        INFO level; the command line shows it).
    callback : callable, optional
        Called with every fine iteration's history record (may raise to stop).
    command_line : list of str, optional
        Recorded in the provenance (default ``sys.argv``).
    truth : dict, optional
        Known true values {parameter name: value} (synthetic data), written to
        ``result.json`` and the report.
    overwrite : bool, optional
        Replace the results of an earlier run in the output folder (default
        ``[project] overwrite``; without it such a folder is refused).

    The run keeps ``run_state.json`` in the output folder (atomically rewritten
    after every step) and one checkpoint per fine step (rewritten after every
    iteration), so :func:`resume_run` continues a killed run.
    """

    def __init__(self, project: Project, *, out_dir: str | os.PathLike | None = None,
                 executor: Any = None, progress: bool = True,
                 log: Callable[[str], None] | None = None,
                 callback: Callable[[dict], None] | None = None,
                 command_line: Sequence[str] | None = None,
                 truth: Mapping[str, float] | None = None,
                 overwrite: bool | None = None) -> None:
        self.project = project
        self.overwrite = project.overwrite if overwrite is None else bool(overwrite)
        self.started = False  # True once the run state is written (a resume is possible)
        self.out_dir = Path(out_dir) if out_dir is not None else project.output
        self.executor = executor
        self.progress = progress
        self.log = log or _LOG.info
        self.callback = callback
        self.command_line = list(command_line) if command_line is not None else list(sys.argv)
        self.truth = dict(truth or {})

    # ------------------------------------------------------------ state
    def _initial_state(self, setup: Setup) -> dict:
        g = setup.geometry
        return {"thickness": self.project.thickness, "voltage_kv": setup.voltage_kv,
                "b_iso": {s.label: s.b_iso for s in setup.crystal.sites},
                "geometry": {"rotation": g.rotation, "gl": g.gl, "tilt0": list(g.tilt0),
                             "shift": list(g.shift),
                             "disc_shifts": {hkl_key(k): list(v)
                                             for k, v in g.disc_shifts.items()}},
                "structure_factors": {}, "probe": None}

    def _geometry(self, setup: Setup, state: dict):
        gs = state["geometry"]
        return setup.geometry.replace(
            rotation=gs["rotation"], gl=gs["gl"], tilt0=tuple(gs["tilt0"]),
            shift=tuple(gs["shift"]),
            disc_shifts={key_hkl(k): tuple(v) for k, v in gs["disc_shifts"].items()})

    def _crystal(self, setup: Setup, state: dict):
        crystal = setup.crystal.with_b_iso(state["b_iso"]) if state["b_iso"] else setup.crystal
        if state.get("sites"):  # coordinates, occupancies, U^{ij} refined by earlier steps
            sites = [s if s.label not in state["sites"] else dc_replace(
                s, xyz=tuple(state["sites"][s.label]["xyz"]),
                occupancy=state["sites"][s.label]["occupancy"],
                u_aniso=None if state["sites"][s.label]["u_aniso"] is None else
                np.asarray(state["sites"][s.label]["u_aniso"]))
                for s in crystal.sites]
            crystal = crystal.replace(sites=sites)
        if state.get("cell"):
            crystal = apply_cell(crystal, state["cell"], state["cell_system"])
        return crystal

    def _sim(self, setup: Setup, base, state: dict, mode: str | None = None):
        kappa = state.get("kappa")  # κ, P_v of the kappa model carried between steps
        sim = base.with_changes(crystal=self._crystal(setup, state),
                                voltage_kv=state["voltage_kv"], mode=mode,
                                potential=base.potential.with_kappa(kappa) if kappa else None)
        sf = {key_hkl(k): (complex(v[0], v[1]), complex(v[2], v[3]))
              for k, v in state["structure_factors"].items()}
        if sf:
            sim.set_structure_factors(sf)
        return sim

    def _save(self, rs: dict) -> None:
        atomic_write_text(self.out_dir / RUN_STATE, dumps(rs, nan_as_null=False, indent=1))

    # ------------------------------------------------------------ run
    def run(self, *, resume: bool = False) -> RunResult:
        """Run the plan (continue a previous run of the same project with ``resume``).

        Before any work: the output folder is checked (an existing file, an input, or
        earlier results without ``overwrite`` are refused) and the memory the
        settings imply is estimated (:mod:`qcbed.project.safety`).
        """
        with limit_scope(self.project.engine["memory_limit"]):
            return self._run(resume)

    def _input_hashes(self, setups: Sequence[Setup]) -> dict[str, str]:
        files = list(dict.fromkeys(f for s in setups for f in s.input_files))
        if Path(self.project.source).is_file():
            files.append(Path(self.project.source))
        return file_hashes(files)

    def _run(self, resume: bool) -> RunResult:
        t0 = time.perf_counter()
        if self.project.joint:
            setups = build_dataset_setups(self.project, executor=self.executor)
        else:
            setups = [build_setup(self.project, executor=self.executor)]
        setup = setups[0]
        check_output_folder(self.out_dir, source=self.project.source,
                            overwrite=self.overwrite or resume,
                            inputs=[f for s in setups for f in s.input_files])
        for s_k in setups:
            check_resources(estimate_resources(s_k.project, len(s_k.hkl)),
                            source=self.project.source)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = True
        rs_path = self.out_dir / RUN_STATE
        hashes = self._input_hashes(setups)
        if resume and rs_path.exists():
            rs = read_run_state(rs_path)
            self.log(f"resuming: {len(rs['done'])} step(s) done")
            changed = changed_inputs(rs.get("input_hashes", {}), hashes)
            if changed:
                warnings.warn("inputs changed since the run started (the run continues "
                              "with the project as it was when started, and the data files "
                              "as they are now): " + "; ".join(changed), UserWarning,
                              stacklevel=3)
            rs["input_hashes"] = hashes
            rs["results_written"] = False
        else:
            rs = {"format": "qcbed-run-state/1", "project_file": self.project.source,
                  "project_base": str(self.project.base_dir), "project_text": self.project.text,
                  "out_dir": str(self.out_dir), "done": [], "state": self._initial_state(setup),
                  "coarse": [], "fine": [], "history": [], "truth": self.truth,
                  "command_line": self.command_line, "input_hashes": hashes,
                  "results_written": False}
            if self.project.joint:  # one state per dataset; "state" is dataset 0's
                rs["states"] = [rs["state"]] + [self._initial_state(s_k) for s_k in setups[1:]]
            for p in self.out_dir.glob("checkpoint_*.h5"):
                p.unlink()
            self._save(rs)
        if not self.truth and rs.get("truth"):
            self.truth = rs["truth"]
        states = rs.get("states") or [rs["state"]]
        rs["state"] = states[0]  # the same object after a reload of the run state
        bases = [s_k.simulation(crystal=self._crystal(s_k, st), voltage_kv=st["voltage_kv"])
                 for s_k, st in zip(setups, states)]
        base = bases[0]
        # the resources again with the engine's strong-beam count (the check before the
        # set-up assumed 60), as `validate` does: a cell with hundreds of strong beams
        # stops here with the key to change, not out of memory in a fine step
        for s_k, b in zip(setups, bases):
            conv = b.convergence
            if conv is not None and conv.strong_mean:
                check_resources(estimate_resources(s_k.project, len(s_k.hkl),
                                                   n_strong=int(np.ceil(conv.strong_mean))),
                                source=self.project.source)
        joint_parts: list[dict] = []
        iam = {}
        result = None
        roi = None
        sim = None
        steps = [("coarse", i, s) for i, s in enumerate(self.project.coarse)] + \
            [("fine", i, s) for i, s in enumerate(self.project.fine)]
        last_fine = len(self.project.fine) - 1
        for kind, i, step in steps:
            key = f"{kind}:{i}"
            if key in rs["done"] and not (kind == "fine" and i == last_fine):
                continue
            ts = time.perf_counter()
            if kind == "coarse":
                for k, (s_k, b_k, st_k) in enumerate(zip(setups, bases, states)):
                    out = self._coarse(s_k, b_k, st_k, step, i)
                    label = ""
                    if self.project.joint:
                        out["dataset"] = k
                        label = f" [{self.project.datasets[k].name}]"
                    rs["coarse"].append(out)
                    self.log(f"coarse {i + 1}/{len(self.project.coarse)} {step.step}{label}: "
                             + out["summary"] + f" ({time.perf_counter() - ts:.1f} s)")
            else:
                ckpt = self.out_dir / f"checkpoint_fine{i}.h5"
                cont = resume and ckpt.exists()
                if self.project.joint:
                    result, roi, sim, iam_i, joint_parts = self._fine_joint(
                        setups, bases, states, step, i, ckpt, cont, rs)
                else:
                    result, roi, sim, iam_i = self._fine(setup, base, rs["state"], step, i,
                                                         ckpt, cont, rs)
                iam.update(iam_i)
                rs["fine"] = [f for f in rs["fine"] if f["index"] != i]
                rs["fine"].append({"index": i, "name": step.name, "gof": result.gof,
                                   "chi2": result.chi2, "message": result.message,
                                   "n_iterations": result.n_iterations})
                self.log(f"fine {i + 1}/{len(self.project.fine)} '{step.name}': "
                         f"chi2 = {result.chi2:.4g}, R = {result.r_factor:.4f}, "
                         f"{result.n_iterations} iterations ({time.perf_counter() - ts:.1f} s)"
                         + _copies_note(roi))
            if key not in rs["done"]:
                rs["done"].append(key)
            self._save(rs)
        accuracy = {}
        if result is not None and not self.project.joint:
            base, result, roi, sim = self._converged_at_result(setup, base, rs, result, roi,
                                                               sim)
            accuracy = self._accuracy(setup, base, rs, result)
        elif result is not None:
            self.log("error budget and spread over regions: not computed for a joint "
                     "refinement (single datasets only)")
        elapsed = time.perf_counter() - t0
        run = RunResult(setup=setup, state=rs["state"], fine=result, coarse=rs["coarse"],
                        history=rs["history"], out_dir=self.out_dir, elapsed_s=elapsed,
                        roi=roi, simulation=sim, iam=iam, steps=rs["fine"], accuracy=accuracy,
                        datasets=[dict(part, setup=s_k, state=st)
                                  for part, s_k, st in zip(joint_parts, setups, states)])
        run.files = write_results(run, command_line=self.command_line, truth=self.truth)
        rs["results_written"] = True
        self._save(rs)
        return run

    # ------------------------------------------------------------ coarse
    def _coarse(self, setup: Setup, base, state: dict, step: CoarseStep, i: int) -> dict:
        geom = self._geometry(setup, state)
        hkl = np.asarray(step.reflections, int) if step.reflections is not None else setup.hkl
        centre, (h, w) = setup.template(step)
        s = step.template_step
        reg = Region.rectangle((centre[0] - (h - 1) / 2 * s, centre[1] - (w - 1) / 2 * s),
                               ((h - 1) * s, (w - 1) * s), (h, w))
        roi = ROI(setup.data, reg, geom, hkl=hkl, refine=())
        exp, _var, valid = roi.sample()
        tpl = np.where(valid, exp, np.nan).reshape(len(hkl), h, w)
        kt_c = geom.display_to_kt(centre)
        sim = self._sim(setup, base, state, mode=self.project.engine["coarse_mode"])
        cr = CoarseRefinement(sim, tpl, hkl, geom.pixel_size * s, kt_c, state["thickness"],
                              margin=step.margin)
        out: dict[str, Any] = {"index": i, "step": step.step}
        if step.step == "orientation_thickness":
            res = cr.refine_orientation_thickness(step.thickness_range, n_scan=step.n_scan,
                                                  xtol=step.xtol or 0.05)
            state["thickness"] = float(res.thickness)
        elif step.step == "pixel_size":
            res = cr.refine_pixel_size(rel_range=step.rel_range, xtol=step.xtol or 1e-4)
        elif step.step == "voltage":
            res = cr.refine_voltage(half_range=step.half_range, xtol=step.xtol or 1e-3)
            state["voltage_kv"] = float(res.values["voltage_kv"])
        else:
            res = cr.refine_b_iso(step.labels, tuple(step.b_range))
            for k, v in res.values.items():
                state["b_iso"][k[2:-1]] = float(v)
        # gl from the refined pixel size, tilt0 such that the template centre has the matched k_t
        new_geom = res.apply_to(geom, centre, s)
        t0 = np.asarray(new_geom.tilt0, float)
        state["geometry"]["gl"] = float(new_geom.gl)
        state["geometry"]["tilt0"] = [float(t0[0]), float(t0[1])]
        out.update(thickness=float(res.thickness), tilt0=[float(x) for x in t0],
                   correlation=float(res.correlation), pixel_size=float(res.pixel_size),
                   values={k: float(v) for k, v in res.values.items()},
                   history=[{k: float(v) for k, v in hh.items()} for hh in res.history])
        extra = ", ".join(f"{k} = {v:.5g}" for k, v in out["values"].items())
        out["summary"] = (f"thickness {state['thickness']:.1f} A, tilt0 ({t0[0]:.5f}, "
                          f"{t0[1]:.5f}) 1/A, NCC {res.correlation:.4f}"
                          + (f", {extra}" if extra else ""))
        return out

    # ------------------------------------------------------------ accuracy
    def _converged_at_result(self, setup: Setup, base, rs: dict, result, roi, sim):
        """The engine's accuracy at the refined structure: when the selection the engine
        chose at set-up (for the start structure) misses ``[engine] accuracy`` at the
        refined structure factors, tighten it (:meth:`Simulation.converged_variant`)
        and repeat the last fine step from its optimum with it."""
        if sim is None:
            return base, result, roi, sim
        tight = sim.converged_variant()
        if tight is sim:
            return base, result, roi, sim
        c0, c1 = sim.convergence, tight.convergence
        head = (f"engine accuracy at the refined structure: {c0.error:.2g} > {c0.accuracy:g} "
                f"(sgmin {c0.sgmin:g}); sgmin {c1.sgmin:g} gives {c1.error:.2g}")
        # the tighter selection keeps more strong beams per direction (a 1089-direction
        # LiNbO3 repeat was OOM-killed at 20 GB): its measured memory model
        last = self.project.fine[-1]
        n_sf = sum(1 for name in last.refine if name.startswith(("U(", "Uabs(")))
        n_dirs = len(roi.kt)
        need = fine_step_bytes(n_dirs, np.ceil(c1.strong_mean),
                               n_sf * (1 if setup.crystal.is_centrosymmetric else 2))
        lim = memory_limit()
        if not need <= lim:
            msg = (f"{head}, but repeating the last fine step with it needs about "
                   f"{format_bytes(need)} ({c1.strong_mean:.0f} strong beams, "
                   f"{n_dirs} directions), above the memory limit "
                   f"{format_bytes(lim)}: the result keeps sgmin {c0.sgmin:g} and reports "
                   f"the engine error {c0.error:.2g} (not converged); fewer ROI samples "
                   "(roi.regions[].samples) or a larger memory_limit allow the repeat")
            self.log(msg)
            warnings.warn(msg, UserWarning, stacklevel=2)
            return base, result, roi, sim
        self.log(f"{head}: the last fine step is repeated with it")
        base = base.with_selection_of(tight)
        i = len(self.project.fine) - 1
        ts = time.perf_counter()
        result, roi, sim, _iam = self._fine(setup, base, rs["state"], self.project.fine[i], i,
                                            self.out_dir / f"checkpoint_fine{i}.h5", False, rs)
        for f in rs["fine"]:
            if f["index"] == i:
                f.update(gof=result.gof, chi2=result.chi2, message=result.message,
                         n_iterations=result.n_iterations, repeated_for_accuracy=True)
        self.log(f"fine {i + 1}/{len(self.project.fine)} repeated: chi2 = {result.chi2:.4g}, "
                 f"R = {result.r_factor:.4f}, {result.n_iterations} iterations "
                 f"({time.perf_counter() - ts:.1f} s)")
        self._save(rs)
        return base, result, roi, sim

    def _accuracy(self, setup: Setup, base, rs: dict, result) -> dict:
        """Noise model, error budget and the spread over regions (issue 12 items 2–4)."""
        import copy

        out: dict[str, Any] = {}
        nm = getattr(setup.data, "metadata", {}).get("noise_model")
        if nm:
            out["noise_model"] = dict(nm)
            ex = result.extra
            if "model" in ex:  # the same model fitted to the residuals: misfit shows as excess
                from ..experiment.noise import estimate_noise_from_residuals

                try:
                    rn = estimate_noise_from_residuals(
                        ex["model"], ex["experiment"], ex["mask"],
                        n_params=len(result.free_names))
                    out["noise_model"]["from_residuals"] = rn.as_dict()
                except InputError as exc:
                    self.log(f"noise from the fit residuals: not estimated ({exc.reason})")
        ref = getattr(self, "_last_refinement", None)
        if ref is not None:
            from ..refine.plasmon import plasmon_record

            out["inelastic"] = plasmon_record(ref) or {"model": "none",
                                                       "energy_filtered": True}
            if out["inelastic"]["model"] == "plasmon":
                pr = out["inelastic"]
                self.log(f"plasmon losses (not energy-filtered): E_p {pr['energy_ev']:.2f} eV "
                         f"({pr['energy_source']}), theta_E {pr['theta_e_mrad']:.4f} mrad, "
                         f"theta_c {pr['theta_c_mrad']:.2f} mrad, lambda_p "
                         f"{pr['mean_free_path_used_A']:.0f} A, t/lambda_p "
                         f"{pr['t_over_lambda']:.3f}")
        budget = None
        if self.project.budget and ref is not None:
            from ..refine.budget import compute_budget

            ts = time.perf_counter()
            budget = compute_budget(ref, progress=self.progress)
            out["error_budget"] = budget.as_dict()
            self.log("error budget (shifts per input; u_c = combined standard uncertainty):\n"
                     + budget.table() + f"\n({time.perf_counter() - ts:.1f} s)")
        n = self.project.regions
        if n >= 2 and self.project.fine:
            from ..refine.reproducibility import independent_tiles, region_spread

            ops = _copy_operations(setup)
            try:
                tiles = independent_tiles(setup.regions[0], n, ops, tuple(setup.data.shape))
            except InputError as exc:
                self.log(f"spread over regions: not computed ({exc.reason}; expected "
                         f"{exc.expected})")
                out["regions_not_computed"] = exc.reason
                return out
            if ops:
                self.log(f"regions: {len(tiles)} tiles of which none is a copy of another "
                         f"under the data's copy relations ({', '.join(ops)})")
            i = len(self.project.fine) - 1
            step = self.project.fine[i]
            fits = []
            for k, tile in enumerate(tiles):
                ts = time.perf_counter()
                state = copy.deepcopy(rs["state"])
                res_k, *_ = self._fine(setup, base, state, step, i,
                                       self.out_dir / f"checkpoint_region{k}.h5", False,
                                       {"history": []}, regions=[tile])
                fits.append(res_k)
                self.log(f"region {k + 1}/{len(tiles)}: " + ", ".join(
                    f"{nm_} = {res_k.value(nm_):.6g} ± {res_k.esd(nm_) or 0:.2g}"
                    for nm_ in res_k.free_names if nm_.startswith(("U", "thickness")))
                    + f" ({time.perf_counter() - ts:.1f} s)")
            spread = region_spread(fits, labels=[
                f"corners {np.round(t.corners, 1).tolist()}, {t.n13} x {t.n12} samples"
                for t in tiles])
            out["regions"] = spread.as_dict()
            self.log("reproducibility across regions:\n" + spread.table())
            if budget is not None:  # the scatter the esds do not explain joins u_c
                from ..refine.budget import BudgetEntry

                u = spread.excess_uncertainty()
                budget.entries.append(BudgetEntry(
                    "region scatter", f"excess std of {spread.n} regions / sqrt({spread.n})",
                    {k: v for k, v in u.items() if k in budget.names}, method="regions"))
                out["error_budget"] = budget.as_dict()
                self.log("combined u_c with the region scatter: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in budget.combined().items()
                    if k.startswith(("U", "thickness"))))
            self._last_refinement = ref
        return out

    # ------------------------------------------------------------ fine
    def _fine(self, setup: Setup, base, state: dict, step: FineStep, i: int, ckpt: Path,
              resume: bool, rs: dict, regions: list | None = None):
        ref, roi, iam, sf_done = self._build_refinement(setup, base, state, step, i, ckpt,
                                                        self.project.refined_names, regions)
        self._last_refinement = ref
        result = self._fit(ref, step, resume, rs)
        self._carry(ref, result.parameters, state, sf_done)
        return result, roi, ref.sim, iam

    def _fit(self, ref, step: FineStep, resume: bool, rs: dict):
        """Run one fine step's fit (a Refinement or a JointRefinement), recording history."""
        stage = step.name

        def cb(rec: dict) -> None:
            rec = dict(rec, step=stage)
            rs["history"].append({k: v for k, v in rec.items()
                                  if isinstance(v, (int, float, str))})
            if self.callback is not None:
                self.callback(rec)

        if resume:  # drop this step's records of the interrupted attempt
            rs["history"] = [h for h in rs["history"] if h.get("step") != stage]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="strongly correlated")
            result = ref.fit(step.method, outer=step.outer, max_iter=step.max_iter,
                             ftol=step.ftol, xtol=step.xtol, resume=resume, callback=cb)
        if resume:
            rs["history"] = [h for h in rs["history"] if h.get("step") != stage] + [
                dict({k: v for k, v in h.items() if isinstance(v, (int, float, str))},
                     step=stage) for h in result.history]
        return result

    def _fine_joint(self, setups: Sequence[Setup], bases: Sequence, states: Sequence[dict],
                    step: FineStep, i: int, ckpt: Path, resume: bool, rs: dict):
        """One fine step on every dataset at once (:class:`~qcbed.refine.joint.JointRefinement`):
        shared structure parameters, per-dataset thickness/orientation/sampling/probe."""
        from ..refine.joint import JointRefinement

        refs, rois, iam, sfs = [], [], {}, []
        for k, (s_k, b_k, st_k) in enumerate(zip(setups, bases, states)):
            view = s_k.project   # the project as dataset k sees it (its own names)
            step_k, names_k = view.fine[i], view.refined_names
            try:
                ref, roi, iam_k, sf_k = self._build_refinement(s_k, b_k, st_k, step_k, i,
                                                               None, names_k)
            except InputError as exc:
                raise InputError(exc.reason, source=exc.source, tag=exc.tag,
                                 expected=exc.expected,
                                 found=f"{exc.found} (dataset {k}: "
                                       f"{self.project.datasets[k].name})") from None
            refs.append(ref)
            rois.append(roi)
            sfs.append(sf_k)
            if k == 0:
                iam = iam_k
        self._last_refinement = None
        joint = JointRefinement(refs, labels=[d.name for d in self.project.datasets],
                                checkpoint=ckpt, progress=self.progress)
        result = self._fit(joint, step, resume, rs)
        parts = []
        for k, (ref, roi, st_k, sf_k) in enumerate(zip(refs, rois, states, sfs)):
            self._carry(ref, ref.params, st_k, sf_k)
            parts.append({"index": k, "name": self.project.datasets[k].name, "roi": roi,
                          "simulation": ref.sim, "result": result.datasets[k]})
        return result, rois[0], refs[0].sim, iam, parts


def run_project(project: Project | str | os.PathLike, **kw: Any) -> RunResult:
    """Run a project (path or :class:`Project`); keywords as :class:`ProjectRun`."""
    proj = project if isinstance(project, Project) else load_project(project)
    return ProjectRun(proj, **kw).run()


def find_run_state(path: str | os.PathLike) -> Path:
    """The ``run_state.json`` of a project file, an output folder or a checkpoint."""
    p = Path(path)
    if p.is_dir():
        cand = p / RUN_STATE
    elif p.suffix.lower() == ".toml":
        cand = load_project(p).output / RUN_STATE
    else:
        cand = p.parent / RUN_STATE
    if not cand.is_file():
        raise InputError("no run to resume", source=p,
                         expected=f"{RUN_STATE} of an interrupted run (project file, output "
                                  "folder or checkpoint)", found="missing")
    return cand


class RunFinished(QcbedError):
    """:func:`resume_run` was asked to continue a run that is already finished."""


def resume_run(path: str | os.PathLike, *, force: bool = False, **kw: Any) -> RunResult:
    """Continue a killed run from its checkpoint.

    The project as it was when the run started is used (stored in the run
    state); files whose SHA-256 changed since are named in a warning.

    Parameters
    ----------
    path : str or path
        The project file, its output folder, or a checkpoint in that folder.
    force : bool
        Also "resume" a finished run (the last fine step is run again from its
        checkpoint and the results are rewritten); without it :class:`RunFinished`
        is raised and nothing changes.
    **kw
        As :class:`ProjectRun` (executor, progress, log, callback).
    """
    rs_path = find_run_state(path)
    rs = read_run_state(rs_path)
    proj_file = Path(rs["project_file"])
    try:
        raw = tomllib.loads(rs["project_text"])
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"the run state is damaged (project text: {exc})", source=rs_path,
                         tag="project_text") from None
    proj = parse_project(raw, source=str(proj_file), base_dir=rs["project_base"],
                         text=rs["project_text"])
    if run_is_finished(rs, len(proj.coarse), len(proj.fine), rs_path.parent) and not force:
        raise RunFinished(f"{rs_path.parent}: the run is finished (every step done, results "
                          "written); nothing was changed. Pass --force (force=True) to run "
                          "the last fine step again and rewrite the results.")
    kw.setdefault("command_line", rs.get("command_line"))
    kw.setdefault("truth", rs.get("truth"))
    return ProjectRun(proj, out_dir=rs_path.parent, **kw).run(resume=True)


def _copy_operations(setup: Setup) -> list[str]:
    """Image operations under which compared images are copies (symmetrised data), or
    [] when copies are counted as independent or the data are not a stack."""
    from ..experiment import LACBEDStack, copy_operations

    data = setup.data
    if not setup.project.data["count_copies_once"] or not isinstance(data, LACBEDStack):
        return []
    return copy_operations(data.images[[data.index(h) for h in setup.hkl]])


def _copies_note(roi: Any) -> str:
    """``"; the n compared images hold k independent ones …"`` for symmetrised data."""
    text = copies_summary(getattr(roi, "multiplicity", None))
    return f"; {text}" if text else ""
