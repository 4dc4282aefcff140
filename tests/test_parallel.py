"""Executors: equivalence, state shipping and deltas, failures, specs (issue 8).

Serial, local processes and a Dask LocalCluster (2 single-threaded workers)
run in this process; MPI runs in subprocesses (``mpiexec -n 3 python -m
mpi4py.futures`` and spawned workers) so that MPI is never initialised inside
pytest. Every test that could hang has a timeout.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.bloch.solver import pattern_chunk, solve_chunk
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.errors import InputError, WorkerError
from qcbed.parallel import (
    DaskExecutor,
    Executor,
    MPIExecutor,
    ProcessExecutor,
    SerialExecutor,
    _state,
    _testing,
    dask_cluster,
    executors,
    make_executor,
)
from qcbed.parallel import (
    spec as executor_spec,
)
from qcbed.scattering.structure_factors import PotentialModel

pytestmark = pytest.mark.timeout(120)

HAVE_DASK = importlib.util.find_spec("distributed") is not None
GRID = TiltGrid.regular((0, 0), (0.02, 0), (0, -0.02), (13, 13))
THICK = [700.0, 1480.0]
TOL = 1e-12


def si() -> Crystal:
    a = 5.431
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0, 0, 0), b_iso=0.47)],
                   space_group_from_number(227, 1))


def gaas() -> Crystal:
    a = 5.6534
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25,) * 3, b_iso=0.5)],
                   space_group_from_number(216))


def make_sim(executor=None, crystal=None, mode="fast", chunk_size=40) -> Simulation:
    return Simulation(crystal or si(), 200, [1, -1, 0], [0, 0, -1],
                      potential=PotentialModel("kirkland", "bird_king"),
                      selection=BeamSelection(1.0, 100), gmax=1.8, smax=0.02, kt_radius=0.15,
                      outputs=[[0, 0, 2], [1, 1, 1], [-1, -1, -1], [2, 2, 0]],
                      chunk_size=chunk_size, mode=mode, executor=executor)


def max_diff(a, b) -> float:
    return float(np.nanmax(np.abs(np.asarray(a) - np.asarray(b))))


def assert_same_eigen(a, b, tol=TOL):
    for f in ("gamma", "bout", "c", "m_out"):
        assert max_diff(getattr(a, f), getattr(b, f)) <= tol, f
    np.testing.assert_array_equal(a.n_strong, b.n_strong)
    np.testing.assert_array_equal(a.n_weak, b.n_weak)
    assert a.n_fallback == b.n_fallback
    if a.gmat is not None or b.gmat is not None:
        assert max_diff(a.gmat, b.gmat) <= tol


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def processes():
    ex = ProcessExecutor(2, timeout=90)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def dask_executor():
    if not HAVE_DASK:
        pytest.skip("distributed is not installed (pip install qcbed[distributed])")
    import dask
    import distributed  # noqa: F401  (its config must exist before dask.config.set)

    # a dead worker fails its task at once (no retries), so the test does not wait
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        ex = DaskExecutor(n_workers=2, timeout=90)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def reference():
    """Serial reference: Si (real symmetric fast path with absorption)."""
    sim = make_sim(SerialExecutor())
    return sim, sim.pattern(GRID, THICK, use_symmetry=False), sim.solve_eigen(GRID.points)


@pytest.fixture(params=["processes", "dask"])
def parallel(request, processes):
    if request.param == "dask":
        return request.getfixturevalue("dask_executor")
    return processes


# ---------------------------------------------------------------- equivalence
def test_parallel_executors_agree_with_serial(parallel, reference):
    _, i_ref, e_ref = reference
    sim = make_sim(parallel)
    i_par = sim.pattern(GRID, THICK, use_symmetry=False)
    assert parallel.last_stats.n_tasks == -(-len(GRID.points) // 40)
    assert max_diff(i_par, i_ref) <= TOL
    assert_same_eigen(sim.solve_eigen(GRID.points), e_ref)
    # the symmetry-reduced path through the executor too
    ref_sym = make_sim(SerialExecutor()).pattern(GRID, THICK)
    assert max_diff(sim.pattern(GRID, THICK), ref_sym) <= TOL


def test_parallel_agrees_hermitian_and_exact_with_derivatives(parallel, monkeypatch):
    monkeypatch.setattr(dask_cluster, "DASK_SCATTER_ARGS_BYTES", 0)  # exercise the scatter
    # GaAs: non-centrosymmetric, complex Hermitian fast path with absorption
    kt = GRID.points[::2]
    ref = make_sim(SerialExecutor(), crystal=gaas())
    sim = make_sim(parallel, crystal=gaas())
    assert not sim.arrays.real
    assert_same_eigen(sim.solve_eigen(kt), ref.solve_eigen(kt))
    # exact mode with analytic structure-factor derivatives (G_p matrices travel back)
    ref = make_sim(SerialExecutor(), mode="exact")
    sim = make_sim(parallel, mode="exact")
    m = len(ref.table.hkl)
    coef = ref.sf_coefficients((1, 1, 1))
    deriv = (np.stack([coef, np.zeros(m, complex)]), np.stack([np.zeros(m, complex), coef]))
    e_ref = ref.solve_eigen(kt[:60], deriv)
    e_par = sim.solve_eigen(kt[:60], deriv)
    assert e_par.gmat is not None and e_par.gmat.shape[1] == 2
    assert_same_eigen(e_par, e_ref)


def test_process_workers_run_blas_single_threaded(processes):
    sim = make_sim()
    info = processes.map_chunks(_testing.probe, sim.arrays, list(range(6)))
    assert len({i["pid"] for i in info}) >= 1
    assert all(t == 1 for i in info for t in i["blas_threads"] if t is not None)
    assert all(i["pid"] != os.getpid() for i in info)


# ---------------------------------------------------------------- state shipping
def test_structure_factor_update_ships_only_the_delta(parallel):
    ref = make_sim(SerialExecutor())
    sim = make_sim(parallel)
    u111 = sim.structure_factor((1, 1, 1))
    first = sim.pattern(GRID, THICK, use_symmetry=False)
    s1 = parallel.last_stats
    assert s1.state_bytes > 0 and s1.delta_rows == 0
    sim.pattern(GRID, THICK, use_symmetry=False)
    s2 = parallel.last_stats
    assert s2.state_bytes == 0 and s2.delta_bytes == 0
    assert s2.task_bytes < s1.state_bytes
    results = {}
    for scale in (0.9, 1.2, 0.9):
        new = {(1, 1, 1): (u111[0] * scale, u111[1] * scale)}
        sim.set_structure_factors(new)
        ref.set_structure_factors(new)
        upd = sim.pattern(GRID, THICK, use_symmetry=False)
        s3 = parallel.last_stats
        assert s3.state_bytes == 0, "an update must not re-ship the engine state"
        # {111} and Friedel mates: a handful of rows (index + U + U′ each)
        assert 0 < s3.delta_rows <= 16
        assert s3.delta_bytes == s3.delta_rows * (8 + 16 + 16)
        assert s3.delta_bytes < 0.02 * s1.state_bytes
        assert max_diff(upd, ref.pattern(GRID, THICK, use_symmetry=False)) <= TOL
        assert max_diff(upd, first) > 1e-6
        if scale in results:  # the workers went 0.9 → 1.2 → 0.9
            assert max_diff(upd, results[scale]) == 0.0
        results[scale] = upd
    # exactly the shipped values again: no delta, and the workers drop theirs
    base = _state.shipper().entry(sim.arrays)[0] if isinstance(parallel, ProcessExecutor) \
        else parallel._entry(sim.arrays)[0]
    values = base.base if not isinstance(base, dict) else base["base"]
    assert type(sim.arrays).delta_fields == ("u", "u_abs")  # what the class says ships
    for name, v in zip(type(sim.arrays).delta_fields, values):
        getattr(sim.arrays, name)[:] = v
    sim.arrays.refresh()
    back = sim.pattern(GRID, THICK, use_symmetry=False)
    assert parallel.last_stats.delta_rows == 0 and parallel.last_stats.state_bytes == 0
    assert max_diff(back, first) == 0.0


def test_stale_state_is_never_reused(processes):
    sim = make_sim(processes)
    arrays = sim.arrays
    ref = solve_chunk(arrays, GRID.points[:40])
    out = processes.map_chunks(solve_chunk, arrays, [GRID.points[:40]])[0]
    assert_same_eigen(out, ref)
    token = _state.shipper().entry(arrays)[0].token
    # a copy carries the same attributes but is a different object: new token
    other = copy.copy(arrays)
    other.k_in = arrays.k_in * 1.001
    res = processes.map_chunks(solve_chunk, other, [GRID.points[:40]])[0]
    assert_same_eigen(res, solve_chunk(other, GRID.points[:40]))
    assert max_diff(res.gamma, ref.gamma) > 1e-9
    assert _state.shipper().entry(other)[0].token != token
    # a static field changed in place on the same object: new token too
    arrays.rules = replace(arrays.rules, sgmin=0.5)
    res = processes.map_chunks(solve_chunk, arrays, [GRID.points[:40]])[0]
    assert _state.shipper().entry(arrays)[0].token != token
    assert_same_eigen(res, solve_chunk(arrays, GRID.points[:40]))
    # a new set-up (with_changes) gets its own state
    sim2 = sim.with_changes(voltage_kv=300.0)
    assert _state.shipper().entry(sim2.arrays)[0].token not in (token,)
    i2 = sim2.pattern(GRID, THICK, use_symmetry=False)
    ref2 = make_sim(SerialExecutor()).with_changes(voltage_kv=300.0)
    assert max_diff(i2, ref2.pattern(GRID, THICK, use_symmetry=False)) <= TOL


def test_state_file_removed_when_arrays_are_collected(processes):
    sim = make_sim(processes)
    sim.pattern(GRID, THICK, use_symmetry=False)
    path = _state.shipper().entry(sim.arrays)[0].path
    assert os.path.exists(path)
    del sim
    gc.collect()
    assert not os.path.exists(path)


def test_workers_without_the_state_file_get_it_inline(processes):
    class NoSharedDisk(_state.StateShipper):
        """Sends a path the workers cannot read (as on another node)."""

        def payload(self, arrays):
            p, entry, new, delta = super().payload(arrays)
            return (p[0], "/nonexistent/qcbed/" + os.path.basename(p[1])) + p[2:], entry, \
                new, delta

    ex = ProcessExecutor(2, timeout=60)
    ex._shipper = NoSharedDisk()
    try:
        ref = make_sim(SerialExecutor())
        sim = make_sim(ex)
        assert max_diff(sim.pattern(GRID, THICK, use_symmetry=False),
                        ref.pattern(GRID, THICK, use_symmetry=False)) <= TOL
        assert 1 <= ex.last_stats.resent_inline <= 4  # about once per worker
        sim.pattern(GRID, THICK, use_symmetry=False)
        assert ex.last_stats.resent_inline == 0  # cached on the workers now
    finally:
        ex.close()
        ex._shipper.cleanup()


def test_worker_cache_applies_delta_to_the_base(processes):
    """Worker side: a state digest that matches nothing cached rebuilds from the base."""
    sim = make_sim()
    arrays = sim.arrays
    payload, _, _, _ = _state.shipper().payload(arrays)
    base = _state.resolve(payload)
    rows = np.array([1, 2])
    delta = (rows, arrays.u[rows] * 2, arrays.u_abs[rows] * 3)
    cur = _state.resolve(payload[:2] + ("s1", delta, None))
    assert cur is not base and np.allclose(cur.u[rows], arrays.u[rows] * 2)
    assert np.array_equal(base.u, arrays.u)  # the cached base is untouched
    assert _state.resolve(payload) is base
    _state._WORKER_CACHE.clear()


# ---------------------------------------------------------------- failures
@pytest.mark.parametrize("kind", ["serial", "processes", "dask"])
def test_task_exception_raises_worker_error(kind, request, processes):
    ex = {"serial": SerialExecutor(), "processes": processes}.get(kind)
    if ex is None:
        ex = request.getfixturevalue("dask_executor")
    sim = make_sim()
    with pytest.raises(WorkerError, match=r"(?s)chunk 3 of 5.*ValueError.*deliberate failure"):
        ex.map_chunks(_testing.fail, sim.arrays, [0, 1, 2, 3, 4], args=(2,))
    # the executor is still usable
    assert ex.map_chunks(_testing.fail, sim.arrays, [0, 1, 3], args=(2,)) == [0, 1, 3]


def test_serial_error_keeps_the_original_as_cause():
    sim = make_sim()
    with pytest.raises(WorkerError) as info:
        SerialExecutor().map_chunks(_testing.fail, sim.arrays, [0])
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.original_type == "ValueError"


def test_bad_input_in_a_chunk_raises_worker_error(processes):
    sim = make_sim(processes)
    with pytest.raises(InputError, match="longer than K"):  # |k_t| > K: found in the parent
        sim.solve_eigen(np.full((100, 2), 50.0))
    # an input error inside a worker: named, without the worker's traceback
    with pytest.raises(WorkerError, match="InputError") as info:
        processes.map_chunks(solve_chunk, sim.arrays, [np.full((4, 2), 50.0)] * 4)
    assert "longer than K" in str(info.value)
    assert "worker traceback" not in str(info.value)


@pytest.mark.timeout(60)
def test_dead_process_raises_worker_error_and_pool_recovers():
    ex = ProcessExecutor(2, timeout=30)
    sim = make_sim()
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"died \(.*exit code 3"):
            ex.map_chunks(_testing.die, sim.arrays, [0, 1, 2, 3], args=(2,))
        assert time.monotonic() - t0 < 20
        assert ex.map_chunks(_testing.fail, sim.arrays, [0, 1], args=(5,)) == [0, 1]
    finally:
        ex.close()


@pytest.mark.timeout(60)
def test_process_timeout_stops_the_workers():
    ex = ProcessExecutor(2, timeout=1.0)
    sim = make_sim()
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match="no result within 1 s"):
            ex.map_chunks(_testing.sleep, sim.arrays, [0, 1, 2], args=(60.0,))
        assert time.monotonic() - t0 < 15
        assert ex.map_chunks(_testing.sleep, sim.arrays, [0, 1], args=(0.0,)) == [0, 1]
    finally:
        ex.close()


@pytest.mark.timeout(90)
def test_dask_dead_worker_and_timeout(dask_executor):
    sim = make_sim()
    with pytest.raises(WorkerError, match="worker died"):
        dask_executor.map_chunks(_testing.die, sim.arrays, [0])
    old = dask_executor.timeout
    dask_executor.timeout = 0.5
    try:
        with pytest.raises(WorkerError, match="no result within"):
            dask_executor.map_chunks(_testing.sleep, sim.arrays, [0], args=(2.0,))
    finally:
        dask_executor.timeout = old
    # the nanny restarts the worker: the executor keeps working
    ref = make_sim(SerialExecutor()).pattern(GRID, THICK, use_symmetry=False)
    assert max_diff(make_sim(dask_executor).pattern(GRID, THICK, use_symmetry=False),
                    ref) <= TOL


# ---------------------------------------------------------------- specs
def test_make_executor_specs(processes):
    assert isinstance(make_executor("serial"), SerialExecutor)
    assert isinstance(make_executor(1), SerialExecutor)
    assert isinstance(make_executor("1"), SerialExecutor)
    for spec in (2, "2", "processes:2", " Processes:2 "):
        ex = make_executor(spec)
        assert isinstance(ex, ProcessExecutor) and ex.n_workers == 2
        ex.close()
    ex = make_executor("processes", timeout=5)
    assert ex.n_workers == executors.available_cores() and ex.timeout == 5
    assert make_executor(processes) is processes
    assert isinstance(make_executor(None), Executor)
    assert make_executor("auto") is make_executor(None)
    for bad in ("bogus", 0, -2, "processes:0", "dask:x", "mpi:-1", True, 2.5):
        with pytest.raises(InputError):
            make_executor(bad)
    with pytest.raises(InputError):
        ProcessExecutor(2, timeout=0)


def test_default_executor_from_environment(monkeypatch):
    monkeypatch.setattr(executor_spec, "_DEFAULT", None)
    monkeypatch.setenv("QCBED_WORKERS", "1")
    assert isinstance(executor_spec.default_executor(), SerialExecutor)
    monkeypatch.setattr(executor_spec, "_DEFAULT", None)
    monkeypatch.setenv("QCBED_WORKERS", "processes:2")
    ex = executor_spec.default_executor()
    assert isinstance(ex, ProcessExecutor) and ex.n_workers == 2
    monkeypatch.setattr(executor_spec, "_DEFAULT", None)


def test_make_executor_dask_address_and_client(dask_executor):
    addr = dask_executor.client.scheduler.address
    ex = make_executor(addr)
    try:
        assert isinstance(ex, DaskExecutor) and ex.n_workers >= 1
        sim = make_sim(ex)
        ref = make_sim(SerialExecutor())
        assert max_diff(sim.pattern(GRID, THICK, use_symmetry=False),
                        ref.pattern(GRID, THICK, use_symmetry=False)) <= TOL
    finally:
        ex.close()
    # closing a connection does not stop the cluster; a Client object works too
    ex = make_executor(dask_executor.client)
    assert isinstance(ex, DaskExecutor)
    assert ex.map_chunks(_testing.fail, make_sim().arrays, [1], args=(0,)) == [1]
    ex.close()
    assert dask_executor.client.status == "running"


def test_missing_backends_raise_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.futures", None)
    with pytest.raises(InputError, match="mpi4py"):
        make_executor("mpi")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(InputError, match="torch"):
        make_executor("torch")
    with pytest.raises(InputError, match="torch"):
        make_executor("cuda")


def test_importing_qcbed_needs_no_optional_backend():
    code = ("import sys, qcbed, qcbed.parallel, qcbed.bloch.simulation\n"
            "bad = [m for m in ('torch', 'mpi4py', 'distributed', 'dask') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_executor_results_keep_chunk_order(processes):
    sim = make_sim()
    chunks = [GRID.points[i:i + 7] for i in range(0, 70, 7)]
    res = processes.map_chunks(pattern_chunk, sim.arrays, chunks, args=(np.array(THICK),))
    for c, r in zip(chunks, res):
        assert max_diff(r.intensities,
                        pattern_chunk(sim.arrays, c, np.array(THICK)).intensities) <= TOL


# ---------------------------------------------------------------- MPI
def _mpi_reason() -> str | None:
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install qcbed[mpi] and an MPI library)"
    bindir = Path(sys.executable).parent
    if shutil.which("mpiexec", path=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        return "no mpiexec found (an MPI runtime is needed, e.g. pip install mpich)"
    return None


MPI_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_parallel import GRID, THICK, make_sim
    from qcbed.errors import WorkerError
    from qcbed.parallel import make_executor, _testing

    if __name__ == "__main__":
        ex = make_executor(sys.argv[1], timeout=120)
        sim = make_sim(ex)
        first = sim.pattern(GRID, THICK, use_symmetry=False)
        stats = ex.last_stats
        u = sim.structure_factor((1, 1, 1))
        sim.set_structure_factors({{(1, 1, 1): (0.9 * u[0], 0.9 * u[1])}})
        upd = sim.pattern(GRID, THICK, use_symmetry=False)
        try:
            ex.map_chunks(_testing.fail, sim.arrays, [0, 1, 2], args=(1,))
            err = ""
        except WorkerError as exc:
            err = str(exc)
        np.savez(sys.argv[2], first=first, upd=upd, n=ex.n_workers, err=err,
                 state=stats.state_bytes, delta=ex.last_stats.delta_rows)
        ex.close()
""")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("launch", ["mpiexec", "spawn"])
def test_mpi_executor_agrees_with_serial(launch, tmp_path):
    reason = _mpi_reason()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "mpi_run.py"
    script.write_text(MPI_SCRIPT.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "out.npz"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ.get('PATH', '')}", QCBED_SHIP_DIR=str(tmp_path / "ship"))
    if launch == "mpiexec":
        cmd = ["mpiexec", "-n", "3", sys.executable, "-m", "mpi4py.futures", str(script),
               "mpi", str(out)]
    else:
        cmd = [sys.executable, str(script), "mpi:2", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    if proc.returncode != 0 and "mpi" in (proc.stderr + proc.stdout).lower() and \
            not out.exists():
        pytest.skip(f"the MPI runtime does not work here ({launch}): {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = np.load(out)
    assert int(res["n"]) == 2
    ref = make_sim(SerialExecutor())
    assert max_diff(res["first"], ref.pattern(GRID, THICK, use_symmetry=False)) <= TOL
    u = ref.structure_factor((1, 1, 1))
    ref.set_structure_factors({(1, 1, 1): (0.9 * u[0], 0.9 * u[1])})
    assert max_diff(res["upd"], ref.pattern(GRID, THICK, use_symmetry=False)) <= TOL
    assert int(res["state"]) > 0 and int(res["delta"]) > 0
    assert "chunk 2 of 3" in str(res["err"]) and "deliberate failure" in str(res["err"])


def test_mpi_executor_class_is_importable_without_mpi():
    assert MPIExecutor.name == "mpi"


DIE_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_parallel import make_sim
    from qcbed.parallel import make_executor, _testing

    if __name__ == "__main__":
        ex = make_executor(sys.argv[1], timeout=60)
        ex.map_chunks(_testing.die, make_sim().arrays, [0, 1, 2, 3], args=(2,))
        print("NOT REACHED")
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("launch", ["mpiexec", "spawn"])
def test_mpi_dead_worker_ends_the_job_without_hanging(launch, tmp_path):
    """MPI semantics: a rank that dies aborts the whole job (it does not hang).

    With spawned workers MPICH's process manager kills the parent's whole process
    group: the job runs in a session of its own here.
    """
    reason = _mpi_reason()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "mpi_die.py"
    script.write_text(DIE_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ.get('PATH', '')}", QCBED_SHIP_DIR=str(tmp_path / "ship"))
    cmd = (["mpiexec", "-n", "3", sys.executable, "-m", "mpi4py.futures", str(script), "mpi"]
           if launch == "mpiexec" else [sys.executable, str(script), "mpi:2"])
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100, env=env,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.returncode != 0 and "NOT REACHED" not in proc.stdout
    assert time.monotonic() - t0 < 60
