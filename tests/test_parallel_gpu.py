"""The optional torch backend against the numpy engine (CPU parity; CUDA when present).

Skipped as a whole when torch is not installed (it is only in the ``gpu``
extra); the CUDA tests are marked ``gpu`` and skip without a CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.bloch.solver import pattern_chunk, solve_chunk
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError, WorkerError
from qcbed.parallel import SerialExecutor, make_executor
from qcbed.scattering.structure_factors import PotentialModel

torch = pytest.importorskip(
    "torch", reason="torch is not installed: the optional GPU backend (pip install "
                    "qcbed[gpu]) is not tested")

from qcbed.parallel.gpu import (  # noqa: E402
    TorchExecutor,
    pattern_chunk_torch,
    solve_chunk_torch,
)

pytestmark = pytest.mark.timeout(300)

GRID = TiltGrid.regular((0, 0), (0.02, 0), (0, -0.02), (9, 9))
THICK = np.array([300.0, 1480.0, 3000.0])
PARITY = 1e-10  # of the largest intensity


def si() -> Crystal:
    a = 5.431
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                   space_group_from_number(227, 1))


def gaas() -> Crystal:
    a = 5.6534
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25,) * 3, b_iso=0.5)],
                   space_group_from_number(216))


def sim_for(crystal, mode="fast", absorption="bird_king", executor=None, **kw):
    return Simulation(crystal, 200, [1, -1, 0], [0, 0, -1],
                      potential=PotentialModel("kirkland", absorption),
                      selection=kw.pop("selection", BeamSelection(1.0, 100)),
                      gmax=kw.pop("gmax", 1.8), smax=0.02, kt_radius=0.15, mode=mode, chunk_size=40,
                      executor=executor or SerialExecutor(), **kw)


CASES = {
    "real-fast-absorbing": lambda: sim_for(si()),
    "real-fast-elastic": lambda: sim_for(si(), absorption="none"),
    "hermitian-fast-absorbing": lambda: sim_for(gaas()),
    "exact": lambda: sim_for(si(), mode="exact"),
    "exact-hermitian": lambda: sim_for(gaas(), mode="exact"),
    "all-strong": lambda: sim_for(si(), selection=BeamSelection.all_strong(), gmax=1.3),
}


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("case", list(CASES))
def test_torch_cpu_matches_numpy_engine(case):
    sim = CASES[case]()
    kt = GRID.points[::3]
    ref = solve_chunk(sim.arrays, kt)
    got = solve_chunk_torch(sim.arrays, kt, device="cpu")
    np.testing.assert_array_equal(got.n_strong, ref.n_strong)
    np.testing.assert_array_equal(got.n_weak, ref.n_weak)
    assert got.n_fallback == ref.n_fallback
    assert (got.n_rejected, got.n_clustered) == (ref.n_rejected, ref.n_clustered)
    assert np.array_equal(got.m_out, ref.m_out)
    # eigenvector phases and the order of degenerate eigenvalues are not unique:
    # compare what is invariant (intensities, amplitudes, sorted eigenvalues)
    assert rel(got.intensities(THICK), ref.intensities(THICK)) < PARITY
    assert rel(got.amplitudes(THICK), ref.amplitudes(THICK)) < PARITY
    key = lambda g: np.sort_complex(np.round(g, 12))  # noqa: E731
    assert np.max(np.abs(key(got.gamma) - key(ref.gamma))) < 1e-12
    # the pattern kernel returns the same intensities (computed on the device)
    p_got = pattern_chunk_torch(sim.arrays, kt, THICK, device="cpu")
    p_ref = pattern_chunk(sim.arrays, kt, THICK)
    assert rel(p_got.intensities, p_ref.intensities) < PARITY
    assert p_got.counts() == p_ref.counts()


def test_one_kernel_runs_on_tensors_including_the_host_cluster_steps():
    """The shared absorption step on torch tensors: first-order clusters and the
    quasi-degenerate second-order clusters (both solved on the host) give the numpy
    result, and the tensors stay tensors (no copy of the kernel in the torch backend)."""
    from qcbed.bloch import solver as S

    n = 8
    lam = np.array([[0.0, 1e-4, 1.0, 2.0, 3.1, 3.1 + 1e-6, 5.3, 6.4]]) * 1e-3
    q = np.diag(np.full(n, 1.2e-4)).astype(complex)
    q[0, 2] = q[2, 0] = 2e-5
    q[1, 2], q[2, 1] = 2e-5j, -2e-5j            # 0, 1 coupled at second order through 2
    q[4, 5] = q[5, 4] = 3e-5                    # 4, 5 a first-order cluster
    args = (lam, np.eye(n, dtype=complex)[None], np.full((1, n), n ** -0.5 + 0j), q[None],
            np.ones((1, 1)), n)
    ref = S._absorb_perturbatively(*args)
    got = S._absorb_perturbatively(*(torch.as_tensor(a) for a in args[:5]), n)
    assert ref[4] == got[4] == 1 and not ref[3][0] and not bool(got[3][0])
    for r, g in zip(ref[:3], got[:3]):
        assert isinstance(g, torch.Tensor)
        np.testing.assert_allclose(g.numpy(), r, rtol=0, atol=1e-12 * np.abs(r).max())


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_torch_derivatives_match(mode):
    sim = sim_for(si(), mode=mode)
    m = len(sim.table.hkl)
    coef = sim.sf_coefficients((1, 1, 1))
    deriv = (np.stack([coef, np.zeros(m, complex)]), np.stack([np.zeros(m, complex), coef]))
    kt = GRID.points[::6]
    ref = solve_chunk(sim.arrays, kt, deriv)
    got = solve_chunk_torch(sim.arrays, kt, deriv, device="cpu")
    for t in (500.0, 1480.0):
        for a, b in zip(got.gradients(t), ref.gradients(t)):
            assert rel(a, b) < PARITY


@pytest.mark.parametrize("batch_size", [None, 50, 10_000])
def test_torch_executor_behind_the_simulation_api(batch_size):
    ref = sim_for(si())
    ex = TorchExecutor("cpu", batch_size=batch_size)
    sim = sim_for(si(), executor=ex)
    i_ref = ref.pattern(GRID, THICK)
    assert rel(np.nan_to_num(sim.pattern(GRID, THICK)), np.nan_to_num(i_ref)) < PARITY
    assert ex.last_stats.n_tasks >= 1 and ex.last_stats.result_bytes > 0
    e_ref = ref.solve_eigen(GRID.points)
    e_got = sim.solve_eigen(GRID.points)
    assert e_got.n_dir == e_ref.n_dir and e_got.n_fallback == e_ref.n_fallback
    assert rel(e_got.intensities(THICK), e_ref.intensities(THICK)) < PARITY
    # a structure-factor update reaches the device
    u = sim.structure_factor((1, 1, 1))
    for s in (ref, sim):
        s.set_structure_factors({(1, 1, 1): (0.8 * u[0], 0.8 * u[1])})
    assert rel(np.nan_to_num(sim.pattern(GRID, THICK)),
               np.nan_to_num(ref.pattern(GRID, THICK))) < PARITY
    assert ex.last_stats.state_bytes == 0  # the index stayed on the device


def test_torch_executor_errors_and_other_tasks():
    from qcbed.parallel import _testing

    ex = make_executor("torch:cpu")
    assert isinstance(ex, TorchExecutor) and ex.device.type == "cpu"
    sim = sim_for(si(), executor=ex)
    with pytest.raises(InputError, match="longer than K"):  # |k_t| > K: found in the parent
        sim.solve_eigen(np.full((10, 2), 50.0))
    with pytest.raises(WorkerError, match="InputError"):  # and inside the torch backend
        ex.map_chunks(solve_chunk, sim.arrays, [np.full((4, 2), 50.0)])
    # a task without a torch kernel runs on the CPU, errors as everywhere
    assert ex.map_chunks(_testing.fail, sim.arrays, [1, 3], args=(2,)) == [1, 3]
    with pytest.raises(WorkerError, match="deliberate"):
        ex.map_chunks(_testing.fail, sim.arrays, [2], args=(2,))


def test_cuda_request_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from qcbed.errors import InputError

    with pytest.raises(InputError, match="CUDA"):
        TorchExecutor("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", ["real-fast-absorbing", "hermitian-fast-absorbing", "exact"])
def test_cuda_matches_numpy_engine(case):
    sim = CASES[case]()
    kt = GRID.points
    ref = solve_chunk(sim.arrays, kt)
    got = solve_chunk_torch(sim.arrays, kt, device="cuda")
    assert got.n_fallback == ref.n_fallback
    assert rel(got.intensities(THICK), ref.intensities(THICK)) < PARITY
    assert rel(pattern_chunk_torch(sim.arrays, kt, THICK, device="cuda").intensities,
               pattern_chunk(sim.arrays, kt, THICK).intensities) < PARITY
    ex = TorchExecutor("cuda")
    gsim = CASES[case]()
    gsim.executor = ex
    assert rel(np.nan_to_num(gsim.pattern(GRID, THICK)),
               np.nan_to_num(sim.pattern(GRID, THICK))) < PARITY
