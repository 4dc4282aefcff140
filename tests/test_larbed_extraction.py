"""End to end: Bloch-wave LACBED intensities → synthetic 4-D LARBED data → extraction.

The dataset is made with the engine (``Simulation.pattern`` on a regular tilt
grid): every tilt's pattern holds one Gaussian probe-shaped spot per output
reflection (dose × I_g counts) at the position given by a camera (rotation,
flip, pixel size) and the beam motion of the tilt scan, plus a small smooth
drift, a flat diffuse background and a broad halo around the direct beam, with
Poisson noise. A vacuum scan of the same grid calibrates the tilt scan; a
reference pattern (000, 220, −220 positions) indexes it. The extracted LACBED
images must agree with dose·I_g within the stated variances.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.crystal import Crystal, Lattice
from qcbed.crystal.structure import Site
from qcbed.experiment import LACBEDStack
from qcbed.larbed import (
    FourDData,
    SpotMap,
    SpotPredictor,
    TiltCalibration,
    calibrate_from_vacuum,
    extract_lacbed,
    load_stack,
    open_4d,
    refine_positions,
    save_stack,
)
from qcbed.larbed.synthetic import SpotRenderer, synthetic_larbed, write_empad
from qcbed.scattering.models import (
    ElasticModel,
    available_elastic_models,
    register_elastic,
)
from qcbed.scattering.structure_factors import PotentialModel

NY = NX = 24                 # tilt grid
STEP = 0.022                 # Å⁻¹ per tilt step
KT_CENTRE = (0.01, -0.02)    # Å⁻¹ at the grid centre
DOSE = 2.0e4                 # counts of a unit-intensity spot
DET = (128, 128)
REF = ((NY - 1) / 2, (NX - 1) / 2)


def _elastic_model() -> str:
    """'kirkland' when registered, else a smooth Gaussian f(s) for the test."""
    if "kirkland" in available_elastic_models():
        return "kirkland"

    def gaussian(element: str, s: np.ndarray, charge: int) -> np.ndarray:
        return 5.0 * np.exp(-1.5 * s**2) + 0.3

    register_elastic(ElasticModel("larbed_test_gauss", gaussian,
                                  "test: 5 exp(-1.5 s^2) + 0.3 A", frozenset({"Si"})))
    return "larbed_test_gauss"


@pytest.fixture(scope="module")
def dataset():
    model = _elastic_model()
    si = Crystal(Lattice(5.4307, 5.4307, 5.4307), [Site("Si1", "Si", (0, 0, 0), b_iso=0.5)],
                 227)
    sim = Simulation(si, 200.0, [0, 0, 1], [2, 2, 0],
                     potential=PotentialModel(model, "proportional", 0.08), gmax=2.0,
                     aperture=0.8, kt_radius=0.4)
    grid = TiltGrid.regular(KT_CENTRE, (STEP, 0.0), (0.0, -STEP), (NY, NX))
    truth = np.nan_to_num(sim.pattern(grid, 900.0)[0])          # (n_refl, NY, NX)
    hkl = sim.outputs
    camera = SpotMap.from_frame(sim.frame, origin=(63.3, 64.6), pixel_size=1 / 45.0,
                                rotation_deg=17.0, flip=True, reference_tilt=REF)
    m = camera.kt_matrix
    scan = TiltCalibration(np.column_stack([m @ (0.0, -STEP), m @ (STEP, 0.0)]),
                           origin=(60.0, 61.0), reference=REF)
    rng = np.random.default_rng(20240521)
    rr, cc = np.meshgrid(np.arange(NY), np.arange(NX), indexing="ij")
    # vacuum scan: only the direct beam, at the vacuum origin
    beam_v = scan.beam_positions((NY, NX))
    vacuum = synthetic_larbed(np.ones((1, NY, NX)), beam_v[None], beam_v,
                              SpotRenderer(DET, dose=DOSE, background=3.0, halo=0.0), rng)
    # specimen scan: all spots, a smooth drift, diffuse background + halo
    drift = 0.4 * np.stack([np.sin(2 * rr / NY), (cc / NX) ** 2], -1)
    pos = SpotPredictor(camera, scan).grid_positions(hkl, (NY, NX)) + drift[None]
    renderer = SpotRenderer(DET, probe_sigma=1.0, dose=DOSE, background=5.0, halo=10.0,
                            halo_width=80.0)
    data = synthetic_larbed(truth, pos, pos[0], renderer, rng)
    return {"sim": sim, "grid": grid, "truth": truth, "hkl": hkl, "camera": camera,
            "scan": scan, "vacuum": vacuum, "data": data, "positions": pos}


def _chi2(stack: LACBEDStack, truth: np.ndarray) -> dict[str, float]:
    """Scale c fitted in closed form; χ²_ν and std of (I − c·I_true)/σ over valid samples."""
    ok = stack.mask
    i, v, t = stack.images[ok], stack.variance[ok], truth[ok]
    c = np.sum(i * t / v) / np.sum(t * t / v)
    z = (i - c * t) / np.sqrt(v)
    return {"scale": c / DOSE, "chi2": float(np.sum(z**2) / (z.size - 1)),
            "std": float(np.std(z)), "n": int(z.size)}


def test_vacuum_calibration(dataset):
    cal = calibrate_from_vacuum(FourDData.from_array(dataset["vacuum"], chunk_mb=2))
    true = dataset["scan"].parameters
    got = cal.parameters
    assert got["flip"] == true["flip"]
    assert got["rotation_deg"] == pytest.approx(true["rotation_deg"], abs=0.05)
    assert got["step_x"] == pytest.approx(true["step_x"], rel=2e-3)
    assert got["step_y"] == pytest.approx(true["step_y"], rel=2e-3)
    assert abs(got["shear_deg"]) < 0.1
    assert np.allclose(cal.origin, dataset["scan"].origin, atol=0.05)
    assert cal.rms < 0.1
    # scan ↔ detector round trip
    rc = np.array([[3.0, 7.5], [20.0, 1.0]])
    assert np.allclose(cal.detector_to_scan(cal.scan_to_detector(rc)), rc)


@pytest.fixture(scope="module")
def extracted(dataset):
    """Index from a reference pattern (positions with small errors), track, extract."""
    cal = calibrate_from_vacuum(FourDData.from_array(dataset["vacuum"], chunk_mb=2))
    cam = dataset["camera"]
    p0, p1, p2 = cam.positions([[0, 0, 0], [2, 2, 0], [-2, 2, 0]])
    spots = SpotMap.from_reference([0, 0, 1], p0 + 0.2, [2, 2, 0], p1 - 0.1, [-2, 2, 0],
                                   p2 + 0.15, frame=dataset["sim"].frame, reference_tilt=REF)
    data = FourDData.from_array(dataset["data"], chunk_mb=4)
    pred, report = refine_positions(data, SpotPredictor(spots, cal), dataset["hkl"],
                                    radius=3.0, annulus=(5.0, 8.0), order=2)
    stack = extract_lacbed(data, pred, dataset["hkl"], disc_radius=4.0, annulus=(6.0, 9.0),
                           progress=False, kt_reference=KT_CENTRE)
    return {"predictor": pred, "report": report, "stack": stack}


def test_tracking_follows_drift(dataset, extracted):
    pred = extracted["predictor"]
    err = pred.grid_positions(dataset["hkl"], (NY, NX)) - dataset["positions"]
    assert np.sqrt(np.mean(err**2)) < 0.15          # px, drift of up to 0.4 px followed
    assert extracted["report"]["rms"] < 0.1


def test_extraction_matches_truth_within_noise(dataset, extracted):
    stack = extracted["stack"]
    assert isinstance(stack, LACBEDStack)
    assert stack.images.shape == (len(dataset["hkl"]), NY, NX)
    assert np.array_equal(stack.hkl, dataset["hkl"])
    assert stack.mask.all()
    s = _chi2(stack, dataset["truth"])
    assert 0.8 < s["chi2"] < 1.25
    assert 0.9 < s["std"] < 1.1
    assert s["scale"] == pytest.approx(1.0, abs=0.01)  # encircled fraction of R = 4σ
    # per reflection too (weak and kinematically forbidden ones included)
    for j in range(len(dataset["hkl"])):
        sub = LACBEDStack(stack.images[j:j + 1], stack.hkl[j:j + 1],
                          variance=stack.variance[j:j + 1])
        z = (sub.images - s["scale"] * DOSE * dataset["truth"][j]) / np.sqrt(sub.variance)
        assert 0.7 < np.mean(z**2) < 1.4, stack.hkl[j]


def test_geometry_of_the_stack(dataset, extracted):
    stack = extracted["stack"]
    kt = stack.metadata["arrays"]["kt"]
    step = STEP
    assert np.max(np.abs(kt - dataset["grid"].kt)) < 0.05 * step * NY   # ~1 % of the range
    geo = stack.geometry
    assert geo is not None and not geo.mirror
    assert abs(geo.rotation) < 1.0
    assert geo.pixel_size == pytest.approx(step, rel=0.02)
    assert np.allclose(stack.tilt_grid().kt[NY // 2, NX // 2], kt[NY // 2, NX // 2],
                       atol=0.2 * step)


@pytest.mark.parametrize("background", ["plane", "median"])
def test_other_background_estimators(dataset, extracted, background):
    data = FourDData.from_array(dataset["data"], chunk_mb=4)
    stack = extract_lacbed(data, extracted["predictor"], dataset["hkl"], disc_radius=4.0,
                           annulus=(6.0, 9.0), background=background, progress=False)
    s = _chi2(stack, dataset["truth"])
    assert 0.8 < s["chi2"] < 1.35
    assert s["scale"] == pytest.approx(1.0, abs=0.015)


def test_save_load_roundtrip(tmp_path, extracted):
    stack = extracted["stack"]
    path = save_stack(stack, tmp_path / "stack.h5")
    import h5py

    with h5py.File(path, "r") as f:
        assert {"images", "variance", "hkl", "mask", "kt", "background"} <= set(f)
        assert f.attrs["qcbed_format"] == "lacbed-stack"
        assert f["images"].shape == stack.images.shape
        assert "calibration_rotation_deg" in f.attrs and "calibration_step_px" in f.attrs
    back = load_stack(path)
    assert np.array_equal(back.images, stack.images)
    assert np.array_equal(back.variance, stack.variance)
    assert np.array_equal(back.hkl, stack.hkl)
    assert np.array_equal(back.mask, stack.mask)
    assert back.geometry is not None
    assert np.allclose(back.tilt_grid().kt, stack.tilt_grid().kt)
    assert back.metadata["calibration"]["flip"] == stack.metadata["calibration"]["flip"]


def test_extract_command(tmp_path, dataset):
    """``qcbed extract`` on an EMPAD file (XML + raw) written from the synthetic data."""
    from qcbed.cli import main

    rows = [dataset["data"][r] for r in range(NY)]
    xml = write_empad(tmp_path / "larbed.xml", (NY, NX), rows)
    (tmp_path / "vac").mkdir()  # EMPAD raw names follow the scan size: separate folders
    vac = write_empad(tmp_path / "vac" / "vacuum.xml", (NY, NX),
                      [dataset["vacuum"][r] for r in range(NY)])
    cam = dataset["camera"]
    ref = (NY // 2, NX // 2)
    shift = dataset["scan"].matrix @ (np.array(ref) - REF)
    p0, p1, p2 = cam.positions([[0, 0, 0], [2, 2, 0], [-2, 2, 0]]) + shift
    out = tmp_path / "stack.h5"
    args = ["extract", str(xml), "-o", str(out), "--zone", "0", "0", "1",
            "--g1", "2", "2", "0", f"{p1[0]:.1f}", f"{p1[1]:.1f}",
            "--g2", "-2", "2", "0", f"{p2[0]:.1f}", f"{p2[1]:.1f}",
            "--origin", f"{p0[0]:.1f}", f"{p0[1]:.1f}", "--vacuum", str(vac),
            "--hkl", "0,0,0", "--hkl", "2,2,0", "--hkl", "-2,-2,0", "--hkl", "4,0,0",
            "--disc-radius", "4", "--annulus", "6", "9", "--chunk-mb", "4",
            "--cell", "5.4307", "5.4307", "5.4307", "90", "90", "90", "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    stack = load_stack(out)
    assert stack.images.shape == (4, NY, NX)
    idx = [int(np.nonzero(np.all(dataset["hkl"] == h, 1))[0][0]) for h in stack.hkl]
    s = _chi2(stack, dataset["truth"][idx])
    assert 0.8 < s["chi2"] < 1.3
    assert stack.geometry is not None
    assert open_4d(xml).shape == (NY, NX) + DET


def test_extract_command_errors(tmp_path, dataset):
    from qcbed.cli import main

    # self-calibration on a thick crystal: 000 is not the brightest spot → refused
    xml = write_empad(tmp_path / "larbed.xml", (NY, NX), [dataset["data"][r] for r in range(NY)])
    base = ["extract", str(xml), "-o", str(tmp_path / "o.h5"), "--zone", "0", "0", "1",
            "--g1", "2", "2", "0", "70.8", "87.3", "--g2", "-2", "2", "0", "41.5", "71.8",
            "--quiet"]
    res = CliRunner().invoke(main, [*base, "--self-calibrate"])
    assert res.exit_code != 0 and "self-calibration failed" in res.output
    res = CliRunner().invoke(main, base)
    assert res.exit_code != 0 and "exactly one of" in res.output

    bad = tmp_path / "x.mib"
    bad.write_bytes(b"not a mib file at all")
    res = CliRunner().invoke(main, ["extract", str(bad), "-o", str(tmp_path / "o.h5"),
                                    "--zone", "0", "0", "1", "--g1", "2", "0", "0", "1", "1",
                                    "--g2", "0", "2", "0", "2", "2", "--scan-shape", "2", "2",
                                    "--no-beam-motion"])
    assert res.exit_code == 2
    assert "not a Merlin MIB file" in res.output
