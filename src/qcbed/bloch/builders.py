"""What a PyExtal ``.dat`` file or a Felix folder says about a simulation: a recipe.

:func:`dat_recipe` and :func:`felix_recipe` translate an input file into the
arguments of :class:`~qcbed.bloch.simulation.Simulation` (a
:class:`SimulationRecipe`); :meth:`Simulation.from_dat` and
:meth:`Simulation.from_felix` build from it. This module does not import the
simulation (the simulation imports it).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import potential_to_u, wavenumber
from ..errors import InputError
from ..io.dat import read_dat
from ..io.felix import FelixInput, read_felix
from ..scattering.structure_factors import PotentialModel
from .beams import BeamSelection
from .geometry import ZoneFrame
from .grids import TiltGrid


@dataclass
class SetupDefaults:
    """What an input file says about the pattern to compute.

    Attributes
    ----------
    grid : TiltGrid
        The tilt net: the CBED disc of ``conv``/``samp`` (``.dat``) or the Felix image grid.
    thickness : ndarray
        Thickness(es) in Å (Felix scan; the ``.dat`` format has none).
    kind : str
        ``'cbed'`` or ``'lacbed'``.
    source : Path
    """

    grid: TiltGrid
    thickness: np.ndarray
    kind: str
    source: Path


@dataclass
class SimulationRecipe:
    """Arguments of a :class:`~qcbed.bloch.simulation.Simulation` read from an input file.

    Attributes
    ----------
    args : tuple
        (crystal, voltage_kv, zone, x_axis).
    kwargs : dict
        Keyword arguments of the constructor.
    structure_factors : dict
        hkl → (U, U′) (Å⁻², user's origin) to set after construction.
    defaults : SetupDefaults
    felix : FelixInput or None
        The parsed ``felix.inp`` (Felix folders only).
    location : Location or None
        The input file, its line numbers and its keys, to name them in errors.
    """

    args: tuple
    kwargs: dict[str, Any]
    structure_factors: dict[tuple[int, int, int], tuple[complex, complex]]
    defaults: SetupDefaults
    felix: FelixInput | None = None
    location: Location | None = None


@dataclass(frozen=True)
class Location:
    """Where the settings of a recipe were read: errors of the engine name the file,
    the line and the file's own key (``x_direction`` in Felix for the engine's ``xaxis``).

    Attributes
    ----------
    source : Path
        The file.
    lines : dict
        Key of the file → 1-based line.
    keys : dict
        Engine tag (``xaxis``, ``gmax``, ``samp``…) → key of the file.
    """

    source: Path
    lines: dict[str, int]
    keys: dict[str, str]

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Re-raise InputErrors without a source naming the file, line and key."""
        try:
            yield
        except InputError as exc:
            if exc.source is not None:
                raise
            tag = exc.tag or ""
            key = self.keys.get(tag.split("[")[0])
            if key is None and tag.startswith(("U(", "Uabs(")):
                key = self.keys.get("U(h,k,l)")
            if key is None:
                raise
            where = key if tag in self.keys else f"{key} / {tag}"
            raise InputError(exc.reason, source=self.source, line=self.lines.get(key),
                             tag=where, expected=exc.expected, found=exc.found) from None

    def warn(self, caught: list) -> None:
        """Re-emit recorded warnings, naming the line of the setting they are about."""
        for w in caught:
            text = str(w.message)
            key = None
            if text.startswith("the absorptive potential is unphysical"):
                key = self.keys.get("u_abs0")
            elif text.startswith("U("):
                key = self.keys.get("U(h,k,l)")
            if key is not None and key in self.lines:
                text = f"{self.source}:{self.lines[key]} [{key}]: {text}"
            warnings.warn(text, w.category, stacklevel=4)


def dat_recipe(path: str | os.PathLike, *, potential: PotentialModel | None = None,
               mode: str = "fast", **overrides: Any) -> SimulationRecipe:
    """Simulation arguments from a PyExtal/EMAPS ``.dat`` file.

    Mapping (pyextal-notes §1.2): ``hv`` → voltage; ``zone``/``norm``/``xaxis`` →
    frame; ``kt`` (reciprocal components) → centre of the tilt net; ``hkl`` →
    explicit pool, or ``sele sgmax gmax`` → automatic pool with smax = sgmax/2K;
    ``sgmin``/``omeg``/``sgmax`` → :class:`BeamSelection`; ``aper``/``out`` →
    outputs; ``v0`` → mean inner potential (V); ``abs`` → U′₀ (given in V);
    ``adj`` → structure factors (converted from PyExtal's convention);
    ``conv``/``samp`` → the CBED net, attached as ``sim.defaults.grid``. The
    scattering factors default to PyExtal's: Mott–Bethe from the X-ray tables
    with Bird–King absorption.
    """
    dat = read_dat(path)
    if dat.x_axis is None:
        raise InputError("the .dat file has no 'xaxis' line", source=dat.source, tag="xaxis")
    potential = potential or PotentialModel("xray_mott_bethe", "bird_king")
    # the file's thresholds are honoured; without them the engine chooses them
    sel = None
    if dat.sgmin is not None or dat.omeg is not None:
        sel = BeamSelection(sgmin=0.3 if dat.sgmin is None else dat.sgmin,
                            omega=dat.omeg, sgmax=dat.sgmax)
    kw: dict[str, Any] = dict(normal=dat.surface_normal, potential=potential, selection=sel,
                              mode=mode)
    if dat.v0 is not None:
        kw["v0"] = dat.v0
    if dat.absorption is not None:
        kw["u_abs0"] = float(potential_to_u(dat.absorption, dat.voltage_kv))
    if dat.out_hkl is not None and len(dat.out_hkl):
        kw["outputs"] = dat.out_hkl
    elif dat.aperture is not None:
        kw["aperture"] = dat.aperture
    gx = float(dat.crystal.lattice.g_length(dat.x_axis))
    conv = dat.convergence if dat.convergence is not None else 0.5
    samp = dat.samp if dat.samp is not None else 20
    if dat.hkl is not None:
        kw["pool"] = dat.hkl
    else:
        if dat.sele is None:
            raise InputError("the .dat file needs an 'hkl' list or a 'sele' line",
                             source=dat.source, tag="hkl/sele")
        sg2k, gmax = dat.sele[0], dat.sele[1]
        kw.update(gmax=gmax, smax=sg2k / (2 * wavenumber(dat.voltage_kv)),
                  kt_radius=conv * gx)
    kw.update(overrides)
    keys = {"zone": "zone", "xaxis": "xaxis", "norm": "norm" if dat.normal is not None
            else "zone", "sgmin": "sgmin", "omeg": "omeg", "sgmax": "sgmax",
            "voltage_kv": "hv", "gmax": "sele", "smax": "sele", "kt_radius": "conv",
            "kt_center": "kt", "pool": "hkl", "outputs": "out", "u_abs0": "abs", "v0": "v0",
            "aperture": "aper", "samp": "samp", "disc radius": "conv", "U(h,k,l)": "adj"}
    where = Location(dat.source, dict(dat.lines),
                     {k: v for k, v in keys.items() if k not in overrides})
    with where.errors():
        frame = ZoneFrame(dat.crystal.lattice, tuple(dat.zone), tuple(dat.x_axis),
                          tuple(dat.surface_normal))
        kt0 = frame.kt_from_reciprocal(dat.kt)
        grid = TiltGrid.disc(kt0, conv * gx, samp)
    if "pool" not in kw:
        kw.setdefault("kt_center", kt0)
    hkl, u, ua = dat.adjustments_qcbed()
    sf = {(int(h[0]), int(h[1]), int(h[2])): (complex(a), complex(b))
          for h, a, b in zip(hkl, u, ua)}
    defaults = SetupDefaults(grid=grid, thickness=np.array([1000.0]), kind="cbed",
                             source=dat.source)
    return SimulationRecipe((dat.crystal, dat.voltage_kv, dat.zone, dat.x_axis), kw, sf,
                            defaults, location=where)


def felix_recipe(folder: str | os.PathLike, *, potential: PotentialModel | None = None,
                 selection: BeamSelection | None = None, mode: str = "fast",
                 gmax: float | None = None, smax: float | None = None,
                 holz: bool | None = None, **overrides: Any) -> SimulationRecipe:
    """Simulation arguments from a Felix input folder (``felix.inp``, ``felix.cif``, ``felix.hkl``).

    The frame is qcbed's: zone = −``incident_beam_direction`` (Felix's beam travels
    along that vector; qcbed's zone points to the source), normal = −``normal``, x =
    ``x_direction``; outputs are 000 + ``felix.hkl``; the tilt grid is Felix's
    image grid (``TiltGrid.felix``: 2R × 2R pixels of Δ = convergence/R Å⁻¹, in
    the orientation of Felix's images, pixel for pixel). Scattering factors and
    absorption follow ``scatter_factor_method``/``absorption_method`` (Felix's
    kappa models 4/5 have no qcbed equivalent: Kirkland with a warning).

    The beam pool is automatic over the whole image (|g| ≤ gmax, |S_g| ≤ smax,
    grown to ``min_reflection_pool``); HOLZ beams are included unless
    ``holz=False`` (default: included, as real-data simulations need them —
    Felix's own ``holz_flag`` is recorded in ``sim.defaults``).

    Unless ``selection`` or ``smax`` are given, the engine chooses the strong-beam
    thresholds and grows the pool for its ``accuracy`` (default 10⁻³, checked at
    every thickness of ``felix.inp``'s scan, those the folder's images are simulated
    at); Felix's ``min_strong_beams`` is kept as a
    floor on the strong beams and ``min_reflection_pool`` as a floor on the pool.
    """
    fx = read_felix(folder)
    if potential is None:
        elastic = fx.scattering_factors or "kirkland"
        absn = fx.absorption or "bird_king"
        xi = fx.absorption_xi if fx.absorption_xi is not None else 0.1
        potential = PotentialModel(elastic, absn, xi=xi)
    radius = fx.convergence_angle * np.sqrt(2.0)
    if gmax is None:
        gmax = fx.g_limit if fx.g_limit else 3.0
    kw: dict[str, Any] = dict(normal=fx.zone_normal, potential=potential, selection=selection,
                              mode=mode, gmax=gmax, smax=smax,
                              holz=True if holz is None else holz, kt_radius=radius,
                              min_pool=int(fx.min_reflection_pool or 0), outputs=fx.hkl,
                              min_strong=int(fx.min_strong_beams or 0),
                              check_thickness=np.asarray(fx.thicknesses, float))
    kw.update(overrides)
    if fx.holz_flag == 0 and holz is None:
        warnings.warn("felix.inp has holz_flag = 0; qcbed includes HOLZ beams by default "
                      "(pass holz=False for a ZOLZ-only calculation)", UserWarning,
                      stacklevel=3)
    keys = {"zone": "incident_beam_direction", "xaxis": "x_direction", "norm": "normal",
            "voltage_kv": "accelerating_voltage_kv", "gmax": "g_limit",
            "min_pool": "min_reflection_pool", "image_radius": "image_radius",
            "convergence_angle": "convergence_angle", "kt_radius": "convergence_angle"}
    where = Location(fx.source / "felix.inp", {k.lower(): n for k, n in fx.lines.items()},
                     {k: v for k, v in keys.items() if k not in overrides})
    with where.errors():
        grid = TiltGrid.felix(fx.convergence_angle, fx.image_radius)
    defaults = SetupDefaults(grid=grid, thickness=np.asarray(fx.thicknesses, float),
                             kind="lacbed", source=Path(folder))
    return SimulationRecipe((fx.crystal, fx.accelerating_voltage_kv, fx.zone,
                             fx.x_direction), kw, {}, defaults, fx, location=where)
