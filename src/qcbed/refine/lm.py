"""A bounded Levenberg–Marquardt least-squares solver with a resumable state.

Minimises ½|r(x)|² (Levenberg 1944; Marquardt 1963) with the scaled damping
(H + λ diag(JᵀJ)) δ = −Jᵀr, bounds enforced by projection. Its whole state
(x, λ, iteration, best χ², the secant data below) is a small dataclass passed to
a callback after every step, so a refinement killed at any point resumes from
its checkpoint and follows exactly the same path as an uninterrupted run.

The model Hessian H is the Gauss–Newton matrix JᵀJ (``hessian='gn'``) or, by
default, JᵀJ + S with S a structured secant estimate of the second-order term
Σ rᵢ∇²rᵢ that Gauss–Newton leaves out (``hessian='secant'``; Dennis, Gay &
Welsch 1981, ACM TOMS 7, 348 — the NL2SOL update). On large-residual fits —
a CBED model misfit of χ²_ν ≫ 1, where that term is a large part of the
curvature (thickness fringes) — Gauss–Newton converges only linearly; the
secant term restores superlinear convergence (Dennis & Schnabel 1983, §10.3).
After an accepted step s with gradients g = Jᵀr before (g₀) and after (g₁),

    y = g₁ − g₀,   y# = (J₁ − J₀)ᵀ r₁,   S ← τS,   τ = min(1, |sᵀy#| / |sᵀSs|),
    S₊ = S + (z yᵀ + y zᵀ)/(yᵀs) − (zᵀs) y yᵀ/(yᵀs)²,   z = y# − S s,

skipped when yᵀs ≤ 0. A trial step of JᵀJ + S that fails (χ² rises or the
matrix is not positive definite) is retried with Gauss–Newton at the same λ,
and S is learnt afresh from the following steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm


@dataclass
class LMState:
    """Resumable optimiser state (all plain numbers and lists)."""

    x: list[float]
    lam: float = 1e-3
    iteration: int = 0
    cost: float = np.inf
    converged: bool = False
    message: str = ""
    n_jac: int = 0
    n_fun: int = 0
    history: list[dict] = field(default_factory=list)
    #: the secant term S of the model Hessian (n × n) and the data of the last
    #: accepted step for its update (s, g₀ = J₀ᵀr₀, J₀ᵀr₁); see the module
    secant: list[list[float]] | None = None
    last_step: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LMState:
        return cls(**d)


def levenberg_marquardt(
    fun_jac: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    fun: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    max_iter: int = 50,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    esd_tol: float | None = None,
    state: LMState | None = None,
    callback: Callable[[LMState], None] | None = None,
    hessian: str = "secant",
) -> LMState:
    """Bounded Levenberg–Marquardt.

    Parameters
    ----------
    fun_jac : callable
        x → (r, J): residuals (m,) and Jacobian (m, n).
    fun : callable
        x → r (cheaper; used for trial steps).
    x0 : ndarray (n,)
        Start (ignored when ``state`` is given).
    lower, upper : ndarray, optional
        Bounds.
    max_iter : int
        Maximum number of Jacobian evaluations.
    ftol, xtol : float
        Stop when the relative decrease of the cost is below ``ftol`` or the
        step is below ``xtol`` (relative to |x| + xtol).
    esd_tol : float, optional
        Also stop when every component of the step is below ``esd_tol`` times the
        parameter's standard deviation estimated from (JᵀJ)⁻¹·χ²_ν — further
        iterations would not change the result by a meaningful amount (useful when
        Gauss–Newton converges only linearly, as for large-residual problems).
        It is also checked before a trial step: when the step the model predicts
        from the current point is below it, no trial is made.
    state : LMState, optional
        Resume from this state.
    callback : callable, optional
        Called with the state after every iteration (checkpointing).
    hessian : {'secant', 'gn'}
        Model Hessian: JᵀJ plus the structured secant term (default), or JᵀJ.

    Returns
    -------
    LMState
    """
    if hessian not in ("secant", "gn"):
        raise ValueError(f"hessian must be 'secant' or 'gn', not {hessian!r}")
    x = np.asarray(state.x if state is not None else x0, dtype=float)
    n = len(x)
    lo = np.full(n, -np.inf) if lower is None else np.asarray(lower, float)
    hi = np.full(n, np.inf) if upper is None else np.asarray(upper, float)
    st = state if state is not None else LMState(x=list(map(float, x)))
    while not st.converged and st.iteration < max_iter:
        x = np.asarray(st.x, float)
        r, jac = fun_jac(x)
        st.n_jac += 1
        cost = 0.5 * float(r @ r)
        st.cost = cost
        g = jac.T @ r
        a = jac.T @ jac
        if hessian == "secant":
            _update_secant(st, g, n)
        s_mat = None if st.secant is None else np.asarray(st.secant, float)
        dg = np.diag(a).copy()
        dg[dg <= 0] = 1.0
        sd = _esd(a, cost, len(r), n) if esd_tol is not None else None
        if sd is not None and st.iteration > 0:
            # the step the model predicts from here (λ = 0): when it is already below
            # esd_tol esd, the trial solve it would cost changes nothing that matters
            pred = _model_step(a, s_mat, 0.0, dg, g)
            if pred is not None and bool(np.all(np.abs(pred) <= esd_tol * sd)):
                st.converged = True
                st.message = f"predicted step below {esd_tol:g} esd for every parameter"
                st.history.append({"iteration": st.iteration, "cost": cost, "lam": st.lam,
                                   "accepted": False, "predicted_stop": True})
                if callback:
                    callback(st)
                break
        accepted = False
        use_secant = s_mat is not None
        for _ in range(30):
            step = _model_step(a, s_mat if use_secant else None, st.lam, dg, g)
            if step is None:
                if use_secant:
                    use_secant = False
                else:
                    st.lam *= 10.0
                continue
            x_new = np.clip(x + step, lo, hi)
            r_new = fun(x_new)
            st.n_fun += 1
            cost_new = 0.5 * float(r_new @ r_new)
            # costs compare only on the same samples: a step that moves samples out of
            # the data (or the model) lowers the cost by dropping their residuals, so it
            # is rejected like a step that does not descend (a smaller one is tried)
            if len(r_new) == len(r) and np.isfinite(cost_new) and cost_new < cost:
                accepted = True
                break
            if use_secant:  # retry with Gauss–Newton at the same damping; the secant
                use_secant = False  # term is learnt again from the next steps
                st.secant = None
                continue
            st.lam *= 4.0
            if st.lam > 1e12:
                break
        st.iteration += 1
        if not accepted:
            st.converged = True
            st.message = "no further decrease (at a minimum within numerical precision)"
            st.history.append({"iteration": st.iteration, "cost": cost, "lam": st.lam,
                               "accepted": False})
            if callback:
                callback(st)
            break
        dx = x_new - x
        if hessian == "secant":
            st.last_step = {"s": list(map(float, dx)), "g": list(map(float, g)),
                            "jr": list(map(float, jac.T @ r_new))}
        rel_drop = (cost - cost_new) / max(cost, 1e-300)
        small_vs_esd = sd is not None and bool(np.all(np.abs(dx) <= esd_tol * sd))
        st.x = list(map(float, x_new))
        st.cost = cost_new
        st.lam = max(st.lam / 3.0, 1e-12)
        st.history.append({"iteration": st.iteration, "cost": cost_new, "lam": st.lam,
                           "accepted": True, "x": list(map(float, x_new)),
                           "model": "secant" if use_secant else "gn", "n_fun": st.n_fun})
        if rel_drop < ftol:
            st.converged = True
            st.message = f"relative cost decrease {rel_drop:.2e} < ftol"
        elif small_vs_esd:
            st.converged = True
            st.message = f"step below {esd_tol:g} esd for every parameter"
        elif np.all(np.abs(dx) <= xtol * (np.abs(x) + xtol)):
            st.converged = True
            st.message = "step below xtol"
        if callback:
            callback(st)
    if not st.converged and not st.message:
        st.message = f"stopped after max_iter={max_iter} iterations"
    return st


def _update_secant(st: LMState, g: np.ndarray, n: int) -> None:
    """The structured secant update of ``st.secant`` (module docstring; Dennis, Gay &
    Welsch 1981, eqs. 7–9 with their sizing factor τ) from ``st.last_step``."""
    last = st.last_step
    st.last_step = None
    if last is None:
        return
    s = np.asarray(last["s"], float)
    y = g - np.asarray(last["g"], float)
    y_sharp = g - np.asarray(last["jr"], float)
    ys = float(y @ s)
    if not np.isfinite(ys) or ys <= 1e-300 * max(float(y @ y), 1e-300):
        return
    sm = np.zeros((n, n)) if st.secant is None else np.asarray(st.secant, float)
    sss = float(s @ sm @ s)
    if sss != 0.0:
        sm = sm * min(1.0, abs(float(s @ y_sharp)) / abs(sss))
    z = y_sharp - sm @ s
    sm = sm + (np.outer(z, y) + np.outer(y, z)) / ys - float(z @ s) * np.outer(y, y) / ys ** 2
    st.secant = [list(map(float, row)) for row in 0.5 * (sm + sm.T)]


def _model_step(a: np.ndarray, s_mat: np.ndarray | None, lam: float, dg: np.ndarray,
                g: np.ndarray) -> np.ndarray | None:
    """The damped step −(JᵀJ [+ S] + λ diag)⁻¹ g; None when the matrix is singular
    or, with the secant term, not positive definite."""
    h = a + lam * np.diag(dg)
    if s_mat is None:
        try:
            return np.linalg.solve(h, -g)
        except np.linalg.LinAlgError:
            return None
    try:
        c = np.linalg.cholesky(h + s_mat)
    except np.linalg.LinAlgError:
        return None
    return -np.linalg.solve(c.T, np.linalg.solve(c, g))


def _esd(a: np.ndarray, cost: float, m: int, n: int) -> np.ndarray | None:
    """Parameter esds √(diag (JᵀJ)⁻¹ · χ²_ν) (None without degrees of freedom)."""
    if m <= n:
        return None
    try:
        return np.sqrt(np.clip(np.diag(np.linalg.inv(a)), 0, None) * 2 * cost / (m - n))
    except np.linalg.LinAlgError:
        return None


def levenberg_marquardt_progress(
    fun_jac: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    fun: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    on_step: Callable[[LMState], tuple[str, float]],
    desc: str,
    progress: bool,
    max_iter: int = 50,
    **kwargs,
) -> LMState:
    """:func:`levenberg_marquardt` from x = 0 (n parameters, scaled offsets) with a
    progress bar: ``on_step(state)`` runs after every iteration (record, checkpoint)
    and returns the (name, value) the bar shows. ``kwargs``: the other arguments of
    :func:`levenberg_marquardt` (bounds, tolerances, ``state``)."""
    bar = tqdm(total=max_iter, desc=desc, disable=not progress, leave=False)

    def cb(st: LMState) -> None:
        name, value = on_step(st)
        bar.update(1)
        bar.set_postfix({name: f"{value:.5g}"})

    try:
        return levenberg_marquardt(fun_jac, fun, np.zeros(n), max_iter=max_iter,
                                   callback=cb, **kwargs)
    finally:
        bar.close()
