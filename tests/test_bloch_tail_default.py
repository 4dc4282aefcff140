"""The pool's tail is on by default (issue 12 item 1): what the engine does with it, when
it goes without, and what it reports when a growth check could not be made."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import qcbed.bloch.convergence as cv
from qcbed.bloch import Simulation
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.scattering.structure_factors import PotentialModel

# Si [1-10] 200 kV, a small tilt disc and g_max: set-ups of a few seconds
KW = dict(potential=PotentialModel("kirkland", "bird_king"), executor="serial", gmax=1.6,
          kt_radius=0.1, check_thickness=[1200.0])


def _si() -> Crystal:
    a = 5.4307
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0.125,) * 3, b_iso=0.47)],
                   "F d -3 m :2")


def _sim(**kw) -> Simulation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # g_max 1.6 is far from converged
        return Simulation(_si(), 200.0, [1, -1, 0], [0, 0, -1], **{**KW, **kw})


@pytest.fixture(scope="module")
def default() -> Simulation:
    return _sim()


def test_engine_chosen_pools_have_a_tail_by_default(default):
    conv = default.convergence
    assert default.tail is not None and conv.tail is not None and conv.tail["beams"] > 0
    assert conv.tail["unchecked"] == 0
    bare = _sim(tail=False)
    assert bare.tail is None and bare.convergence.tail is None
    # a pool given by the caller has no tail: nothing beyond it is known to be far
    given = _sim(pool=default.pool.hkl)
    assert given.tail is None


@pytest.mark.parametrize("limit", ["beams", "work"])
def test_a_tail_above_the_size_limit_is_not_used_and_the_pool_grows(monkeypatch, default,
                                                                    limit):
    # the starting tail (the first step's; the walk may grow it) one beam too large, or
    # its check and one-tile fit one unit above the walk's work
    start = int(default.convergence.steps[0].split("+ tail ")[1].split()[0])
    n_pool = int(default.convergence.steps[0].split()[1])
    if limit == "beams":
        monkeypatch.setattr(cv, "MAX_GROWN_TAIL_SIZE", start - 1)
        reason = f"above {start - 1} beams"
    else:
        need = ((n_pool * start**2 + cv.EIG_WORK_PER_CUBE * n_pool**3)
                * (len(default._check_kt) + cv.FIT_DIRECTIONS_PER_TILE))
        monkeypatch.setattr(cv, "MAX_TAIL_WALK_WORK", need - 1)
        reason = "the walk's tail work would reach"
    sim = _sim()
    conv = sim.convergence
    assert sim.tail is None and conv.tail is None
    assert any("not used, the pool grows instead" in s and reason in s for s in conv.steps)
    assert any("further growth" in s for s in conv.steps)   # the pool walk ran instead
    assert conv.pool_error is not None


def test_a_growth_too_large_to_check_is_not_reported_converged(monkeypatch, default):
    # every check passes except one that is skipped: the record must not say converged
    base = int(default.convergence.steps[0].split("+ tail ")[1].split()[0])   # the start
    monkeypatch.setattr(cv, "MAX_GROWN_TAIL_SIZE", base)    # the grown tails are larger
    sim = _sim(accuracy=0.5)
    conv = sim.convergence
    assert conv.tail is not None and conv.tail["unchecked"] >= 1
    assert conv.error <= 0.5 and conv.pool_error <= 0.5      # every measured check passes
    assert not conv.converged and not conv.as_dict()["converged"]
    from dataclasses import replace
    assert replace(conv, tail=dict(conv.tail, unchecked=0)).converged


def test_grown_pool_of_a_set_up_with_a_tail_grows_the_tail(default):
    # the budget's pool entry: the same pool and selection, the tail's s_max doubled
    grown = default.with_grown_pool(4.0)
    assert np.array_equal(grown.pool.hkl, default.pool.hkl)
    assert grown.selection == default.selection
    assert grown.tail is not None and grown.tail.n_beams > default.tail.n_beams
    kt = default._check_kt
    a = default.solve(kt).intensities([1200.0])
    b = grown.solve(kt).intensities([1200.0])
    change = float(np.abs(a - b).max() / a.max())
    # a real change, of the order of the tail-growth error the walk measured
    assert 0.0 < change <= 3 * max(default.convergence.tail["growth_error"], 1e-5)
