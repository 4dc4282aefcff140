"""Physical constants and relativistic electron kinematics.

All constants are CODATA 2018 values (Tiesinga et al., Rev. Mod. Phys. 93,
025010, 2021); h, e and c are exact in the SI since 2019.

Units at the API: accelerating voltage in kV, lengths in Å, wave numbers in
Å⁻¹ *without* a factor 2π (crystallographic convention, k = 1/λ; Spence &
Zuo 1992).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: Planck constant, J s (exact).
PLANCK_H = 6.62607015e-34
#: Elementary charge, C (exact).
ELEMENTARY_CHARGE = 1.602176634e-19
#: Speed of light in vacuum, m/s (exact).
SPEED_OF_LIGHT = 299_792_458.0
#: Electron rest mass, kg.
ELECTRON_MASS = 9.1093837015e-31
#: Electron rest energy, keV.
ELECTRON_REST_ENERGY_KEV = ELECTRON_MASS * SPEED_OF_LIGHT**2 / ELEMENTARY_CHARGE / 1e3
#: Bohr radius, Å.
BOHR_RADIUS = 0.529177210903
#: Mott–Bethe prefactor m0 e² / (8 π ε0 h²) = 1 / (8 π² a0), in Å.
#: f_e(s) = MOTT_BETHE_PREFACTOR · (Z − f_x(s)) / s² with s = sinθ/λ in Å⁻¹
#: (Mott 1930; Bethe 1930; Kirkland 2010, eq. 5.15).
MOTT_BETHE_PREFACTOR = 1.0 / (8.0 * np.pi**2 * BOHR_RADIUS)
#: h² / (2 m0 e) in V Å²: V_g [V] = U_g [Å⁻²] · H2_OVER_2M0E / γ.
H2_OVER_2M0E = PLANCK_H**2 / (2 * ELECTRON_MASS * ELEMENTARY_CHARGE) * 1e20
#: Vacuum electric permittivity ε0, F/m (CODATA 2018).
VACUUM_PERMITTIVITY = 8.8541878128e-12
#: Reduced Planck constant ħ in eV s.
HBAR_EV_S = PLANCK_H / (2 * np.pi) / ELEMENTARY_CHARGE


def relativistic_gamma(voltage_kv: ArrayLike) -> np.ndarray | float:
    """Lorentz factor γ = 1 + eE/(m0 c²) of an electron accelerated through E.

    Parameters
    ----------
    voltage_kv : float or array
        Accelerating voltage in kV.

    Returns
    -------
    float or ndarray
        Dimensionless γ (1.3914 at 200 kV).
    """
    v = np.asarray(voltage_kv, dtype=float)
    out = 1.0 + v / ELECTRON_REST_ENERGY_KEV
    return float(out) if out.ndim == 0 else out


def wavelength(voltage_kv: ArrayLike) -> np.ndarray | float:
    """Relativistic electron wavelength in vacuum.

    λ = h / sqrt(2 m0 e E (1 + eE / 2 m0 c²))   (e.g. Kirkland 2010, eq. 2.5).

    Parameters
    ----------
    voltage_kv : float or array
        Accelerating voltage in kV.

    Returns
    -------
    float or ndarray
        Wavelength in Å (0.0250793 Å at 200 kV).
    """
    v = np.asarray(voltage_kv, dtype=float) * 1e3
    if np.any(v <= 0):
        raise ValueError(f"accelerating voltage must be positive, got {voltage_kv} kV")
    e_j = ELEMENTARY_CHARGE * v
    lam = PLANCK_H / np.sqrt(
        2 * ELECTRON_MASS * e_j * (1 + e_j / (2 * ELECTRON_MASS * SPEED_OF_LIGHT**2))
    )
    out = lam * 1e10
    return float(out) if out.ndim == 0 else out


def wavenumber(voltage_kv: ArrayLike) -> np.ndarray | float:
    """Vacuum wave number k = 1/λ in Å⁻¹ (no 2π)."""
    out = 1.0 / np.asarray(wavelength(voltage_kv))
    return float(out) if out.ndim == 0 else out


def interaction_sigma(voltage_kv: ArrayLike) -> np.ndarray | float:
    """Interaction parameter σ = 2π m e λ / h² in rad V⁻¹ Å⁻¹ (Kirkland 2010, eq. 5.6).

    Provided for users who work with projected potentials; 0.00072884 at 200 kV.
    """
    lam = np.asarray(wavelength(voltage_kv)) * 1e-10
    gam = np.asarray(relativistic_gamma(voltage_kv))
    sig = 2 * np.pi * gam * ELECTRON_MASS * ELEMENTARY_CHARGE * lam / PLANCK_H**2
    out = sig * 1e-10
    return float(out) if out.ndim == 0 else out


def potential_to_u(v_volt: ArrayLike, voltage_kv: float) -> np.ndarray:
    """Convert a potential Fourier coefficient V_g (V) into U_g (Å⁻²).

    U_g = 2 m e V_g / h² with the relativistic mass m = γ m0 (Spence & Zuo 1992, §2.2).
    """
    return np.asarray(v_volt) * relativistic_gamma(voltage_kv) / H2_OVER_2M0E


def u_to_potential(u: ArrayLike, voltage_kv: float) -> np.ndarray:
    """Inverse of :func:`potential_to_u`: V_g in volts from U_g in Å⁻²."""
    return np.asarray(u) * H2_OVER_2M0E / relativistic_gamma(voltage_kv)
