"""Worked example: the real Si [1-10] D-LACBED data (Felix-python dataset, 200 kV).

Needs the shared data next to the repository (``../shared/data/si-110-dlacbed``,
or set ``QCBED_SHARED``); exits with a message otherwise.

1. simulate the 39 LACBED images at Felix's 1480 Å on Felix's own grid and
   compare them with the DM3 images (zero-normalised cross-correlation): the
   images compare directly, with no flip or transpose;
2. write a project file for the folder (as ``qcbed import-felix``) and validate it;
3. refine it: by default a short plan (coarse thickness/orientation, then
   thickness + shift on a coarser ROI; about 3 minutes on 2 cores); with ``--full``
   the imported plan (thickness and the U_g of 111, 220, 113 on a 61 × 61 ROI;
   about 15 minutes on 2 cores).

Run:  python examples/si_dlacbed.py [--full] [output folder]
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np

root = Path(os.environ.get("QCBED_SHARED", Path(__file__).resolve().parents[1].parent /
                           "shared"))
folder = root / "data" / "si-110-dlacbed"
if not folder.is_dir():
    sys.exit(f"si_dlacbed.py: the Si D-LACBED data are not at {folder}; this example needs "
             "../shared/data next to the repository (or QCBED_SHARED pointing to it).")

from qcbed.bloch import Simulation  # noqa: E402
from qcbed.experiment import read_felix_images  # noqa: E402
from qcbed.project import (  # noqa: E402
    ProjectRun,
    dumps_toml,
    load_project,
    validate_project,
)
from qcbed.project.felix import felix_project  # noqa: E402
from qcbed.refine.gof import zncc  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
full = "--full" in sys.argv
out = Path(args[0] if args else "si-dlacbed").resolve()
out.mkdir(parents=True, exist_ok=True)

# ------------------------------------------------------------------ 1. simulate and compare
with warnings.catch_warnings():
    warnings.simplefilter("ignore")          # Felix's kappa factors -> Kirkland (noted)
    sim = Simulation.from_felix(folder, gmax=1.5)
images = sim.pattern(sim.defaults.grid, [1480.0], progress=True)[0]
stack = read_felix_images(folder, clip_negative=True)
scores = {"as is": [], "transposed": [], "mirrored": []}
for i, h in enumerate(sim.outputs):
    e = stack.image(h)
    scores["as is"].append(zncc(images[i], e))
    scores["transposed"].append(zncc(images[i], e.T))
    scores["mirrored"].append(zncc(images[i], e[:, ::-1]))
print("mean ZNCC, simulation vs experiment: " + ", ".join(
    f"{k} {np.mean(v):.3f}" for k, v in scores.items()))

# ------------------------------------------------------------------ 2. project file
proj, comments, facts = felix_project(folder, output=str(out / "results"))
if not full:   # a quicker plan: coarser ROI, thickness and orientation only
    proj["roi"]["regions"][0]["samples"] = [31, 31]
    proj["plan"]["fine"] = proj["plan"]["fine"][:1]
    proj["plan"]["coarse"][0]["n_scan"] = 13
path = out / "si.toml"
path.write_text(dumps_toml(proj, comments), encoding="utf-8")
report = validate_project(path)
print(report.text())
if not report.ok:
    sys.exit(1)

# ------------------------------------------------------------------ 3. refine
run = ProjectRun(load_project(path)).run()
print(run.fine.summary())
print("results:", ", ".join(str(p) for p in run.files.values()))
