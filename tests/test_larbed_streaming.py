"""Streaming: block-by-block processing, bounded memory, virtual images.

A ~50 MB ``.npy`` file is processed in 2 MiB blocks; a wrapper around the
block loader counts the loads and their sizes, and tracemalloc (which tracks
numpy buffers) bounds the peak memory of a full extraction far below the file
size.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import qcbed.larbed.streaming as streaming
from qcbed.larbed import (
    FourDData,
    SpotMap,
    SpotPredictor,
    TiltCalibration,
    annulus_mask,
    disc_mask,
    extract_lacbed,
    max_pattern,
    mean_pattern,
    open_4d,
    virtual_annular,
    virtual_aperture,
    virtual_bright_field,
    virtual_image,
)
from qcbed.larbed.synthetic import SpotRenderer, synthetic_larbed

NY, NX = 24, 32
HKL = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [1, 1, 0]])


@pytest.fixture(scope="module")
def npy_file(tmp_path_factory):
    ref = ((NY - 1) / 2, (NX - 1) / 2)
    cal = TiltCalibration.from_parameters(10.0, 0.8, origin=(64.0, 64.0), reference=ref)
    spots = SpotMap.from_reference([0, 0, 1], (64.0, 64.0), [1, 0, 0], (64.0, 80.0),
                                   [0, 1, 0], (80.0, 64.0), reference_tilt=ref)
    pred = SpotPredictor(spots, cal)
    pos = pred.grid_positions(HKL, (NY, NX))
    inten = np.random.default_rng(3).random((len(HKL), NY, NX))
    data = synthetic_larbed(inten, pos, pos[0], SpotRenderer((128, 128), halo=0.0), None)
    path = tmp_path_factory.mktemp("stream") / "larbed.npy"
    np.save(path, data)
    return {"path": path, "data": data, "predictor": pred, "beam": pos[0]}


def test_extraction_is_chunked_and_memory_bounded(npy_file, monkeypatch):
    size = npy_file["path"].stat().st_size
    assert size > 40 * 2**20
    d = open_4d(npy_file["path"], chunk_mb=2)
    pred = npy_file["predictor"]
    # warm up lazy imports (dask loads modules on the first compute)
    extract_lacbed(d.subset(slice(0, 2), slice(0, 2)), pred, HKL, progress=False)

    loads: list[int] = []
    original = streaming.load_block

    def counting(data, rows, cols):
        block = original(data, rows, cols)
        loads.append(block.data.nbytes)
        return block

    monkeypatch.setattr(streaming, "load_block", counting)
    tracemalloc.start()
    try:
        stack = extract_lacbed(d, pred, HKL, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n_blocks = len(streaming.block_slices(d))
    assert n_blocks >= 20
    assert len(loads) == n_blocks                     # every block read exactly once
    assert max(loads) <= 2 * 2**20                    # never more than one chunk at a time
    assert sum(loads) == d.nbytes
    assert peak < 0.15 * size                         # ~3 MB for a 50 MB file
    # same answer as the whole array in memory
    full = extract_lacbed(FourDData.from_array(npy_file["data"], chunk_mb=64), pred, HKL,
                          progress=False)
    assert np.allclose(stack.images, full.images) and np.allclose(stack.variance,
                                                                  full.variance)


def test_parallel_blocks_give_the_same_result(npy_file):
    d = open_4d(npy_file["path"], chunk_mb=2)
    pred = npy_file["predictor"]
    one = extract_lacbed(d, pred, HKL, progress=False, workers=1)
    two = extract_lacbed(d, pred, HKL, progress=False, workers=2)
    assert np.array_equal(one.images, two.images)


def test_virtual_images(npy_file):
    data = npy_file["data"].astype(float)
    d = open_4d(npy_file["path"], chunk_mb=1)
    bf = virtual_bright_field(d, 6.0, (64.0, 64.0))
    m = disc_mask((128, 128), (64.0, 64.0), 6.0)
    assert np.allclose(bf, data[..., m].sum(-1))
    adf = virtual_annular(d, 10.0, 30.0, (64.0, 64.0), workers=2)
    a = annulus_mask((128, 128), (64.0, 64.0), 10.0, 30.0)
    assert np.allclose(adf, data[..., a].sum(-1))
    w = np.random.default_rng(0).random((128, 128))
    assert np.allclose(virtual_image(d, w), np.einsum("abij,ij->ab", data, w))
    # an aperture following the direct beam (descan off) collects the whole 000 spot
    beam = npy_file["beam"]
    ap = virtual_aperture(d, beam, 5.0)
    direct = np.array([[data[r, c][disc_mask((128, 128), beam[r, c], 5.0)].sum()
                        for c in range(NX)] for r in range(NY)])
    assert np.allclose(ap, direct)
    assert np.allclose(mean_pattern(d), data.mean(axis=(0, 1)))
    assert np.array_equal(max_pattern(d, progress=False), data.max(axis=(0, 1)))
