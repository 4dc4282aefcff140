"""Hostile and careless input (issue 14): every reproducer gives a qcbed InputError that
names the source, what was expected and what was found."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from qcbed.checks import check_hkl, check_integer, check_number, check_numbers
from qcbed.errors import InputError
from qcbed.io.cif import read_cif_string
from qcbed.io.dat import read_dat
from qcbed.io.felix import read_felix, read_felix_hkl
from test_fuzz_parsers import CIF, DAT, FELIX_HKL, INP

SI_CIF = (Path(__file__).resolve().parents[1] / "src" / "qcbed" / "demo" / "si.cif").read_text()


def _sub(text: str, pattern: str, new: str) -> str:
    out = re.sub(pattern, new, text, count=1, flags=re.M)
    assert out != text, pattern
    return out


# ====================================================================== the helper
def test_check_number_refuses_non_finite_and_out_of_range() -> None:
    assert check_number(2, "x", low=0) == 2.0
    assert check_number(np.float32(1.5), "x") == 1.5
    for bad in (math.nan, math.inf, -math.inf, 10**400):
        with pytest.raises(InputError, match="finite"):
            check_number(bad, "gmax", low=0)
    with pytest.raises(InputError) as info:
        check_number(-1, "gmax", low=0, low_open=True, unit="Å⁻¹", source="arg")
    assert str(info.value) == ("arg [gmax]: gmax out of range (expected a finite number "
                               "> 0 Å⁻¹, found -1)")
    for bad in ("1", None, True, [1.0]):
        with pytest.raises(InputError, match="must be a number"):
            check_number(bad, "x")


def test_check_integer_and_hkl() -> None:
    assert check_integer(3.0, "n") == 3
    assert check_integer(np.int64(-2), "n", low=-5) == -2
    for bad in (1.5, math.inf, math.nan, 1e300, 2**40, "2"):
        with pytest.raises(InputError):
            check_integer(bad, "n")
    with pytest.raises(InputError, match="≥ 1"):
        check_integer(0, "n", low=1)
    assert check_hkl((1, 1, 1)).tolist() == [[1, 1, 1]]
    assert check_hkl([[1.0, -1.0, 0.0]]).dtype.kind == "i"
    with pytest.raises(InputError, match=r"found \(1.5, 1.0, 1.0\)"):
        check_hkl([(1.5, 1, 1)])
    for bad in ([(1, 1)], [(1e20, 0, 0)], [(math.nan, 0, 0)], "abc"):
        with pytest.raises(InputError):
            check_hkl(bad)
    with pytest.raises(InputError, match=r"x\[1\]"):
        check_numbers([1.0, math.nan], "x")
    assert check_numbers([1, 2], "x", low=0).tolist() == [1.0, 2.0]


# ====================================================================== .dat
@pytest.mark.parametrize(("pattern", "new", "line", "fragment"), [
    (r"^samp 60", "samp 1e999", 12, "not finite"),
    (r"^hkl 4", "hkl 1e999", 14, "not finite"),
    (r"^spg 227 2", "spg 1e999", 5, "not finite"),
    (r"^spg 227 2", "spg 1e20", 5, "out of range"),
    (r"^1 -1 -1$", "2 -2 1e20", 16, "Miller index out of range"),
    (r"^-1 1 1 0.0575", "1e20 1 1 0.0575", 29, "Miller index out of range"),
    (r"^adj 2", "adj 1e999", 28, "not finite"),
    (r"^cell .*$", "cell 5.4307 5.4307 1e305 90 90 90", 3, "cell length c out of range"),
    (r"^cell .*$", "cell 5.4307 5.4307 1e-320 90 90 90", 3, "cell length c out of range"),
    (r"^atom .*$", "atom Si 0.125 0.125 0.125 1e6", 4, "Debye–Waller factor B"),
    (r"^hv .*$", "hv 1e999", 6, "not finite"),
    (r"^hv .*$", "hv nan", 6, "not a number"),
    (r"^sgmax .*$", "sgmax -1", 22, "must be positive"),
    (r"^omeg .*$", "omeg 0", 24, "must be positive"),
    (r"^abs .*$", "abs -1", 26, "must not be negative"),
    (r"^sele .*$", "sele 4 -3.5 0.1 0", 13, "gmax must be positive"),
])
def test_dat_hostile_numbers(tmp_path: Path, pattern: str, new: str, line: int,
                             fragment: str) -> None:
    p = tmp_path / "x.dat"
    p.write_text(_sub(DAT, pattern, new))
    with pytest.raises(InputError) as info:
        read_dat(p)
    msg = str(info.value)
    assert f"{p}:{line}" in msg and fragment in msg, msg
    assert info.value.expected is not None and info.value.found is not None


def test_dat_tiny_kt_is_zero_not_a_crash(tmp_path: Path) -> None:
    p = tmp_path / "x.dat"
    p.write_text(_sub(DAT, r"^kt .*$", "kt 0 -1e-300 0"))
    dat = read_dat(p)
    assert dat.kt_length == 0.0


# ====================================================================== Felix
def _felix(tmp_path: Path, inp: str = INP, hkl: str = FELIX_HKL) -> Path:
    d = tmp_path / "felix"
    d.mkdir(exist_ok=True)
    (d / "felix.inp").write_text(inp)
    (d / "felix.hkl").write_text(hkl)
    (d / "felix.cif").write_text(CIF)
    return d


@pytest.mark.parametrize(("pattern", "new", "key", "fragment"), [
    (r"^image_radius .*$", "image_radius = 1e999", "image_radius", "not finite"),
    (r"^min_reflection_pool .*$", "min_reflection_pool = 1e400", "min_reflection_pool",
     "not finite"),
    (r"^min_reflection_pool .*$", "min_reflection_pool = 1e30", "min_reflection_pool",
     "out of range"),
    (r"^normal .*$", "normal = [1e300, 0, 0]", "normal", "≤ 1000"),
    (r"^convergence_angle .*$", "convergence_angle = nan", "convergence_angle",
     "must be a number"),
])
def test_felix_hostile_numbers(tmp_path: Path, pattern: str, new: str, key: str,
                               fragment: str) -> None:
    d = _felix(tmp_path, _sub(INP, pattern, new))
    with pytest.raises(InputError) as info:
        read_felix(d)
    msg = str(info.value)
    assert str(d / "felix.inp") in msg and f"[{key}]" in msg and fragment in msg, msg


def test_felix_hkl_huge_index(tmp_path: Path) -> None:
    p = tmp_path / "felix.hkl"
    p.write_text("[2, 0, 0]\n[99999999999999999999, 0, 0]\n")
    with pytest.raises(InputError) as info:
        read_felix_hkl(p)
    assert f"{p}:2" in str(info.value) and "Miller index" in str(info.value)


# ====================================================================== CIF
def test_cif_singular_operation_is_named() -> None:
    text = SI_CIF + "loop_\n_space_group_symop_operation_xyz\n'x, y, z'\n'x, x, z'\n"
    with pytest.raises(InputError) as info:
        read_cif_string(text, source="si.cif")
    msg = str(info.value)
    assert "not a rotation or reflection" in msg and "'x, x, z'" in msg, msg
    assert "metric" not in msg


def test_cif_overflowing_cell() -> None:
    with pytest.raises(InputError, match="cell length a"):
        read_cif_string(SI_CIF.replace("_cell_length_a 5.4307", "_cell_length_a 1e999"),
                        source="si.cif")


# ====================================================================== data files
def test_text_file_named_npy(tmp_path: Path) -> None:
    from qcbed.experiment.readers import load_npy, read_image

    p = tmp_path / "pattern.npy"
    p.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(InputError) as info:
        read_image(p)
    msg = str(info.value)
    assert "not a NumPy .npy file" in msg and "text" in msg and "pickle" not in msg, msg
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        load_npy(p)
