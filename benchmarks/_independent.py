"""What the independent checks of the default engine share: its set-up on a Felix
folder, random image directions it did not check, and the record of warnings and peak
memory (``check_selection_independent.py``, ``check_pool_independent.py``)."""

from __future__ import annotations

import resource
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def default_engine(folder: str) -> Iterator[tuple[object, dict]]:
    """``Simulation.from_felix(folder)`` (serial) and the record ``out`` of the check:
    the set-up's time (s) and convergence record on entry; the warnings given inside
    and the peak memory of the process (MiB) on exit."""
    from qcbed.bloch.simulation import Simulation

    out: dict = {"folder": folder}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        sim = Simulation.from_felix(folder, executor="serial")
        out["setup_s"] = round(time.perf_counter() - t0, 1)
        out["engine"] = {k: v for k, v in sim.convergence.as_dict().items() if k != "steps"}
        yield sim, out
    out["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in rec})
    out["peak_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def image_directions(sim, n: int, seed: int) -> np.ndarray:
    """``n`` directions (k_t, Å⁻¹) drawn without replacement from the folder's image grid
    (``np.random.default_rng(seed)``)."""
    pts = sim.defaults.grid.points
    return pts[np.random.default_rng(seed).choice(len(pts), min(n, len(pts)), replace=False)]
