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

The class is assembled from :mod:`.fine_model` (model, residuals, Jacobian),
:mod:`.fine_drivers` (LM, nested), :mod:`.fine_covariance` (covariance, result,
checkpoints) and :mod:`.fine_result` (:class:`RefinementResult`).

After the fit, the covariance of *all* free parameters is (JᵀJ)⁻¹·χ²_ν from
the joint Jacobian at the minimum (linear parameters projected out), giving an
esd for every parameter and the correlation matrix; strongly correlated pairs
(|ρ| > 0.9) are reported and warned about.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..bloch.simulation import Simulation, outputs_index
from ..errors import InputError
from ..experiment.plasmon import PlasmonLosses
from .fine_covariance import _CovarianceMixin
from .fine_drivers import CHEAP_KINDS, _DriversMixin
from .fine_model import _ModelMixin
from .fine_result import RefinementResult
from .gof import GOF, make_gof
from .parameters import (
    Parameter,
    ParameterSet,
    b_iso_parameter,
    cell_parameters,
    check_structural_name,
    coordinate_parameters,
    occupancy_parameter,
    structure_factor_parameters,
    u_aniso_parameters,
)

__all__ = ["CHEAP_KINDS", "Refinement", "RefinementResult"]


class Refinement(_ModelMixin, _DriversMixin, _CovarianceMixin):
    """A fine refinement problem: engine set-up, data, parameters and GOF.

    Parameters
    ----------
    simulation : Simulation
        Engine set-up; every reflection of ``data.hkl`` must be an output beam.
        Analytic structure-factor Jacobians come from either solver mode
        (:mod:`qcbed.bloch.eigen_derivatives`).
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
    plasmon : PlasmonLosses, optional
        Data not energy-filtered: the model adds the plasmon-loss electrons
        (:mod:`qcbed.experiment.plasmon`; t/λ_p from ``thickness`` and the parameter
        ``plasmon.lambda_scale``, λ_p = scale · the model's λ_p); needs ``data.regions``.
    jacobian : {'analytic', 'numeric'}
        Structure-factor derivatives: analytic or central differences.
    checkpoint : path, optional
        File updated after every iteration (state + history); see :meth:`fit`.
    progress : bool
        Show a progress bar.
    model_step : int or 'auto'
        Solve the engine at every ``model_step``-th sample along each axis of the
        data's region grids and interpolate the model to every sample
        (:mod:`qcbed.refine.fine_sampling`). ``'auto'`` (default) takes the largest
        step whose interpolation error shifts no refined parameter by more than
        :data:`~qcbed.refine.fine_sampling.MODEL_STEP_TOL` esd, measured on the
        full grid at the start; the shift is measured again at the optimum, where
        the fit continues on the full grid if it is larger. 1: every sample.
        Data without region grids are always solved at every sample.
    use_symmetry : bool
        Solve only one direction per orbit of the pattern symmetry among the solved
        samples and map the intensities and their derivatives onto the others
        (exact; see :mod:`qcbed.bloch.symmetry`). Used only when the samples are
        closed under an operation (e.g. a region grid made symmetric about the zone
        axis with :func:`qcbed.experiment.symmetric_grid.symmetric_region`) and when
        the potential and every refined structure factor's derivative table are
        invariant under it.
    """

    def __init__(self, simulation: Simulation, data, parameters: ParameterSet | None = None, *,
                 gof: str | GOF = "chi2", background: str = "per_disc",
                 probe: tuple[float, float] | None = None, jacobian: str = "analytic",
                 checkpoint: str | os.PathLike | None = None, progress: bool = False,
                 model_step: int | str = "auto", use_symmetry: bool = True,
                 plasmon: PlasmonLosses | None = None) -> None:
        self.sim0 = simulation
        self.sim = simulation
        self.data = data
        self.params = parameters.copy() if parameters is not None else ParameterSet()
        self.gof = make_gof(gof, background) if isinstance(gof, str) else gof
        self.background = background
        if jacobian not in ("analytic", "numeric"):
            raise InputError("jacobian must be 'analytic' or 'numeric'", found=jacobian)
        self.jacobian = jacobian
        if not (model_step == "auto" or (isinstance(model_step, (int, np.integer))
                                         and not isinstance(model_step, bool)
                                         and model_step >= 1)):
            raise InputError("model_step must be 'auto' or an integer ≥ 1", tag="model_step",
                             found=model_step)
        self.model_step = model_step
        self.use_symmetry = bool(use_symmetry)
        #: step of the model grid in use (1: every sample) and what the last fit measured
        self._model_step = 1
        self.model_step_info: dict = {}
        self._grids: dict = {}
        self._prefetch = False
        #: Levenberg–Marquardt's model Hessian (set by :meth:`fit`)
        self._hessian = "secant"
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
        self.plasmon = plasmon
        if plasmon is not None:
            if not getattr(data, "regions", None):
                raise InputError("the plasmon-loss model needs the data's region grids")
            self.params.add(Parameter("plasmon.lambda_scale", 1.0, "probe", 0.05, 0.05, 20.0,
                                      "", refine=False, target=("plasmon", "lambda_scale")))
        for p in data.sampling_parameters():
            if p.name not in self.params:
                self.params.add(p)
        self._cache_key: tuple | None = None
        self._cache_eig = None
        self.n_solves = 0
        #: what the engine had to do for the directions of the latest solve
        self.solver_counts: dict[str, int] = {}
        #: directions solved and sample directions of the latest solve (symmetry)
        self.symmetry_counts: dict[str, int] = {}
        self.history: list[dict] = []
        self._t0 = 0.0

    # ------------------------------------------------------------ building
    def add_thickness(self, value: float, *, refine: bool = True, scale: float | None = None,
                      lower: float = 1.0, upper: float = 1e5) -> Parameter:
        """Specimen thickness (Å)."""
        return self.params.add(Parameter("thickness", float(value), "thickness",
                                         scale or max(1.0, 0.005 * value), lower, upper, "Å",
                                         refine=refine, target=("thickness",)))

    def add_thickness_gradient(self, *, refine: bool = True, value: tuple[float, float] =
                               (0.0, 0.0), scale: float = 10.0) -> list[Parameter]:
        """``thickness.dkx``, ``thickness.dky``: the thickness across the tilt field (Å per Å⁻¹).

        The thickness a direction sees is t(k_t) = t + dkx·(k_x − k_cx) + dky·(k_y − k_cy),
        with k_t the incident tangential wave vector of the sample (Å⁻¹, zone frame, as
        in the data's ``kt``; not shifted by ``tilt.x/y``) and k_c the centre of the
        set-up's tilt range (``kt_center``, the pivot tilt), so ``thickness`` stays the
        thickness at the centre of the field. This is the first-order model of
        a wedge-shaped specimen under a rocked beam whose pivot point is not on the
        specimen: the illuminated spot moves by ∝ the tilt, so the thickness changes
        linearly with k_t (a displacement d per Å⁻¹ of tilt on a wedge of slope s
        gives d·s). Each direction's Bloch waves are the same as at uniform
        thickness; only the propagation length changes (Spence & Zuo 1992, eq. 2.29),
        so ∂I/∂dkx = k_x ∂I/∂t is analytic and no re-diagonalisation is needed.
        Needs the ``thickness`` parameter.
        """
        out = []
        for ax, v in zip("xy", value):
            out.append(self.params.add(Parameter(f"thickness.dk{ax}", float(v), "thickness",
                                                 scale, -1e5, 1e5, "Å²", refine=refine,
                                                 target=("thickness_gradient", ax))))
        return out

    def add_structure_factor(self, hkl: Iterable[int], *, refine_u: bool = True,
                             refine_uabs: bool = True, refine_phase: bool = False,
                             refine_phase_abs: bool = False,
                             value: complex | None = None, value_abs: complex | None = None
                             ) -> list[Parameter]:
        """U_g and U′_g of one reflection (linked to its symmetry equivalents).

        For centrosymmetric crystals the phase is fixed by the centre of
        symmetry and the signed amplitude is refined; ``refine_phase`` (non-
        centrosymmetric crystals only) adds ``phase(h,k,l)`` (degrees), shared by
        U′_g unless ``refine_phase_abs`` adds U′_g's own ``phase_abs(h,k,l)``
        (started from the phase of the start U′_g; see
        :func:`~qcbed.refine.parameters.structure_factor_parameters`).
        """
        h = tuple(int(x) for x in hkl)
        if (refine_phase or refine_phase_abs) and self.sim.crystal.is_centrosymmetric:
            raise InputError("phases of a centrosymmetric crystal are fixed", tag=str(h),
                             expected="U(h,k,l) or Uabs(h,k,l)",
                             found="phase_abs" if refine_phase_abs else "phase")
        u, ua = self.sim.structure_factor(h)
        if value is not None:
            u = complex(value)
        if value_abs is not None:
            ua = complex(value_abs)
        if self.sim.crystal.is_centrosymmetric or abs(u) == 0:
            phase = self.sim.default_phase(h)
        else:
            phase = float(np.angle(u))
        phase_abs = float(np.angle(ua)) if refine_phase_abs and abs(ua) > 0 else None
        ps = structure_factor_parameters(h, u, ua, phase=phase, refine_u=refine_u,
                                         refine_uabs=refine_uabs, refine_phase=refine_phase,
                                         phase_abs=phase_abs, refine_phase_abs=refine_phase_abs)
        for p in ps:
            self.params.add(p)
        return ps

    def add_b_iso(self, label: str, *, refine: bool = True) -> Parameter:
        """``B(label)``: isotropic Debye–Waller factor B (Å²) of a site."""
        return self.params.add(b_iso_parameter(self.sim.crystal, label, refine=refine))

    def add_coordinates(self, label: str, axes: Iterable[str] | None = None, *,
                        refine: bool = True) -> list[Parameter]:
        """``x(label)``, ``y(label)``, ``z(label)``: free fractional coordinates of a site.

        ``axes`` (``'x'``, ``'y'``, ``'z'``) selects some; default every coordinate the
        site symmetry leaves free. A fixed one raises :class:`InputError` naming the
        free ones (:func:`~qcbed.refine.parameters.coordinate_parameters`).
        """
        ax = None if axes is None else ["xyz".index(a) for a in axes]
        return [self.params.add(p) for p in coordinate_parameters(self.sim.crystal, label, ax,
                                                                   refine=refine)]

    def add_occupancy(self, label: str, *, refine: bool = True) -> Parameter:
        """``occ(label)``: occupancy of a site."""
        return self.params.add(occupancy_parameter(self.sim.crystal, label, refine=refine))

    def add_cell(self, names: Iterable[str] | None = None, *, refine: bool = True
                 ) -> list[Parameter]:
        """``cell.a`` …: the cell parameters independent in the crystal system.

        Every independent one takes part (those not in ``names`` fixed); a dependent
        one in ``names`` (``cell.b`` of a cubic crystal) raises :class:`InputError`.
        """
        want = None if names is None else list(names)
        for n in want or ():
            check_structural_name(self.sim.crystal, "cell", n[5:], n)
        out = []
        for p in cell_parameters(self.sim.crystal):
            if p.name not in self.params:
                p.refine = refine and (want is None or p.name in want)
                out.append(self.params.add(p))
        return out

    def add_voltage(self, *, refine: bool = True) -> Parameter:
        """Accelerating voltage (kV)."""
        v = self.sim.voltage_kv
        return self.params.add(Parameter("voltage", v, "structure", 0.05, v - 5, v + 5, "kV",
                                         refine, ("voltage",)))

    def add_orientation(self, *, refine: bool = True, scale: float = 1e-4) -> list[Parameter]:
        """Orientation: a shift (tilt.x, tilt.y) in Å⁻¹ of every simulated k_t (re-diagonalises)."""
        return [self.params.add(Parameter(f"tilt.{ax}", 0.0, "structure", scale, -0.1, 0.1,
                                          "Å⁻¹", refine, ("tilt", ax))) for ax in "xy"]

    def add_u_aniso(self, label: str, components: Iterable[str] | None = None, *,
                    refine: bool = True) -> list[Parameter]:
        """``U11(label)`` …: anisotropic displacement U^{ij} (Å²) of a site.

        The site symmetry allows only the combinations of U^{ij} invariant under its
        operations (R U Rᵀ = U in the fractional basis; Peterse & Palm 1966;
        International Tables Vol. D §1.2); each independent component gets one
        parameter, the others follow. Started from the site's current U (or
        B_iso/8π² times the metric-isotropic tensor). ``components`` (``'U11'`` …)
        selects the refined ones (all independent ones take part); a dependent one
        raises :class:`InputError` naming the independent ones.
        """
        return [self.params.add(p) for p in u_aniso_parameters(self.sim.crystal, label,
                                                                components, refine=refine)]

    def add_kappa(self, targets: Iterable[str] | str, *, kappa: bool = True, pv: bool = False
                  ) -> list[Parameter]:
        """κ and P_v (kappa charge-density model, Coppens 1997) of sites or elements.

        Needs the set-up's potential to use the ``'kappa'`` elastic model; see
        :func:`~qcbed.refine.parameters.kappa_parameters`.
        """
        from .parameters import kappa_parameters

        names = [targets] if isinstance(targets, str) else list(targets)
        return [self.params.add(p) for p in kappa_parameters(self.sim.crystal, self.sim.potential,
                                                              names, kappa=kappa, pv=pv)]

    def add(self, parameter: Parameter) -> Parameter:
        """Add any parameter (e.g. from :func:`~qcbed.refine.parameters.cell_parameters`)."""
        return self.params.add(parameter)
