"""Automatic chunk size (``Simulation(chunk_size=None)``): large chunks for serial runs and
large jobs, the job split for the workers otherwise; an explicit size used as given."""

from __future__ import annotations

import numpy as np
import pytest

from crystals import si
from qcbed.bloch import Simulation
from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import DEFAULT_CHUNK_SIZE, MAX_AUTO_CHUNK_SIZE
from qcbed.parallel import ProcessExecutor, SerialExecutor
from qcbed.scattering.structure_factors import PotentialModel


def _sim(executor, chunk_size=None) -> Simulation:
    return Simulation(si(), 200.0, [1, -1, 0], [0, 0, -1], smax=0.05, gmax=1.5,
                      potential=PotentialModel("kirkland", "bird_king"), kt_radius=0.05,
                      selection=BeamSelection(sgmin=3.0, omega=30.0), executor=executor,
                      accuracy=None, chunk_size=chunk_size)


def _sizes(sim: Simulation, n: int) -> tuple[object, list[int]]:
    ex, chunks = sim._chunks(np.zeros((n, 2)))
    return ex, [len(c) for c in chunks]


@pytest.mark.parametrize(("n", "first"), [(100, 100), (1000, 250), (5852, MAX_AUTO_CHUNK_SIZE)])
def test_serial_chunks_grow_with_the_job(n, first):
    _, sizes = _sizes(_sim(SerialExecutor()), n)
    assert sizes[0] == first and sum(sizes) == n


def test_workers_keep_enough_chunks_and_an_explicit_size_is_kept():
    ex = ProcessExecutor(2)
    # a 961-direction region on 2 workers: the default 128 (8 chunks, 4 per worker)
    assert _sizes(_sim(ex), 961)[1][0] == DEFAULT_CHUNK_SIZE
    # a large image: a quarter per worker, capped
    assert _sizes(_sim(ex), 5852)[1][0] == MAX_AUTO_CHUNK_SIZE
    assert _sizes(_sim(ex, chunk_size=40), 5852)[1][0] == 40
    assert _sizes(_sim(SerialExecutor(), chunk_size=40), 1000)[1] == [40] * 25


def test_automatic_chunks_give_the_same_intensities():
    """Chunks only regroup directions into batches (the weak-beam union of a batch is
    zero-padded): the intensities agree with 40-direction chunks to float32 round-off of
    the Bethe products."""
    rng = np.random.default_rng(3)
    kt = rng.uniform(-0.04, 0.04, (300, 2))
    auto = _sim(SerialExecutor()).solve(kt).intensities([800.0])
    small = _sim(SerialExecutor(), chunk_size=40).solve(kt).intensities([800.0])
    assert np.abs(auto - small).max() <= 1e-8 * np.abs(small).max()
