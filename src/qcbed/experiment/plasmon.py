"""Plasmon-loss electrons in patterns that are not energy-filtered.

Without an energy filter the detector counts, besides the elastically scattered
electrons, those that excited one or more bulk plasmons on their way through the
specimen. A plasmon scatters by small angles only, so after it the electron
diffracts like an elastic one whose incident direction was turned by θ: on the k_t
grid of a (LA)CBED pattern its contribution is the elastic pattern convolved with
the single-scattering angular distribution K (Egerton 2011, §3.3 and §4.1; the
same convolution picture underlies the angular Fourier-log relations of §4.3).

Model (per image, on the ROI's k_t grid; τ = t/λ_p)::

    I_meas = Σ_n P_n(τ) I_el ⊗ K^{⊗n},   P_n = τⁿ e^{−τ}/n!   (Poisson statistics of
    independent scattering events; Egerton 2011, §3.4, plural scattering)

with K the Lorentzian angular distribution of the Drude (free-electron) plasmon
cross-section, normalised to 1 over the disc θ ≤ θ_c (Egerton 2011, §3.3.1–3.3.2)::

    K(θ) = 1 / (π L (θ² + θ_E²)),   θ ≤ θ_c,   L = ln(1 + θ_c²/θ_E²),
    θ_E = E_p / (γ m₀ v²)            (characteristic angle, Egerton 2011 §3.3.1),
    θ_c = (2 θ_E)^{1/2}              (plasmon cut-off, the estimate θ_c ≈ (E_p/E₀)^{1/2}
                                      of Egerton §3.3.1 with the relativistic θ_E;
                                      give it when known),
    1/λ_p = (θ_E / 2a₀) ln(1 + θ_c²/θ_E²)   (the Drude cross-section dσ/dΩ ∝
                                      θ_E/(θ² + θ_E²)/(2π a₀) integrated to θ_c;
                                      Egerton 2011 §3.3.1, λ_p ≈ a₀/(θ_E ln(θ_c/θ_E))),

θ converted to k_t by the beam's K = 1/λ (Å⁻¹). In Fourier space the Poisson sum
is closed: with Ĥ₁ the transform of K (Ĥ₁(0) = 1),

    Î_meas = Î_el · exp(τ (Ĥ₁ − 1)),   ∂/∂τ: Î_el (Ĥ₁ − 1) exp(τ (Ĥ₁ − 1)),

and Ĥ₁ is the Hankel transform of the isotropic K,

    Ĥ₁(q) = (2/L) ∫₀^{θ_c} J₀(2π q θ) θ dθ / (θ² + θ_E²)
          = (1/L) ∫_{ln θ_E²}^{ln(θ_c² + θ_E²)} J₀(2π q (eˢ − θ_E²)^{1/2}) ds,

computed by composite Gauss–Legendre quadrature in s (for θ_c → ∞ the unnormalised
integral is K₀(2π q θ_E), Gradshteyn & Ryzhik 6.532.4; the tests compare with it).
The convolution is linear: the Jacobian columns of the elastic model get the same
transfer; thickness also acts through τ (∂τ/∂t = 1/λ_p).

The transfer conserves the total (Ĥ(0) = 1): every electron stays in the pattern
(the data are not energy-filtered) and only moves; the refined scale absorbs any
overall loss.

Acceptance. A detector pixel records a loss electron as the pattern at k only if it
stays in the recorded field: in a digital (D-)LACBED image (Beanland et al. 2013,
Acta Cryst. A69, 427) every pixel comes from one CBED pattern of a rocked series, and
an electron incident in that pattern's probe cone that is turned by q lands at
another pixel of the *same* disc only for |q| below the disc's angular radius θ_a;
beyond, it leaves the disc (a gap, or another reflection's disc: a diffuse
background there) and is not part of the convolution. Discs that do not overlap
have θ_a ≤ |g_min|/(2K); discs overlapping at their rims, stitched from their
centres only, can be larger. With ``acceptance_mrad`` the kernel
is K(θ) as above (normalised over θ_c, so that λ_p stays the total plasmon mean free
path) cut at θ_a < θ_c: Ĥ_a(0) = f_a = ln(1 + θ_a²/θ_E²)/L < 1, i.e.

    Î_meas = Î_el · exp(τ (Ĥ_a − 1)),   Ĥ_a(q) = (1/L) ∫_{ln θ_E²}^{ln(θ_a² + θ_E²)} … ds,

the fraction e^{−τ(1 − f_a)} of the electrons leaving the field (absorbed by the
refined scale). For Drude λ_p this is identical, up to that constant factor, to a
cut-off θ_c = θ_a with the Drude λ_p of θ_a (λ_p⁰·L/ln(1 + θ_a²/θ_E²)): the
exponent is the same. The central peak of K is far narrower than a pixel at 200 kV
(θ_E ≈ 0.05 mrad) while its tail reaches θ_c ≈ 10 mrad (tens of pixels), so the
images are extended by mirror reflection at their edges by θ_c before the
(periodic) FFT convolution: the far tail then sees a reflected copy of the pattern
instead of the opposite edge.

E_p: given, or the free-electron value E_p = ħ (n e²/(ε₀ m₀))^{1/2} with n the density
of valence electrons of the crystal (Egerton 2011, eq. 3.41; s–p-bonded materials:
Si 16.6 eV free-electron, 16.7 eV measured, Egerton Table 3.2). Elements with
partly filled d or f shells have no such value; :func:`estimated_plasmon_energy`
then counts their electrons outside the noble-gas core (:func:`outer_electrons`:
the s and d electrons, the usual valence-electron count of transition-metal
compounds) and says that the value is an estimate — the free-electron model is only
approximate for them (Egerton 2011, §3.3.1: d electrons damp and shift the plasmon),
so a measured E_p should replace it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from ..constants import (
    BOHR_RADIUS,
    ELECTRON_MASS,
    ELECTRON_REST_ENERGY_KEV,
    ELEMENTARY_CHARGE,
    HBAR_EV_S,
    VACUUM_PERMITTIVITY,
    relativistic_gamma,
    wavenumber,
)
from ..errors import InputError
from .grids import frequencies_squared

__all__ = ["PlasmonLosses", "estimated_plasmon_energy", "free_electron_plasmon_energy",
           "outer_electrons", "valence_electrons"]

#: Gauss–Legendre nodes per panel of the Hankel quadrature.
_GL_NODES = 16


def valence_electrons(z: int) -> int | None:
    """Outer-shell (s + p) electrons of element ``z`` that form the free-electron gas,
    or None for elements with partly filled d or f shells (transition metals,
    lanthanides, actinides), whose plasmon energy the free-electron model does not
    give (Egerton 2011, §3.3.1). Main groups 1–2 and 12–18 of the periodic table."""
    z = int(z)
    if z < 1:
        raise InputError("atomic number must be ≥ 1", found=z)
    if z <= 2:
        return z
    for start, end in ((3, 10), (11, 18)):  # periods 2 and 3: no d shell
        if start <= z <= end:
            return z - start + 1
    # periods 4–7: groups 1, 2 then (after the d/f block) 12 … 18
    for first, d_start, group12 in ((19, 21, 30), (37, 39, 48), (55, 57, 80), (87, 89, 112)):
        if z in (first, first + 1):
            return z - first + 1
        if group12 <= z <= group12 + 6:
            return 2 + (z - group12)
        if d_start <= z < group12:
            return None
    return None


#: Each d-block row: (first element after the s block or the f block, its group, the
#: row's group-12 element): Sc…Cu, Y…Ag, Hf…Au, Rf…Rg.
_D_ROWS = ((21, 3, 30), (39, 3, 48), (72, 4, 80), (104, 4, 112))


def outer_electrons(z: int) -> int:
    """Electrons of element ``z`` outside its noble-gas core, f electrons excepted:
    :func:`valence_electrons` for the main groups; the group number (s + d electrons,
    Ti 4, Nb 5, Ni 10) for the d block; the metallic valence 3 for the lanthanides and
    actinides (La–Lu, Ac–Lr; Eu and Yb 2). The count behind the usual
    valence-electron numbers of transition-metal compounds (e.g. the 18 of a
    half-Heusler TiNiSn); a free-electron plasmon energy from it is an estimate."""
    v = valence_electrons(z)
    if v is not None:
        return v
    z = int(z)
    for first, group, group12 in _D_ROWS:
        if first <= z < group12:
            return z - first + group
    if z in (63, 70):                             # Eu, Yb: divalent
        return 2
    return 3                                      # La–Lu, Ac–Lr


def _free_electron_energy(n_per_a3: float) -> float:
    """ħ ω_p (eV) of an electron gas of ``n_per_a3`` electrons per Å³."""
    n = n_per_a3 * 1e30
    return float(HBAR_EV_S * np.sqrt(n * ELEMENTARY_CHARGE**2
                                     / (VACUUM_PERMITTIVITY * ELECTRON_MASS)))


def free_electron_plasmon_energy(crystal) -> float:
    """Free-electron bulk plasmon energy E_p (eV) of a crystal (Egerton 2011, eq. 3.41).

    n = Σ (valence electrons × occupancy) over the unit cell / cell volume; the
    valence electrons are those of :func:`valence_electrons` (silicon: 8 atoms × 4
    electrons in 160.2 Å³ → 16.6 eV).

    Raises
    ------
    InputError
        An element with a partly filled d or f shell: the free-electron value does not
        apply; give the measured E_p.
    """
    e, estimated = estimated_plasmon_energy(crystal)
    if estimated:
        raise InputError("no free-electron plasmon energy for an element with a partly "
                         "filled d or f shell", tag="plasmon_energy_ev",
                         expected="the measured plasmon energy (eV) in "
                                  "data.plasmon_energy_ev", found=estimated[0])
    return e


def estimated_plasmon_energy(crystal) -> tuple[float, list[str]]:
    """E_p (eV) of a crystal and the elements whose electrons were estimated.

    The free-electron value (:func:`free_electron_plasmon_energy`) where every element
    has a closed or empty d and f shell (the list is then empty); otherwise the same
    formula with :func:`outer_electrons` for the d- and f-block elements, which are
    listed: an estimate (Egerton 2011, §3.3.1), to be replaced by a measured E_p.
    LiNbO₃ (6 × (1 + 5 + 3·6) electrons in 318 Å³): 25.0 eV.
    """
    from ..crystal.structure import atomic_number

    atoms = crystal.atoms
    n = 0.0
    estimated: list[str] = []
    for el, occ in zip(atoms.elements, atoms.occupancy):
        z = atomic_number(el)
        if valence_electrons(z) is None and el not in estimated:
            estimated.append(el)
        n += outer_electrons(z) * float(occ)
    return _free_electron_energy(n / crystal.lattice.volume), estimated


def _beam_energy_factor(voltage_kv: float) -> float:
    """γ m₀ v² in eV (= 2γT, T = m₀v²/2) of electrons accelerated through ``voltage_kv``."""
    g = float(relativistic_gamma(voltage_kv))
    beta2 = 1.0 - 1.0 / g**2
    return g * ELECTRON_REST_ENERGY_KEV * 1e3 * beta2


@dataclass(frozen=True)
class PlasmonLosses:
    """The plasmon-loss transfer of a pattern that is not energy-filtered.

    Parameters
    ----------
    energy_ev : float
        Bulk plasmon energy E_p (eV).
    voltage_kv : float
        Accelerating voltage (kV).
    mean_free_path : float, optional
        λ_p (Å); default the Drude value (module docstring).
    cutoff_mrad : float, optional
        θ_c (mrad); default (2 θ_E)^{1/2}.
    acceptance_mrad : float, optional
        θ_a (mrad): the largest deflection that stays in the recorded field (the CBED
        disc radius of a digital LACBED pattern; module docstring); default θ_c (all
        loss electrons recorded). Values above θ_c act as θ_c.
    energy_source : str
        How E_p was chosen (for the record).
    """

    energy_ev: float
    voltage_kv: float
    mean_free_path: float | None = None
    cutoff_mrad: float | None = None
    energy_source: str = "given"
    acceptance_mrad: float | None = None
    #: Ĥ₁ per (grid shape, steps); not an init field, so ``dataclasses.replace`` starts empty
    _cache: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("energy_ev", "voltage_kv"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"{name} must be > 0", tag=name, found=v)
        for name in ("mean_free_path", "cutoff_mrad", "acceptance_mrad"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise InputError(f"{name} must be > 0", tag=name, found=v)
        if self.theta_c <= self.theta_e:
            raise InputError("the plasmon cut-off angle must exceed θ_E",
                             tag="cutoff_mrad", expected=f"> {1e3 * self.theta_e:.3g} mrad",
                             found=1e3 * self.theta_c)
        if self.theta_a <= self.theta_e:
            raise InputError("the plasmon acceptance angle must exceed θ_E",
                             tag="acceptance_mrad", expected=f"> {1e3 * self.theta_e:.3g} mrad",
                             found=1e3 * self.theta_a)

    # ------------------------------------------------------------ physics
    @property
    def theta_e(self) -> float:
        """Characteristic angle θ_E = E_p/(γ m₀ v²), rad."""
        return self.energy_ev / _beam_energy_factor(self.voltage_kv)

    @property
    def theta_c(self) -> float:
        """Cut-off angle θ_c, rad."""
        if self.cutoff_mrad is not None:
            return 1e-3 * self.cutoff_mrad
        return float(np.sqrt(2.0 * self.theta_e))

    @property
    def theta_a(self) -> float:
        """Acceptance angle θ_a = min(acceptance, θ_c), rad."""
        if self.acceptance_mrad is None:
            return self.theta_c
        return min(1e-3 * self.acceptance_mrad, self.theta_c)

    @property
    def accepted_fraction(self) -> float:
        """f_a = ln(1 + θ_a²/θ_E²)/L: the part of K inside θ_a (1 without acceptance)."""
        return float(np.log1p((self.theta_a / self.theta_e) ** 2)) / self.log_term

    @property
    def log_term(self) -> float:
        """L = ln(1 + θ_c²/θ_E²)."""
        return float(np.log1p((self.theta_c / self.theta_e) ** 2))

    @property
    def drude_mean_free_path(self) -> float:
        """λ_p (Å) of the Drude cross-section: 1/λ_p = (θ_E/2a₀) L."""
        return 2.0 * BOHR_RADIUS / (self.theta_e * self.log_term)

    @property
    def mfp(self) -> float:
        """The mean free path used (Å)."""
        return self.mean_free_path if self.mean_free_path is not None \
            else self.drude_mean_free_path

    def angles_kt(self) -> tuple[float, float]:
        """(θ_E, θ_c) as tangential wave vectors (Å⁻¹): θ·K, K = 1/λ."""
        k = float(wavenumber(self.voltage_kv))
        return self.theta_e * k, self.theta_c * k

    def acceptance_kt(self) -> float:
        """θ_a as a tangential wave vector (Å⁻¹)."""
        return self.theta_a * float(wavenumber(self.voltage_kv))

    def kernel(self, theta_kt: np.ndarray) -> np.ndarray:
        """K(θ) per Å⁻² (θ as k_t, Å⁻¹): 1/(π L (θ² + θ_E²)) inside θ_a (≤ θ_c), 0
        outside."""
        a, _c = self.angles_kt()
        c = self.acceptance_kt()
        th = np.asarray(theta_kt, float)
        return np.where(th <= c, 1.0 / (np.pi * self.log_term * (th**2 + a**2)), 0.0)

    def single_transfer(self, q: np.ndarray) -> np.ndarray:
        """Ĥ₁(q) of K (normalised over θ_c, cut at θ_a: Ĥ₁(0) = f_a) at spatial
        frequencies q (Å, cycles per Å⁻¹)."""
        q = np.asarray(q, float)
        a, _c = self.angles_kt()
        c = self.acceptance_kt()
        s0, s1 = np.log(a * a), np.log(c * c + a * a)
        qmax = float(np.max(q)) if q.size else 0.0
        n_panels = int(np.ceil(16 + 8 * qmax * c))
        x, w = np.polynomial.legendre.leggauss(_GL_NODES)
        edges = np.linspace(s0, s1, n_panels + 1)
        half = 0.5 * np.diff(edges)
        s = (edges[:-1, None] + half[:, None] * (x[None, :] + 1.0)).ravel()
        ws = (half[:, None] * w[None, :]).ravel()
        theta = np.sqrt(np.maximum(np.exp(s) - a * a, 0.0))
        flat = q.ravel()
        out = np.empty(flat.shape)
        for i in range(0, len(flat), 512):  # bounded memory
            blk = flat[i:i + 512]
            out[i:i + 512] = special.j0(2 * np.pi * blk[:, None] * theta[None, :]) @ ws
        return (out / self.log_term).reshape(q.shape)

    def _grid_transfer(self, shape: tuple[int, int], steps: np.ndarray) -> np.ndarray:
        """Ĥ₁ on the rfft grid of ``shape`` sampled with ``steps`` (Å⁻¹), cached."""
        key = (tuple(shape), tuple(np.round(np.asarray(steps, float).ravel(), 12)))
        h = self._cache.get(key)
        if h is None:
            q = np.sqrt(frequencies_squared(shape, steps))
            uq, inv = np.unique(np.round(q, 10), return_inverse=True)
            h = self.single_transfer(uq)[inv].reshape(q.shape)
            self._cache[key] = h
        return h

    def padding(self, steps: np.ndarray) -> tuple[int, int]:
        """Samples added by reflection on each side: θ_a over the distance between
        neighbouring sample lines along each axis."""
        a = np.asarray(steps, float).reshape(2, 2)
        area = abs(float(np.linalg.det(a)))
        c = self.acceptance_kt()
        heights = (area / np.linalg.norm(a[1]), area / np.linalg.norm(a[0]))
        return tuple(int(np.ceil(c / h)) for h in heights)  # type: ignore[return-value]

    def convolve(self, images: np.ndarray, steps: np.ndarray, tau: float, *,
                 derivative: bool = False):
        """The measured images for elastic ``images`` (..., ny, nx) on a k_t grid.

        Parameters
        ----------
        images : array (..., ny, nx)
            Elastic intensities (or their derivatives) on a regular grid.
        steps : (2, 2) array
            k_t step (Å⁻¹) from one sample to the next along rows (row 0) and columns.
        tau : float
            t/λ_p (≥ 0).
        derivative : bool
            Also return ∂/∂τ of the result.
        """
        if not (np.isfinite(tau) and tau >= 0):
            raise InputError("t/λ_p must be ≥ 0", found=tau)
        imgs = np.asarray(images, float)
        ny, nx = imgs.shape[-2:]
        p0, p1 = self.padding(steps)
        lead = [(0, 0)] * (imgs.ndim - 2)
        padded = np.pad(imgs, lead + [(p0, p0), (p1, p1)], mode="symmetric")
        shape = padded.shape[-2:]
        h1 = self._grid_transfer(shape, steps)
        h = np.exp(tau * (h1 - 1.0))
        f = np.fft.rfft2(padded)
        out = np.fft.irfft2(f * h, s=shape)[..., p0:p0 + ny, p1:p1 + nx]
        if not derivative:
            return out
        d = np.fft.irfft2(f * h * (h1 - 1.0), s=shape)[..., p0:p0 + ny, p1:p1 + nx]
        return out, d

    def as_dict(self) -> dict:
        """What was used (result files)."""
        a, c = self.angles_kt()
        return {"model": "plasmon", "energy_ev": self.energy_ev,
                "energy_source": self.energy_source, "voltage_kv": self.voltage_kv,
                "theta_e_mrad": 1e3 * self.theta_e, "theta_c_mrad": 1e3 * self.theta_c,
                "theta_e_inv_A": a, "theta_c_inv_A": c,
                "acceptance_mrad": 1e3 * self.theta_a,
                "acceptance_source": "given" if self.acceptance_mrad is not None
                else "theta_c (every loss electron recorded)",
                "accepted_fraction": self.accepted_fraction,
                "mean_free_path_A": self.mfp,
                "mean_free_path_source": "given" if self.mean_free_path is not None
                else "Drude: 1/lambda_p = (theta_E/2a0) ln(1 + theta_c^2/theta_E^2)"}
