"""Zone-axis frame, excitation errors and tilt grids against direct vector algebra."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.geometry import ZoneFrame, excitation_errors, incident_kz, normal_components
from qcbed.bloch.grids import TiltGrid
from qcbed.crystal import Lattice
from qcbed.errors import InputError


def test_frame_is_right_handed_and_follows_conventions():
    lat = Lattice(5.431, 5.431, 5.431)
    fr = ZoneFrame(lat, (1, -1, 0), (0, 0, -1))
    r = fr.rotation
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-14)
    assert np.allclose(np.cross(fr.z_hat, fr.x_hat), fr.y_hat)
    # the Felix D-LACBED frame: x = [00-1], y = [110]/sqrt2, z = [1-10]/sqrt2
    assert np.allclose(fr.x_hat, [0, 0, -1])
    assert np.allclose(fr.y_hat, np.array([1, 1, 0]) / np.sqrt(2))
    # g in frame components: 002 points along -x, 220 along +y
    assert np.allclose(fr.g_frame([0, 0, 2]), [-2 / 5.431, 0, 0])
    assert np.allclose(fr.g_frame([2, 2, 0]), [0, 2 * np.sqrt(2) / 5.431, 0])


def test_frame_non_orthogonal_cell_uses_metric():
    lat = Lattice(5.0, 6.0, 7.0, 80.0, 100.0, 110.0)
    fr = ZoneFrame(lat, (1, 1, 1), (1, -1, 0))
    g = np.array([[1, -1, 0], [2, 0, -2], [3, 1, -4]])
    gf = fr.g_frame(g)
    # lengths preserved and z components equal g·[uvw]/|[uvw]|
    assert np.allclose(np.linalg.norm(gf, axis=1), lat.g_length(g))
    zlen = np.sqrt(lat.direct_dot([1, 1, 1], [1, 1, 1]))
    assert np.allclose(gf[:, 2], g @ np.array([1, 1, 1]) / zlen)
    assert np.allclose(fr.hkl_from_frame(gf), g)


def test_excitation_error_exact_against_vectors():
    rng = np.random.default_rng(3)
    lat = Lattice(4.0, 4.5, 6.0, 90, 100, 90)
    fr = ZoneFrame(lat, (0, 1, 0), (1, 0, 0))
    hkl = rng.integers(-4, 5, size=(30, 3))
    g = fr.g_frame(hkl)
    k_in = 40.0
    kt = rng.normal(scale=0.5, size=(7, 2))
    sg = excitation_errors(g, kt, k_in)
    for i, k in enumerate(kt):
        kvec = np.array([k[0], k[1], -np.sqrt(k_in**2 - k @ k)])  # beam along -z
        direct = k_in**2 - np.sum((kvec[None, :] + g) ** 2, axis=1)
        assert np.allclose(sg[i], direct, rtol=1e-12, atol=1e-10)
    # the upper Laue zone (g·[uvw] > 0) is reached: S_g = 0 possible for g_z > 0 only
    k_n, g_n = normal_components(g, kt, k_in, fr.normal_frame)
    assert np.all(k_n > 0)
    assert np.allclose(k_n, incident_kz(kt, k_in))  # normal = zone axis
    assert np.allclose(g_n, -g[:, 2])


def test_bragg_condition_position():
    lat = Lattice(5.431, 5.431, 5.431)
    fr = ZoneFrame(lat, (1, -1, 0), (0, 0, -1))
    g = fr.g_frame([[0, 0, 2]])
    # Bragg condition for ZOLZ g: k_t·ĝ = -|g|/2
    kx = np.linalg.norm(g) / 2  # ĝ = -x̂
    assert abs(excitation_errors(g, np.array([[kx, 0.3]]), 39.87)[0, 0]) < 1e-12


def test_felix_grid_matches_data_readme():
    grid = TiltGrid.felix(0.661, 76)
    d = 0.661 / 76
    assert grid.shape == (152, 152)
    r, c = 10, 100
    # qcbed's frame (zone = −incident_beam_direction): k_y = −(c − R + ½)Δ
    assert np.allclose(grid.kt[r, c], [(76 - r + 0.5) * d, -(c - 76 + 0.5) * d])


def test_bad_frames_raise():
    lat = Lattice(4, 4, 4)
    with pytest.raises(InputError, match="parallel"):
        ZoneFrame(lat, (0, 0, 1), (0, 0, 2))
    with pytest.raises(InputError, match="normal"):
        ZoneFrame(lat, (0, 0, 1), (1, 0, 0), (0, 0, -1))
    with pytest.raises(InputError):
        incident_kz(np.array([[50.0, 0.0]]), 40.0)
