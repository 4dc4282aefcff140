"""Difference maps by Fourier synthesis and Gaussian cube files."""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.constants import BOHR_RADIUS, MOTT_BETHE_PREFACTOR, relativistic_gamma
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.density import (
    HARTREE_EV,
    DensityMap,
    difference_map,
    expand_reflections,
    fourier_synthesis,
    read_cube,
    write_cube,
)


def p1(lattice=None):
    lat = lattice or Lattice(4.0, 5.0, 6.0)
    return Crystal(lat, [Site("Si1", "Si", (0.1, 0.2, 0.3))], space_group_from_number(1))


def test_single_reflection_gives_the_cosine_wave():
    cr = p1()
    g = np.array([[1, 2, -1]])
    h, c = expand_reflections(cr, g, [0.5 + 0.0j], symmetry=False, friedel=True)
    assert len(h) == 2
    shape = (8, 10, 12)
    rho = fourier_synthesis(h, c, shape)
    x = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1)
    expected = 2 * 0.5 * np.cos(2 * np.pi * (x @ g[0]))
    assert np.max(np.abs(rho - expected)) < 1e-12
    # a complex coefficient shifts the wave: 2|C| cos(2π g·x + φ)
    h, c = expand_reflections(cr, g, [0.3j], symmetry=False)
    rho = fourier_synthesis(h, c, shape)
    assert np.max(np.abs(rho - 0.6 * np.cos(2 * np.pi * (x @ g[0]) + np.pi / 2))) < 1e-12


def test_xray_difference_map_of_one_reflection_is_analytic():
    cr = p1()
    kv = 200.0
    g = [[2, 0, 1]]
    du = 1e-3
    dm = difference_map(cr, g, [0.01 + du], [0.01], kv, kind="xray", shape=(10, 10, 10),
                        symmetry=False)
    s = 0.5 * float(cr.lattice.g_length(g[0]))
    omega = cr.lattice.volume
    dfx = -(s**2 / MOTT_BETHE_PREFACTOR) * np.pi * omega * du / relativistic_gamma(kv)
    x = dm.fractional_grid()
    expected = 2 * dfx / omega * np.cos(2 * np.pi * (x @ np.array(g[0])))
    assert dm.unit == "e/Å³"
    assert np.max(np.abs(dm.values - expected)) < 1e-12 * max(1.0, abs(dfx))
    pot = difference_map(cr, g, [0.01 + du], [0.01], kv, kind="potential", shape=(6, 6, 6),
                         symmetry=False)
    assert pot.unit == "V" and np.max(pot.values) > 0


def test_symmetry_expansion_of_si_111():
    cr = Crystal(Lattice(5.4307, 5.4307, 5.4307), [Site("Si1", "Si", (0.125,) * 3)],
                 space_group_from_number(227, 2))
    h, v = expand_reflections(cr, [[1, 1, 1]], [-0.05])
    assert len(h) == 8 and np.all(np.abs(np.abs(h) - 1) == 0)
    # origin at a centre of symmetry: all coefficients real, ±0.05
    assert np.allclose(np.abs(v), 0.05) and np.allclose(v.imag, 0)
    rho = fourier_synthesis(h, v, (12, 12, 12))
    # cubic symmetry: the map is invariant under x,y,z -> y,z,x
    assert np.allclose(rho, np.transpose(rho, (1, 2, 0)))


def test_cube_round_trip_non_orthogonal_cell(tmp_path):
    lat = Lattice(4.2, 5.1, 6.3, 82.0, 97.0, 111.0)
    cr = Crystal(lat, [Site("O1", "O", (0.1, 0.2, 0.3)), Site("Si1", "Si", (0.6, 0.5, 0.9))],
                 space_group_from_number(2))           # P-1: 4 atoms in the cell
    dm = difference_map(cr, [[1, 0, 0], [0, 1, 1], [1, -1, 2]], [0.011, -0.004, 0.002],
                        [0.010, -0.005, 0.0025], 200.0, shape=(9, 10, 11))
    path = write_cube(tmp_path / "m.cube", dm)
    c = read_cube(path)
    assert c["shape"] == (9, 10, 11)
    # voxel axes: a/n1, b/n2, c/n3 in Bohr, Cartesian frame of the conventions
    basis = lat.direct_basis / BOHR_RADIUS
    assert np.allclose(c["axes"] * np.array([[9], [10], [11]]), basis, atol=2e-6)
    assert np.allclose(c["origin"], 0)
    # every atom of the cell, in Cartesian Bohr
    assert len(c["atomic_numbers"]) == len(cr.atoms) == 4
    assert sorted(c["atomic_numbers"]) == [8, 8, 14, 14]
    cart = cr.atoms.frac @ basis
    assert np.allclose(np.sort(c["positions"], axis=0), np.sort(cart, axis=0), atol=2e-6)
    # values in e/Bohr³
    assert "e/bohr^3" in c["comments"][1]
    assert np.allclose(c["values"], dm.values * BOHR_RADIUS**3,
                       rtol=1e-5, atol=1e-6 * np.abs(dm.values).max() * BOHR_RADIUS**3)
    pot = DensityMap(dm.values, lat, kind="potential", unit="V", elements=("O",),
                     frac=np.zeros((1, 3)))
    c2 = read_cube(write_cube(tmp_path / "p.cube", pot))
    assert "hartree/e" in c2["comments"][1]
    assert np.allclose(c2["values"], dm.values / HARTREE_EV, rtol=1e-5,
                       atol=1e-6 * np.abs(dm.values).max())


def test_bad_inputs():
    from qcbed.errors import InputError

    cr = p1()
    with pytest.raises(InputError):
        difference_map(cr, [[1, 0, 0]], [1.0, 2.0], [1.0], 200.0)
    with pytest.raises(InputError):
        difference_map(cr, [[1, 0, 0]], [1.0], [1.0], 200.0, kind="magnetic")
