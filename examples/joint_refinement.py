"""Worked example: one set of U_g from two zone axes at two voltages (joint refinement).

1. "experiments": Si systematic-row intensities of the 1-1-1 row from the Bloch-wave
   engine, seen from the [110] zone axis at 196.75 kV (thickness 1500 Å) and from the
   [101] zone axis at 160 kV (thickness 1100 Å), with U(1-1-1), U′(1-1-1) and a
   bond-charge U(2-2-2) that differ from the independent-atom model, Poisson noise;
2. each dataset refined alone (thickness, U, U′), as ``qcbed.Refinement`` does;
3. both refined jointly with ``qcbed.JointRefinement``: the structure factors are
   shared (the 160 kV dataset sees them scaled by γ(160 kV)/γ(196.75 kV)), each dataset
   keeps its own thickness (``thickness[0]``, ``thickness[1]``), scale and backgrounds;
4. the esds: the joint ones are smaller than those of either dataset alone.

The same refinement from a project file: several ``[[data]]`` blocks
(docs/project-file.md, "Several datasets").

Run:  python examples/joint_refinement.py       (a few seconds)
"""

from __future__ import annotations

import numpy as np

import qcbed as qc
from qcbed.bloch.beams import BeamSelection
from qcbed.constants import relativistic_gamma
from qcbed.crystal import Crystal, Lattice, Site, space_group_from_number
from qcbed.refine import DirectData
from qcbed.scattering.structure_factors import PotentialModel

A = 5.4307                    # Å
ROW = [[1, -1, -1], [-1, 1, 1], [2, -2, -2]]
H1, H2 = (1, -1, -1), (2, -2, -2)
TRUE = {"U(1,-1,-1)": 0.0473504, "Uabs(1,-1,-1)": 0.0007937, "U(2,-2,-2)": -0.00092322}
#: (zone, voltage kV, incident k (reciprocal units) at the row centre, thickness Å)
EXPERIMENTS = [([1, 1, 0], 196.75, (12.0152, -12.0152, 26.4176), 1500.0),
               ([1, 0, 1], 160.0, (12.0152, 26.4176, -12.0152), 1100.0)]


def si() -> Crystal:
    return Crystal(Lattice(A, A, A), [Site("Si", "Si", (0.125,) * 3, b_iso=0.4668)],
                   space_group_from_number(227, 2))


def experiment(zone, voltage, k_hkl, thickness, seed):
    """Engine set-up and synthetic data of one orientation (three lines of k_t)."""
    base = qc.Simulation(si(), voltage, zone, [1, -1, -1], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal(k_hkl)
    sim = qc.Simulation(si(), voltage, zone, [1, -1, -1], kt_center=kt0, kt_radius=0.3,
                        outputs=ROW, mode="exact", gmax=2.0, smax=0.03,
                        potential=PotentialModel("kirkland", "bird_king"),
                        selection=BeamSelection(0.3, 30.0))
    xs = np.linspace(-0.45, 0.45, 30) * np.sqrt(3) / A
    kt = np.concatenate([np.c_[xs, np.full_like(xs, y)] for y in (-0.03, 0.0, 0.03)]) + kt0
    g = float(relativistic_gamma(voltage) / relativistic_gamma(EXPERIMENTS[0][1]))
    truth = sim.with_changes()
    truth.set_structure_factors({H1: (TRUE["U(1,-1,-1)"] * g, TRUE["Uabs(1,-1,-1)"] * g),
                                 H2: (TRUE["U(2,-2,-2)"] * g, 0.0)})
    inten = truth.solve(kt).intensities([thickness])[0].T
    counts = np.random.default_rng(seed).poisson(2.0e4 * inten + 40.0).astype(float)
    return sim, DirectData(sim.outputs, kt, counts, np.maximum(counts, 1.0)), g


def refinement(sim, data, g, thickness):
    """Thickness, U and U′ of the row, started 2 % off."""
    ref = qc.Refinement(sim, data, background="per_disc")
    ref.add_thickness(thickness * 1.02)
    ref.add_structure_factor(H1, value=TRUE["U(1,-1,-1)"] * g * 1.02,
                             value_abs=TRUE["Uabs(1,-1,-1)"] * g / 1.02)
    ref.add_structure_factor(H2, refine_uabs=False, value=TRUE["U(2,-2,-2)"] * g * 1.02,
                             value_abs=0.0)
    return ref


def main() -> dict:
    sets = [experiment(z, v, k, t, seed) + (t,)
            for seed, (z, v, k, t) in enumerate(EXPERIMENTS, start=11)]
    alone = [refinement(sim, data, g, t).fit() for sim, data, g, t in sets]
    joint = qc.JointRefinement([refinement(sim, data, g, t) for sim, data, g, t in sets],
                               labels=["[110] 196.75 kV", "[101] 160 kV"])
    res = joint.fit()
    print(res.summary())
    print(f"\n{'parameter':>14s} {'true':>11s} {'joint':>22s} {'[110] alone':>22s} "
          f"{'[101] alone':>22s}")
    for name, true in TRUE.items():
        cells = [f"{res.value(name):.7f} ± {res.esd(name):.1e}"]
        for (_s, _d, g, _t), a in zip(sets, alone):   # alone: at its own voltage → ÷ γ ratio
            cells.append(f"{a.value(name) / g:.7f} ± {a.esd(name) / g:.1e}")
        print(f"{name:>14s} {true:11.7f} " + " ".join(f"{c:>22s}" for c in cells))
    return {"joint": res, "alone": alone, "gamma": [s[2] for s in sets]}


if __name__ == "__main__":
    main()
