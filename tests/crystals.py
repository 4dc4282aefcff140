"""Test crystals shared by the engine tests (not a test module).

Si: a = 5.4307 Å, Fd-3m origin choice 2, B 0.47 Å²; GaAs: a = 5.6533 Å, F-43m,
B 0.6 / 0.5 Å² (room-temperature values of the literature, rounded).
"""

from __future__ import annotations

from qcbed.crystal import Crystal, Lattice, Site


def si() -> Crystal:
    a = 5.4307
    return Crystal(Lattice(a, a, a), [Site("Si1", "Si", (0.125, 0.125, 0.125), b_iso=0.47)],
                   "F d -3 m :2")


def gaas() -> Crystal:
    a = 5.6533
    return Crystal(Lattice(a, a, a), [Site("Ga", "Ga", (0, 0, 0), b_iso=0.6),
                                      Site("As", "As", (0.25, 0.25, 0.25), b_iso=0.5)], 216)
