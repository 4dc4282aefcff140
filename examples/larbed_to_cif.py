"""Worked example: a 4-D LARBED dataset to a refined CIF, the whole chain.

1. "experiment": Si [001] LACBED intensities from the Bloch-wave engine with two
   structure factors changed from the independent-atom model (U(220) +4 %,
   U(400) −5 %), thickness 900 Å, rendered into a 4-D LARBED dataset (one
   diffraction pattern per tilt of a 12 × 12 grid, moving beam, diffuse background,
   Poisson noise) plus a vacuum scan, both written as .npy files;
2. ``qcbed extract``: tilt calibration from the vacuum scan, indexing from a
   reference pattern, disc integration with variances, the k_t of the reference
   tilt (``--kt-reference``) → the LACBED stack ``stack.h5``;
3. ``qcbed import-larbed``: a project file whose geometry is the tilt grid the stack
   records, the whole grid as ROI and a plan (thickness + orientation, then U(220),
   U(400));
4. ``qcbed validate`` and ``qcbed refine``: results folder with ``result.json``,
   ``structure_factors.hkl``, ``refined.cif`` (cell, sites, thickness with s.u.; the
   refined U_g and the X-ray F_g as CIF loops) and ``report.html``;
5. ``qcbed export``: the stack and the residuals as EMD 1.0 (py4DSTEM) and .hspy.

Run:  python examples/larbed_to_cif.py [output folder]     (about 20 s on 2 cores)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gemmi
import numpy as np
from click.testing import CliRunner

from qcbed.bloch.grids import TiltGrid
from qcbed.bloch.simulation import Simulation
from qcbed.cli import main
from qcbed.crystal import Crystal, Lattice, Site
from qcbed.larbed import SpotMap, SpotPredictor, TiltCalibration
from qcbed.larbed.synthetic import SpotRenderer, synthetic_larbed, write_npy_stream
from qcbed.scattering.structure_factors import PotentialModel

out = Path(sys.argv[1] if len(sys.argv) > 1 else "larbed-to-cif").resolve()
out.mkdir(parents=True, exist_ok=True)
A, NY, NX, STEP, KT_CENTRE, DOSE = 5.4307, 12, 12, 0.03, (0.012, -0.021), 5.0e4
REF = ((NY - 1) / 2, (NX - 1) / 2)
HKL = [(0, 0, 0), (2, 2, 0), (-2, -2, 0), (2, -2, 0), (-2, 2, 0), (4, 0, 0), (-4, 0, 0),
       (0, 4, 0), (0, -4, 0)]
(out / "si.cif").write_text(f"""data_si
_cell_length_a {A}
_cell_length_b {A}
_cell_length_c {A}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_IT_number 227
_space_group_name_H-M_alt 'F d -3 m'
_space_group_IT_coordinate_system_code 1
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Si1 Si 0 0 0 0.5
""")

# ---------------------------------------------------------------- 1. the experiment
si = Crystal(Lattice(A, A, A), [Site("Si1", "Si", (0, 0, 0), b_iso=0.5)], 227)
# the engine set-up the project will use (pool over the ROI and the coarse search field
# ± 5 tilt steps; strong-beam rules chosen by the engine for its accuracy at 960 Å)
pool_radius = ((NY - 1) / 2 + 4) * STEP * np.sqrt(2) + 5 * STEP
sim = Simulation(si, 200.0, [0, 0, 1], [2, 2, 0],
                 potential=PotentialModel("kirkland", "proportional", 0.08), gmax=2.5,
                 smax=0.03, holz=False, outputs=np.array(HKL), kt_center=KT_CENTRE,
                 kt_radius=pool_radius, check_thickness=[960.0], accuracy=0.01)
u220, u400 = (sim.structure_factor(h)[0].real for h in ((2, 2, 0), (4, 0, 0)))
truth = {"thickness": 900.0, "U(2,2,0)": 1.04 * u220, "U(4,0,0)": 0.95 * u400}
sim.set_structure_factors({(2, 2, 0): truth["U(2,2,0)"], (4, 0, 0): truth["U(4,0,0)"]})
grid = TiltGrid.regular(KT_CENTRE, (STEP, 0.0), (0.0, -STEP), (NY, NX))
lacbed = np.nan_to_num(sim.pattern(grid, truth["thickness"])[0])
camera = SpotMap.from_frame(sim.frame, origin=(55.3, 56.6), pixel_size=1 / 40.0,
                            rotation_deg=17.0, flip=True, reference_tilt=REF)
m = camera.kt_matrix
scan = TiltCalibration(np.column_stack([m @ (0.0, -STEP), m @ (STEP, 0.0)]),
                       origin=(55.3, 56.6), reference=REF)
rng = np.random.default_rng(7)
beam = scan.beam_positions((NY, NX))
vacuum = synthetic_larbed(np.ones((1, NY, NX)), beam[None], beam,
                          SpotRenderer((112, 112), dose=DOSE, background=3.0, halo=0.0), rng)
pos = SpotPredictor(camera, scan).grid_positions(np.array(HKL), (NY, NX))
data = synthetic_larbed(lacbed, pos, pos[0], SpotRenderer(
    (112, 112), dose=DOSE, background=4.0, halo=8.0, halo_width=60.0), rng)
write_npy_stream(out / "scan.npy", data.shape, np.float32, [data])
write_npy_stream(out / "vacuum.npy", vacuum.shape, np.float32, [vacuum])
ref = (NY // 2, NX // 2)  # extract's reference tilt (the grid centre by default)
p0, p1, p2 = camera.positions([[0, 0, 0], [2, 2, 0], [-2, 2, 0]]) + \
    scan.matrix @ (np.array(ref) - REF)
kx, ky = grid.kt[ref]  # the orientation of the reference pattern (known here)


def qcbed(*args: str) -> str:
    r = CliRunner().invoke(main, list(args))
    if r.exit_code != 0:
        raise SystemExit(f"qcbed {args[0]} failed:\n{r.output}{r.exception!r}")
    return r.output


# ---------------------------------------------------------------- 2.–4. the chain
qcbed("extract", str(out / "scan.npy"), "-o", str(out / "stack.h5"), "--zone", "0", "0", "1",
      "--g1", "2", "2", "0", f"{p1[0]:.4f}", f"{p1[1]:.4f}",
      "--g2", "-2", "2", "0", f"{p2[0]:.4f}", f"{p2[1]:.4f}",
      "--origin", f"{p0[0]:.4f}", f"{p0[1]:.4f}", "--no-locate",
      "--vacuum", str(out / "vacuum.npy"),
      *[a for h in HKL for a in ("--hkl", ",".join(map(str, h)))],
      "--disc-radius", "4", "--annulus", "6", "9", "--no-refine", "--voltage", "200",
      "--cell", str(A), str(A), str(A), "90", "90", "90",
      "--kt-reference", f"{kx:.6f}", f"{ky:.6f}", "--quiet")
print(qcbed("import-larbed", str(out / "stack.h5"), "--cif", str(out / "si.cif"),
            "--thickness", "960", "--absorption", "proportional", "--xi", "0.08", "--no-holz",
            "--accuracy", "0.01", "-o", str(out / "si.toml"), "--output-dir",
            str(out / "results"), "--force"))
print(qcbed("validate", str(out / "si.toml")))
qcbed("--quiet", "refine", str(out / "si.toml"))

res = json.loads((out / "results" / "result.json").read_text())
print(f"thickness {res['thickness']['value']:.1f} ± {res['thickness']['esd']:.1f} Å "
      f"(true {truth['thickness']:.0f})")
for p in res["parameters"]:
    if p["name"] in truth and p["name"] != "thickness":
        print(f"{p['name']} = {p['value']:.6f} ± {p['esd']:.6f} Å⁻² (true {truth[p['name']]:.6f})")
block = gemmi.cif.read_file(str(out / "results" / "refined.cif")).sole_block()
print("refined.cif: thickness", block.find_value("_qcbed_refine_thickness_A"))
for row in block.find("_refln_", ["index_h", "index_k", "index_l", "F_meas", "F_sigma",
                                  "F_calc"]):
    h, k, l, f, sf, f0 = tuple(row)
    print(f"  X-ray F({h} {k} {l}) = {f} ± {sf} e (IAM {f0})")

# ---------------------------------------------------------------- 5. export
print(qcbed("export", str(out / "stack.h5"), "-o", str(out / "stack.emd")))
print(qcbed("export", str(out / "results"), "-o", str(out / "residuals.hspy")))
