"""Readers of experimental images (npy, TIFF, DM3, Felix folders) and their error reporting."""

from __future__ import annotations

import os

import numpy as np
import pytest

from qcbed.bloch.grids import TiltGrid
from qcbed.errors import InputError
from qcbed.experiment import (
    CBEDPattern,
    LACBEDStack,
    read_dm,
    read_felix_images,
    read_image,
    read_npy_stack,
)


# ---------------------------------------------------------------- PyExtal-style .npy
def test_npy_stack_with_pyextal_g_vectors(tmp_path, pyextal_dat_dir):
    gfile = pyextal_dat_dir / "larbed_si_g_vectors.npy"
    g = np.load(gfile)
    assert g.shape == (45, 3)
    rng = np.random.default_rng(0)
    imgs = rng.uniform(1, 100, (45, 24, 20))
    var = imgs * 1.5
    np.save(tmp_path / "dp.npy", imgs)
    np.save(tmp_path / "var.npy", var)
    st = read_npy_stack(tmp_path / "dp.npy", tmp_path / "var.npy", gfile)
    assert isinstance(st, LACBEDStack) and st.images.shape == (45, 24, 20)
    assert np.array_equal(st.hkl, g) and np.allclose(st.variance, var)
    assert np.allclose(st.image((0, 0, 2)), imgs[15])
    # Poisson variances by default
    st2 = read_npy_stack(imgs, g_vectors=g)
    assert np.allclose(st2.variance, np.maximum(imgs, 1.0))
    with pytest.raises(InputError, match="number of g vectors"):
        read_npy_stack(imgs[:44], g_vectors=g)
    with pytest.raises(InputError, match="shape of the images"):
        read_npy_stack(imgs, var[:, :10], g)
    bad_var = var.copy()
    bad_var[3, 5, 7] = 0.0
    bad_var[4, 0, 1] = -1.0
    with pytest.raises(InputError, match=r"2 variance pixels.*\(3, 5, 7\)"):
        read_npy_stack(imgs, bad_var, g)
    with pytest.raises(InputError, match="no such file"):
        read_npy_stack(tmp_path / "missing.npy", g_vectors=g)
    with pytest.raises(InputError, match="g vectors"):
        read_npy_stack(imgs)


def test_pixel_validation_messages():
    imgs = np.ones((2, 10, 12))
    imgs[1, 4, 5] = np.nan
    with pytest.raises(InputError, match=r"1 NaN or infinite pixels \(first at \[\(1, 4, 5\)\]"):
        read_npy_stack(imgs, g_vectors=[[0, 0, 0], [1, 1, 1]])
    imgs = np.ones((2, 10, 12))
    imgs[0, 2, 3] = -4.0
    imgs[1, 9, 0] = -0.5
    with pytest.raises(InputError, match=r"2 negative pixels \(first at \[\(0, 2, 3\), "
                                         r"\(1, 9, 0\)\]"):
        read_npy_stack(imgs, g_vectors=[[0, 0, 0], [1, 1, 1]])
    clipped = read_npy_stack(imgs, g_vectors=[[0, 0, 0], [1, 1, 1]], clip_negative=True)
    assert clipped.images.min() == 0.0 and clipped.images[0, 2, 3] == 0.0
    kept = read_npy_stack(imgs, g_vectors=[[0, 0, 0], [1, 1, 1]], allow_negative=True)
    assert kept.images[0, 2, 3] == -4.0 and kept.variance[0, 2, 3] == 1.0   # floor
    with pytest.raises(InputError, match="more than once"):
        LACBEDStack(np.ones((2, 4, 4)), [[1, 1, 1], [1, 1, 1]])
    with pytest.raises(InputError, match="one hkl per image"):
        LACBEDStack(np.ones((2, 4, 4)), [[1, 1, 1]])


# ---------------------------------------------------------------- single images
def test_read_image_npy_and_tiff(tmp_path):
    img = np.arange(30.0).reshape(5, 6)
    np.save(tmp_path / "a.npy", img[None])
    p = read_image(tmp_path / "a.npy")
    assert isinstance(p, CBEDPattern) and np.array_equal(p.image, img)
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "a.tif", img.astype(np.float32))
    assert np.array_equal(read_image(tmp_path / "a.tif").image, img)
    with pytest.raises(InputError, match="unknown image format"):
        (tmp_path / "a.png").write_bytes(b"x")
        read_image(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", np.ones((2, 3, 4)))
    with pytest.raises(InputError, match="single 2-D image"):
        read_image(tmp_path / "b.npy")
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nothing.tif")


def test_read_dm3(si_dlacbed_dir):
    p = read_dm(si_dlacbed_dir / "Si_+0+0+0.dm3")
    assert p.image.shape == (152, 152) and p.image.min() > 0
    assert p.source.endswith("Si_+0+0+0.dm3")
    # files with a singleton leading axis are squeezed
    assert read_dm(si_dlacbed_dir / "Si_+0+0+2.dm3").image.shape == (152, 152)
    with pytest.raises(InputError, match=r"Si_\+1\+1\+3\.dm3.*20 negative pixels "
                                         r"\(first at \[\(141, 96\)"):
        read_dm(si_dlacbed_dir / "Si_+1+1+3.dm3")
    assert read_dm(si_dlacbed_dir / "Si_+1+1+3.dm3", clip_negative=True).image.min() == 0.0


# ---------------------------------------------------------------- Felix folders
@pytest.fixture(scope="module")
def si_stack(si_dlacbed_dir):
    return read_felix_images(si_dlacbed_dir, clip_negative=True)


def test_felix_folder_images_and_hkl(si_stack, si_dlacbed_dir):
    from qcbed.io.felix import read_felix_hkl

    st = si_stack
    assert st.images.shape == (45, 152, 152)
    names = {tuple(int(x) for x in h) for h in st.hkl}
    files = sorted(f.name for f in si_dlacbed_dir.glob("Si_*.dm3"))
    assert {f"Si_{h[0]:+d}{h[1]:+d}{h[2]:+d}.dm3" for h in names} == set(files)
    fh = read_felix_hkl(si_dlacbed_dir / "felix.hkl")
    assert len(fh) == 38
    assert np.array_equal(st.hkl[0], [0, 0, 0]) and np.array_equal(st.hkl[1:39], fh)
    assert np.array_equal(st.metadata["felix_hkl"], fh)
    # each image is the file named after its reflection
    for h in ([0, 0, 2], [-1, -1, 1], [3, 3, -5]):
        f = si_dlacbed_dir / f"Si_{h[0]:+d}{h[1]:+d}{h[2]:+d}.dm3"
        assert np.array_equal(st.image(h), read_dm(f, clip_negative=True).image)
    assert st.voltage_kv == 200.0
    assert np.abs(st.tilt_grid().kt - TiltGrid.felix(0.661, 76).kt).max() < 1e-14
    assert np.allclose(st.variance, np.maximum(st.images, 1.0))


def test_felix_folder_errors(si_dlacbed_dir, tmp_path):
    with pytest.raises(InputError, match=r"Si_\+1\+1\+3\.dm3.*20 negative pixels"):
        read_felix_images(si_dlacbed_dir)
    # a folder of links to the data without the 111 image
    for f in si_dlacbed_dir.iterdir():
        if f.name != "Si_+1+1+1.dm3":
            os.symlink(f, tmp_path / f.name)
    with pytest.raises(InputError, match=r"1 reflections of felix.hkl.*\(1, 1, 1\)"):
        read_felix_images(tmp_path, clip_negative=True)
    with pytest.warns(UserWarning, match="skipped"):
        st = read_felix_images(tmp_path, clip_negative=True, require_hkl=False)
    assert len(st) == 44
    with pytest.raises(InputError, match="no such folder"):
        read_felix_images(tmp_path / "nope")


def test_felix_images_have_the_engine_orientation(si_stack):
    """Simulated Si [1-10] images correlate far better with the images as loaded than
    with their transposes or mirror images (every second pixel, to stay fast)."""
    from qcbed.bloch.simulation import Simulation
    from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
    from qcbed.refine.gof import zncc

    cr = Crystal(Lattice(5.431, 5.431, 5.431), [Site("Si1", "Si", (0, 0, 0), b_iso=0.6)],
                 space_group_from_number(227, 1))
    out = [[0, 0, 0], [0, 0, 2], [1, 1, 1], [2, 2, 0], [-1, -1, 1], [1, 1, -1]]
    # qcbed's zone is −incident_beam_direction (Felix's beam travels along it)
    sim = Simulation(cr, 200, [-1, 1, 0], [0, 0, -1], gmax=1.6, smax=0.03,
                     kt_radius=0.661 * 1.45, holz=False, outputs=out)
    full = si_stack.tilt_grid()
    grid = TiltGrid(full.kt[::2, ::2], full.mask[::2, ::2])
    pattern = sim.pattern(grid, 1480.0)[0]                     # (n_out, 76, 76)
    transforms = {"as loaded": lambda e: e, "transposed": lambda e: e.T,
                  "left-right": lambda e: e[:, ::-1], "up-down": lambda e: e[::-1],
                  "rotated 180": lambda e: e[::-1, ::-1],
                  "anti-transposed": lambda e: e[::-1, ::-1].T}
    mean = {}
    for name, f in transforms.items():
        mean[name] = np.mean([zncc(pattern[k], f(si_stack.image(h))[::2, ::2])
                              for k, h in enumerate(sim.outputs)])
    assert mean["as loaded"] > 0.75
    for name, v in mean.items():
        if name != "as loaded":
            assert mean["as loaded"] > v + 0.3, mean
