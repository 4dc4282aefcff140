"""Build ``src/qcbed/scattering/tables/weickenmeier_kohl.json`` (one-off; not run in CI).

The Weickenmeier–Kohl elastic parameters are published numbers: four pairs
(A_i, B_i) per element, Z = 1–98, of the form

    f_e(s) = Σ_{i=1}^{4} A_i (1 − exp(−B_i s²)) / s²      [Å],  s = sinθ/λ [Å⁻¹]

(Weickenmeier & Kohl 1991, Acta Cryst. A47, 590–597; four-term refit of
07.07.1993 distributed with Weickenmeier's FSCATT routine).

Provenance. The numbers are *read* (as text, with a regular expression; nothing
is imported or executed) from the ``WK_A_param`` / ``WK_B_param`` arrays of the
PyPI wheel ``py4DSTEM==0.14.18``
(``py4DSTEM/process/diffraction/WK_scattering_factors.py``), obtained with::

    pip download --no-deps py4DSTEM==0.14.18 -d /tmp/p4d
    cd /tmp/p4d && unzip -q py4DSTEM-0.14.18-py3-none-any.whl

They are cross-checked, number by number, against a second public copy (the
``AA(4,98)`` / ``BB(4,98)`` DATA tables of EMsoft ``Source/EMsoftLib/others.f90``,
GitHub EMsoft-org/EMsoft, commit 03be27c), supplied as two plain-text files with
one element per line (``--check-a``, ``--check-b``). Two internal checks run as
well: Σ_i A_i = 0.02395 Z Å for every element (the Mott–Bethe asymptote
Z/(8π² a₀ s²) with the a₀ = 0.5289 Å of the original code), and f_e(0) = Σ A_i B_i
positive for every element.

Usage::

    python tools/make_wk_table.py /tmp/p4d/py4DSTEM/process/diffraction/WK_scattering_factors.py \
        --check-a /tmp/wkcheck/emsoft_AA.txt --check-b /tmp/wkcheck/emsoft_BB.txt
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import gemmi
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src/qcbed/scattering/tables/weickenmeier_kohl.json"
NUMBER = re.compile(r"-?\d+\.\d+")


def read_array(text: str, name: str) -> np.ndarray:
    """The numbers of the literal array assigned to ``name`` as a (98, 4) array."""
    start = text.index(f"{name} = np.array(")
    stop = text.index("])", start)
    values = np.array([float(x) for x in NUMBER.findall(text[start:stop])])
    if values.size != 98 * 4:
        raise SystemExit(f"{name}: expected 392 numbers, found {values.size}")
    return values.reshape(98, 4)


def read_plain(path: Path) -> np.ndarray:
    """A (98, 4) table from a text file with four numbers per line."""
    rows = [[float(x) for x in NUMBER.findall(line)] for line in path.read_text().splitlines()
            if line.strip()]
    arr = np.array(rows)
    if arr.shape != (98, 4):
        raise SystemExit(f"{path}: expected 98 rows of 4 numbers, found {arr.shape}")
    return arr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="py4DSTEM WK_scattering_factors.py (text)")
    ap.add_argument("--check-a", type=Path, help="second copy of A (98 lines × 4)")
    ap.add_argument("--check-b", type=Path, help="second copy of B (98 lines × 4)")
    args = ap.parse_args()

    text = args.source.read_text()
    a = read_array(text, "WK_A_param")
    b = read_array(text, "WK_B_param")

    z = np.arange(1, 99)
    ratio = a.sum(axis=1) / z
    if not np.allclose(ratio, 0.02395, rtol=0, atol=5e-9):
        raise SystemExit(f"Σ A_i ≠ 0.02395 Z for Z = {z[~np.isclose(ratio, 0.02395)]}")
    if np.any(np.sum(a * b, axis=1) <= 0) or np.any(b <= 0):
        raise SystemExit("non-positive f_e(0) or B_i")
    checked = []
    for label, path, arr in (("A", args.check_a, a), ("B", args.check_b, b)):
        if path is None:
            continue
        other = read_plain(path)
        bad = np.argwhere(other != arr)
        if bad.size:
            raise SystemExit(f"{label}: {len(bad)} numbers differ, first at Z={bad[0][0] + 1}")
        checked.append(label)
    print(f"cross-checked {', '.join(checked) or 'nothing'}: identical (392 numbers each)")

    elements = {}
    for zi in z:
        sym = gemmi.Element(int(zi)).name
        elements[sym] = {"Z": int(zi), "A": [float(x) for x in a[zi - 1]],
                         "B": [float(x) for x in b[zi - 1]]}
    table = {
        "source": ("A. Weickenmeier and H. Kohl, 'Computation of absorptive form factors for "
                   "high-energy electron diffraction', Acta Cryst. A47 (1991) 590-597, "
                   "doi:10.1107/S0108767391004804; four-term (A_i, B_i) refit of 07.07.1993 "
                   "('more precise fit to the Doyle-Turner table') distributed with "
                   "Weickenmeier's FSCATT routine."),
        "formula": "f_e(s) = sum_{i=1..4} A_i * (1 - exp(-B_i s^2)) / s^2; "
                   "f_e(0) = sum_i A_i B_i; sum_i A_i = 0.02395 Z",
        "units": {"s": "1/Angstrom (s = sin(theta)/lambda = |g|/2)", "A": "Angstrom^-1",
                  "B": "Angstrom^2", "f_e": "Angstrom (first Born, non-relativistic)"},
        "provenance": (
            "Transcribed (read as text, not executed) from the WK_A_param/WK_B_param arrays "
            "of the PyPI wheel py4DSTEM 0.14.18 (py4DSTEM/process/diffraction/"
            "WK_scattering_factors.py), obtained with 'pip download --no-deps "
            "py4DSTEM==0.14.18'. Cross-checked number by number (all 784 identical) against "
            "the AA(4,98)/BB(4,98) DATA tables of EMsoft Source/EMsoftLib/others.f90 "
            "(GitHub EMsoft-org/EMsoft, commit 03be27ced31d207e57f27842ea34ec703fa1bac0), "
            "a port of Weickenmeier's original code. Internal checks: sum_i A_i = 0.02395 Z "
            "(Mott-Bethe asymptote 1/(8 pi^2 a0) with a0 = 0.5289 A) for all 98 elements. "
            "Script: tools/make_wk_table.py."),
        "elements": elements,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # one line per element keeps the file readable and diffs small
    head = {k: v for k, v in table.items() if k != "elements"}
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    rows = [f"  {json.dumps(sym)}: {json.dumps(val)}" for sym, val in elements.items()]
    text += ',\n "elements": {\n' + ",\n".join(rows) + "\n }\n}\n"
    json.loads(text)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(elements)} elements)")


if __name__ == "__main__":
    main()
