"""Processes under hostile conditions (issue 14): orphaned workers exit, a missing MPI
launcher is an error, executor specs are checked without starting anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest

from qcbed.errors import InputError
from qcbed.parallel import check_executor_spec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as dead
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and fork")
@pytest.mark.timeout(60)
def test_workers_exit_when_the_parent_is_killed(tmp_path) -> None:
    """SIGKILL of the parent (no clean-up runs) leaves no worker behind."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        from qcbed.bloch.simulation import Simulation
        from qcbed.demo import _crystal_file
        from qcbed.io import read_crystal
        from qcbed.parallel import ProcessExecutor, _testing
        sim = Simulation(read_crystal(_crystal_file()), 200, [1, -1, 0], [1, 1, 1],
                         gmax=0.8, executor="serial")
        ex = ProcessExecutor(2)
        pids = ex.map_chunks(_testing.probe, sim.arrays, [0, 1, 2, 3])
        print(" ".join(str(p["pid"]) for p in pids), flush=True)
        ex.map_chunks(_testing.sleep, sim.arrays, [0, 1], args=(60.0,))
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()
        workers = {int(x) for x in line.split()}
        assert workers and os.getpid() not in workers, line
        time.sleep(1.0)  # the workers are sleeping in their tasks
        assert all(_alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        left = [p for p in workers if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
    for p in left:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} survived their parent"


def test_mpi_without_a_launcher_is_an_error(monkeypatch) -> None:
    """``mpi:2`` outside mpiexec, with no launcher on PATH: InputError, not MPI_Abort."""
    from qcbed.parallel import mpi, spec

    fake = types.ModuleType("mpi4py")
    fut = types.ModuleType("mpi4py.futures")

    class _Pool:  # must never be created
        def __init__(self, *a, **k):
            raise AssertionError("spawned without a launcher")

    fut.MPIPoolExecutor = _Pool
    fake.futures = fut
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.setitem(sys.modules, "mpi4py.futures", fut)
    monkeypatch.setattr(mpi, "_mpi_world_size", lambda: 1)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InputError, match="no MPI launcher") as info:
        spec.make_executor("mpi:2")
    assert "mpi:2" in str(info.value)


@pytest.mark.parametrize("spec", ["foo", "serial:3", "processes:x", "mpi:0", 0, True, 1.5,
                                  "dask:-1"])
def test_bad_executor_specs(spec) -> None:
    with pytest.raises(InputError):
        check_executor_spec(spec, source="p.toml", tag="engine.executor")


@pytest.mark.parametrize("spec", ["auto", "serial", 4, "4", "processes:2", "dask", "mpi:2",
                                  "tcp://host:8786", "cuda", "torch:cpu"])
def test_good_executor_specs(spec) -> None:
    check_executor_spec(spec)
