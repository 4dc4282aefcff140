"""Error budget: the sensitivity of every refined parameter to the fixed inputs.

A statistical esd says how far the refined values scatter for the given model;
it says nothing about the inputs the model takes as exact. For each fixed input
q (voltage, pixel size, probe width, Debye–Waller factor, absorption,
scattering-factor table, beam selection, beam pool, background model, the plasmon
losses' mean free path and acceptance) the budget gives
the shift of the refined parameters x̂ that a change δq of that input causes.

Linearised route (one Gauss–Newton step)
    At the minimum of χ² = |r(x, q)|² (weighted residuals, scale and
    backgrounds projected out), the minimiser moves with q as

        δx = −(JᵀJ)⁻¹ Jᵀ (∂r/∂q) δq,                                      (1)

    the implicit-function theorem applied to the normal equations Jᵀr = 0
    (e.g. Press et al. 2007, Numerical Recipes §15.6; Bard 1974, Nonlinear
    Parameter Estimation §7-5). ∂r/∂q·δq is evaluated by central differences
    of the model, (r(q + δq) − r(q − δq))/2, at fixed x̂ (two model
    evaluations, no refit). For a *discrete alternative* (another absorption
    model, scattering-factor table, beam selection or background model) the
    one-sided difference r_alt − r is used, and for a different background
    model the whole Gauss–Newton step −J_alt⁺ r_alt of the alternative
    (its projection differs).

Combined standard uncertainty
    u_c(x) = sqrt(esd² + Σ_q δx_q²)                                        (2)

    (GUM, JCGM 100:2008 §5.1, uncorrelated inputs, sensitivities from (1)).
    δq is the standard uncertainty of a continuous input; the shift of a
    discrete alternative is counted in full as a standard uncertainty
    (conservative: GUM would take a/√3 for a rectangular half-width a).

All shifts are in the parameters' units (U_g in Å⁻², thickness in Å).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    "BudgetEntry",
    "BudgetInput",
    "ErrorBudget",
    "compute_budget",
    "default_inputs",
]

Change = Callable[[Any, float], dict]
"""``change(refinement, sign)`` → the modifications of :func:`_modified` for the
input moved by ``sign`` (±1 for a continuous input, +1 for an alternative)."""


@dataclass(frozen=True)
class BudgetInput:
    """A fixed input of the model and how to move it.

    Attributes
    ----------
    name : str
        Short name (``'voltage'``, ``'gl'``, ``'absorption'``…).
    delta : str
        The change, in words with units (``'±0.5 % (1.000 kV)'``).
    change : callable
        ``change(refinement, sign) -> dict`` of modifications (keys ``sim``:
        a new engine set-up; ``values``: {parameter: value}; ``background``: a
        background model; ``plasmon``: a plasmon-loss model).
    symmetric : bool
        Central difference (continuous input) or one-sided (alternative).
    """

    name: str
    delta: str
    change: Change
    symmetric: bool = True


@dataclass
class BudgetEntry:
    """Shifts of the refined parameters caused by one input."""

    input: str
    delta: str
    shifts: dict[str, float]
    method: str = "linearised"


@dataclass
class ErrorBudget:
    """Statistical esds and the input sensitivities of the refined parameters.

    Attributes
    ----------
    names : list of str
        Refined parameters.
    values, esd : dict
    entries : list of BudgetEntry
    """

    names: list[str]
    values: dict[str, float]
    esd: dict[str, float]
    entries: list[BudgetEntry] = field(default_factory=list)

    def combined(self) -> dict[str, float]:
        """Combined standard uncertainty (eq. 2) of every refined parameter."""
        out = {}
        for n in self.names:
            s = self.esd.get(n, 0.0) ** 2 + sum(e.shifts.get(n, 0.0) ** 2 for e in self.entries)
            out[n] = float(np.sqrt(s))
        return out

    def as_dict(self) -> dict:
        """JSON-ready table: per parameter value, esd, every input's shift, combined."""
        comb = self.combined()
        return {"formula": "u_c = sqrt(esd^2 + sum_q shift_q^2)",
                "inputs": [{"input": e.input, "delta": e.delta, "method": e.method}
                           for e in self.entries],
                "parameters": {n: {"value": self.values[n], "esd": self.esd.get(n),
                                   "shifts": {e.input: e.shifts.get(n) for e in self.entries},
                                   "combined": comb[n]} for n in self.names}}

    def table(self, names: Sequence[str] | None = None) -> str:
        """Printable table (one row per input, one column per parameter)."""
        names = list(names or self.names)
        w = max([12] + [len(n) + 2 for n in names])
        head = f"{'input':<16}{'change':<26}" + "".join(f"{n:>{w}}" for n in names)
        rows = [head, "-" * len(head)]
        rows.append(f"{'value':<16}{'':<26}" + "".join(
            f"{self.values[n]:>{w}.6g}" for n in names))
        rows.append(f"{'esd (stat.)':<16}{'':<26}" + "".join(
            f"{self.esd.get(n, 0.0):>{w}.3g}" for n in names))
        for e in self.entries:
            rows.append(f"{e.input:<16}{e.delta[:25]:<26}" + "".join(
                f"{e.shifts.get(n, 0.0):>{w}.3g}" for n in names))
        comb = self.combined()
        rows.append(f"{'combined u_c':<16}{'':<26}" + "".join(f"{comb[n]:>{w}.3g}"
                                                            for n in names))
        return "\n".join(rows)


# ====================================================================== inputs
def _sim_voltage(rel: float) -> Change:
    def change(ref, sign):
        v = ref.sim0.voltage_kv
        return {"sim": ref.sim0.with_changes(voltage_kv=v * (1 + sign * rel))}
    return change


def _sim_b(label: str, delta: float) -> Change:
    def change(ref, sign):
        cr = ref.sim0.crystal
        b = next(s.b_iso for s in cr.sites if s.label == label)
        return {"sim": ref.sim0.with_changes(
            crystal=cr.with_b_iso({label: max(b + sign * delta, 0.0)}))}
    return change


def _value(name: str, delta: float, relative: bool) -> Change:
    def change(ref, sign):
        v = ref.params[name].value
        return {"values": {name: v * (1 + sign * delta) if relative else v + sign * delta}}
    return change


def _absorption_scale(rel: float) -> Change:
    def change(ref, sign):
        sim = ref.sim0.with_changes()
        hkl = np.asarray(sim.table.hkl)
        vals = {}
        for h in hkl:
            key = tuple(int(x) for x in h)
            u, ua = sim.structure_factor(key)
            vals[key] = (u, ua * (1 + sign * rel))
        sim.set_structure_factors(vals, symmetric=False)
        return {"sim": sim}
    return change


def _potential(elastic: str | None = None, absorption: str | None = None) -> Change:
    def change(ref, sign):
        from dataclasses import replace

        pot = ref.sim0.potential
        kw = {}
        if elastic is not None:
            kw["elastic"] = elastic
        if absorption is not None:
            kw["absorption"] = absorption
        return {"sim": ref.sim0.with_changes(potential=replace(pot, **kw),
                                             keep_structure_factors=True)}
    return change


def _selection(factor: float) -> Change:
    def change(ref, sign):
        from dataclasses import replace

        sel = ref.sim0.selection
        return {"sim": ref.sim0.with_changes(selection=replace(sel, sgmin=sel.sgmin * factor))}
    return change


def _pool(smax_factor: float) -> Change:
    def change(ref, sign):
        return {"sim": ref.sim0.with_grown_pool(smax_factor)}
    return change


def _plasmon_acceptance(factor: float) -> Change:
    def change(ref, sign):
        from dataclasses import replace

        m = ref.plasmon
        return {"plasmon": replace(m, acceptance_mrad=1e3 * m.theta_a * factor)}
    return change


def _background(alt: str) -> Change:
    def change(ref, sign):
        return {"background": alt}
    return change


def default_inputs(ref, *, voltage_rel: float = 0.005, gl_rel: float = 0.005,
                   probe_sigma: float = 0.2, b_delta: float = 0.05,
                   absorption_rel: float = 0.10, elastic_alt: str | None = None,
                   selection_factor: float = 4.0, pool_factor: float = 4.0,
                   background: bool = True, plasmon_rel: float = 0.2,
                   plasmon_acceptance: float = 0.5) -> list[BudgetInput]:
    """The standard inputs of a refinement that are fixed in it.

    Parameters
    ----------
    ref : Refinement
    voltage_rel : float
        Relative voltage uncertainty (default 0.5 %).
    gl_rel : float
        Relative pixel-size (``gl``) uncertainty (default 0.5 %).
    probe_sigma : float
        Probe σ uncertainty (px) when the model has a probe.
    b_delta : float
        Debye–Waller B uncertainty (Å²) of every site.
    absorption_rel : float
        Relative uncertainty of every U′_g (default 10 %).
    elastic_alt : str, optional
        Alternative elastic table (default: Lobato for Kirkland, else Kirkland).
    selection_factor : float
        The beam-selection threshold sgmin is multiplied by this (the Bethe
        treatment of the weak beams); 0 to skip.
    pool_factor : float
        The beam pool's s_max is multiplied by this
        (:meth:`~qcbed.bloch.Simulation.with_grown_pool`: far zero-layer and HOLZ
        beams; the convergence record's ``pool_error`` is the same growth in
        intensities); 0 to skip. Only for a pool the engine built (not one fixed by a
        file). For a pool with a tail (:mod:`qcbed.bloch.tail`, the default) the
        tail's s_max is doubled instead, the growth that limits its accuracy.
    background : bool
        Include the alternative background model.
    plasmon_rel : float
        Relative uncertainty of the plasmon mean free path λ_p (default 20 %: the
        Drude λ_p against measured inelastic mean free paths, e.g. Iakoubovskii et al.
        2008) when the model has plasmon losses and λ_p is not refined. E_p enters
        through θ_E and λ_p; its uncertainty (≈ 1 % for the free-electron value of
        s–p materials) is far below that of λ_p.
    plasmon_acceptance : float
        With plasmon losses: the alternative model whose acceptance angle θ_a (the
        largest deflection a loss electron may have and still be recorded as the
        pattern: the CBED disc radius of a digital LACBED image;
        :mod:`qcbed.experiment.plasmon`) is this factor times the one used (default
        0.5: the disc radius is not recorded in the data, and discs that do not
        overlap have at most |g_min|/2 — for Si [110] at 200 kV 4.0 mrad against θ_c
        9.8 mrad); 0 to skip. Skipped where the changed θ_a would not exceed θ_E.

    Inputs that are refined (free) are left out: their uncertainty is in the
    esds and correlations.
    """
    free = {p.name for p in ref.params.free}
    sim = ref.sim0
    out: list[BudgetInput] = []
    if "voltage" not in free:
        out.append(BudgetInput("voltage", f"±{100 * voltage_rel:g} % "
                               f"({sim.voltage_kv * voltage_rel:.3g} kV)",
                               _sim_voltage(voltage_rel)))
    if "gl" in ref.params and "gl" not in free:
        out.append(BudgetInput("gl", f"±{100 * gl_rel:g} % pixel size",
                               _value("gl", gl_rel, True)))
    if "probe.sigma" in ref.params and "probe.sigma" not in free:
        out.append(BudgetInput("probe.sigma", f"±{probe_sigma:g} px",
                               _value("probe.sigma", probe_sigma, False)))
    if "plasmon.lambda_scale" in ref.params and "plasmon.lambda_scale" not in free \
            and plasmon_rel > 0:
        out.append(BudgetInput("plasmon lambda_p", f"±{100 * plasmon_rel:g} %",
                               _value("plasmon.lambda_scale", plasmon_rel, True)))
    if getattr(ref, "plasmon", None) is not None and plasmon_acceptance > 0 \
            and ref.plasmon.theta_a * plasmon_acceptance > ref.plasmon.theta_e:
        th = 1e3 * ref.plasmon.theta_a
        out.append(BudgetInput("plasmon acceptance",
                               f"theta_a {th:.3g} -> {th * plasmon_acceptance:.3g} mrad",
                               _plasmon_acceptance(plasmon_acceptance), symmetric=False))
    if "thickness" in ref.params and "thickness" not in free:
        t = ref.params["thickness"].value
        out.append(BudgetInput("thickness", f"±1 % ({0.01 * t:.3g} A)",
                               _value("thickness", 0.01, True)))
    for st in sim.crystal.sites:
        if f"B({st.label})" not in free and b_delta > 0:
            out.append(BudgetInput(f"B({st.label})", f"±{b_delta:g} A^2",
                                   _sim_b(st.label, b_delta)))
    if sim.potential.absorption != "none" and absorption_rel > 0:
        out.append(BudgetInput("absorption", f"±{100 * absorption_rel:g} % all U'_g",
                               _absorption_scale(absorption_rel)))
    alt = elastic_alt or ("lobato" if sim.potential.elastic != "lobato" else "kirkland")
    out.append(BudgetInput("elastic table", f"{sim.potential.elastic} -> {alt}",
                           _potential(elastic=alt), symmetric=False))
    if selection_factor and sim.selection is not None and sim.selection.sgmin > 0:
        out.append(BudgetInput("beam selection", f"sgmin x {selection_factor:g}",
                               _selection(selection_factor), symmetric=False))
    if pool_factor and sim.automatic_pool_limits is not None:
        # a pool with a tail: the tail's s_max grows instead (with_grown_pool)
        what = "tail s_max x 2" if sim.tail is not None else f"s_max x {pool_factor:g}"
        out.append(BudgetInput("pool", what, _pool(pool_factor), symmetric=False))
    if background:
        alt_bg = {"per_disc": "single", "single": "per_disc", "none": "single"}[ref.background]
        out.append(BudgetInput("background", f"{ref.background} -> {alt_bg}",
                               _background(alt_bg), symmetric=False))
    return out


# ====================================================================== evaluation
@contextmanager
def _modified(ref, sim=None, values: dict | None = None, background: str | None = None,
              plasmon=None):
    """Temporarily change the engine set-up, parameter values, background model or
    plasmon-loss model."""
    old_sim0, old_bg = ref.sim0, ref.background
    old_plasmon = getattr(ref, "plasmon", None)
    old_vals = {n: ref.params[n].value for n in (values or {})}
    cache = (getattr(ref, "_work", None), ref.sim, ref._cache_key, ref._cache_eig)

    def reset():
        ref._work = None
        ref._cache_key = None
        ref._cache_eig = None

    try:
        if sim is not None:
            ref.sim0 = sim
            reset()
        for n, v in (values or {}).items():
            ref.params[n].value = float(v)
        if background is not None:
            ref.background = background
        if plasmon is not None:
            ref.plasmon = plasmon
        yield ref
    finally:
        ref.sim0, ref.background = old_sim0, old_bg
        if plasmon is not None:
            ref.plasmon = old_plasmon
        for n, v in old_vals.items():
            ref.params[n].value = v
        if sim is not None:  # the unmodified set-up and its eigen-solution, as they were
            ref._work, ref.sim, ref._cache_key, ref._cache_eig = cache


def _valid_mask(ref, values: dict | None) -> np.ndarray:
    vals = ref._sampling_values()
    vals.update({k: v for k, v in (values or {}).items() if k in vals})
    _e, _v, valid = ref.data.sample(vals)
    return ref._compare_mask(valid)


def compute_budget(ref, inputs: Iterable[BudgetInput] | None = None, *,
                   fd_fraction: float = 0.25, progress: bool = False) -> ErrorBudget:
    """The error budget of a refinement at its current (refined) parameter values.

    Parameters
    ----------
    ref : Refinement
        After :meth:`~qcbed.refine.Refinement.fit` (esds set).
    inputs : iterable of BudgetInput, optional
        Default :func:`default_inputs`.
    fd_fraction : float
        Central-difference step as a fraction h of every continuous input's δq.
    progress : bool

    Returns
    -------
    ErrorBudget
    """
    from tqdm.auto import tqdm

    names = [p.name for p in ref.params.free]
    if not names:
        raise InputError("nothing refined: no budget")
    inputs = list(default_inputs(ref) if inputs is None else inputs)
    if not 0 < fd_fraction <= 1:
        raise InputError("fd_fraction must be in (0, 1]", found=fd_fraction)
    h = float(fd_fraction)
    changes = [[inp.change(ref, s) for s in ((h, -h) if inp.symmetric else (1.0,))]
               for inp in inputs]
    mask = _valid_mask(ref, None)
    for ch in changes:
        for c in ch:
            mask &= _valid_mask(ref, c.get("values"))
    r0, j, _fit, used0 = ref._residuals(names, mask, True)
    budget = ErrorBudget(names, {n: ref.params[n].value for n in names},
                         {n: (ref.params[n].esd or 0.0) for n in names})

    def evaluate(c: dict, m: np.ndarray):
        with _modified(ref, **c):
            if "background" in c:
                r, ja, _f, used = ref._residuals(names, m, True)
            else:
                r, ja, _f, used = ref._residuals([], m, False)
        return r, ja, used

    for inp, ch in tqdm(list(zip(inputs, changes)), desc="error budget", disable=not progress,
                        leave=False):
        rs = [evaluate(c, mask) for c in ch]
        common = used0.copy()
        for _r, _ja, used in rs:
            common &= used
        r_base, j_base = r0, j
        if not all(np.array_equal(used, common) for *_x, used in rs) or \
                not np.array_equal(used0, common):
            # the engine rejected some directions under the change (NaN model): compare
            # base and changed models on the samples valid for both
            rs = [evaluate(c, common) for c in ch]
            r_base, j_base, _f, _u = ref._residuals(names, common, True)
        rs = [(r, ja) for r, ja, _u in rs]
        if len(rs) == 2:
            dr = (rs[0][0] - rs[1][0]) / (2 * h)
            dx, *_ = np.linalg.lstsq(j_base, -dr, rcond=None)
            method = "linearised, central difference"
        elif rs[0][1] is not None:
            dx, *_ = np.linalg.lstsq(rs[0][1], -rs[0][0], rcond=None)
            method = "Gauss-Newton step of the alternative"
        else:
            dx, *_ = np.linalg.lstsq(j_base, -(rs[0][0] - r_base), rcond=None)
            method = "linearised, alternative"
        budget.entries.append(BudgetEntry(inp.name, inp.delta,
                                          {n: float(v) for n, v in zip(names, dx)}, method))
    return budget
