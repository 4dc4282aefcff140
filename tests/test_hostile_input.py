"""Hostile and careless input (issue 14): every reproducer gives a qcbed InputError that
names the source, what was expected and what was found."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from qcbed._core.checks import check_hkl, check_integer, check_number, check_numbers
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
    (r"^omeg .*$", "omeg -1", 24, "must not be negative"),
    (r"^aper .*$", "aper -0.5", 25, "must not be negative"),
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


# ====================================================================== Python API
@pytest.fixture(scope="module")
def si_sim():
    from qcbed.bloch.simulation import Simulation
    from qcbed.io import read_crystal

    crystal = read_crystal(Path(__file__).resolve().parents[1] / "src" / "qcbed" / "demo"
                           / "si.cif")
    return Simulation(crystal, 200, [1, -1, 0], [1, 1, 1], gmax=1.2, smax=0.05,
                      executor="serial")


@pytest.mark.parametrize(("kw", "tag"), [
    ({"gmax": -1}, "gmax"), ({"gmax": math.nan}, "gmax"), ({"gmax": 1e6}, "gmax"),
    ({"smax": 0}, "smax"), ({"kt_center": (math.nan, 0.0)}, "kt_center[0]"),
    ({"kt_radius": -1}, "kt_radius"), ({"voltage_kv": -5}, "voltage_kv"),
    ({"outputs": [(1.5, 0, 0)]}, "outputs"), ({"pool": [(0, 0, 0), (1e20, 0, 0)]}, "pool"),
    ({"min_pool": 2.5}, "min_pool"), ({"u_abs0": math.inf}, "u_abs0"),
])
def test_simulation_checks_arguments(si_sim, kw: dict, tag: str) -> None:
    from qcbed.bloch.simulation import Simulation

    args = {"gmax": 1.2, "smax": 0.05, "executor": "serial", "voltage_kv": 200, **kw}
    kv = args.pop("voltage_kv")
    with pytest.raises(InputError) as info:
        Simulation(si_sim.crystal, kv, [1, -1, 0], [1, 1, 1], **args)
    assert info.value.tag == tag, str(info.value)
    assert info.value.found is not None


@pytest.mark.parametrize("thickness", [[-100.0], [math.nan], [1e9]])
def test_pattern_checks_thickness(si_sim, thickness: list[float]) -> None:
    from qcbed.bloch.grids import TiltGrid

    with pytest.raises(InputError, match=r"thickness\[0\]"):
        si_sim.pattern(TiltGrid.disc((0.0, 0.0), 0.01, 1), thickness)


def test_solve_checks_kt_in_the_parent(si_sim) -> None:
    with pytest.raises(InputError, match="longer than K"):
        si_sim.solve(np.array([[1e3, 0.0]]))
    with pytest.raises(InputError, match=r"kt\[1\] must be a finite"):
        si_sim.solve(np.array([[0.0, math.nan]]))


def test_outputs_outside_the_pool_are_named(si_sim) -> None:
    from qcbed.bloch.simulation import Simulation

    with pytest.warns(UserWarning, match=r"\(30, 30, 30\) beyond gmax"):
        sim = Simulation(si_sim.crystal, 200, [1, -1, 0], [1, 1, 1], gmax=1.2,
                         outputs=[(1, 1, 1), (30, 30, 30)], executor="serial")
    assert [30, 30, 30] in sim.outputs.tolist()
    with pytest.warns(UserWarning, match=r"\(2, 2, 2\) not in the explicit pool"):
        Simulation(si_sim.crystal, 200, [1, -1, 0], [1, 1, 1], pool=[(0, 0, 0), (1, 1, 1)],
                   outputs=[(1, 1, 1), (2, 2, 2)], executor="serial")


def test_set_structure_factors_checks_hkl(si_sim) -> None:
    with pytest.raises(InputError, match=r"integer.*\(1.5, 1.0, 1.0\)"):
        si_sim.set_structure_factors({(1.5, 1, 1): -0.05})
    # 002 and 100 are forbidden in Fd-3m: named as such (not a centre-of-symmetry error)
    for hkl in ((0, 0, 2), (1, 0, 0)):
        with pytest.raises(InputError, match="forbidden by the space group") as info:
            si_sim.set_structure_factors({hkl: 0.01})
        assert "centre of symmetry" not in str(info.value)
    with pytest.warns(UserWarning, match=r"U\(30,30,30\): not a difference"):
        si_sim.set_structure_factors({(30, 30, 30): 0.001})
    with pytest.raises(InputError, match="finite"):
        si_sim.set_structure_factors({(1, 1, 1): math.nan})
    # a forbidden reflection set to zero is fine
    si_sim.set_structure_factors({(0, 0, 2): 0.0})


# ====================================================================== memory guard
def test_memory_guard_refuses_big_grids_and_pools(si_sim, monkeypatch) -> None:
    from qcbed._core.guard import check_memory, memory_limit, parse_memory
    from qcbed.bloch.grids import TiltGrid
    from qcbed.bloch.simulation import Simulation

    assert parse_memory("8GiB") == 8 * 2**30 and parse_memory(500e6) == 500_000_000
    assert 0 < parse_memory("0.5") < parse_memory("1.0")
    for bad in ("lots", -1, "0", math.nan, True):
        with pytest.raises(InputError):
            parse_memory(bad)
    monkeypatch.setenv("QCBED_MEMORY_LIMIT", "1MiB")
    assert memory_limit() == 2**20
    with pytest.raises(InputError, match="above the memory limit of 1 MiB"):
        check_memory(2e6, "a test")
    with pytest.raises(InputError, match="200001 × 200001") as info:
        TiltGrid.disc((0.0, 0.0), 0.1, 100_000)
    assert info.value.tag == "samp"
    monkeypatch.setenv("QCBED_MEMORY_LIMIT", "50MiB")
    with pytest.raises(InputError, match="beam pool of") as info:
        Simulation(si_sim.crystal, 200, [1, -1, 0], [1, 1, 1], gmax=4.0, smax=1.0,
                   executor="serial")
    monkeypatch.setenv("QCBED_MEMORY_LIMIT", "junk")
    with pytest.raises(InputError, match="QCBED_MEMORY_LIMIT"):
        memory_limit()


def test_dat_engine_errors_name_file_and_line(tmp_path: Path) -> None:
    from qcbed.bloch.simulation import Simulation

    for pattern, new, key in ((r"^xaxis .*$", "xaxis 1 1 0", "xaxis"),
                              (r"^norm .*$", "norm -1 -1 0", "norm"),
                              (r"^samp .*$", "samp 9000", "samp")):
        p = tmp_path / f"{key}.dat"
        text = _sub(DAT, pattern, new)
        p.write_text(text)
        line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(key))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("QCBED_MEMORY_LIMIT", "100MiB")
            with pytest.raises(InputError) as info:
                Simulation.from_dat(p, executor="serial")
        assert f"{p}:{line} [{key}]" in str(info.value), str(info.value)


def test_felix_engine_errors_name_the_felix_key(tmp_path: Path) -> None:
    from qcbed.bloch.simulation import Simulation

    d = _felix(tmp_path, _sub(INP, r"^x_direction .*$", "x_direction = [0, 0, 1]"))
    with pytest.raises(InputError) as info:
        Simulation.from_felix(d, executor="serial", gmax=1.0)
    assert f"{d / 'felix.inp'}:11 [x_direction]" in str(info.value), str(info.value)
    d = _felix(tmp_path, _sub(INP, r"^final_thickness .*$", "final_thickness = 1e9"))
    with pytest.raises(InputError, match="final_thickness"):
        read_felix(d)
    d = _felix(tmp_path, _sub(INP, r"^delta_thickness .*$", "delta_thickness = 1e-6"))
    with pytest.raises(InputError, match="too many thicknesses"):
        read_felix(d)


# ====================================================================== physics sanity
def test_zero_mean_absorption_warns_and_intensity_grows(tmp_path: Path) -> None:
    """``abs 0.0`` makes U′₀ = 0 < |U′_g|: warned naming the file and the ``abs`` line,
    and the summed intensity of all beams exceeds 1; with the model's U′₀ (no ``abs``
    line) the sum stays ≤ 1 (absorption only removes electrons)."""
    from qcbed.bloch.simulation import Simulation

    text = _sub(_sub(DAT, r"^abs .*$", "abs 0.0"), r"^adj 2\n(.*\n){2}", "")
    text = _sub(_sub(_sub(text, r"^out 2\n(.*\n){2}", ""), r"^aper .*$", "aper 5.0"),
                r"^samp .*$", "samp 8")
    p = tmp_path / "abs0.dat"
    p.write_text(text)
    where = rf"{re.escape(str(p))}:\d+ \[abs\]: the absorptive potential is unphysical"
    with pytest.warns(UserWarning, match=where):
        sim = Simulation.from_dat(p, executor="serial")
    assert sim.pool.n_out == len(sim.pool)  # every beam is an output: the sum is the flux
    total = np.nanmax(np.nansum(sim.pattern(sim.defaults.grid, [10000.0]), axis=1))
    p2 = tmp_path / "model.dat"
    p2.write_text(_sub(text, r"^abs .*\n", ""))
    with warnings_as_errors():
        sim2 = Simulation.from_dat(p2, executor="serial")
    total2 = np.nanmax(np.nansum(sim2.pattern(sim2.defaults.grid, [10000.0]), axis=1))
    assert total > 1.2 and total2 <= 1.0, (total, total2)


def warnings_as_errors():
    import warnings

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error", UserWarning)

    class _Exit:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            ctx.__exit__(*exc)
            return False

    return _Exit()


def test_engine_objects_refuse_non_finite_settings() -> None:
    from qcbed.bloch.beams import BeamSelection
    from qcbed.experiment import Region

    for kw in ({"sgmin": math.nan}, {"omega": -1.0}, {"sgmax": 0.0}, {"min_strong": 1.5},
               {"pad_multiple": 0}):
        with pytest.raises(InputError):
            BeamSelection(**kw)
    corners = [[0.0, 0.0], [0.0, 10.0], [10.0, 0.0]]
    for n12, n13, pad in ((math.inf, 5, 0), (5, 1, 0), (5, 5, -1), (5, 2.5, 0)):
        with pytest.raises(InputError):
            Region(corners, n12, n13, pad)
    assert Region(corners, 5.0, 6, 0).n12 == 5


def test_non_numeric_npy_is_named(tmp_path: Path) -> None:
    """Found by the long fuzz run: a .npy of byte strings crashed in check_pixels."""
    from qcbed.experiment.readers import read_image

    p = tmp_path / "strings.npy"
    np.save(p, np.array([[b"", b"a"], [b"b", b"c"]]))
    with pytest.raises(InputError, match="must be numbers") as info:
        read_image(p)
    assert "dtype |S1" in str(info.value)
    p2 = tmp_path / "complex.npy"
    np.save(p2, np.ones((2, 2), complex))
    with pytest.raises(InputError, match="must be numbers"):
        read_image(p2)


def test_damaged_hdf5_is_an_input_error(tmp_path: Path) -> None:
    """Found by the long fuzz run: a damaged HDF5 file raised RuntimeError in open_4d."""
    import h5py

    from qcbed.larbed.readers import open_4d

    p = tmp_path / "cube.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("data", data=np.zeros((2, 2, 3, 4), np.float32))
    raw = bytearray(p.read_bytes())
    i = raw.index(b"SNOD")  # break the symbol-table node of the root group
    raw[i:i + 4] = b"XXXX"
    p.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="cannot read the file") as info:
        open_4d(p)
    assert str(p) in str(info.value)


def test_damaged_hdf5_attributes_are_an_input_error(tmp_path: Path) -> None:
    """Found by the long fuzz run: 4 bytes inserted into the superblock made h5py raise
    KeyError while reading the root attributes."""
    import io

    import h5py

    from qcbed.larbed.readers import detect_format

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("data", data=np.arange(48, dtype=np.float32).reshape(2, 2, 3, 4))
    raw = buf.getvalue()
    p = tmp_path / "cube.h5"
    p.write_bytes(raw[:52] + bytes(4) + raw[52:])
    with pytest.raises(InputError, match="cannot read the file"):
        detect_format(p)


def test_forbidden_reflection_with_numerical_noise_is_accepted(si_sim) -> None:
    """The IAM leaves ~1e-18 Å⁻² at forbidden reflections: that is zero, not an error."""
    si_sim.set_structure_factors({(0, 0, 2): (1.6e-18, 1.1e-19)})
    with pytest.raises(InputError, match="forbidden"):
        si_sim.set_structure_factors({(0, 0, 2): (1e-6, 0.0)})
