"""Joint refinement of several datasets that share structure parameters.

Each dataset keeps its own :class:`~qcbed.refine.fine.Refinement` (engine set-up,
geometry, data, thickness, sampling and probe parameters, and its own closed-form
scale and backgrounds); a :class:`JointRefinement` ties them together:

* **shared** parameters (by default every structural one: U_g, U′_g, phases, B,
  U^{ij}, coordinates, occupancies, cell, κ/P_v) appear once, under their usual
  name (``U(2,2,0)``);
* every other parameter is **per dataset** and named with the dataset's index:
  ``thickness[0]``, ``thickness[1]``, ``tilt.x[1]``, ``rotation[0]`` …
  (voltage and orientation are per dataset by default).

The residual vector is the concatenation of the datasets' weighted VarPro
residuals, and the Jacobian stacks their Jacobians; a shared parameter's column
is the concatenation of its columns in the datasets that use it, a per-dataset
parameter's column is zero outside its dataset. Levenberg–Marquardt
(:mod:`qcbed.refine.lm`) minimises the total χ², and the covariance is
χ²_ν (JᵀJ)⁻¹ of the stacked problem (Press et al. 2007, §15.5), with
χ²_ν = Σ r² / (N − p − Σ_k n_linear,k).

U_g and U′_g scale with the relativistic factor γ of the beam (U_g = γ F_g/(πΩ),
Spence & Zuo 1992, eq. 2.11 and §2.3), so datasets recorded at different voltages
share γ-scaled values: a shared U_g is stated at the voltage of the first dataset
that uses it, and dataset k sees U_g·γ_k/γ_ref (γ from the set-ups' voltages when
the joint refinement is built).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .._core.parameters import dataset_name, split_dataset_name
from ..constants import relativistic_gamma
from ..errors import InputError
from .checkpoint import restore_checkpoint, save_lm_checkpoint
from .fine import Refinement
from .fine_covariance import covariance_from_jacobian
from .fine_result import RefinementResult
from .lm import LMState, levenberg_marquardt_progress
from .parameters import Parameter, ParameterSet

__all__ = ["SHARED_TARGETS", "JointRefinement", "JointRefinementResult", "dataset_name",
           "split_dataset_name"]

#: Structural parameter targets shared between datasets by default (voltage and the
#: orientation shift ``tilt`` describe one experiment and stay per dataset).
SHARED_TARGETS = ("U", "Uabs", "phase", "phase_abs", "B", "Uaniso", "xyz", "occ", "cell",
                  "kappa", "Pv")
#: Targets whose values scale with the relativistic γ of the dataset.
_GAMMA_SCALED = ("U", "Uabs")

@dataclass
class JointRefinementResult(RefinementResult):
    """Outcome of a joint refinement.

    The fields of :class:`~qcbed.refine.fine.RefinementResult` describe the joint
    problem: ``parameters`` (joint names, esds from the stacked covariance), ``chi2``
    and ``dof`` over all datasets, ``n_used`` the total number of samples, ``r_factor``
    over all datasets. ``scale``, ``background``, ``zncc`` and ``model``/``experiment``
    are those of dataset 0 (for single-dataset writers); every dataset's own are in
    ``datasets``.

    Attributes
    ----------
    datasets : list of RefinementResult
        Per dataset, at the joint solution: its χ²_ν (``chi2``, with
        ``dof`` = its samples − its free parameters − its linear parameters), scale,
        backgrounds, R factor, ZNCC, model and experiment. Their esds are those of the
        dataset alone with every other dataset's parameters fixed (a diagnostic; the
        joint esds are in ``parameters``).
    labels : list of str
        Dataset names.
    """

    datasets: list[RefinementResult] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [super().summary(), "datasets:"]
        for k, (lab, d) in enumerate(zip(self.labels, self.datasets)):
            lines.append(f"  [{k}] {lab}: chi2_nu = {d.chi2:.5g} (dof {d.dof}, n = "
                         f"{d.n_used}), R = {d.r_factor:.4f}, scale = {d.scale:.6g}")
        return "\n".join(lines)


class JointRefinement:
    """Several refinements (datasets) sharing structure parameters, fitted as one problem.

    Parameters
    ----------
    refinements : sequence of Refinement
        One per dataset, each with its own set-up, data and parameters (add thickness,
        structure factors … to each first; a shared parameter must be added to every
        dataset that depends on it).
    shared : iterable of str, optional
        Names of the parameters shared by all datasets that have them. Default: every
        parameter whose target is one of :data:`SHARED_TARGETS`. Any other name (e.g.
        ``'thickness'`` for one specimen area at two voltages) may be listed too.
    labels : sequence of str, optional
        Dataset names (default ``'dataset 0'`` …).
    checkpoint : path, optional
        File rewritten after every iteration (state and history), for ``fit(resume=True)``.
    progress : bool
        Show a progress bar.

    Notes
    -----
    A shared parameter starts from its value in the first dataset that has it; its
    ``refine`` flag and bounds come from there too.
    """

    def __init__(self, refinements: Sequence[Refinement], shared: Iterable[str] | None = None,
                 *, labels: Sequence[str] | None = None,
                 checkpoint: str | Path | None = None, progress: bool = False) -> None:
        parts = list(refinements)
        if not parts:
            raise InputError("a joint refinement needs at least one dataset",
                             expected="a list of Refinement", found=[])
        for k, ref in enumerate(parts):
            if not isinstance(ref, Refinement):
                raise InputError("datasets of a joint refinement are Refinement objects",
                                 tag=f"refinements[{k}]", expected="Refinement",
                                 found=type(ref).__name__)
            if not ref.gof.least_squares:
                raise InputError("a joint refinement needs a χ²-type GOF (least squares)",
                                 tag=f"refinements[{k}].gof", expected="'chi2' or "
                                 "'chi2_poisson'", found=ref.gof.name)
        if len({id(r) for r in parts}) != len(parts):
            raise InputError("the same Refinement is listed twice",
                             expected="one Refinement per dataset", found=len(parts))
        self.parts = parts
        self.labels = list(labels) if labels is not None else [f"dataset {k}"
                                                               for k in range(len(parts))]
        if len(self.labels) != len(parts):
            raise InputError("one label per dataset", expected=len(parts),
                             found=len(self.labels))
        all_names = {p.name for r in parts for p in r.params}
        if shared is None:
            self.shared = {p.name for r in parts for p in r.params
                           if p.kind == "structure" and p.target and
                           p.target[0] in SHARED_TARGETS}
        else:
            self.shared = set(shared)
            unknown = sorted(self.shared - all_names)
            if unknown:
                raise InputError("shared parameter is in no dataset", tag="shared",
                                 expected=sorted(all_names), found=unknown[0])
        self.params = ParameterSet()
        #: joint name → [(dataset, local name, factor)]: local value = factor · joint value
        self.links: dict[str, list[tuple[int, str, float]]] = {}
        gammas = [float(relativistic_gamma(r.sim0.voltage_kv)) for r in parts]
        ref_gamma: dict[str, float] = {}
        for k, ref in enumerate(parts):
            for p in ref.params:
                if p.name in self.shared:
                    jn = p.name
                    scaled = bool(p.target) and p.target[0] in _GAMMA_SCALED
                    if jn not in self.params:
                        self.params.add(replace(p, esd=None))
                        ref_gamma[jn] = gammas[k]
                    f = gammas[k] / ref_gamma[jn] if scaled else 1.0
                else:
                    jn, f = dataset_name(p.name, k), 1.0
                    self.params.add(replace(p, name=jn, esd=None))
                self.links.setdefault(jn, []).append((k, p.name, f))
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.progress = progress
        #: samples of the last :meth:`residuals` call, copied images counted once
        self.n_samples = 0
        self.history: list[dict] = []
        self._t0 = 0.0
        self._push()

    # ------------------------------------------------------------ values
    def _push(self) -> None:
        """Copy the joint values (and refine flags) into the datasets' parameters."""
        for jn, links in self.links.items():
            jp = self.params[jn]
            for k, local, f in links:
                p = self.parts[k].params[local]
                p.value = float(jp.value * f)
                p.refine = jp.refine

    def _set_x(self, names: list[str], x: np.ndarray, x0: np.ndarray, scales: np.ndarray
               ) -> None:
        for n, xi, v0, s in zip(names, x, x0, scales):
            self.params[n].value = float(v0 + xi * s)
        self._push()

    # ------------------------------------------------------------ residuals
    def _masks(self) -> list[np.ndarray]:
        out = []
        for ref in self.parts:
            _e, _v, valid = ref.data.sample(ref._sampling_values())
            out.append(ref._compare_mask(valid))
        return out

    def residuals(self, names: list[str], masks: Sequence[np.ndarray] | None = None,
                  with_jac: bool = True):
        """Stacked weighted residuals, their Jacobian w.r.t. the joint values of ``names``
        (or None) and the number of linear parameters (scales and backgrounds)."""
        self._push()
        rs, js, n_lin = [], [], 0
        n_samples = 0
        for k, ref in enumerate(self.parts):
            cols, local, fac = [], [], []
            for c, jn in enumerate(names):
                for kk, ln, f in self.links[jn]:
                    if kk == k:
                        cols.append(c)
                        local.append(ln)
                        fac.append(f)
            r, j, fit, _mask = ref._residuals(local, None if masks is None else masks[k],
                                              with_jac)
            rs.append(r)
            n_lin += fit.n_linear
            n_samples += ref._n_samples(_mask)
            if with_jac:
                jk = np.zeros((len(r), len(names)))
                if cols:
                    jk[:, cols] = j * np.asarray(fac)[None, :]
                js.append(jk)
        r = np.concatenate(rs)
        self.n_samples = n_samples
        return r, (np.vstack(js) if with_jac else None), n_lin

    def covariance(self) -> tuple[list[str], np.ndarray, float, int]:
        """Covariance of all free joint parameters from the stacked Jacobian: χ²_ν (JᵀJ)⁻¹."""
        names = [p.name for p in self.params.free]
        r, j, n_lin = self.residuals(names, None, True)
        cov, chi2nu, dof = covariance_from_jacobian(r, j, n_lin, self.n_samples)
        return names, cov, chi2nu, dof

    # ------------------------------------------------------------ fitting
    def fit(self, method: str = "lm", *, max_iter: int = 50, ftol: float = 1e-9,
            xtol: float = 1e-9, esd_tol: float | None = 0.02, resume: bool = False,
            callback: Callable[[dict], None] | None = None, **_ignored) -> JointRefinementResult:
        """Refine every free parameter of every dataset by Levenberg–Marquardt.

        Parameters
        ----------
        method : {'lm'}
            Only Levenberg–Marquardt (the nested scheme has no joint form here).
        max_iter, ftol, xtol, esd_tol, resume, callback
            As :meth:`qcbed.refine.fine.Refinement.fit`.
        """
        if method != "lm":
            raise InputError("a joint refinement runs Levenberg–Marquardt", tag="method",
                             expected="lm", found=method)
        if not self.params.free:
            raise InputError("nothing to refine: every parameter is fixed")
        self._t0 = time.perf_counter()
        names = [p.name for p in self.params.free]
        state, x0 = None, None
        if resume:
            state, x0 = self._load_checkpoint(names)
        ps = [self.params[n] for n in names]
        if x0 is None:
            x0 = np.array([p.value for p in ps])
        scales = np.array([p.scale for p in ps])
        lo = (np.array([p.lower for p in ps]) - x0) / scales
        hi = (np.array([p.upper for p in ps]) - x0) / scales
        self._push()
        masks = self._masks()
        for k, (ref, m) in enumerate(zip(self.parts, masks)):
            exp, _v, _valid = ref.data.sample(ref._sampling_values())
            if not np.any(m) or not np.any(exp[m]):
                raise InputError("nothing to fit in a dataset: the compared data are all "
                                 "zero or no sample is valid", tag=self.labels[k],
                                 expected="data with counts in the regions of interest",
                                 found=f"{int(np.sum(m))} valid samples")

        def fun_jac(x):
            self._set_x(names, x, x0, scales)
            r, j, _ = self.residuals(names, masks, True)
            return r, j * scales[None, :]

        def fun(x):
            self._set_x(names, x, x0, scales)
            return self.residuals([], masks, False)[0]

        def on_step(st: LMState) -> tuple[str, float]:
            self._set_x(names, np.asarray(st.x), x0, scales)
            gv = 2.0 * st.cost
            self.history.append({"time_s": time.perf_counter() - self._t0, "stage": "joint",
                                 "gof": float(gv), **self.params.as_dict()})
            self._save_checkpoint(names, x0, st)
            if callback:
                callback(self.history[-1])
            return "chi2", gv

        st = levenberg_marquardt_progress(
            fun_jac, fun, len(names), on_step=on_step, desc="joint refine",
            progress=self.progress, lower=lo, upper=hi, max_iter=max_iter, ftol=ftol,
            xtol=xtol, esd_tol=esd_tol, state=state)
        self._set_x(names, np.asarray(st.x), x0, scales)
        res = self._finish(st.message, st.iteration)
        self._save_checkpoint(names, x0, st, final=res)
        return res

    def _finish(self, message: str, n_iter: int) -> JointRefinementResult:
        names, cov, chi2nu, dof = self.covariance()
        if not np.all(np.isfinite(cov)):
            message += ("; DEGENERATE: the covariance is singular (a parameter combination "
                        "is not determined by the data), esds are undefined (null)")
            warnings.warn(f"degenerate joint refinement: singular covariance of {names}",
                          UserWarning, stacklevel=3)
        with np.errstate(invalid="ignore"):
            esd = np.sqrt(np.clip(np.diag(cov), 0, None))
        for n, e in zip(names, esd):
            self.params[n].esd = float(e)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(esd, esd)
        strong = [(names[a], names[b], float(corr[a, b])) for a in range(len(names))
                  for b in range(a + 1, len(names)) if abs(corr[a, b]) > 0.9]
        if strong:
            warnings.warn("strongly correlated parameters: " + ", ".join(
                f"{a}/{b} ρ={r:+.3f}" for a, b, r in strong), UserWarning, stacklevel=3)
        # every dataset at the joint solution: its own χ²_ν, scale, backgrounds, model
        comps = []
        for ref in self.parts:
            ck, ref.checkpoint = ref.checkpoint, None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ref._t0 = self._t0
                    comps.append(ref._finish(message, n_iter))
            finally:
                ref.checkpoint = ck
        # χ² with the data's variances over all datasets, per joint degree of freedom
        chi2_joint = sum(c.chi2 * c.dof for c in comps) / max(dof, 1)
        num = sum(float(np.sum(np.abs(c.model - c.experiment)[c.extra["mask"]]))
                  for c in comps)
        den = sum(float(np.sum(np.abs(c.experiment[c.extra["mask"]]))) for c in comps)
        c0 = comps[0]
        return JointRefinementResult(
            parameters=self.params.copy(), gof=chi2nu, chi2=float(chi2_joint), dof=dof,
            n_used=int(sum(c.n_used for c in comps)), scale=c0.scale,
            background=c0.background, correlation=corr, covariance=cov, free_names=names,
            strong_correlations=strong, r_factor=num / den if den else float("nan"),
            zncc=dict(c0.zncc), history=list(self.history), message=message,
            n_iterations=n_iter, n_solves=sum(r.n_solves for r in self.parts),
            elapsed_s=time.perf_counter() - self._t0,
            extra={**c0.extra, "solver": _sum_counts(c.extra.get("solver", {})
                                                    for c in comps)},
            datasets=comps, labels=list(self.labels))

    # ------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, names: list[str], x0, st: LMState | None,
                         final: RefinementResult | None = None) -> None:
        save_lm_checkpoint(self.checkpoint, params=self.params, names=names, x0=x0, state=st,
                           history=self.history, final=final)

    def _load_checkpoint(self, names: list[str]) -> tuple[LMState | None, np.ndarray | None]:
        ck = restore_checkpoint(self.checkpoint, self.params, names)
        self.history = list(ck["history"])
        self._push()
        if ck["state"] is None:
            return None, None
        return LMState.from_dict(ck["state"]), np.asarray(ck["x0"])

    # ------------------------------------------------------------ access
    def dataset_parameter(self, k: int, name: str) -> Parameter:
        """Dataset ``k``'s parameter ``name`` as the joint problem names it."""
        jn = name if name in self.shared else dataset_name(name, k)
        return self.params[jn]


def _sum_counts(dicts: Iterable[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + int(v)
    return out
