"""Input readers: PyExtal/EMAPS ``.dat`` files, CIF files and Felix input folders.

Every reader returns a :class:`qcbed.crystal.Crystal` (plus, for ``.dat`` and
Felix, the experiment and simulation settings as a frozen dataclass) and raises
:class:`qcbed.errors.InputError` naming the file, the line or tag and the
expected versus found value for any bad input.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from ..crystal import Crystal
from ..errors import InputError
from .cif import read_cif, read_cif_string
from .dat import DatInput, read_dat
from .felix import FelixInput, felix_image_files, read_felix

__all__ = [
    "DatInput",
    "FelixInput",
    "felix_image_files",
    "read_cif",
    "read_cif_string",
    "read_crystal",
    "read_dat",
    "read_felix",
    "read_input",
]


def _kind(path: Path) -> str:
    if path.is_dir():
        return "felix"
    if path.name.lower() == "felix.inp":
        return "felix-inp"
    suffix = path.suffix.lower()
    if suffix == ".dat":
        return "dat"
    if suffix in (".cif", ".mcif"):
        return "cif"
    if not path.exists():
        raise InputError("no such file or folder", source=path,
                         expected="a .dat file, a .cif file or a Felix folder",
                         found="nothing at this path")
    raise InputError("cannot tell the input format from the name", source=path,
                     expected="a .dat file, a .cif file or a Felix folder (or felix.inp)",
                     found=path.suffix or path.name)


def read_crystal(path: str | PathLike[str]) -> Crystal:
    """The crystal of any supported input, chosen by the path.

    Parameters
    ----------
    path : str or path
        A PyExtal ``.dat`` file, a ``.cif`` file (single data block), or a
        Felix input folder (or its ``felix.inp``).

    Returns
    -------
    Crystal

    Raises
    ------
    InputError
        Unknown extension, missing path, or any error of the reader used.
    """
    return read_input(path)[0]


def read_input(path: str | PathLike[str]) -> tuple[Crystal, dict[str, Any]]:
    """(crystal, settings) of any supported input, chosen by the path.

    ``settings`` is a plain dict: for ``.dat`` files :meth:`DatInput.settings`
    (``voltage_kv`` in kV, ``zone``, ``normal``, ``kt``, …), for Felix folders
    ``voltage_kv``, ``zone``, ``x_axis``, ``normal``, ``thickness`` (Å) and the
    other :class:`FelixInput` fields, and an empty dict for CIF files.
    """
    p = Path(path)
    kind = _kind(p)
    if kind == "dat":
        d = read_dat(p)
        return d.crystal, d.settings()
    if kind == "cif":
        return read_cif(p), {}
    f = read_felix(p if kind == "felix" else p.parent)
    settings: dict[str, Any] = {
        "voltage_kv": f.accelerating_voltage_kv,
        "zone": f.zone,                 # qcbed's: −incident_beam_direction
        "x_axis": f.x_direction,
        "normal": f.zone_normal,        # qcbed's: −normal
        "thickness": f.initial_thickness,
        "convergence_angle": f.convergence_angle,
        "image_radius": f.image_radius,
        "scattering_factors": f.scattering_factors,
        "absorption": f.absorption,
        "absorption_xi": f.absorption_xi,
        "hkl": f.hkl,
    }
    return f.crystal, settings
