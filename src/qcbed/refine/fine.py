"""Fine refinement: pixel-wise goodness of fit, analytic Jacobians, esds and checkpoints.

The model for every compared sample (seed paper eq. 8) is

    I_model = c · (H′ ⊛ I_Bloch)(k_t; U_g, U′_g, …, t) + b_disc,

with I_Bloch from the engine, H′ the LARBED probe (:mod:`qcbed.refine.probe`;
identity for deconvolved CBED), the scale c and backgrounds b solved in closed
form (variable projection; Golub & Pereyra 1973, Kaufman 1975), and the
experiment sampled at positions set by the sampling parameters.

Structure-factor derivatives are analytic (derivative of the scattering
matrix, :meth:`qcbed.bloch.solver.EigenChunk.gradients`), as are those of the
thickness and the probe widths; other structural parameters (Debye–Waller
factors, cell, coordinates, occupancies, voltage) and the sampling
parameters use central differences. Thickness, sampling and probe changes
never re-diagonalise.

Methods:

* ``'lm'``: Levenberg–Marquardt on all free parameters (resumable exactly);
* ``'nested'``: PyExtal's scheme — an outer optimiser (``outer='lm'``,
  ``'nelder-mead'`` or ``'powell'``) over the structural parameters; for each
  outer step an inner Levenberg–Marquardt over thickness, sampling and probe
  parameters, always started from the same values so the outer objective is a
  deterministic function (PyExtal's warm start is not).

After the fit, the covariance of *all* free parameters is (JᵀJ)⁻¹·χ²_ν from
the joint Jacobian at the minimum (linear parameters projected out), giving an
esd for every parameter and the correlation matrix; strongly correlated pairs
(|ρ| > 0.9) are reported and warned about.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..bloch.simulation import Simulation, outputs_index
from ..errors import InputError, QcbedError
from .gof import GOF, GOFValue, linear_fit, make_gof, zncc
from .lm import LMState, levenberg_marquardt
from .parameters import (
    Parameter,
    ParameterSet,
    apply_cell,
    hkl_name,
    structure_factor_parameters,
)
from .probe import convolve_probe

CHEAP_KINDS = ("thickness", "sampling", "probe")


#: Condition number of the scaled JᵀJ above which the covariance counts as singular.
_SINGULAR_COND = 1e14


@dataclass
class RefinementResult:
    """Outcome of a fine refinement.

    Attributes
    ----------
    parameters : ParameterSet
        Final values with ``esd`` set.
    gof : float
        Final goodness of fit (reduced χ² for the χ² metrics).
    chi2 : float
        Reduced χ² with the data's variances (whatever the metric).
    dof : int
        Degrees of freedom: used samples − refined parameters − linear parameters.
    n_used : int
        Samples compared.
    scale, background : float, ndarray
        Closed-form scale and background(s).
    correlation : ndarray (p, p)
        Correlation matrix of the free parameters (order of ``free_names``).
    covariance : ndarray (p, p)
    free_names : list of str
    strong_correlations : list of (str, str, float)
        Pairs with |ρ| > 0.9.
    r_factor : float
        Σ|model − I_x| / Σ I_x.
    zncc : dict
        Per-reflection zero-normalised cross-correlation of model and experiment.
    history : list of dict
        Every iteration's parameters and GOF.
    message : str
    n_iterations, n_solves : int
    elapsed_s : float
    """

    parameters: ParameterSet
    gof: float
    chi2: float
    dof: int
    n_used: int
    scale: float
    background: np.ndarray
    correlation: np.ndarray
    covariance: np.ndarray
    free_names: list[str]
    strong_correlations: list[tuple[str, str, float]]
    r_factor: float
    zncc: dict[str, float]
    history: list[dict]
    message: str
    n_iterations: int
    n_solves: int
    elapsed_s: float
    extra: dict = field(default_factory=dict)

    def value(self, name: str) -> float:
        return self.parameters[name].value

    def esd(self, name: str) -> float | None:
        return self.parameters[name].esd

    def summary(self) -> str:
        """Printable summary: parameters ± esd, χ², correlations."""
        lines = [f"GOF = {self.gof:.5g}  (reduced chi2 = {self.chi2:.5g}, dof = {self.dof}, "
                 f"n = {self.n_used}, R = {self.r_factor:.4f})",
                 f"scale = {self.scale:.6g}, background = "
                 f"{np.array2string(np.asarray(self.background), precision=4)}",
                 self.parameters.table()]
        if self.strong_correlations:
            lines.append("strongly correlated: " + ", ".join(
                f"{a}/{b} ({r:+.3f})" for a, b, r in self.strong_correlations))
        lines.append(f"{self.message} ({self.n_iterations} iterations, {self.n_solves} "
                     f"eigen-solves, {self.elapsed_s:.1f} s)")
        return "\n".join(lines)


class Refinement:
    """A fine refinement problem: engine set-up, data, parameters and GOF.

    Parameters
    ----------
    simulation : Simulation
        Engine set-up; every reflection of ``data.hkl`` must be an output beam.
        Structure-factor refinement with analytic Jacobians needs
        ``mode='exact'``.
    data : DirectData or an ROI dataset
        See :mod:`qcbed.refine.data`.
    parameters : ParameterSet, optional
        Start with these; add more with the ``add_*`` methods.
    gof : str or GOF
        ``'chi2'`` (default), ``'chi2_poisson'``, ``'r_factor'``, ``'correlation'`` or
        a :class:`~qcbed.refine.gof.GOF` instance.
    background : {'per_disc', 'single', 'none'}
    probe : (σ, γ) in pixels, optional
        LARBED probe; needs ``data.regions``.
    jacobian : {'analytic', 'numeric'}
        Structure-factor derivatives: analytic (exact mode) or central differences.
    checkpoint : path, optional
        File updated after every iteration (state + history); see :meth:`fit`.
    progress : bool
        Show a progress bar.
    """

    def __init__(self, simulation: Simulation, data, parameters: ParameterSet | None = None, *,
                 gof: str | GOF = "chi2", background: str = "per_disc",
                 probe: tuple[float, float] | None = None, jacobian: str = "analytic",
                 checkpoint: str | os.PathLike | None = None, progress: bool = False) -> None:
        self.sim0 = simulation
        self.sim = simulation
        self.data = data
        self.params = parameters.copy() if parameters is not None else ParameterSet()
        self.gof = make_gof(gof, background) if isinstance(gof, str) else gof
        self.background = background
        if jacobian not in ("analytic", "numeric"):
            raise InputError("jacobian must be 'analytic' or 'numeric'", found=jacobian)
        self.jacobian = jacobian
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.progress = progress
        self.out_idx = outputs_index(simulation, data.hkl)
        self.disc = np.asarray(data.disc_index)
        if probe is not None:
            if not getattr(data, "regions", None):
                raise InputError("a probe convolution needs the data's region grids")
            self.params.add(Parameter("probe.sigma", float(probe[0]), "probe", 0.1, 0.0, 50.0,
                                      "px", target=("probe", "sigma")))
            self.params.add(Parameter("probe.gamma", float(probe[1]), "probe", 0.05, 0.0, 50.0,
                                      "px", target=("probe", "gamma")))
        for p in data.sampling_parameters():
            if p.name not in self.params:
                self.params.add(p)
        self._cache_key: tuple | None = None
        self._cache_eig = None
        self.n_solves = 0
        #: what the engine had to do for the directions of the latest solve
        self.solver_counts: dict[str, int] = {}
        self.history: list[dict] = []
        self._t0 = 0.0

    # ------------------------------------------------------------ building
    def add_thickness(self, value: float, *, refine: bool = True, scale: float | None = None,
                      lower: float = 1.0, upper: float = 1e5) -> Parameter:
        """Specimen thickness (Å)."""
        return self.params.add(Parameter("thickness", float(value), "thickness",
                                         scale or max(1.0, 0.005 * value), lower, upper, "Å",
                                         refine=refine, target=("thickness",)))

    def add_structure_factor(self, hkl: Iterable[int], *, refine_u: bool = True,
                             refine_uabs: bool = True, refine_phase: bool = False,
                             value: complex | None = None, value_abs: complex | None = None
                             ) -> list[Parameter]:
        """U_g and U′_g of one reflection (linked to its symmetry equivalents).

        For centrosymmetric crystals the phase is fixed by the centre of
        symmetry and the signed amplitude is refined; ``refine_phase`` (non-
        centrosymmetric crystals only) adds the phase (degrees).
        """
        h = tuple(int(x) for x in hkl)
        if refine_phase and self.sim.crystal.is_centrosymmetric:
            raise InputError("phases of a centrosymmetric crystal are fixed", tag=str(h))
        u, ua = self.sim.structure_factor(h)
        if value is not None:
            u = complex(value)
        if value_abs is not None:
            ua = complex(value_abs)
        if self.sim.crystal.is_centrosymmetric or abs(u) == 0:
            phase = self.sim.default_phase(h)
        else:
            phase = float(np.angle(u))
        ps = structure_factor_parameters(h, u, ua, phase=phase, refine_u=refine_u,
                                         refine_uabs=refine_uabs, refine_phase=refine_phase)
        for p in ps:
            self.params.add(p)
        return ps

    def add_b_iso(self, label: str, *, refine: bool = True) -> Parameter:
        """Isotropic Debye–Waller factor B (Å²) of a site."""
        for i, st in enumerate(self.sim.crystal.sites):
            if st.label == label:
                return self.params.add(Parameter(f"B({label})", st.b_iso, "structure", 0.01,
                                                 0.0, 20.0, "Å²", refine, ("B", i)))
        raise InputError("unknown site label", expected=[s.label for s in self.sim.crystal.sites],
                         found=label)

    def add_voltage(self, *, refine: bool = True) -> Parameter:
        """Accelerating voltage (kV)."""
        v = self.sim.voltage_kv
        return self.params.add(Parameter("voltage", v, "structure", 0.05, v - 5, v + 5, "kV",
                                         refine, ("voltage",)))

    def add_orientation(self, *, refine: bool = True, scale: float = 1e-4) -> list[Parameter]:
        """Orientation: a shift (tilt.x, tilt.y) in Å⁻¹ of every simulated k_t (re-diagonalises)."""
        return [self.params.add(Parameter(f"tilt.{ax}", 0.0, "structure", scale, -0.1, 0.1,
                                          "Å⁻¹", refine, ("tilt", ax))) for ax in "xy"]

    def add_u_aniso(self, label: str, *, refine: bool = True) -> list[Parameter]:
        """Anisotropic displacement U^{ij} (Å²) of a site along its symmetry-allowed tensors.

        The site symmetry allows only the combinations of U^{ij} invariant under its
        operations (R U Rᵀ = U in the fractional basis; Peterse & Palm 1966;
        International Tables Vol. D §1.2); each allowed basis tensor gets one
        parameter (its coefficient, Å²), started from the site's current U (or
        B_iso/8π² times the metric-isotropic tensor).
        """
        from .parameters import allowed_u_tensors

        for i, st in enumerate(self.sim.crystal.sites):
            if st.label == label:
                basis, coeff = allowed_u_tensors(self.sim.crystal, i)
                return [self.params.add(Parameter(f"Uij({label}).{k}", float(c), "structure",
                                                  1e-4, -0.5, 0.5, "Å²", refine,
                                                  ("Uaniso", i, tuple(map(tuple, b)))))
                        for k, (b, c) in enumerate(zip(basis, coeff))]
        raise InputError("unknown site label", expected=[s.label for s in self.sim.crystal.sites],
                         found=label)

    def add(self, parameter: Parameter) -> Parameter:
        """Add any parameter (e.g. from :func:`~qcbed.refine.parameters.cell_parameters`)."""
        return self.params.add(parameter)

    # ------------------------------------------------------------ model
    def _struct_params(self) -> list[Parameter]:
        return [p for p in self.params if p.kind == "structure"]

    def _tilt(self) -> np.ndarray:
        t = np.zeros(2)
        for p in self.params:
            if p.target and p.target[0] == "tilt":
                t["xy".index(p.target[1])] = p.value
        return t

    def _struct_key(self) -> tuple:
        return tuple(round(p.value, 15) for p in self._struct_params())

    def _apply_structure(self) -> None:
        """Bring ``self.sim`` in line with the structural parameter values."""
        other = [p for p in self._struct_params()
                 if p.target[0] not in ("U", "Uabs", "phase", "tilt")]
        crystal = self.sim0.crystal
        voltage = None
        if other:
            sites = list(crystal.sites)
            cell: dict[str, float] = {}
            aniso: dict[int, np.ndarray] = {}
            system = ""
            from dataclasses import replace as dc_replace

            for p in other:
                kind = p.target[0]
                if kind == "B":
                    i = p.target[1]
                    sites[i] = dc_replace(sites[i], b_iso=p.value)
                elif kind == "occ":
                    i = p.target[1]
                    sites[i] = dc_replace(sites[i], occupancy=p.value)
                elif kind == "xyz":
                    i, vec = p.target[1], np.asarray(p.target[2])
                    base = np.asarray(self.sim0.crystal.sites[i].xyz)
                    cur = np.asarray(sites[i].xyz) - base
                    sites[i] = dc_replace(sites[i], xyz=tuple(base + cur + p.value * vec))
                elif kind == "cell":
                    cell[p.target[1]] = p.value
                    system = p.target[2]
                elif kind == "voltage":
                    voltage = p.value
                elif kind == "Uaniso":
                    i = p.target[1]
                    aniso[i] = aniso.get(i, np.zeros((3, 3))) + p.value * np.asarray(p.target[2])
            for i, u in aniso.items():  # U = Σ_k c_k (allowed tensor)_k
                sites[i] = dc_replace(sites[i], u_aniso=u)
            crystal = crystal.replace(sites=sites)
            if cell:
                crystal = apply_cell(crystal, cell, system)
        key = tuple(round(p.value, 15) for p in other)
        cached = getattr(self, "_work", None)
        if cached is None or cached[0] != key:
            # a working copy of the set-up (same pool); rebuilt only when the crystal or
            # the voltage change, U_g updates are applied to it in place (a few rows)
            self._work = (key, self.sim0.with_changes(crystal=crystal, voltage_kv=voltage)
                          if other else self.sim0.with_changes())
        self.sim = self._work[1]
        values: dict[tuple, tuple[complex, complex]] = {}
        phases = {p.target[1]: np.radians(p.value) for p in self._struct_params()
                  if p.target[0] == "phase"}
        for p in self._struct_params():
            if p.target[0] not in ("U", "Uabs"):
                continue
            h = p.target[1]
            ph = phases.get(h, p.target[2])
            cur = values.get(h)
            if cur is None:  # U and U′ of h are both parameters (add_structure_factor)
                cur = self.sim.structure_factor(h)
            if p.target[0] == "U":
                cur = (p.value * np.exp(1j * ph), cur[1])
            else:
                cur = (cur[0], p.value * np.exp(1j * ph))
            values[h] = cur
        if values:
            self.sim.set_structure_factors(values)

    def _u_derivative_tables(self) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        ps = [p for p in self.params.free if p.kind == "structure" and p.target[0] in ("U",
                                                                                      "Uabs")]
        if not ps or self.jacobian != "analytic" or self.sim.mode != "exact":
            return None
        m = len(self.sim.table.hkl)
        du = np.zeros((len(ps), m), complex)
        dua = np.zeros((len(ps), m), complex)
        for k, p in enumerate(ps):
            coef = self.sim.sf_coefficients(p.target[1], phase=p.target[2])
            (du if p.target[0] == "U" else dua)[k] = coef
        return [p.name for p in ps], du, dua

    def _eigen(self, with_derivatives: bool):
        key = (self._struct_key(), with_derivatives)
        if self._cache_key is not None and (self._cache_key == key or (
                not with_derivatives and self._cache_key[0] == key[0])):
            return self._cache_eig
        self._apply_structure()
        deriv = self._u_derivative_tables() if with_derivatives else None
        eig = self.sim.solve_eigen(self.data.kt + self._tilt(),
                                   None if deriv is None else deriv[1:])
        self.n_solves += 1
        self.solver_counts = {"directions": eig.n_dir, "exact_fallback": eig.n_fallback,
                              "rejected": eig.n_rejected, "clustered": eig.n_clustered}
        self._cache_key = (self._struct_key(), deriv is not None)
        self._cache_eig = (eig, None if deriv is None else deriv[0])
        return self._cache_eig

    def _probe_values(self) -> tuple[float, float] | None:
        if "probe.sigma" not in self.params:
            return None
        return self.params["probe.sigma"].value, self.params["probe.gamma"].value

    def simulate(self, *, gradients: bool = False, need: set[str] | None = None):
        """Model intensities I_Bloch (probe-convolved) at the data points: (n_refl, n_pts).

        With ``gradients=True`` also returns {parameter name: ∂I/∂value} for the
        analytically differentiated parameters (structure factors, thickness, probe),
        or only for those in ``need``.
        """
        if "thickness" not in self.params:
            raise InputError("the refinement needs a 'thickness' parameter (add_thickness)")
        t = self.params["thickness"].value
        eig, names = self._eigen(with_derivatives=gradients)
        grads: dict[str, np.ndarray] = {}
        if gradients:
            want_sf = need is None or bool(set(names or []) & need)
            inten, d_p, d_t = eig.gradients(t, structure=want_sf)
            inten = inten[:, self.out_idx].T
            grads["thickness"] = d_t[:, self.out_idx].T
            if want_sf:
                for k, name in enumerate(names or []):
                    grads[name] = d_p[:, k, self.out_idx].T
        else:
            inten = eig.intensities([t])[0][:, self.out_idx].T
        probe = self._probe_values()
        if probe is not None:
            inten = self._convolve(inten, probe, grads if gradients else None)
        return (inten, grads) if gradients else inten

    def _convolve(self, inten: np.ndarray, probe: tuple[float, float],
                  grads: dict[str, np.ndarray] | None) -> np.ndarray:
        """Probe convolution region by region; updates ``grads`` in place when given."""
        out = inten.copy()
        if grads is not None:
            conv_grads = {k: v.copy() for k, v in grads.items()}
            conv_grads["probe.sigma"] = np.zeros_like(inten)
            conv_grads["probe.gamma"] = np.zeros_like(inten)
        for reg in self.data.regions:
            sl = slice(reg.start, reg.start + reg.size)
            img = inten[:, sl].reshape(-1, *reg.shape)
            n = len(img)
            if grads is not None:
                conv, ds, dg = convolve_probe(img, probe[0], probe[1], derivatives=True)
                conv_grads["probe.sigma"][:, sl] = ds.reshape(n, -1)
                conv_grads["probe.gamma"][:, sl] = dg.reshape(n, -1)
                for k, g in grads.items():
                    gi = g[:, sl].reshape(-1, *reg.shape)
                    conv_grads[k][:, sl] = convolve_probe(gi, *probe).reshape(n, -1)
            else:
                conv = convolve_probe(img, *probe)
            out[:, sl] = conv.reshape(n, -1)
        if grads is not None:
            grads.clear()
            grads.update(conv_grads)
        return out

    def _compare_mask(self, valid: np.ndarray, sim: np.ndarray | None = None) -> np.ndarray:
        """Samples compared: valid data, inside the region interiors, and (given the
        model ``sim``) a finite model — directions the engine's physical guard
        rejected are NaN and are left out."""
        m = np.asarray(valid, bool).copy()
        if sim is not None:
            m &= np.isfinite(sim)
        for reg in getattr(self.data, "regions", []) or []:
            if reg.pad:
                sl = slice(reg.start, reg.start + reg.size)
                m[:, sl] &= reg.interior().ravel()[None, :]
        return m

    def _sampling_values(self) -> dict[str, float]:
        return {p.name: p.value for p in self.params if p.kind == "sampling"}

    def evaluate(self) -> GOFValue:
        """The GOF at the current parameter values."""
        sim = self.simulate()
        exp, var, valid = self.data.sample(self._sampling_values())
        mask = self._compare_mask(valid, sim)
        return self.gof(sim, exp, var, mask, self.disc, n_params=len(self.params.free))

    # ------------------------------------------------------------ residuals
    def _residuals(self, names: list[str], mask_fixed: np.ndarray | None, with_jac: bool):
        """Weighted VarPro residuals over the used samples and (optionally) their Jacobian.

        Columns are derivatives with respect to the *values* of ``names``.
        """
        sim_out = self.simulate(gradients=with_jac, need=set(names))
        sim, grads = (sim_out if with_jac else (sim_out, {}))
        exp, var, valid = self.data.sample(self._sampling_values())
        mask = self._compare_mask(valid, sim)
        if mask_fixed is not None:
            mask = mask & mask_fixed
        fit = linear_fit(sim, exp, var, mask, self.disc, self.background)
        if not with_jac:
            return fit.residuals, None, fit, mask
        w = 1.0 / np.sqrt(var[mask])
        # Variable projection (Golub & Pereyra 1973): with X the weighted design, β its
        # least-squares coefficients and r = Xβ − y, ∂r/∂p = P⊥ (∂X/∂p) β − X⁺ᵀ (∂X/∂p)ᵀ r.
        # Only X's first column (c's) depends on p, so the second term is
        # −X (XᵀX)⁻¹ e₀ · (w ∂I/∂p)·r.
        x = fit.design
        q, _ = np.linalg.qr(x)
        e0 = np.zeros(x.shape[1])
        e0[0] = 1.0
        u0 = x @ np.linalg.solve(x.T @ x, e0)
        jac = np.zeros((len(fit.residuals), len(names)))
        numeric = []
        for k, name in enumerate(names):
            if name in grads:
                d = grads[name][mask] * w
                col = fit.scale * d
                jac[:, k] = col - q @ (q.T @ col) - u0 * float(d @ fit.residuals)
            else:
                numeric.append(k)
        for k in numeric:
            jac[:, k] = self._numeric_column(names[k], mask)
        return fit.residuals, jac, fit, mask

    def _numeric_column(self, name: str, mask: np.ndarray) -> np.ndarray:
        p = self.params[name]
        h = p.scale * 1e-3
        v0 = p.value
        cols = []
        for sgn in (1.0, -1.0):
            p.value = float(np.clip(v0 + sgn * h, p.lower, p.upper))
            r, _, _, _ = self._residuals([], mask, False)
            cols.append((r, p.value))
        p.value = v0
        (r1, v1), (r2, v2) = cols
        if len(r1) != len(r2) or v1 == v2:
            raise QcbedError(f"numeric derivative of {name} failed (samples changed)")
        return (r1 - r2) / (v1 - v2)

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
            resume: bool = False,
            callback: Callable[[dict], None] | None = None) -> RefinementResult:
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
        """
        if not self.params.free:
            raise InputError("nothing to refine: every parameter is fixed")
        self._t0 = time.perf_counter()
        self._lm_final: tuple[list[str], np.ndarray, LMState] | None = None
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
            state = self._load_checkpoint(names) if resume else None
            st = self._run_lm(names, max_iter, ftol, xtol, state, callback, stage="lm",
                              esd_tol=esd_tol)
            message, n_iter = st.message, st.iteration
            self._lm_final = (names, self._lm_x0, st)
        elif method == "nested":
            message, n_iter = self._run_nested(outer, max_iter, ftol, xtol, resume, callback)
        else:
            raise InputError("unknown refinement method", expected=["lm", "nested"],
                             found=method)
        return self._finish(message, n_iter)

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
            r, _, _, _ = self._residuals(names, mask_fixed, False)
            return r

        bar = tqdm(total=max_iter, desc=f"refine ({stage})", disable=not self.progress,
                   leave=False)

        def cb(st: LMState) -> None:
            self._set_x(names, np.asarray(st.x), x0, scales)
            gv = self.evaluate().value
            self._record(gv, stage)
            bar.update(1)
            bar.set_postfix(gof=f"{gv:.5g}")
            if save:
                self._save_checkpoint(names, x0, st)
            if callback:
                callback(self.history[-1])

        st = levenberg_marquardt(fun_jac, fun, np.zeros(len(names)), lower=lo, upper=hi,
                                 max_iter=max_iter, ftol=ftol, xtol=xtol, esd_tol=esd_tol,
                                 state=state, callback=cb)
        bar.close()
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

    # ------------------------------------------------------------ results
    def covariance(self) -> tuple[list[str], np.ndarray, float, int]:
        """Covariance (values' units) of all free parameters at the current point.

        cov = χ²_ν (JᵀJ)⁻¹ with J the joint weighted Jacobian (linear parameters
        projected out) and χ²_ν the reduced χ² (Press et al. 2007, §15.5).
        """
        names = [p.name for p in self.params.free]
        r, j, fit, _mask = self._residuals(names, None, True)
        dof = len(r) - len(names) - fit.n_linear
        chi2nu = float(r @ r) / max(dof, 1)
        jtj = j.T @ j
        scale = np.sqrt(np.clip(np.diag(jtj), 1e-300, None))
        singular = not np.all(np.isfinite(jtj)) or \
            np.linalg.cond(jtj / np.outer(scale, scale)) > _SINGULAR_COND
        if singular:  # some parameter combination is not determined by the data
            cov = np.full_like(jtj, np.nan)
        else:
            cov = np.linalg.inv(jtj) * chi2nu
        return names, cov, chi2nu, dof

    def _finish(self, message: str, n_iter: int) -> RefinementResult:
        names, cov, chi2nu, dof = self.covariance()
        if not np.all(np.isfinite(cov)):
            message += ("; DEGENERATE: the covariance is singular (a parameter combination "
                        "is not determined by the data), esds are undefined (null)")
            warnings.warn(f"degenerate refinement: singular covariance of {names}; esds are "
                          "undefined", UserWarning, stacklevel=3)
        if not (np.isfinite(chi2nu) and chi2nu > 0):
            message += f"; DEGENERATE: χ²_ν = {chi2nu:g} (a perfect or undefined fit)"
            warnings.warn(f"degenerate refinement: χ²_ν = {chi2nu:g}", UserWarning,
                          stacklevel=3)
        with np.errstate(invalid="ignore"):
            esd = np.sqrt(np.clip(np.diag(cov), 0, None))
        for n, e in zip(names, esd):
            self.params[n].esd = float(e)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(esd, esd)
        strong = []
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                if abs(corr[a, b]) > 0.9:
                    strong.append((names[a], names[b], float(corr[a, b])))
        if strong:
            warnings.warn("strongly correlated parameters: " + ", ".join(
                f"{a}/{b} ρ={r:+.3f}" for a, b, r in strong), UserWarning, stacklevel=3)
        gofv = self.evaluate()
        sim = self.simulate()
        exp, var, valid = self.data.sample(self._sampling_values())
        mask = self._compare_mask(valid, sim)
        if self.solver_counts.get("rejected"):
            warnings.warn(f"{self.solver_counts['rejected']} of "
                          f"{self.solver_counts['directions']} directions were rejected by "
                          "the engine's physical guard (NaN) and left out of the fit",
                          UserWarning, stacklevel=3)
        fit = linear_fit(sim, exp, var, mask, self.disc, self.background)
        model = fit.scale * sim
        bg = np.zeros_like(sim)
        if self.background == "single":
            bg[:] = fit.background[0]
        elif self.background == "per_disc":
            used_discs = np.unique(np.asarray(self.disc)[mask])
            for k, d in enumerate(used_discs):
                bg[np.asarray(self.disc) == d] = fit.background[k]
        model = model + bg
        r_factor = float(np.sum(np.abs(model - exp)[mask]) / np.sum(np.abs(exp[mask])))
        zn = {hkl_name("", h).strip("()"): zncc(model[i], exp[i], mask[i])
              for i, h in enumerate(self.data.hkl)}
        res = RefinementResult(
            parameters=self.params.copy(), gof=gofv.value, chi2=chi2nu, dof=dof,
            n_used=int(mask.sum()), scale=fit.scale, background=fit.background,
            correlation=corr, covariance=cov, free_names=names, strong_correlations=strong,
            r_factor=r_factor, zncc=zn, history=list(self.history), message=message,
            n_iterations=n_iter, n_solves=self.n_solves,
            elapsed_s=time.perf_counter() - self._t0,
            extra={"model": model, "experiment": exp, "mask": mask,
                   "solver": dict(self.solver_counts)})
        if self.checkpoint is not None:
            # keep the optimiser state: a resume after the end (e.g. a kill during the
            # final write) continues from it instead of restarting the count
            lm = getattr(self, "_lm_final", None)
            lm = lm if lm is not None and lm[0] == names else None
            self._save_checkpoint(names, None if lm is None else lm[1],
                                  None if lm is None else lm[2], final=res)
        return res

    # ------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, names: Sequence[str], x0, st: LMState | None,
                         final: RefinementResult | None = None) -> None:
        if self.checkpoint is None:
            return
        from .checkpoint import write_checkpoint

        write_checkpoint(self.checkpoint, params=self.params, names=list(names),
                         x0=None if x0 is None else list(map(float, x0)),
                         state=None if st is None else st.to_dict(), history=self.history,
                         final=final)

    def _load_checkpoint(self, names: list[str] | None) -> LMState | None:
        if self.checkpoint is None or not self.checkpoint.exists():
            raise InputError("no checkpoint to resume from", source=self.checkpoint)
        from .checkpoint import read_checkpoint

        ck = read_checkpoint(self.checkpoint)
        for n, v in ck["values"].items():
            if n in self.params:
                self.params[n].value = v
        for n, v in ck["scales"].items():  # x = (value − x0)/scale: the scales of the run
            if n in self.params:
                self.params[n].scale = v
        self.history = list(ck["history"])
        if names is None:
            return None
        if ck["names"] != names:
            raise InputError("checkpoint was written for other parameters",
                             source=self.checkpoint, expected=names, found=ck["names"])
        if ck["state"] is None:
            return None
        self._ckpt_x0 = np.asarray(ck["x0"])
        st = LMState.from_dict(ck["state"])
        return st

