"""Felix folder conventions against Felix-python's source (docs/conventions.md, "Felix inputs").

Facts from WarwickMicroscopy/Felix-python (pylix_modules/pylix.py ``reference_frames``,
``deviation_parameter``; pylix_modules/simulate.py ``simulate``):

* microscope frame z = unit(``incident_beam_direction``, direct vector), x =
  unit(``x_direction``, reciprocal vector), y = z × x;
* the incident wave vector is (k_x, k_y, +K_z): the beam travels along +z;
* per pixel, k_x and k_y come from ``meshgrid(x_pix Δ, y_pix Δ)`` with
  x_pix = y_pix = −R + ½ … R − ½ and Δ = convergence_angle/image_radius (Å⁻¹, Felix
  multiplies by 2π); the intensity of array element [i, j] is written to image
  [row −j, column i] ("x and y swapped"), so row r ↔ k_x = (R − r + ½)Δ and column
  c ↔ k_y = (c − R + ½)Δ (row 0 aside, which Felix fills by wrap-around);
* the normal enters as sqrt(1 + g·n/K·n) with K·n > 0: Felix's normal points along
  the beam.

These tests build the Cartesian incident wave vector of every pixel from those facts
alone and check qcbed's reading of a Felix folder against it; the old reading (zone
= +incident_beam_direction) fails them.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.geometry import ZoneFrame, incident_kz
from qcbed.bloch.grids import TiltGrid
from qcbed.constants import wavelength
from qcbed.crystal import Lattice
from qcbed.experiment.geometry import ExperimentGeometry

FELIX_INP = """# test
write_flag                = 0
scatter_factor_method     = 0
holz_flag                 = 1
absorption_method         = 2
min_reflection_pool       = 60
min_strong_beams          = 20
incident_beam_direction   = {ibd}
x_direction               = {xd}
normal                    = {ibd}
initial_thickness         = 900.0
final_thickness           = 900.0
delta_thickness           = 10.0
convergence_angle         = 0.3
accelerating_voltage_kv   = 200.0
image_radius              = 6
"""

GAAS_CIF = """data_GaAs
_cell_length_a 5.6533
_cell_length_b 5.6533
_cell_length_c 5.6533
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_IT_number 216
_symmetry_space_group_name_H-M 'F -4 3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Ga1 Ga 0 0 0 0.6
As1 As 0.25 0.25 0.25 0.5
"""


def _felix_folder(tmp_path, ibd, xd, hkl):
    (tmp_path / "felix.inp").write_text(FELIX_INP.format(ibd=list(ibd), xd=list(xd)))
    (tmp_path / "felix.cif").write_text(GAAS_CIF)
    (tmp_path / "felix.hkl").write_text("\n".join(str(list(h)) for h in hkl) + "\n")
    return tmp_path


def _cartesian(lat: Lattice, v, reciprocal: bool) -> np.ndarray:
    w = lat.cartesian_reciprocal(v) if reciprocal else lat.cartesian_direct(v)
    w = np.asarray(w, float).reshape(3)
    return w / np.linalg.norm(w)


def _felix_incident_directions(lat, ibd, xd, convergence, radius, k):
    """Unit incident wave vectors (Cartesian) of Felix image pixels, from Felix's formulas."""
    z = _cartesian(lat, ibd, False)
    x = _cartesian(lat, xd, True)
    x = x - (x @ z) * z          # Felix assumes x ⊥ z; our test directions are
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    d = convergence / radius
    pix = np.arange(-radius + 0.5, radius + 0.5) * d
    kx, ky = np.meshgrid(pix, pix)                 # [i, j]: kx = pix[j], ky = pix[i]
    kz = np.sqrt(k**2 - kx**2 - ky**2)
    kvec = kx[..., None] * x + ky[..., None] * y + kz[..., None] * z   # along +z: the beam
    image = np.full((2 * radius, 2 * radius, 3), np.nan)
    for i in range(2 * radius):
        for j in range(2 * radius):
            image[-j, i] = kvec[i, j]              # Felix: lacbed_sim[-pix_y, pix_x]
    return image / k


def _qcbed_incident_directions(frame: ZoneFrame, grid: TiltGrid, k: float) -> np.ndarray:
    """Unit incident wave vectors (Cartesian) of qcbed's grid: K = k_t − K_z ẑ."""
    kt = grid.kt
    kz = incident_kz(kt.reshape(-1, 2), k).reshape(kt.shape[:2])
    kvec = (kt[..., :1] * frame.x_hat + kt[..., 1:] * frame.y_hat - kz[..., None] * frame.z_hat)
    return kvec / k


@pytest.mark.parametrize("ibd, xd", [((0, 0, 1), (1, 0, 0)), ((1, -1, 0), (0, 0, -1)),
                                     ((1, 1, 2), (1, -1, 0)), ((-2, 1, 3), (1, 2, 0))])
def test_felix_folder_incident_directions_match_felix(tmp_path, ibd, xd):
    """Every pixel of a Felix folder has the incident direction Felix's formulas give."""
    from qcbed.io import read_felix

    folder = _felix_folder(tmp_path, ibd, xd, [(0, 0, 2)] if ibd == (0, 0, 1) else
                           [(1, 1, -1)] if ibd == (1, 1, 2) else [(0, 0, 2)])
    fx = read_felix(folder)
    lat = fx.crystal.lattice
    k = 1.0 / wavelength(200.0)
    want = _felix_incident_directions(lat, ibd, xd, 0.3, 6, k)
    frame = ZoneFrame(lat, tuple(fx.zone), tuple(fx.x_direction), tuple(fx.zone_normal))
    for grid in (TiltGrid.felix(0.3, 6), ExperimentGeometry.felix(frame, 0.3, 6).tilt_grid()):
        got = _qcbed_incident_directions(frame, grid, k)
        # row 0 is Felix's wrap-around row; compare the rest
        assert np.abs(got[1:] - want[1:]).max() < 1e-12
    # the old reading (zone = +incident_beam_direction, k_y not reversed) is the mirror image
    old = ZoneFrame(lat, tuple(fx.incident_beam_direction), tuple(fx.x_direction))
    g_old = TiltGrid(TiltGrid.felix(0.3, 6).kt * np.array([1.0, -1.0]), np.ones((12, 12), bool))
    assert np.abs(_qcbed_incident_directions(old, g_old, k)[1:] - want[1:]).max() > 1e-3
    # and Felix's normal (K·n > 0) becomes qcbed's (towards the source)
    n = _cartesian(lat, fx.zone_normal, False)
    assert n @ frame.z_hat > 0.999 and n @ _cartesian(lat, fx.normal, False) < -0.999


def test_read_input_settings_use_qcbed_zone(tmp_path):
    """`read_input` hands out qcbed's zone and normal for a Felix folder, not the file's."""
    from qcbed.io import read_input

    folder = _felix_folder(tmp_path, (1, 1, 2), (1, -1, 0), [(1, 1, -1)])
    _, settings = read_input(folder)
    assert np.array_equal(settings["zone"], [-1, -1, -2])
    assert np.array_equal(settings["normal"], [-1, -1, -2])
