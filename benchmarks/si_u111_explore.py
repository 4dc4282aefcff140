"""Exploration driver for the Si U(111) bias hunt (issue 12 item 6; log: docs/si-u111-bias.md).

One fine step (thickness, U(111), U(220), U(113), shifts) from the known
orientation/thickness, ROI sampled every STEP display px, no coarse step, no
budget, no regions.  Variants are given by name on the command line.
Each result is appended as one JSON line to LOG.
"""
import json
import os
import sys
import time
import warnings

from qcbed.cli.import_felix import felix_project
from qcbed.project import ProjectRun, dumps_toml, parse_project

warnings.simplefilter("ignore")

SHARED = os.environ.get("QCBED_SHARED", "../shared")
D = f"{SHARED}/data/si-110-dlacbed"
OUT = os.environ.get("QCBED_BIAS_OUT", "/tmp/bias")
LOG = f"{OUT}/explore.jsonl"
STEP = int(os.environ.get("QCBED_BIAS_STEP", "8"))  # display px between ROI samples
ALL_U = ["U(1,1,1)", "U(2,2,0)", "U(1,1,3)"]

def variant(name: str) -> tuple[dict, dict]:
    proj, comments, _facts = felix_project(D, output=f"{OUT}/run_{name}", roi_step=STEP)
    proj["engine"]["executor"] = "serial"
    proj["project"]["overwrite"] = True
    proj["engine"]["sgmin"] = 0.3        # legacy selection for speed (relative effects)
    proj["engine"]["omega"] = 30.0
    proj["plan"]["thickness"] = 1491.4
    proj["geometry"]["shift"] = [-0.163, -0.015]
    proj["plan"]["budget"] = False
    proj["data"]["energy_filtered"] = True   # elastic model unless 'inel' (plasmon losses)
    proj["plan"].pop("coarse", None)
    refine = ["thickness", *ALL_U, "shift.row", "shift.col"]
    fine = {"name": "fine", "refine": refine, "max_iter": 15}
    hkl = proj["roi"]["hkl"]
    v = name.split("+")
    for tok in v:
        if tok in ("base", "again"):
            pass
        elif tok.startswith("bg_"):
            proj["gof"]["background"] = tok[3:]
        elif tok.startswith("el_"):
            proj["engine"]["elastic"] = tok[3:]
        elif tok.startswith("u") and tok[1:].isdigit():   # u222 -> U(2,2,2)
            h = ",".join(tok[1:])
            fine["refine"].append(f"U({h})")
        elif tok in ("dsrow", "dsrc"):   # per-disc shifts for every disc but 000
            others = [h for h in proj["roi"]["hkl"] if h != [0, 0, 0]]
            proj["roi"]["disc_shifts"] = others
            for h in others:
                hk = ",".join(str(v) for v in h)
                fine["refine"].append(f"disc_shift({hk}).row")
                if tok == "dsrc":
                    fine["refine"].append(f"disc_shift({hk}).col")
        elif tok == "c31":   # central 31 x 31 display px, every pixel (probe tests)
            proj["roi"]["regions"] = [{"corners": [[60.5, 60.5], [60.5, 90.5], [90.5, 60.5]],
                                       "samples": [31, 31]}]
        elif tok.startswith("B") and tok[1:].replace(".", "").isdigit():   # B0.46
            proj["crystal"]["b_iso"] = {"Si1": float(tok[1:])}
        elif tok in ("gl", "glrot"):
            fine["refine"].append("gl")
            if tok == "glrot":
                fine["refine"].append("rotation")
        elif tok.startswith("probeg"):   # Cauchy (Lorentzian) probe width gamma, samples
            proj["gof"]["probe"] = [0.05, float(tok[6:])]
        elif tok == "Bfit":
            fine["refine"].append("B(Si1)")
        elif tok.startswith("tfix"):
            proj["plan"]["thickness"] = float(tok[4:])
            fine["refine"].remove("thickness")
        elif tok == "tgrad":   # thickness gradient across the tilt field (Å per Å⁻¹)
            fine["refine"] += ["thickness.dkx", "thickness.dky"]
        elif tok == "budget":   # the error budget of the fine step (linearised)
            proj["plan"]["budget"] = True
        elif tok == "uabs":
            fine["refine"].append("Uabs(1,1,1)")
        elif tok.startswith("probe") and tok[5:].replace(".", "").isdigit():
            s = float(tok[5:])
            proj["gof"]["probe"] = [s, 0.0]
        elif tok == "probefit":
            proj["gof"]["probe"] = [0.5, 0.0]
            fine["refine"].append("probe.sigma")
        elif tok == "inel":     # not energy-filtered: the plasmon-loss model
            proj["data"]["energy_filtered"] = False
        elif tok == "inelfit":  # … with t/λ_p refined (through the λ_p scale)
            proj["data"]["energy_filtered"] = False
            fine["refine"].append("plasmon.lambda_scale")
        elif tok.startswith("mfp"):  # mfp1531: λ_p = 1531 Å
            proj["data"]["plasmon_mean_free_path"] = float(tok[3:])
        elif tok.startswith("smax"):
            proj["engine"]["smax"] = float(tok[4:])
        elif tok.startswith("gmax"):
            proj["engine"]["gmax"] = float(tok[4:])
        elif tok.startswith("sgmin"):
            proj["engine"]["sgmin"] = float(tok[5:])
        elif tok == "no000":
            proj["roi"]["hkl"] = [h for h in hkl if h != [0, 0, 0]]
        elif tok == "no222":
            proj["roi"]["hkl"] = [h for h in proj["roi"]["hkl"] if sorted(map(abs, h)) != [2, 2, 2]]
        elif tok == "low":   # 000, 00±2, 111 family, 220 family, 222 family only
            keep = {(0, 0, 0), (0, 0, 2), (1, 1, 1), (0, 2, 2), (2, 2, 2)}
            proj["roi"]["hkl"] = [h for h in hkl if tuple(sorted(map(abs, h))) in keep]
        elif tok == "high":  # everything except 000 and the 111/222 families
            drop = {(0, 0, 0), (1, 1, 1), (2, 2, 2)}
            proj["roi"]["hkl"] = [h for h in hkl if tuple(sorted(map(abs, h))) not in drop]
        elif tok.startswith("step"):
            pass
        else:
            raise SystemExit(f"unknown token {tok}")
    proj["plan"]["fine"] = [fine]
    return proj, comments


def run_project(name: str, proj: dict, comments: dict, log: str = LOG) -> dict:
    """Run one project dict; the result record (also appended as a JSON line to ``log``)."""
    src = f"{OUT}/run_{name}.toml"
    open(src, "w").write(dumps_toml(proj, comments))
    P = parse_project(proj, source=src, base_dir=OUT)
    t0 = time.time()
    logs: list[str] = []
    try:
        run = ProjectRun(P, progress=False, log=logs.append).run()
        res = run.fine
        ps = {p.name: (p.value, p.esd) for p in res.parameters
              if p.refine or p.name == "thickness"}
        rec = dict(name=name, u111=ps["U(1,1,1)"][0], esd=ps["U(1,1,1)"][1],
                   t=ps["thickness"][0], chi2=res.chi2, r=res.r_factor,
                   params={k: v for k, v in ps.items()}, n_used=res.n_used,
                   corr_u111={n: round(float(c), 3) for n, c in zip(
                       res.free_names, res.correlation[res.free_names.index("U(1,1,1)")])},
                   budget=[m for m in logs if m.startswith("error budget")],
                   wall_s=time.time() - t0, step=STEP)
    except Exception as exc:  # keep going, record the failure
        rec = dict(name=name, error=repr(exc), wall_s=time.time() - t0)
    print(json.dumps(rec), flush=True)
    open(log, "a").write(json.dumps(rec) + "\n")
    return rec


def main(names: list[str]) -> None:
    for name in names:
        run_project(name, *variant(name))


if __name__ == "__main__":
    main(sys.argv[1:])
