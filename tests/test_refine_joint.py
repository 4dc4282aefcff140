"""Joint refinement (issue 15 item 2): two datasets of one crystal share U_g.

Synthetic Si data from two zone axes ([110] at 196.75 kV, [101] at 160 kV, different
thicknesses and orientations), each refined alone and then jointly: the joint U_g
recover the truth within 3 esd with smaller esds than either dataset alone, and the
per-dataset thicknesses are recovered too. The second dataset's voltage checks that
shared U_g are γ-scaled (U_g = γF_g/(πΩ)): without the scaling its U_g would be 11 %
off and the fit would be far from χ²_ν ≈ 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from qcbed.bloch.beams import BeamSelection
from qcbed.bloch.simulation import Simulation
from qcbed.constants import relativistic_gamma
from qcbed.errors import InputError
from qcbed.refine import DirectData, JointRefinement, Refinement
from qcbed.scattering.structure_factors import PotentialModel
from test_refine_synthetic import KT_HKL, OUT, TRUE, A, line_directions, si_crystal

H1, H2 = (1, -1, -1), (2, -2, -2)
#: dataset 1: another zone axis, voltage and thickness
V1, T1 = 160.0, 1100.0
KT1_HKL = (12.0152, 26.4176, -12.0152)


def _sim(voltage, zone, kt_hkl):
    cr = si_crystal()
    base = Simulation(cr, voltage, zone, [1, -1, -1], gmax=1.0, smax=0.02)
    kt0 = base.kt_from_reciprocal(kt_hkl)
    sim = Simulation(cr, voltage, zone, [1, -1, -1], kt_center=kt0, kt_radius=0.3,
                     outputs=OUT, mode="exact", gmax=2.0, smax=0.03,
                     potential=PotentialModel("kirkland", "bird_king"),
                     selection=BeamSelection(0.3, 30.0))
    return sim, kt0


def _data(sim, kt, thickness, gamma_ratio, seed):
    s = sim.with_changes()
    s.set_structure_factors({H1: (TRUE["U111"] * gamma_ratio, TRUE["Uabs111"] * gamma_ratio),
                             H2: (TRUE["U222"] * gamma_ratio, 0.0)})
    inten = s.solve(kt).intensities([thickness])[0].T
    obs = np.random.default_rng(seed).poisson(2.0e4 * inten + 40.0).astype(float)
    return DirectData(sim.outputs, kt, obs, np.maximum(obs, 1.0))


def _refinement(sim, data, thickness, gamma_ratio, start=1.02):
    ref = Refinement(sim, data, background="per_disc")
    ref.add_thickness(thickness * start)
    ref.add_structure_factor(H1, value=TRUE["U111"] * gamma_ratio * start,
                             value_abs=TRUE["Uabs111"] * gamma_ratio / start)
    ref.add_structure_factor(H2, refine_uabs=False, value=TRUE["U222"] * gamma_ratio * start,
                             value_abs=0.0)
    return ref


@pytest.fixture(scope="module")
def two_zones():
    g = float(relativistic_gamma(V1) / relativistic_gamma(196.75))
    sim0, kt0 = _sim(196.75, [1, 1, 0], KT_HKL)
    sim1, kt1 = _sim(V1, [1, 0, 1], KT1_HKL)
    d0 = _data(sim0, line_directions(kt0, n=30), TRUE["thickness"], 1.0, 11)
    # the second orientation: the row seen further from its Bragg condition
    d1 = _data(sim1, line_directions(kt1 + [0.0, 0.02], n=30), T1, g, 12)
    return (sim0, d0), (sim1, d1), g


def test_joint_refinement_shares_u_g_and_shrinks_esds(two_zones):
    (sim0, d0), (sim1, d1), g = two_zones
    alone = [_refinement(sim0, d0, TRUE["thickness"], 1.0).fit(max_iter=30),
             _refinement(sim1, d1, T1, g).fit(max_iter=30)]
    joint = JointRefinement([_refinement(sim0, d0, TRUE["thickness"], 1.0),
                             _refinement(sim1, d1, T1, g)], labels=["[110]", "[101] 160 kV"])
    # shared structure factors once, per-dataset thickness twice
    assert {"U(1,-1,-1)", "Uabs(1,-1,-1)", "U(2,-2,-2)", "thickness[0]",
            "thickness[1]"} <= {p.name for p in joint.params}
    assert "U(1,-1,-1)[1]" not in joint.params and "thickness" not in joint.params
    res = joint.fit(max_iter=30)
    print(res.summary())
    for name, true in (("U(1,-1,-1)", TRUE["U111"]), ("U(2,-2,-2)", TRUE["U222"]),
                       ("Uabs(1,-1,-1)", TRUE["Uabs111"])):
        e = res.esd(name)
        e_alone = [a.esd(name) / (1.0 if k == 0 else g) for k, a in enumerate(alone)]
        print(f"{name}: joint {res.value(name):.7f} ± {e:.2g}, alone "
              f"{alone[0].value(name):.7f} ± {e_alone[0]:.2g}, "
              f"{alone[1].value(name) / g:.7f} ± {e_alone[1]:.2g} (true {true})")
        assert abs(res.value(name) - true) < 3 * e
        assert e < min(e_alone)
    assert abs(res.value("thickness[0]") - TRUE["thickness"]) < 3 * res.esd("thickness[0]")
    assert abs(res.value("thickness[1]") - T1) < 3 * res.esd("thickness[1]")
    # per-dataset and joint χ²_ν
    assert len(res.datasets) == 2 and res.labels[1] == "[101] 160 kV"
    for d in res.datasets:
        assert 0.75 < d.chi2 < 1.3
    assert 0.8 < res.chi2 < 1.25
    n_free = len(res.free_names)
    assert res.n_used == sum(d.n_used for d in res.datasets)
    # every linear parameter counted: scale and 4 backgrounds per dataset (as alone)
    assert res.dof == res.n_used - n_free - 2 * (1 + 4)
    assert all(d.dof == d.n_used - len(d.free_names) - (1 + 4) for d in res.datasets)
    assert res.covariance.shape == (n_free, n_free)
    # dataset 1 sees the γ-scaled shared value
    assert joint.parts[1].params["U(1,-1,-1)"].value == pytest.approx(
        res.value("U(1,-1,-1)") * g, rel=1e-12)


def test_joint_refinement_rejects_bad_input(two_zones):
    (sim0, d0), _, _ = two_zones
    ref = _refinement(sim0, d0, TRUE["thickness"], 1.0)
    with pytest.raises(InputError, match="listed twice"):
        JointRefinement([ref, ref])
    with pytest.raises(InputError, match="in no dataset") as exc:
        JointRefinement([ref], shared=["U(3,3,3)"])
    assert exc.value.found == "U(3,3,3)"
    with pytest.raises(InputError, match="Refinement objects"):
        JointRefinement([ref, "data.npy"])
    with pytest.raises(InputError, match="Levenberg"):
        JointRefinement([ref]).fit("nested")


def test_dataset_names():
    from qcbed.refine.joint import dataset_name, split_dataset_name

    assert dataset_name("tilt.x", 1) == "tilt.x[1]"
    assert split_dataset_name("thickness[12]") == ("thickness", 12)
    assert split_dataset_name("U(1,1,1)") == ("U(1,1,1)", None)
    assert A > 0


def test_kill_and_resume_follows_the_same_path(two_zones, tmp_path):
    (sim0, d0), (sim1, d1), g = two_zones

    def joint(ckpt):
        return JointRefinement([_refinement(sim0, d0, TRUE["thickness"], 1.0),
                                _refinement(sim1, d1, T1, g)], checkpoint=ckpt)

    full = joint(tmp_path / "full.h5").fit(max_iter=30, esd_tol=None)
    calls = []

    def kill(rec):
        calls.append(rec)
        if len(calls) == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "killed.h5"
    with pytest.raises(KeyboardInterrupt):
        joint(ckpt).fit(max_iter=30, esd_tol=None, callback=kill)
    resumed = joint(ckpt).fit(max_iter=30, esd_tol=None, resume=True)
    assert resumed.n_iterations == full.n_iterations
    for name in full.free_names:
        assert resumed.value(name) == pytest.approx(full.value(name), rel=1e-10, abs=1e-14)
    with pytest.raises(InputError, match="other parameters"):
        JointRefinement([_refinement(sim0, d0, TRUE["thickness"], 1.0)],
                        checkpoint=ckpt).fit(resume=True)


def test_the_example_runs():
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "joint_refinement.py"
    out = runpy.run_path(str(path))["main"]()
    res, alone = out["joint"], out["alone"]
    for name in ("U(1,-1,-1)", "U(2,-2,-2)"):
        assert res.esd(name) < min(a.esd(name) / gk for a, gk in zip(alone, out["gamma"]))
