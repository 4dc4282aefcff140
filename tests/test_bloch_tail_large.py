"""Large tails are used under the walk's cost guard (issue 12 item 1 on other crystals).

The starting tail used to be refused above 4000 beams (then the pool grew instead,
and grown pools above 800/1200 beams were not adopted or not checked: LiNbO₃'s 4363-beam
tail, BaTiO₃'s 5374–6681). It is now guarded like the grown tails
(:func:`qcbed.bloch.convergence.tail_too_large`) and by the walk's total work
(:data:`~qcbed.bloch.convergence.MAX_TAIL_WALK_WORK`, Σ N·M² over every exact
direction); the record says what was not checked and is then not converged. A pool
that starts above MAX_POOL_SIZE (Felix's ``min_reflection_pool = 800``) keeps its
tail's growths, and when the growths cannot be adopted together the one that changes
most of those that can be built is.
"""

from __future__ import annotations

import warnings

import pytest

import qcbed.bloch.convergence as cv
from qcbed.bloch import Simulation
from test_bloch_tail_default import _si, _sim
from test_bloch_tail_walk import ACCURACY

# Si [1-10] 200 kV, g_max 4.8 Å⁻¹ on a small disc: a pool of 363 beams whose starting
# tail (s_max 0.8, g_max 4.8) holds 4272 beams, above the former 4000-beam limit
LARGE = dict(gmax=4.8, kt_radius=0.05, check_thickness=[1200.0])


def _large(**kw) -> Simulation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Simulation(_si(), 200.0, [1, -1, 0], [0, 0, -1], executor="serial",
                          accuracy=0.5, **{**LARGE, **kw})


def test_a_starting_tail_above_4000_beams_is_used_and_its_record_is_complete(monkeypatch):
    # the growth checks are made too large (only the start and its fit are computed:
    # a fast test); what the record says about them is the point
    monkeypatch.setattr(cv, "MAX_GROWN_TAIL_SIZE", 4300)        # the start passes
    monkeypatch.setattr(cv, "MAX_CHECK_POOL_SIZE", 363)        # no grown pool is checked
    sim = _large()
    conv = sim.convergence
    print("\n".join(conv.steps))
    n_pool, n_tail = len(sim.pool), conv.tail["beams"]
    assert n_tail > 4000 and sim.tail is not None and sim.tail.n_beams == n_tail
    assert conv.steps[0].startswith(f"pool {n_pool} + tail {n_tail} ")
    # the four growths were not checked, each with its reason; never converged
    assert conv.tail["unchecked"] == 4
    assert sum("above 4300 beams, not checked" in s for s in conv.steps) == 2
    assert sum("above 363 beams, not checked" in s for s in conv.steps) == 2
    assert not conv.converged and "4 growth check(s) too large" in conv.summary()
    # nothing measured: the fit error alone must not stand as the pool error (BaTiO3
    # P6_3/mmc's walk, 803 + 6681 beams, could check none of its four growths)
    assert conv.tail["growth_error"] is None and conv.pool_error is None
    assert "pool growth unknown" in conv.summary()
    assert any("pool error unknown" in s for s in conv.steps)
    # the work: the start's 13 directions and the one-tile fit's 22, N·M² each (Si is
    # centrosymmetric: one product per direction)
    # (and the pool's eigenproblem, EIG_WORK_PER_CUBE per N³)
    assert conv.tail["work"] == pytest.approx(
        (n_pool * n_tail**2 + cv.EIG_WORK_PER_CUBE * n_pool**3) * (13 + 22))
    assert conv.tail["work"] <= cv.MAX_TAIL_WALK_WORK
    # the same start with one unit less work allowed goes without the tail, saying why
    monkeypatch.setattr(cv, "MAX_TAIL_WALK_WORK", conv.tail["work"] - 1)
    bare = _large().convergence
    assert bare.tail is None
    assert "the walk's tail work would reach" in bare.steps[0]
    assert "not used, the pool grows instead" in bare.steps[0]


def test_a_pool_above_the_adoption_limit_keeps_its_tail_growth(monkeypatch):
    # the small Si walk (test_bloch_tail_walk) adopts both pool and tail growths; with
    # the starting pool already above MAX_POOL_SIZE (as Felix's 800-beam pools are) the
    # pool may not grow, but the tail must: before, "pool above 800 beams, not
    # adopted" refused every growth, the tail's included
    n_start = len(_sim(accuracy=None).pool)                  # the walk's starting pool
    monkeypatch.setattr(cv, "MAX_POOL_SIZE", n_start - 1)
    sim = _sim(accuracy=ACCURACY)
    conv = sim.convergence
    print("\n".join(conv.steps))
    assert len(sim.pool) == n_start                          # the pool did not grow
    assert any("not adopted" in s and "pool" in s for s in conv.steps)
    adopted = [s for s in conv.steps if s.startswith("adopted tail") and "not" not in s]
    assert adopted and conv.tail["smax"] * conv.tail["gmax"] > 0.8 * 1.6
    # and the pool error is measured from the adopted tail (a second round of checks)
    assert conv.pool_error == pytest.approx(conv.tail["growth_error"]
                                            + conv.tail["fit_error"])

