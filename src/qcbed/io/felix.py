"""Reader for Felix input folders (``felix.inp``, ``felix.cif``, ``felix.hkl``, images).

A Felix (Warwick; Felix-python) run folder holds

* ``felix.inp``: ``key = value`` settings after a free-text header; values are
  numbers, lists ``[1, -1, 0]`` or quoted strings ``'S'``; ``#`` starts a comment;
* ``felix.cif``: the crystal (read with :func:`qcbed.io.cif.read_cif`);
* ``felix.hkl``: the output reflections, one ``[h, k, l]`` per line;
* optionally the experimental images ``<name>_+h+k+l.dm3`` (one per reflection).

Geometry conventions (see ``docs/conventions.md`` and the Felix data README):
the incident beam direction and the surface normal are direct-lattice vectors,
the x direction is a reciprocal-lattice vector; the convergence angle is the
half-width of the image in tangential wave vector, in Å⁻¹ without 2π.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .._core.checks import (
    MAX_MILLER_INDEX,
    MAX_THICKNESS,
    MAX_THICKNESS_COUNT,
    check_integer,
    check_number,
)
from ..crystal import Crystal
from ..errors import InputError
from ..scattering.kappa import kappa_elements
from .cif import read_cif

__all__ = ["ABSORPTION_METHODS", "SCATTER_FACTOR_METHODS", "FelixInput", "felix_image_files",
           "read_felix", "read_felix_hkl", "read_felix_inp"]

#: Felix ``scatter_factor_method`` → (qcbed elastic model name, description).
#: 4 and 5 (kappa formalism) map to qcbed's ``'kappa'`` model
#: (:mod:`qcbed.scattering.kappa`), whose core and valence densities are the
#: non-relativistic Clementi–Roetti (1974) RHF orbitals: the same kind of orbitals as
#: Felix's 5 (Bunge et al. 1993 RHF); for 4 (relativistic RHF) a warning says so.
SCATTER_FACTOR_METHODS: dict[int, tuple[str, str]] = {
    0: ("kirkland", "Kirkland"),
    1: ("lobato", "Lobato"),
    2: ("peng", "Peng"),
    3: ("doyle_turner", "Doyle–Turner"),
    4: ("kappa", "kappa formalism, Coppens relativistic RHF"),
    5: ("kappa", "kappa formalism, Bunge non-relativistic RHF"),
}
_APPROXIMATE = (4,)
#: Felix ``absorption_method`` → qcbed absorption model name.
ABSORPTION_METHODS: dict[int, str] = {0: "none", 1: "proportional", 2: "bird_king"}

_KEY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][+-]?\d+)?$")
_IMAGE_RE = re.compile(r"^(?P<stem>.+)_(?P<h>[+-]\d+)(?P<k>[+-]\d+)(?P<l>[+-]\d+)\.dm3$",
                       re.IGNORECASE)
# largest |component| of a direction vector (Miller-like indices)
_MAX_COMPONENT = float(MAX_MILLER_INDEX)
_REQUIRED = ("incident_beam_direction", "x_direction", "normal", "accelerating_voltage_kv",
             "convergence_angle", "image_radius", "initial_thickness", "final_thickness",
             "delta_thickness")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class FelixInput:
    """Everything a Felix input folder holds. Arrays are read-only."""

    source: Path
    """The folder that was read."""
    crystal: Crystal
    """The crystal of ``felix.cif``."""
    hkl: np.ndarray
    """Output reflections of ``felix.hkl``, (n, 3) int (000 is not listed; Felix adds it)."""
    incident_beam_direction: np.ndarray
    """Direction in which the beam travels, [uvw] direct-lattice components, as written.

    Felix places the incident wave vector along +z of its microscope frame, z =
    unit(``incident_beam_direction``), so the beam travels *along* this vector;
    qcbed's zone axis points to the source: use :attr:`zone`."""
    x_direction: np.ndarray
    """Reciprocal vector (hkl components) defining the image x axis."""
    normal: np.ndarray
    """Surface normal as written (Felix: along the beam, K·n > 0); qcbed's: :attr:`zone_normal`."""
    accelerating_voltage_kv: float
    """Accelerating voltage, kV."""
    convergence_angle: float
    """Half-width of the image in tangential wave vector, Å⁻¹ (no 2π)."""
    image_radius: int
    """Image half-size R in pixels (images are 2R × 2R)."""
    initial_thickness: float
    """First thickness of the scan, Å."""
    final_thickness: float
    """Last thickness of the scan, Å."""
    delta_thickness: float
    """Thickness step, Å."""
    scatter_factor_method: int | None = None
    """Felix code (0 Kirkland, 1 Lobato, 2 Peng, 3 Doyle–Turner, 4/5 kappa RHF)."""
    scattering_factors: str | None = None
    """qcbed elastic model name for ``scatter_factor_method`` (``'kappa'`` for 4 and 5)."""
    absorption_method: int | None = None
    """Felix code (0 none, 1 proportional, 2 Bird & King)."""
    absorption: str | None = None
    """qcbed absorption model name for ``absorption_method``."""
    absorption_per: float | None = None
    """Proportional absorption U′ = (absorption_per/100)·U, in percent."""
    debye_waller_constant: float | None = None
    """Felix's ``debye_waller_constant``, Å² (as written)."""
    min_reflection_pool: int | None = None
    """Minimum number of reflections in the beam pool."""
    min_strong_beams: int | None = None
    """Minimum number of strong beams."""
    min_weak_beams: int | None = None
    """Minimum number of weak (Bethe) beams."""
    g_limit: float | None = None
    """Reflection-pool limit |g|, Å⁻¹ as written (0: no limit)."""
    holz_flag: int | None = None
    """1: include higher-order Laue zones."""
    blur_radius: float | None = None
    """Gaussian blur radius of the image processing, px."""
    image_processing: int | None = None
    """Felix's ``image_processing``: 0 none, 1 Gaussian blur of ``blur_radius`` px, 2 the
    blur that fits best (``qcbed compare`` blurs by ``blur_radius`` for 1 and 2)."""
    correlation_type: int | None = None
    """Felix's ``correlation_type``: 0 phase, 1 Pearson (ZNCC), 2 ZNCC after sub-pixel
    alignment, 3 with an affine transform, 4 with a Sobel filter (``qcbed compare``:
    ZNCC without alignment for 1, with it otherwise)."""
    debye_model: int | None = None
    """Felix's ``Debye_model``: 0 isotropic (the crystal's anisotropic U are replaced by
    their isotropic B), 1 anisotropic; None when not given (the CIF's U are used)."""
    cif_path: Path | None = None
    """The CIF that was read (``felix.cif``, or the folder's only ``*.cif``)."""
    hkl_path: Path | None = None
    """``felix.hkl``, or None when the reflections came from the image names."""
    image_files: dict[tuple[int, int, int], Path] = field(default_factory=dict)
    """Experimental images ``<name>_+h+k+l.dm3`` by reflection (see :func:`felix_image_files`)."""
    raw: dict[str, Any] = field(default_factory=dict)
    """Every ``key = value`` of ``felix.inp`` (keys as written; values parsed)."""
    lines: dict[str, int] = field(default_factory=dict)
    """1-based line number of each key in ``felix.inp``."""

    @property
    def zone(self) -> np.ndarray:
        """qcbed's zone axis: −``incident_beam_direction`` (pointing to the source).

        Felix-python (``pylix.reference_frames``, ``simulate.simulate``) puts the
        incident wave vector at [0, 0, +K] in a frame whose z is
        unit(``incident_beam_direction``): the electrons travel along it. qcbed's
        zone points from the specimen to the source (docs/conventions.md).
        """
        return 0.0 - np.asarray(self.incident_beam_direction, float)   # no −0.0

    @property
    def zone_normal(self) -> np.ndarray:
        """qcbed's surface normal: −``normal`` (Felix's normal has K·n > 0, into the specimen)."""
        return 0.0 - np.asarray(self.normal, float)

    @property
    def thicknesses(self) -> np.ndarray:
        """Thicknesses of the scan in Å: initial, initial + Δ, … ≤ final (at least one)."""
        if self.delta_thickness <= 0 or self.final_thickness <= self.initial_thickness:
            return np.array([self.initial_thickness])
        n = int(np.floor((self.final_thickness - self.initial_thickness) / self.delta_thickness
                         + 1e-9)) + 1
        return self.initial_thickness + self.delta_thickness * np.arange(n)

    @property
    def absorption_xi(self) -> float | None:
        """ξ of the proportional model U′ = ξ U (absorption_per / 100), or None."""
        return None if self.absorption_per is None else self.absorption_per / 100.0

    @property
    def pixel_size(self) -> float:
        """Tangential wave-vector step per pixel, Å⁻¹ (convergence_angle / image_radius)."""
        return self.convergence_angle / self.image_radius


# ====================================================================== felix.inp
def _strip_comment(text: str) -> str:
    """``text`` without a ``#`` comment (a ``#`` inside quotes is kept)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return text[:i]
    return text


def _parse_value(text: str, source: Path, line: int, key: str) -> Any:
    t = text.strip()
    if not t:
        raise InputError("key without a value", source=source, line=line, tag=key,
                         expected="a number, a [list] or a 'string'", found="nothing")
    if t[0] in "'\"":
        if len(t) < 2 or t[-1] != t[0]:
            raise InputError("unterminated string", source=source, line=line, tag=key,
                             expected=f"a closing {t[0]}", found=t)
        return t[1:-1]
    if t[0] == "[":
        if t[-1] != "]":
            raise InputError("unterminated list", source=source, line=line, tag=key,
                             expected="a closing ]", found=t)
        inner = t[1:-1].strip()
        if not inner:
            return []
        return [_parse_value(x, source, line, key) for x in inner.split(",")]
    if _INT_RE.match(t):
        return int(t)
    if _FLOAT_RE.match(t):
        value = float(t.replace("d", "e").replace("D", "e"))
        if not math.isfinite(value):
            raise InputError("number too large (not finite)", source=source, line=line,
                             tag=key, expected="a finite number", found=t)
        return value
    return t


def read_felix_inp(path: str | PathLike[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse ``felix.inp`` into ({key: value}, {key: line}).

    Lines that are not ``identifier = value`` (the free-text header) are
    skipped. Values: int, float, list (``[1, -1, 0]``), or str (quoted or bare).

    Raises
    ------
    InputError
        Unreadable file, a key without value, an unterminated list or string.

    Warns
    -----
    UserWarning
        A key given twice (the last value is used).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", source=p) from None
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        m = _KEY_RE.match(_strip_comment(line).strip())
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if key in raw:
            warnings.warn(f"{p}:{n}: key {key} repeated (first on line {lines[key]}); the "
                          "last value is used", UserWarning, stacklevel=3)
        raw[key] = _parse_value(value, p, n, key)
        lines[key] = n
    return raw, lines


# ====================================================================== felix.hkl
def read_felix_hkl(path: str | PathLike[str]) -> np.ndarray:
    """Reflections of a ``felix.hkl`` file (lines ``[h, k, l]``) as an (n, 3) int array.

    Plain ``h k l`` lines are accepted too; text after the bracket is ignored.

    Raises
    ------
    InputError
        Unreadable file, a line that is not three integers, or no reflection at all.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", source=p) from None
    rows: list[list[int]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        c = _strip_comment(line).strip()
        if not c:
            continue
        m = re.match(r"^\[([^\]]*)\]", c)
        parts = [x.strip() for x in m.group(1).split(",")] if m else c.split()[:3]
        if len(parts) != 3 or not all(_INT_RE.match(x) for x in parts):
            raise InputError("a reflection must be three integers", source=p, line=n,
                             tag="hkl", expected="[h, k, l]", found=line.strip())
        rows.append([check_integer(int(x), "Miller index", low=-MAX_MILLER_INDEX,
                                   high=MAX_MILLER_INDEX, source=p, line=n) for x in parts])
    if not rows:
        raise InputError("no reflections in the file", source=p,
                         expected="lines such as [0, 0, 2]", found="none")
    return _readonly(np.array(rows, dtype=int))


# ====================================================================== images
def felix_image_files(folder: str | PathLike[str]) -> dict[tuple[int, int, int], Path]:
    """Experimental images of a Felix folder by reflection.

    File names ``<name>_+h+k+l.dm3`` (signs mandatory, any number of digits):
    ``Si_-1-1+3.dm3`` → (−1, −1, 3). The images themselves are not read.

    Parameters
    ----------
    folder : str or path
        The Felix folder.

    Returns
    -------
    dict
        {(h, k, l): path}, in file-name order; empty when there are no images.

    Raises
    ------
    InputError
        The folder does not exist, or two files carry the same reflection.

    Warns
    -----
    UserWarning
        ``.dm3`` files whose names carry no ``_+h+k+l`` suffix (they are skipped).
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError("not a folder", source=d, expected="a Felix input folder",
                         found="no such folder" if not d.exists() else "a file")
    out: dict[tuple[int, int, int], Path] = {}
    skipped = []
    for f in sorted(d.iterdir()):
        if not f.is_file() or f.suffix.lower() != ".dm3":
            continue
        m = _IMAGE_RE.match(f.name)
        if not m:
            skipped.append(f.name)
            continue
        hkl = (int(m.group("h")), int(m.group("k")), int(m.group("l")))
        if hkl in out:
            raise InputError(f"two images for reflection {hkl}", source=d, tag=f.name,
                             expected="one <name>_+h+k+l.dm3 file per reflection",
                             found=[out[hkl].name, f.name])
        out[hkl] = f
    if skipped:
        warnings.warn(f"{d}: .dm3 files without a _+h+k+l suffix are skipped: "
                      f"{', '.join(skipped)}", UserWarning, stacklevel=2)
    return out


# ====================================================================== folder
def _vector(raw: dict[str, Any], lines: dict[str, int], key: str, source: Path) -> np.ndarray:
    v = raw[key]
    if not (isinstance(v, list) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and all(abs(x) <= _MAX_COMPONENT for x in v)) or not any(v):
        raise InputError("expected a vector of three numbers, not all zero", source=source,
                         line=lines[key], tag=key,
                         expected=f"[u, v, w] with |u|, |v|, |w| ≤ {_MAX_COMPONENT:g}", found=v)
    return _readonly(np.array(v, dtype=float))


def _real(raw: dict[str, Any], lines: dict[str, int], key: str, source: Path, *,
          positive: bool = False, nonnegative: bool = False) -> float | None:
    if key not in raw:
        return None
    low = 0.0 if positive or nonnegative else None
    return check_number(raw[key], key, low=low, low_open=positive, source=source,
                        line=lines[key])


def _int(raw: dict[str, Any], lines: dict[str, int], key: str, source: Path, *,
         choices: tuple[int, ...] | None = None, minimum: int | None = None) -> int | None:
    if key not in raw:
        return None
    v = check_integer(raw[key], key, low=minimum, source=source, line=lines[key])
    if choices is not None and v not in choices:
        raise InputError("unknown option", source=source, line=lines[key], tag=key,
                         expected=f"one of {list(choices)}", found=v)
    return v


def _kappa_or_fallback(crystal: Crystal, sfm: int | None, inp: Path, line: int) -> str:
    """'kappa', or 'kirkland' with a warning when the kappa table lacks an element.

    Felix's kappa models (4, 5) tabulate RHF orbitals up to Z = 54; qcbed's kappa model
    has the Clementi–Roetti orbitals of fewer elements (:func:`kappa_elements`).
    """
    have = set(kappa_elements())
    missing = sorted({s.element for s in crystal.sites} - have)
    if not missing:
        return "kappa"
    warnings.warn(f"{inp}:{line}: scatter_factor_method = {sfm} (kappa formalism) but qcbed's "
                  f"kappa model has no Hartree-Fock orbitals for {', '.join(missing)}; the "
                  "Kirkland factors (scatter_factor_method 0) are used for every atom",
                  UserWarning, stacklevel=3)
    return "kirkland"


def _isotropic(crystal: Crystal, inp: Path, line: int) -> Crystal:
    """The crystal with isotropic displacements only (Felix ``Debye_model = 0``).

    A site with anisotropic U keeps its isotropic B: the CIF's B_iso/U_iso, or B_eq =
    8π²U_eq from the U tensor where the CIF gives none (:func:`qcbed.io.cif.read_cif`).
    """
    from dataclasses import replace

    aniso = [s.label for s in crystal.sites if s.u_aniso is not None]
    if not aniso:
        return crystal
    warnings.warn(f"{inp}:{line}: Debye_model = 0 (isotropic): the anisotropic U of "
                  f"{', '.join(aniso)} are replaced by their isotropic B", UserWarning,
                  stacklevel=3)
    return crystal.replace(sites=[replace(s, u_aniso=None) for s in crystal.sites])


def _cif_path(d: Path) -> Path:
    """``felix.cif``, or the folder's only ``*.cif`` (with a warning)."""
    if (d / "felix.cif").is_file():
        return d / "felix.cif"
    cifs = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() == ".cif")
    if len(cifs) != 1:
        raise InputError("missing felix.cif in the Felix folder", source=d, tag="felix.cif",
                         expected=f"a file {d / 'felix.cif'} (or a single *.cif)",
                         found=[f.name for f in cifs] or "no CIF")
    warnings.warn(f"{d}: no felix.cif; the folder's only CIF {cifs[0].name} is used",
                  UserWarning, stacklevel=3)
    return cifs[0]


def _hkl_from_images(d: Path, images: dict[tuple[int, int, int], Path]) -> np.ndarray:
    """The reflections of the image names (000 left out), when ``felix.hkl`` is missing."""
    hkl = [h for h in images if h != (0, 0, 0)]
    if not hkl:
        raise InputError("missing felix.hkl in the Felix folder", source=d, tag="felix.hkl",
                         expected=f"a file {d / 'felix.hkl'} or <name>_+h+k+l.dm3 images",
                         found="neither")
    warnings.warn(f"{d}: no felix.hkl; the {len(hkl)} reflections of the image names are "
                  "used", UserWarning, stacklevel=3)
    return _readonly(np.array(hkl, dtype=int))


def read_felix(folder: str | PathLike[str]) -> FelixInput:
    """Read a Felix input folder.

    Parameters
    ----------
    folder : str or path
        Folder with ``felix.inp``, ``felix.cif`` and ``felix.hkl`` (and
        optionally ``<name>_+h+k+l.dm3`` images).

    Returns
    -------
    FelixInput
        Crystal, geometry, microscope and run settings; see its field docstrings
        for units. ``raw`` holds every key of ``felix.inp``.

    Raises
    ------
    InputError
        The folder or ``felix.inp`` is missing, ``felix.cif`` is missing and the folder
        holds no single ``*.cif``, ``felix.hkl`` is missing and there are no images
        (the message names the folder and the file), a required key is missing
        (incident_beam_direction,
        x_direction, normal, accelerating_voltage_kv, convergence_angle,
        image_radius, initial/final/delta_thickness), or a value has the wrong
        type or range (file, line, key, expected and found are named).

    Warns
    -----
    UserWarning
        No ``felix.cif`` (the folder's only CIF is read) or no ``felix.hkl`` (the
        reflections of the image names, 000 left out, are the outputs: the public
        LiNbO3_84x84 folder holds only felix.inp and images).
        ``scatter_factor_method`` 4 or 5 with an element that qcbed's kappa model does
        not tabulate (Felix's go to Z = 54; :func:`qcbed.scattering.kappa.kappa_elements`):
        ``scattering_factors`` is then ``'kirkland'`` for every atom. ``Debye_model = 0``
        with anisotropic U in the CIF: they are replaced by the isotropic B.
        ``scatter_factor_method`` 4 (kappa formalism on relativistic RHF orbitals):
        ``scattering_factors`` is qcbed's ``'kappa'`` model, built on the
        non-relativistic Clementi–Roetti orbitals (for Si the X-ray factors of the
        two differ by ≤ 0.02 electrons up to s = 2 Å⁻¹, the ITC comparison in
        tests/test_kappa.py).
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError("not a folder", source=d, expected="a Felix input folder",
                         found="no such folder" if not d.exists() else "a file")
    if not (d / "felix.inp").is_file():
        raise InputError("missing felix.inp in the Felix folder", source=d, tag="felix.inp",
                         expected=f"a file {d / 'felix.inp'}", found="no such file")
    cif_path = _cif_path(d)
    inp = d / "felix.inp"
    raw, lines = read_felix_inp(inp)
    # case-insensitive access (Felix writes e.g. 'Debye_model')
    raw_l = {k.lower(): v for k, v in raw.items()}
    lines_l = {k.lower(): n for k, n in lines.items()}
    # older Felix input files name the surface normal 'normal_direction'
    if "normal" not in raw_l and "normal_direction" in raw_l:
        raw_l["normal"] = raw_l["normal_direction"]
        lines_l["normal"] = lines_l["normal_direction"]
    for key in _REQUIRED:
        if key not in raw_l:
            raise InputError("missing required key", source=inp, tag=key,
                             expected=f"a line '{key} = ...'", found="no such key")

    sfm = _int(raw_l, lines_l, "scatter_factor_method", inp,
               choices=tuple(SCATTER_FACTOR_METHODS))
    sf_name = SCATTER_FACTOR_METHODS[sfm][0] if sfm is not None else None
    absm = _int(raw_l, lines_l, "absorption_method", inp, choices=tuple(ABSORPTION_METHODS))

    def req_real(key: str) -> float:
        v = _real(raw_l, lines_l, key, inp, positive=True)
        assert v is not None  # required keys were checked above
        return v

    radius = _int(raw_l, lines_l, "image_radius", inp, minimum=1)
    assert radius is not None
    t0, t1, dt = (req_real(k) for k in ("initial_thickness", "final_thickness",
                                        "delta_thickness"))
    if t1 < t0:
        raise InputError("final_thickness is below initial_thickness", source=inp,
                         line=lines_l["final_thickness"], tag="final_thickness",
                         expected=f"≥ initial_thickness = {t0:g} Å", found=t1)
    for key, value in (("initial_thickness", t0), ("final_thickness", t1)):
        check_number(value, key, high=MAX_THICKNESS, unit="Å", source=inp, line=lines_l[key])
    n_t = (t1 - t0) / dt + 1
    if n_t > MAX_THICKNESS_COUNT:
        raise InputError("too many thicknesses in the scan", source=inp,
                         line=lines_l["delta_thickness"], tag="delta_thickness",
                         expected=f"(final − initial)/delta + 1 ≤ {MAX_THICKNESS_COUNT}",
                         found=f"{n_t:.4g} thicknesses ({t0:g}..{t1:g} Å step {dt:g} Å)")

    crystal = read_cif(cif_path)
    if sf_name == "kappa":
        sf_name = _kappa_or_fallback(crystal, sfm, inp, lines_l["scatter_factor_method"])
    if sf_name == "kappa" and sfm in _APPROXIMATE:
        warnings.warn(f"{inp}:{lines_l['scatter_factor_method']}: scatter_factor_method "
                      f"{sfm} ({SCATTER_FACTOR_METHODS[sfm][1]}): qcbed's 'kappa' model uses "
                      "the non-relativistic Clementi-Roetti RHF orbitals", UserWarning,
                      stacklevel=2)
    debye = _int(raw_l, lines_l, "debye_model", inp, choices=(0, 1))
    if debye == 0:
        crystal = _isotropic(crystal, inp, lines_l["debye_model"])
    images = felix_image_files(d)
    hkl_path: Path | None = d / "felix.hkl"
    if hkl_path is not None and hkl_path.is_file():
        hkl = read_felix_hkl(hkl_path)
    else:
        hkl, hkl_path = _hkl_from_images(d, images), None
    return FelixInput(
        source=d, crystal=crystal, hkl=hkl, cif_path=cif_path, hkl_path=hkl_path,
        incident_beam_direction=_vector(raw_l, lines_l, "incident_beam_direction", inp),
        x_direction=_vector(raw_l, lines_l, "x_direction", inp),
        normal=_vector(raw_l, lines_l, "normal", inp),
        accelerating_voltage_kv=req_real("accelerating_voltage_kv"),
        convergence_angle=req_real("convergence_angle"),
        image_radius=radius,
        initial_thickness=t0, final_thickness=t1, delta_thickness=dt,
        scatter_factor_method=sfm, scattering_factors=sf_name,
        absorption_method=absm,
        absorption=ABSORPTION_METHODS[absm] if absm is not None else None,
        absorption_per=_real(raw_l, lines_l, "absorption_per", inp, nonnegative=True),
        debye_waller_constant=_real(raw_l, lines_l, "debye_waller_constant", inp,
                                    nonnegative=True),
        min_reflection_pool=_int(raw_l, lines_l, "min_reflection_pool", inp, minimum=0),
        min_strong_beams=_int(raw_l, lines_l, "min_strong_beams", inp, minimum=0),
        min_weak_beams=_int(raw_l, lines_l, "min_weak_beams", inp, minimum=0),
        g_limit=_real(raw_l, lines_l, "g_limit", inp, nonnegative=True),
        holz_flag=_int(raw_l, lines_l, "holz_flag", inp, minimum=0),
        blur_radius=_real(raw_l, lines_l, "blur_radius", inp, nonnegative=True),
        image_processing=_int(raw_l, lines_l, "image_processing", inp, minimum=0),
        correlation_type=_int(raw_l, lines_l, "correlation_type", inp, minimum=0),
        debye_model=debye,
        image_files=images,
        raw=raw, lines=lines,
    )
