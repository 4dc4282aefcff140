"""The CLI under careless and hostile input (issue 14): qcbed errors (exit 2, no
traceback), nothing overwritten without --force, no NaN written with exit 0."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from qcbed.cli import main
from test_fuzz_parsers import DAT


def _dat(tmp_path: Path, **subs: str) -> Path:
    text = re.sub(r"^samp .*$", "samp 3", DAT, count=1, flags=re.M)
    for key, line in subs.items():
        text = re.sub(rf"^{key} .*$", line, text, count=1, flags=re.M)
    p = tmp_path / "si.dat"
    p.write_text(text)
    return p


def _run(*args: str):
    return CliRunner().invoke(main, ["--workers", "1", *args])


def _error(r, *fragments: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, repr(r.exception))
    assert "Traceback" not in r.output
    assert "error:" in r.output.lower()
    for f in fragments:
        assert f in r.output, (f, r.output)
    return r.output


def test_simulate_refuses_to_overwrite(tmp_path: Path) -> None:
    src = _dat(tmp_path)
    before = src.read_bytes()
    _error(_run("simulate", str(src), "-t", "500", "--out", str(src), "-q"),
           "overwrite an input file")
    _error(_run("simulate", str(src), "-t", "500", "--out", str(src), "--force", "-q"),
           "overwrite an input file")
    assert src.read_bytes() == before
    out = tmp_path / "sim.h5"
    out.write_text("precious")
    _error(_run("simulate", str(src), "-t", "500", "--out", str(out), "-q"),
           "exists; pass --force")
    assert out.read_text() == "precious"
    r = _run("simulate", str(src), "-t", "500", "--out", str(out), "--force", "-q")
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        assert f["intensity"].shape[0] == 1
    _error(_run("simulate", str(src), "-t", "500", "--out",
                str(tmp_path / "no" / "such" / "x.h5"), "-q"), "folder", "does not exist")


@pytest.mark.parametrize(("args", "fragments"), [
    (("-t", "-100"), ("--thickness", "out of range")),
    (("-t", "nan"), ("--thickness", "finite")),
    (("-t", "1e9"), ("--thickness", "out of range")),
    (("-t", "500", "--gmax", "-1"), ("--gmax",)),
    (("-t", "500", "--gmax", "nan"), ("--gmax",)),
    (("-t", "500", "--smax", "inf"), ("--smax",)),
])
def test_simulate_bad_numbers(tmp_path: Path, args: tuple[str, ...],
                              fragments: tuple[str, ...]) -> None:
    src = _dat(tmp_path)
    _error(_run("simulate", str(src), *args, "--out", str(tmp_path / "x.h5"), "-q"),
           *fragments)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(("args", "fragments"), [
    (("--hkl", "1,a,1"), ("[--hkl]", "1,a,1")),
    (("--hkl", "1,1"), ("[--hkl]",)),
    (("--hkl", "99999999999999999999,0,0"), ("[--hkl]",)),
    (("-V", "-5"), ("[--voltage]",)),
    (("-V", "nan"), ("[--voltage]",)),
    (("--gmax", "1e6"), ("[--gmax]",)),
    (("--gmax", "1e999"), ("[--gmax]", "finite")),
])
def test_ug_bad_arguments(tmp_path: Path, args: tuple[str, ...],
                          fragments: tuple[str, ...]) -> None:
    _error(_run("ug", str(_dat(tmp_path)), *args), *fragments)


def test_ug_dat_with_overflow_is_a_qcbed_error(tmp_path: Path) -> None:
    _error(_run("ug", str(_dat(tmp_path, hv="hv 1e999"))), ":6 [hv]", "not finite")


def test_demo_checks_seed_and_does_not_overwrite(tmp_path: Path) -> None:
    r = _run("demo", "--seed", "-1", "--out", str(tmp_path / "d"), "--fast", "-q")
    assert r.exit_code == 2 and "Traceback" not in r.output and "-1" in r.output
    d = tmp_path / "mine"
    d.mkdir()
    (d / "project.toml").write_text("# my own project\n")
    _error(_run("demo", "--out", str(d), "--fast", "-q"), "project.toml", "--force")
    assert (d / "project.toml").read_text() == "# my own project\n"
    (tmp_path / "afile").write_text("x")
    _error(_run("demo", "--out", str(tmp_path / "afile"), "--fast", "-q"))


def test_extract_refuses_to_overwrite_and_names_a_bad_mask(tmp_path: Path) -> None:
    src = tmp_path / "scan.npy"
    np.save(src, np.ones((2, 2, 8, 8), np.float32))
    out = tmp_path / "stack.h5"
    out.write_text("precious")
    args = ["extract", str(src), "--zone", "0", "0", "1", "--g1", "1", "0", "0", "4", "6",
            "--g2", "0", "1", "0", "6", "4", "--no-beam-motion", "-q"]
    r = CliRunner().invoke(main, [*args, "--output", str(out)])
    _error(r, "exists; pass --force")
    assert out.read_text() == "precious"
    r = CliRunner().invoke(main, [*args, "--output", str(src), "--force"])
    _error(r, "overwrite an input file")
    mask = tmp_path / "mask.npy"
    mask.write_text("not numpy")
    r = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "new.h5"), "--bad-pixels",
                                  str(mask), "--no-refine"])
    _error(r, "not a NumPy .npy file", "[--bad-pixels]")
