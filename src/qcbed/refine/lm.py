"""A bounded Levenberg–Marquardt least-squares solver with a resumable state.

Minimises ½|r(x)|² (Levenberg 1944; Marquardt 1963) with the scaled damping
(JᵀJ + λ diag(JᵀJ)) δ = −Jᵀr, bounds enforced by projection. Its whole state
(x, λ, iteration, best χ²) is a small dataclass passed to a callback after
every step, so a refinement killed at any point resumes from its checkpoint
and follows exactly the same path as an uninterrupted run.
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
    state : LMState, optional
        Resume from this state.
    callback : callable, optional
        Called with the state after every iteration (checkpointing).

    Returns
    -------
    LMState
    """
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
        dg = np.diag(a).copy()
        dg[dg <= 0] = 1.0
        accepted = False
        for _ in range(30):
            try:
                step = np.linalg.solve(a + st.lam * np.diag(dg), -g)
            except np.linalg.LinAlgError:
                st.lam *= 10.0
                continue
            x_new = np.clip(x + step, lo, hi)
            r_new = fun(x_new)
            st.n_fun += 1
            cost_new = 0.5 * float(r_new @ r_new)
            if np.isfinite(cost_new) and cost_new < cost:
                accepted = True
                break
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
        rel_drop = (cost - cost_new) / max(cost, 1e-300)
        small_vs_esd = False
        if esd_tol is not None and len(r) > n:
            try:
                sd = np.sqrt(np.clip(np.diag(np.linalg.inv(a)), 0, None) * 2 * cost / (len(r) - n))
                small_vs_esd = bool(np.all(np.abs(dx) <= esd_tol * sd))
            except np.linalg.LinAlgError:
                small_vs_esd = False
        st.x = list(map(float, x_new))
        st.cost = cost_new
        st.lam = max(st.lam / 3.0, 1e-12)
        st.history.append({"iteration": st.iteration, "cost": cost_new, "lam": st.lam,
                           "accepted": True, "x": list(map(float, x_new))})
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
