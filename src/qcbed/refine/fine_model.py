"""The fine-refinement model: structure updates, engine solves, probe convolution and
plasmon losses, GOF,
residuals and their Jacobian (analytic for U_g, U′_g, thickness and probe; central
differences otherwise)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .._core.hkl import hkl_name
from ..bloch.symmetry import SymmetryReduction, reduce_grid
from ..errors import InputError, QcbedError
from .fine_sampling import ModelGrid
from .gof import GOFValue, count_copies_once, linear_fit
from .parameters import (
    Parameter,
    apply_cell,
)
from .plasmon import plasmon_losses
from .probe import convolve_probe


class _ModelMixin:
    """Part of :class:`~qcbed.refine.fine.Refinement` (see there)."""

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
                 if p.target[0] not in ("U", "Uabs", "phase", "phase_abs", "tilt")]
        crystal = self.sim0.crystal
        voltage = None
        potential = None
        kappa_values: dict[str, dict[str, float]] = {}
        if other:
            sites = list(crystal.sites)
            cell: dict[str, float] = {}
            aniso: dict[int, np.ndarray] = {}
            system = ""
            for p in other:
                kind = p.target[0]
                if kind == "B":
                    i = p.target[1]
                    sites[i] = replace(sites[i], b_iso=p.value)
                elif kind == "occ":
                    i = p.target[1]
                    sites[i] = replace(sites[i], occupancy=p.value)
                elif kind == "xyz":  # value: the free coordinate, started at target[3]
                    i, vec = p.target[1], np.asarray(p.target[2])
                    move = (p.value - p.target[3]) * vec
                    sites[i] = replace(sites[i], xyz=tuple(np.asarray(sites[i].xyz) + move))
                elif kind == "cell":
                    cell[p.target[1]] = p.value
                    system = p.target[2]
                elif kind == "voltage":
                    voltage = p.value
                elif kind == "Uaniso":
                    i = p.target[1]
                    aniso[i] = aniso.get(i, np.zeros((3, 3))) + p.value * np.asarray(p.target[2])
                elif kind in ("kappa", "Pv"):
                    kappa_values.setdefault(p.target[1], {})[kind] = p.value
            for i, u in aniso.items():  # U = Σ_k c_k (allowed tensor)_k
                sites[i] = replace(sites[i], u_aniso=u)
            crystal = crystal.replace(sites=sites)
            if cell:
                crystal = apply_cell(crystal, cell, system)
            if kappa_values:
                potential = self.sim0.potential.with_kappa(kappa_values)
        key = tuple(round(p.value, 15) for p in other)
        cached = getattr(self, "_work", None)
        if cached is None or cached[0] != key:
            # a working copy of the set-up (same pool); rebuilt only when the crystal or
            # the voltage change, U_g updates are applied to it in place (a few rows)
            self._work = (key, self.sim0.with_changes(crystal=crystal, voltage_kv=voltage,
                                                      potential=potential)
                          if other else self.sim0.with_changes())
        self.sim = self._work[1]
        values: dict[tuple, tuple[complex, complex]] = {}
        for p in self._struct_params():
            if p.target[0] not in ("U", "Uabs"):
                continue
            h = p.target[1]
            ph = self._phase_of(p)
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

    def _u_derivative_names(self) -> list[str]:
        """Free structure factors whose derivatives the engine stores (analytic)."""
        if self.jacobian != "analytic":
            return []
        return [p.name for p in self.params.free
                if p.kind == "structure" and p.target[0] in ("U", "Uabs")]

    def _phase_of(self, p: Parameter) -> float:
        """Current phase (radians) of a ``U``/``Uabs`` parameter's reflection.

        U_g follows ``phase(h,k,l)``; U′_g follows ``phase_abs(h,k,l)`` when present,
        otherwise it shares ``phase(h,k,l)``; without either the start phase stays.
        """
        h = p.target[1]
        names = ["phase_abs", "phase"] if p.target[0] == "Uabs" else ["phase"]
        for n in names:
            key = hkl_name(n, h)
            if key in self.params:
                return float(np.radians(self.params[key].value))
        return float(p.target[2])

    def _u_derivative_tables(self) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        ps = [p for p in self.params.free if p.kind == "structure" and p.target[0] in ("U",
                                                                                      "Uabs")]
        if not ps or self.jacobian != "analytic":
            return None
        m = len(self.sim.table.hkl)
        du = np.zeros((len(ps), m), complex)
        dua = np.zeros((len(ps), m), complex)
        for k, p in enumerate(ps):
            coef = self.sim.sf_coefficients(p.target[1], phase=self._phase_of(p))
            (du if p.target[0] == "U" else dua)[k] = coef
        return [p.name for p in ps], du, dua

    def _model_grid(self) -> ModelGrid:
        """The samples the engine solves at the current model step (cached per step)."""
        step = self._model_step
        grid = self._grids.get(step)
        if grid is None:
            grid = ModelGrid.build(len(self.data.kt), getattr(self.data, "regions", None),
                                   step)
            self._grids[step] = grid
        return grid

    def _eigen(self, with_derivatives: bool):
        # derivatives are stored only when a structure factor is free: without one the
        # solution without derivatives serves a Jacobian too (no re-diagonalisation);
        # during LM trial steps they are computed ahead (an accepted step needs them)
        with_derivatives = (with_derivatives or self._prefetch) and \
            self._u_derivative_names() != []
        key = (self._struct_key(), with_derivatives, self._model_step)
        ck = self._cache_key
        if ck is not None and ck[0] == key[0] and (ck[1] or not with_derivatives):
            if ck[2] == key[2]:
                return self._cache_eig
            if ck[2] == 1:  # a coarser model grid: a subset of the full solution
                eig, names, red = self._cache_eig
                solve = self._model_grid().solve
                if red is None:
                    return eig.take(solve), names, None
                return eig, names, replace(red, source=red.source[solve], op=red.op[solve])
        self._apply_structure()
        deriv = self._u_derivative_tables() if with_derivatives else None
        pts = self.data.kt[self._model_grid().solve] + self._tilt()
        red = self._symmetry(pts, deriv)
        eig = self.sim.solve_eigen(pts if red is None else pts[red.representatives],
                                   None if deriv is None else deriv[1:])
        self.n_solves += 1
        self.solver_counts = {"directions": eig.n_dir, "exact_fallback": eig.n_fallback,
                              "rejected": eig.n_rejected, "clustered": eig.n_clustered}
        self.symmetry_counts = {"solved": eig.n_dir, "samples": len(pts),
                                "operations": 1 if red is None else red.n_ops}
        self._cache_key = (self._struct_key(), deriv is not None, self._model_step)
        self._cache_eig = (eig, None if deriv is None else deriv[0], red)
        return self._cache_eig

    def _symmetry(self, pts: np.ndarray, deriv) -> SymmetryReduction | None:
        """Orbits of the solved directions ``pts`` under the pattern symmetry, or None.

        Exact (:mod:`qcbed.bloch.symmetry`): an operation is used only when it maps
        sample directions onto sample directions (checked on ``pts`` themselves, tilt
        included) and leaves the potential and — with derivatives — every refined
        structure factor's coefficient tables ∂U/∂p, ∂U′/∂p invariant; then
        I_h(k_t S) = I_{hR⁻¹}(k_t) holds for all parameter values near the current
        ones, and so does its derivative. A per-direction thickness
        (``thickness_gradient``) breaks it: no reduction then.
        """
        if not self.use_symmetry or len(pts) < 2 or any(
                p.target and p.target[0] == "thickness_gradient" for p in self.params):
            return None
        tables = () if deriv is None else (*deriv[1], *deriv[2])
        ops = self.sim.pattern_symmetry(tables)
        if len(ops) < 2:
            return None
        step = float(np.min(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
        red = reduce_grid(pts, ops, self.sim.outputs, 1e-6 * max(step, 1e-12))
        return red if len(red.representatives) < len(pts) else None

    def _thickness(self) -> tuple[float | np.ndarray, dict[str, np.ndarray]]:
        """The thickness of the solved directions and the k_t that multiply its gradients.

        Without ``thickness.dkx``/``dky`` one value (Å); with them t + dkx·Δk_x + dky·Δk_y
        per solved direction (Å) and {name: Δk_x or Δk_y}, Δk_t = k_t − k_c (Å⁻¹) the
        data's k_t from the centre k_c of the set-up's tilt range (``kt_center``).
        """
        t = self.params["thickness"].value
        gps = [p for p in self.params if p.target and p.target[0] == "thickness_gradient"]
        if not gps:
            return t, {}
        kc = np.asarray(self.sim0.pool_settings["kt_center"], dtype=float)
        kt = self.data.kt[self._model_grid().solve] - kc
        ks = {p.name: kt[:, "xy".index(p.target[1])] for p in gps}
        tt = t + sum(p.value * ks[p.name] for p in gps)
        if np.any(tt <= 0):
            raise QcbedError(f"the thickness gradient makes the thickness ≤ 0 "
                             f"(min {float(np.min(tt)):.1f} Å)")
        return tt, {p.name: ks[p.name] for p in gps if p.refine}

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
        t, kt_grad = self._thickness()
        eig, names, red = self._eigen(with_derivatives=gradients)
        full = (lambda v: v) if red is None else red.expand  # orbits → every direction
        grads: dict[str, np.ndarray] = {}
        if gradients:
            want_sf = need is None or bool(set(names or []) & need)
            inten, d_p, d_t = eig.gradients(t, structure=want_sf)
            inten = full(inten)[:, self.out_idx].T
            grads["thickness"] = full(d_t)[:, self.out_idx].T
            for name, k in kt_grad.items():   # ∂I/∂(dk) = k ∂I/∂t
                grads[name] = grads["thickness"] * k[None, :]
            if want_sf:
                for k, name in enumerate(names or []):
                    grads[name] = full(d_p[:, k])[:, self.out_idx].T
        elif np.ndim(t):  # a thickness per direction: no symmetry reduction (_symmetry)
            inten = full(eig.intensities_per_direction(t))[:, self.out_idx].T
        else:
            inten = full(eig.intensities([t])[0])[:, self.out_idx].T
        grid = self._model_grid()
        if not grid.trivial:  # interpolate to every sample (linear: the Jacobian too)
            inten = grid.expand(inten)
            grads = {k: grid.expand(v) for k, v in grads.items()}
        probe = self._probe_values()
        if probe is not None:
            inten = self._convolve(inten, probe, grads if gradients else None)
        if getattr(self, "plasmon", None) is not None:
            inten = plasmon_losses(self, inten, grads if gradients else None)
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
                conv, ds, dg = convolve_probe(img, probe[0], probe[1], derivatives=True,
                                              spacing=reg.spacing)
                conv_grads["probe.sigma"][:, sl] = ds.reshape(n, -1)
                conv_grads["probe.gamma"][:, sl] = dg.reshape(n, -1)
                for k, g in grads.items():
                    gi = g[:, sl].reshape(-1, *reg.shape)
                    conv_grads[k][:, sl] = convolve_probe(
                        gi, *probe, spacing=reg.spacing).reshape(n, -1)
            else:
                conv = convolve_probe(img, *probe, spacing=reg.spacing)
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

    def _copies(self) -> np.ndarray | None:
        """Images per copy group of every compared reflection (None: all independent).

        Data objects say so with a ``multiplicity`` attribute (the ROI of a
        symmetrised stack: :func:`qcbed.experiment.copy_groups`)."""
        m = getattr(self.data, "multiplicity", None)
        if m is None:
            return None
        m = np.asarray(m, float)
        return None if np.all(m == 1) else m

    def _n_samples(self, mask: np.ndarray) -> int:
        """Samples in ``mask`` with copied images counted once (the χ² degrees of freedom)."""
        return count_copies_once(np.ones(np.shape(mask)), mask, self._copies())[1]

    def _sampling_values(self) -> dict[str, float]:
        return {p.name: p.value for p in self.params if p.kind == "sampling"}

    def evaluate(self) -> GOFValue:
        """The GOF at the current parameter values."""
        sim = self.simulate()
        exp, var, valid = self.data.sample(self._sampling_values())
        mask = self._compare_mask(valid, sim)
        return self.gof(sim, exp, var, mask, self.disc, n_params=len(self.params.free),
                        copies=self._copies())

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
        var, _n = count_copies_once(var, mask, self._copies())
        fit = linear_fit(sim, exp, var, mask, self.disc, self.background)
        if not with_jac:
            return fit.residuals, None, fit, mask
        w = 1.0 / np.sqrt(var[mask])
        # Variable projection (Golub & Pereyra 1973): with X the weighted design, β its
        # least-squares coefficients and r = Xβ − y, ∂r/∂p = P⊥ (∂X/∂p) β − X⁺ᵀ (∂X/∂p)ᵀ r.
        # Only X's first column (c's) depends on p, so the second term is
        # −X (XᵀX)⁻¹ e₀ · (w ∂I/∂p)·r.
        # (P⊥ and X (XᵀX)⁻¹ e₀ from the fit's block structure: LinearFit.project_out)
        u0 = fit.scale_functional
        jac = np.zeros((len(fit.residuals), len(names)))
        numeric = []
        for k, name in enumerate(names):
            if name in grads:
                d = grads[name][mask] * w
                jac[:, k] = fit.project_out(fit.scale * d) - u0 * float(d @ fit.residuals)
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

