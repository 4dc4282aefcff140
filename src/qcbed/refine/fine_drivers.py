"""The fine-refinement drivers: Levenberg–Marquardt on every free parameter, and the
nested scheme (outer optimiser over structure, inner LM over thickness/sampling/probe)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from ..errors import InputError
from .fine_result import RefinementResult
from .fine_sampling import AUTO_STEPS, MODEL_STEP_TOL, ModelGrid, interpolation_shift
from .lm import LMState, levenberg_marquardt, levenberg_marquardt_progress

CHEAP_KINDS = ("thickness", "sampling", "probe")

logger = logging.getLogger(__name__)


class _DriversMixin:
    """Part of :class:`~qcbed.refine.fine.Refinement` (see there)."""

    # ------------------------------------------------------------ fitting
    def _set_x(self, names: list[str], x: np.ndarray, x0: np.ndarray, scales: np.ndarray
               ) -> None:
        for n, xi, v0, s in zip(names, x, x0, scales):
            self.params[n].value = float(v0 + xi * s)

    def _record(self, gofv: float, stage: str) -> None:
        self.history.append({"time_s": time.perf_counter() - self._t0, "stage": stage,
                             "gof": float(gofv), **self.params.as_dict()})

    def fit(self, method: str = "lm", *, outer: str = "lm", max_iter: int = 50,
            ftol: float = 1e-9, xtol: float = 1e-9, esd_tol: float | None = 0.02,
            resume: bool = False, callback: Callable[[dict], None] | None = None,
            hessian: str = "secant") -> RefinementResult:
        """Refine the free parameters.

        Parameters
        ----------
        method : {'lm', 'nested'}
            Joint Levenberg–Marquardt, or PyExtal's nested scheme.
        outer : {'lm', 'nelder-mead', 'powell'}
            Outer optimiser of the nested scheme.
        max_iter : int
            Iterations (Jacobian evaluations for LM; iterations for Nelder–Mead/Powell).
        ftol, xtol : float
            Convergence tolerances (relative cost decrease, scaled step).
        esd_tol : float or None
            Levenberg–Marquardt also stops when every step is below ``esd_tol``
            times the parameter's esd (default 0.02; None disables).
        resume : bool
            Continue from ``checkpoint`` (same path, same problem definition); an
            LM refinement resumed this way follows exactly the same path.
        callback : callable, optional
            Called with the history record after every iteration.
        hessian : {'secant', 'gn'}
            Levenberg–Marquardt's model Hessian: Gauss–Newton JᵀJ plus a structured
            secant estimate of the second-order term (default; superlinear on the
            large-residual fits of real patterns), or JᵀJ alone
            (:func:`~qcbed.refine.lm.levenberg_marquardt`).
        """
        if not self.params.free:
            raise InputError("nothing to refine: every parameter is fixed")
        if hessian not in ("secant", "gn"):
            raise InputError("unknown model Hessian", tag="hessian",
                             expected=["secant", "gn"], found=hessian)
        self._hessian = hessian
        self._t0 = time.perf_counter()
        self._lm_final = None
        exp, _var, valid = self.data.sample(self._sampling_values())
        used = self._compare_mask(valid)
        if not np.any(used) or not np.any(exp[used]):
            raise InputError("nothing to fit: the compared data are all zero or no sample "
                             "is valid", source=getattr(self.data, "source", None),
                             expected="data with counts in the regions of interest",
                             found=f"{int(np.sum(used))} valid samples, all zero")
        if method == "lm":
            if not self.gof.least_squares:
                raise InputError("Levenberg–Marquardt needs a χ²-type GOF; use method="
                                 "'nested' with outer='nelder-mead' or 'powell'",
                                 found=self.gof.name)
            names = [p.name for p in self.params.free]
            # chosen at the start values (before a checkpoint is read), so that a
            # resumed refinement uses the same model grid
            self._choose_model_step(names)
            state = self._load_checkpoint(names) if resume else None
            st = self._run_lm(names, max_iter, ftol, xtol, state, callback, stage="lm",
                              esd_tol=esd_tol)
            if self._model_step > 1:
                st = self._check_full_grid(names, st, max_iter, ftol, xtol, callback,
                                           esd_tol)
            message, n_iter = st.message, st.iteration
            self._lm_final = (names, self._lm_x0, st)
        elif method == "nested":
            message, n_iter = self._run_nested(outer, max_iter, ftol, xtol, resume, callback)
        else:
            raise InputError("unknown refinement method", expected=["lm", "nested"],
                             found=method)
        sc = self.symmetry_counts
        if sc and sc["solved"] < sc["samples"]:
            message += (f"; pattern symmetry: {sc['solved']} of {sc['samples']} directions "
                        f"solved ({sc['operations']} operations)")
        step = self._model_step
        if step > 1:
            message += f"; model solved every {step} samples (full-grid check: shift " \
                       f"{self.model_step_info.get('shift_end', 0.0):.3f} esd)"
            self._model_step = 1  # covariance and result on the full grid
        try:
            return self._finish(message, n_iter)
        finally:
            # later evaluations (error budget, region tiles) use the chosen grid again
            self._model_step = step

    # ------------------------------------------------------------ model grid
    def _choose_model_step(self, names: list[str]) -> None:
        """Pick the model step (see :mod:`.fine_sampling`) at the current values."""
        self._model_step = 1
        self.model_step_info = {"step": 1}
        if self.model_step == 1 or not getattr(self.data, "regions", None):
            return
        steps = AUTO_STEPS if self.model_step == "auto" else (int(self.model_step),)
        steps = tuple(k for k in steps if not ModelGrid.build(
            len(self.data.kt), self.data.regions, k).trivial)
        if not steps:
            return
        _exp, _var, valid = self.data.sample(self._sampling_values())
        mask_fixed = self._compare_mask(valid)
        r1, j1, _, _ = self._residuals(names, mask_fixed, True)
        for k in steps:
            self._model_step = k
            rk, _, _, _ = self._residuals(names, mask_fixed, False)
            shift = interpolation_shift(j1, r1, rk)
            worst = float(shift.max()) if shift.size else 0.0
            if worst <= MODEL_STEP_TOL or self.model_step != "auto":
                n_sol = len(self._model_grid().solve)
                self.model_step_info = {"step": k, "shift_start": worst,
                                        "solved": n_sol, "samples": len(self.data.kt)}
                logger.info("model solved at %d of %d samples (every %d; interpolation "
                            "shift %.3f esd)", n_sol, len(self.data.kt), k, worst)
                return
        self._model_step = 1

    def _check_full_grid(self, names: list[str], st: LMState, max_iter: int, ftol: float,
                         xtol: float, callback, esd_tol: float | None) -> LMState:
        """Measure the full-grid Gauss–Newton shift at the optimum; refit if too large."""
        _exp, _var, valid = self.data.sample(self._sampling_values())
        mask_fixed = self._compare_mask(valid)
        self._model_step = 1
        r1, j1, _, _ = self._residuals(names, mask_fixed, True)
        shift = interpolation_shift(j1, r1, np.zeros_like(r1))
        worst = float(shift.max()) if shift.size else 0.0
        self.model_step_info["shift_end"] = worst
        if worst <= MODEL_STEP_TOL:
            self._model_step = self.model_step_info["step"]
            return st
        logger.info("full-grid shift %.3f esd at the optimum: continuing on every sample",
                    worst)
        self.model_step_info["refit_full"] = True
        st2 = self._run_lm(names, max(2, max_iter - st.iteration), ftol, xtol, None,
                           callback, stage="lm", esd_tol=esd_tol)
        st2.iteration += st.iteration
        return st2

    def _run_lm(self, names: list[str], max_iter: int, ftol: float, xtol: float,
                state: LMState | None, callback, stage: str, save: bool = True,
                esd_tol: float | None = None) -> LMState:
        ps = [self.params[n] for n in names]
        x0 = np.array([p.value for p in ps]) if state is None else np.asarray(
            self._ckpt_x0)
        self._lm_x0 = x0
        scales = np.array([p.scale for p in ps])
        lo = (np.array([p.lower for p in ps]) - x0) / scales
        hi = (np.array([p.upper for p in ps]) - x0) / scales
        _exp, _var, valid = self.data.sample(self._sampling_values())
        mask_fixed = self._compare_mask(valid)

        def fun_jac(x):
            self._set_x(names, x, x0, scales)
            r, j, _, _ = self._residuals(names, mask_fixed, True)
            return r, j * scales[None, :]

        def fun(x):
            self._set_x(names, x, x0, scales)
            self._prefetch = True  # an accepted step needs the derivatives here
            try:
                r, _, _, _ = self._residuals(names, mask_fixed, False)
            finally:
                self._prefetch = False
            return r

        def on_step(st: LMState) -> tuple[str, float]:
            self._set_x(names, np.asarray(st.x), x0, scales)
            gv = self.evaluate().value
            self._record(gv, stage)
            if save:
                self._save_checkpoint(names, x0, st)
            if callback:
                callback(self.history[-1])
            return "gof", gv

        st = levenberg_marquardt_progress(
            fun_jac, fun, len(names), on_step=on_step, desc=f"refine ({stage})",
            progress=self.progress, lower=lo, upper=hi, max_iter=max_iter, ftol=ftol,
            xtol=xtol, esd_tol=esd_tol, state=state, hessian=self._hessian)
        self._set_x(names, np.asarray(st.x), x0, scales)
        return st

    def _run_nested(self, outer: str, max_iter: int, ftol: float, xtol: float,
                    resume: bool, callback) -> tuple[str, int]:
        from scipy.optimize import minimize

        outer_names = [p.name for p in self.params.free if p.kind == "structure"]
        inner_names = [p.name for p in self.params.free if p.kind in CHEAP_KINDS]
        if resume:
            self._load_checkpoint(None)
        inner_start = {n: self.params[n].value for n in inner_names}

        def inner() -> float:
            for n, v in inner_start.items():
                self.params[n].value = v
            if inner_names and self.gof.least_squares:
                self._run_lm(inner_names, 30, 1e-10, 1e-10, None, None, "inner", save=False)
            elif inner_names:
                xs = np.array([self.params[n].value for n in inner_names])
                sc = np.array([self.params[n].scale for n in inner_names])

                def f_in(x):
                    for n, xi, v0, s in zip(inner_names, x, xs, sc):
                        self.params[n].value = float(v0 + xi * s)
                    return self.evaluate().value
                res = minimize(f_in, np.zeros(len(xs)), method="Powell",
                               options={"xtol": 1e-4, "ftol": 1e-10})
                f_in(res.x)
            return self.evaluate().value

        if not outer_names:
            gv = inner()
            self._record(gv, "inner")
            return "inner refinement only", 1
        if outer == "lm":
            if not self.gof.least_squares:
                raise InputError("outer='lm' needs a χ²-type GOF", found=self.gof.name)
            ps = [self.params[n] for n in outer_names]
            x0 = np.array([p.value for p in ps])
            scales = np.array([p.scale for p in ps])
            lo = (np.array([p.lower for p in ps]) - x0) / scales
            hi = (np.array([p.upper for p in ps]) - x0) / scales
            _exp, _var, valid = self.data.sample(self._sampling_values())
            mask_fixed = self._compare_mask(valid)
            cheap_free = inner_names

            def fun_jac(x):
                self._set_x(outer_names, x, x0, scales)
                inner()
                r, j, _, _ = self._residuals(outer_names + cheap_free, mask_fixed, True)
                j_out = j[:, :len(outer_names)] * scales[None, :]
                if cheap_free:  # envelope theorem: project out the inner directions
                    q, _ = np.linalg.qr(j[:, len(outer_names):])
                    j_out = j_out - q @ (q.T @ j_out)
                return r, j_out

            def fun(x):
                self._set_x(outer_names, x, x0, scales)
                inner()
                r, _, _, _ = self._residuals([], mask_fixed, False)
                return r

            def cb(st: LMState) -> None:
                self._set_x(outer_names, np.asarray(st.x), x0, scales)
                gv = inner()
                self._record(gv, "nested-lm")
                if callback:
                    callback(self.history[-1])

            st = levenberg_marquardt(fun_jac, fun, np.zeros(len(outer_names)), lower=lo,
                                     upper=hi, max_iter=max_iter, ftol=ftol, xtol=xtol,
                                     callback=cb)
            self._set_x(outer_names, np.asarray(st.x), x0, scales)
            inner()
            return st.message, st.iteration
        if outer not in ("nelder-mead", "powell"):
            raise InputError("unknown outer optimiser", expected=["lm", "nelder-mead", "powell"],
                             found=outer)
        ps = [self.params[n] for n in outer_names]
        x0 = np.array([p.value for p in ps])
        scales = np.array([p.scale for p in ps])
        bounds = [((p.lower - v) / s, (p.upper - v) / s) for p, v, s in zip(ps, x0, scales)]

        def f_out(x):
            self._set_x(outer_names, x, x0, scales)
            return inner()

        it = [0]

        def cb_out(xk, *args):
            it[0] += 1
            gv = f_out(xk)
            self._record(gv, f"nested-{outer}")
            self._save_checkpoint(outer_names, x0, None)
            if callback:
                callback(self.history[-1])

        method = "Nelder-Mead" if outer == "nelder-mead" else "Powell"
        opts = {"maxiter": max_iter, "xatol": xtol, "fatol": ftol, "adaptive": True} \
            if method == "Nelder-Mead" else {"maxiter": max_iter, "xtol": xtol, "ftol": ftol}
        res = minimize(f_out, np.zeros(len(outer_names)), method=method, bounds=bounds,
                       callback=cb_out, options=opts)
        f_out(res.x)
        return str(res.message), int(res.get("nit", it[0]))

