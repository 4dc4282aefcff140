"""Fuzz tests of every input parser: any text or bytes give a result or a qcbed error.

Each parser is fed mutations of a valid input (tokens replaced by hostile numbers
such as ``1e999``, ``nan``, ``99999999999999999999`` or ``-1e-300``, lines deleted,
duplicated, inserted or truncated) and free text. The property: the parser
returns, or raises :class:`qcbed.errors.QcbedError` — never another exception.

In CI each parser runs a bounded number of examples (a few seconds). For a long
run set ``QCBED_FUZZ_EXAMPLES`` (e.g. ``QCBED_FUZZ_EXAMPLES=200000``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qcbed.errors import QcbedError  # noqa: E402

N_EXAMPLES = int(os.environ.get("QCBED_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize="QCBED_FUZZ_EXAMPLES"
                not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

HOSTILE = ["1e999", "-1e999", "1e400", "nan", "NaN", "inf", "-inf", "1e20", "-1e20",
           "1e305", "-1e-300", "1e-320", "0", "-0", "0.0", "-1", "-5", "1.5", "2.5e3",
           "99999999999999999999", "-99999999999999999999", "1D999", "1e+99999", "abc",
           "", "#", "[", "]", "[1, 2, 3]", "[1e999, 0, 0]", "[0, 0, 0]", "'", "'x'", "=",
           ",", ";", "x, x, z", "-x,-y,-z", "1/2", "?", ".", "loop_", "_cell_length_a",
           "data_x", "true", "{", "\\", "0.125(3)", "5.431(2)", "1.0(99999999)",
           "1e5", "100000", "200", "1e9", "-1e9"]
NUMBERISH = st.from_regex(r"[+-]?\d{1,24}(\.\d{0,6})?([eEdD][+-]?\d{1,4})?", fullmatch=True)
TOKENS = st.one_of(st.sampled_from(HOSTILE), NUMBERISH, st.integers().map(str),
                   st.floats().map(repr), st.text(max_size=10))


@st.composite
def mutated(draw: st.DrawFn, base: str, max_ops: int = 6) -> str:
    """``base`` with 1..max_ops line/token mutations."""
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, max_ops))):
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(("token", "token", "token", "delete", "dup", "insert",
                                   "truncate", "swap")))
        if op == "token":
            toks = lines[i].split(" ")
            j = draw(st.integers(0, len(toks) - 1))
            toks[j] = draw(TOKENS)
            lines[i] = " ".join(toks)
        elif op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, draw(st.one_of(st.text(max_size=40),
                                           st.lists(TOKENS, max_size=8).map(" ".join))))
        elif op == "truncate":
            lines = lines[:i]
        else:
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
    return "\n".join(lines) + draw(st.sampled_from(("", "\n")))


def texts(base: str) -> st.SearchStrategy[str]:
    """Mostly mutations of ``base``; sometimes free text."""
    return st.one_of(mutated(base), mutated(base), mutated(base), st.text(max_size=200))


def _only_qcbed_errors(call: Callable[[], object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except QcbedError:
            pass


# ====================================================================== .dat
DAT = """# Si 110 systematic row
crystal silicon : dw = iso occ = 1
cell 5.4307 5.4307 5.4307 90.0 90.0 90.0
atom Si 0.125 0.125 0.125 0.4668
spg 227 2
hv 300.66
zone 1 1 0
norm 1 1 0
kt -10 10 -20
xaxis 1 -1 -1
conv 6
samp 60
sele 4 3.5 0.1 0
hkl 4
0 0 0
1 -1 -1
-1 1 1
2 -2 -2
out 2
0 0 0
1 -1 -1
sgmax 3
sgmin 0.3
omeg 30.0
aper 1.0
abs 0.5
v0 12.5
adj 2
-1 1 1 0.0575 0 4.37E-04 180
2 -2 -2 -8e-4 0 1e-5 0
"""


@FUZZ
@given(text=texts(DAT))
def test_fuzz_dat(text: str) -> None:
    from qcbed.io.dat import read_dat

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.dat"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        _only_qcbed_errors(lambda: read_dat(p))


# ====================================================================== Felix
INP = """# Input file for Felix
scatter_factor_method     = 1
holz_flag                 = 1
absorption_method         = 1
Debye_model               = 0     # trailing comment
min_reflection_pool       = 50
min_strong_beams          = 10
min_weak_beams            = 5
g_limit                   = 2.5
incident_beam_direction   = [0, 0, 1]
x_direction               = [1, 0, 0]
normal                    = [0, 0, 1]
initial_thickness         = 500.0
final_thickness           = 900.0
delta_thickness           = 200.0
debye_waller_constant     = 0.3
absorption_per            = 8.5
convergence_angle         = 0.5
accelerating_voltage_kv   = 300
image_radius              = 32
blur_radius               = 1.5
refine_mode               = 'S'   # comment after a string
"""
FELIX_HKL = "[2, 0, 0]\n[0, 2, 0]\n\n[-2, 0, 0]\n0 0 2\n"
CIF = """data_cu
_cell_length_a 3.615
_cell_length_b 3.615
_cell_length_c 3.615(2)
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'F m -3 m'
_space_group_IT_number 225
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_B_iso_or_equiv
Cu1 Cu 0 0 0 1.0 0.55
O1 O2- 0.5 0.5 0.5 0.25 1.0
loop_
_atom_site_aniso_label
_atom_site_aniso_U_11
_atom_site_aniso_U_22
_atom_site_aniso_U_33
_atom_site_aniso_U_12
_atom_site_aniso_U_13
_atom_site_aniso_U_23
Cu1 0.007 0.007 0.007 0 0 0
"""


@FUZZ
@given(inp=texts(INP), hkl=st.one_of(st.just(FELIX_HKL), texts(FELIX_HKL)))
def test_fuzz_felix(inp: str, hkl: str) -> None:
    from qcbed.io import read_felix

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "felix.inp").write_text(inp, encoding="utf-8", errors="surrogatepass")
        (folder / "felix.hkl").write_text(hkl, encoding="utf-8", errors="surrogatepass")
        (folder / "felix.cif").write_text(CIF)

        def run() -> None:
            fx = read_felix(folder)
            assert np.all(np.isfinite(fx.thicknesses))

        _only_qcbed_errors(run)


@FUZZ
@given(text=texts(CIF))
def test_fuzz_cif(text: str) -> None:
    from qcbed.io.cif import read_cif_string

    _only_qcbed_errors(lambda: read_cif_string(text, source="fuzz.cif"))


# ====================================================================== project TOML
def _demo_folder() -> Path:
    """A project folder (CIF, data, project.toml) written once per session."""
    root = Path(tempfile.gettempdir()) / f"qcbed-fuzz-project-{os.getpid()}"
    if not (root / "project.toml").is_file():
        root.mkdir(exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        from qcbed.demo import _crystal_file

        (root / "si.cif").write_text(_crystal_file().read_text())
        np.save(root / "data" / "pattern.npy", np.full((48, 128), 100.0))
        (root / "project.toml").write_text(PROJECT)
    return root


PROJECT = """[project]
name = "fuzz"
output = "results"
density_map = "xray"

[crystal]
source = "si.cif"

[data]
kind = "cbed"
files = ["data/pattern.npy"]
hkl = [[-1, -1, -1], [0, 0, 0], [1, 1, 1], [2, 2, 2]]
variance = "poisson"
clip_negative = false

[geometry]
voltage_kv = 200.0
zone = [1, -1, 0]
x_axis = [1, 1, 1]
normal = [1, -1, 0]
mode = "cbed"
rotation = 0.0
mirror = false
gl = 40.0
tilt0 = [-0.22, 1.98]
reference = [24.0, 64.0]
shift = [0.0, 0.0]

[[roi.regions]]
corners = [[15.0, 55.0], [15.0, 73.0], [33.0, 55.0]]
samples = [19, 19]

[engine]
mode = "exact"
coarse_mode = "fast"
gmax = 1.6
smax = 0.05
elastic = "kirkland"
absorption = "bird_king"

[gof]
metric = "chi2"
background = "per_disc"

[plan]
thickness = 1500.0

[[plan.coarse]]
step = "orientation_thickness"
thickness_range = [1200.0, 1995.0]
n_scan = 17
margin = 6
template_size = [19, 19]

[[plan.fine]]
name = "structure factors"
refine = ["thickness", "U(1,1,1)", "Uabs(1,1,1)", "shift.row", "shift.col"]
max_iter = 12
bounds = { thickness = [1000.0, 2000.0] }
"""


@FUZZ
@given(text=texts(PROJECT))
def test_fuzz_project_toml(text: str) -> None:
    from qcbed.project import load_project

    folder = _demo_folder()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir=folder, delete=False,
                                     encoding="utf-8", errors="surrogatepass") as fh:
        fh.write(text)
    try:
        _only_qcbed_errors(lambda: load_project(fh.name))
    finally:
        os.unlink(fh.name)


# ====================================================================== data readers
def _valid_files() -> dict[str, bytes]:
    """Bytes of small valid image files of each format the readers know."""
    import io

    out = {}
    buf = io.BytesIO()
    np.save(buf, np.arange(12.0).reshape(3, 4))
    out[".npy"] = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
    out[".npy3"] = buf.getvalue()
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("data", data=np.arange(2 * 2 * 3 * 4, dtype=np.float32)
                         .reshape(2, 2, 3, 4))
    out[".h5"] = buf.getvalue()
    try:
        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, np.arange(12, dtype=np.uint16).reshape(3, 4))
        out[".tif"] = buf.getvalue()
    except ImportError:  # pragma: no cover
        pass
    return out


VALID = _valid_files()


@st.composite
def mutated_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    key = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[key])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(("flip", "truncate", "insert")))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            data = data[:i]
        else:
            data[i:i] = draw(st.binary(max_size=16))
    ext = draw(st.sampled_from((key[:4], ".npy", ".tif", ".dm3", ".txt", ".h5")))
    return ext, bytes(data)


@FUZZ
@given(item=st.one_of(mutated_bytes(),
                      st.tuples(st.sampled_from((".npy", ".tif", ".dm3", ".h5")),
                                st.binary(max_size=300))))
def test_fuzz_data_readers(item: tuple[str, bytes]) -> None:
    from qcbed.experiment.readers import read_image
    from qcbed.larbed.readers import open_4d

    ext, data = item
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{ext}"
        p.write_bytes(data)
        _only_qcbed_errors(lambda: read_image(p))
        if ext in (".npy", ".h5"):
            _only_qcbed_errors(lambda: open_4d(p))
