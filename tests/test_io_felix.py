"""Felix input folder reader: felix.inp / felix.cif / felix.hkl / image names, and errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from qcbed.errors import InputError
from qcbed.io import FelixInput, felix_image_files, read_crystal, read_felix
from qcbed.io.felix import read_felix_hkl, read_felix_inp

INP = """# Input file for Felix
# ------------------------------------
Scatter factor method:
    Kirkland, 0
    Kappa (Coppens relativisitic RHF), 4   ***up to atomic number Z=54
# ------------------------------------

# Control flags
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
note                      = 'a#b'
atomic_sites              = [0, 1]
"""

CIF = """data_cu
_cell_length_a 3.615
_cell_length_b 3.615
_cell_length_c 3.615
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'F m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Cu1 Cu 0 0 0 0.55
"""

HKL = "[2, 0, 0]\n[0, 2, 0]\n\n[-2, 0, 0]\n"


def make_folder(tmp_path: Path, inp: str = INP, cif: str | None = CIF,
                hkl: str | None = HKL, images: tuple[str, ...] = ()) -> Path:
    d = tmp_path / "felix"
    d.mkdir(exist_ok=True)
    (d / "felix.inp").write_text(inp)
    if cif is not None:
        (d / "felix.cif").write_text(cif)
    if hkl is not None:
        (d / "felix.hkl").write_text(hkl)
    for name in images:
        (d / name).write_bytes(b"")
    return d


# ---------------------------------------------------------------------- real folder
def test_si_dlacbed_folder(si_dlacbed_dir: Path) -> None:
    with pytest.warns(UserWarning) as rec:
        f = read_felix(si_dlacbed_dir)
    msgs = [str(w.message) for w in rec]
    assert any("scatter_factor_method 4" in m and "'kappa'" in m for m in msgs)
    assert isinstance(f, FelixInput)
    c = f.crystal
    assert len(c.atoms) == 8 and c.space_group_number == 227
    assert c.lattice.a == 5.431 and c.sites[0].b_iso == 0.6
    assert f.hkl.shape == (38, 3) and np.array_equal(f.hkl[0], [0, 0, 2])
    assert np.array_equal(f.hkl[-1], [-3, -3, -5])
    assert np.array_equal(f.incident_beam_direction, [1, -1, 0])
    assert np.array_equal(f.x_direction, [0, 0, -1])
    assert np.array_equal(f.normal, [1, -1, 0])
    assert f.accelerating_voltage_kv == 200.0
    assert f.convergence_angle == 0.661 and f.image_radius == 76
    assert f.pixel_size == pytest.approx(0.661 / 76)
    assert (f.initial_thickness, f.final_thickness, f.delta_thickness) == (1480.0, 1481.0, 20.0)
    assert np.array_equal(f.thicknesses, [1480.0])
    assert f.scatter_factor_method == 4 and f.scattering_factors == "kappa"
    assert f.absorption_method == 2 and f.absorption == "bird_king"
    assert f.absorption_per == 10.0 and f.debye_waller_constant == 0.0
    assert (f.min_reflection_pool, f.min_strong_beams, f.min_weak_beams) == (100, 20, 0)
    assert f.g_limit == 0.0 and f.holz_flag == 0 and f.blur_radius == 1.0
    assert f.raw["refine_mode"] == "J" and f.raw["atomic_sites"] == [0]
    assert f.raw["Debye_model"] == 0 and f.lines["image_radius"] == 98
    # images
    assert len(f.image_files) == 45
    assert f.image_files[(-1, -1, 3)].name == "Si_-1-1+3.dm3"
    assert f.image_files[(0, 0, 0)].name == "Si_+0+0+0.dm3"
    assert set(map(tuple, f.hkl)) <= set(f.image_files)


def test_read_crystal_dispatch_felix(si_dlacbed_dir: Path) -> None:
    with pytest.warns(UserWarning):
        assert len(read_crystal(si_dlacbed_dir).atoms) == 8
    with pytest.warns(UserWarning):
        assert len(read_crystal(si_dlacbed_dir / "felix.inp").atoms) == 8


# ---------------------------------------------------------------------- synthetic folder
def test_synthetic_folder(tmp_path: Path) -> None:
    d = make_folder(tmp_path, images=("Cu_+2+0+0.dm3", "Cu_-2+0+0.dm3", "Cu_+10-12+0.dm3"))
    f = read_felix(d)
    assert len(f.crystal.atoms) == 4
    assert np.array_equal(f.hkl, [[2, 0, 0], [0, 2, 0], [-2, 0, 0]])
    assert f.scatter_factor_method == 1 and f.scattering_factors == "lobato"
    assert f.absorption == "proportional" and f.absorption_xi == pytest.approx(0.085)
    assert f.holz_flag == 1 and f.g_limit == 2.5 and f.blur_radius == 1.5
    assert f.accelerating_voltage_kv == 300.0 and f.image_radius == 32
    assert np.array_equal(f.thicknesses, [500.0, 700.0, 900.0])
    assert f.raw["note"] == "a#b" and f.raw["refine_mode"] == "S"
    assert f.raw["atomic_sites"] == [0, 1]
    assert "Kappa (Coppens relativisitic RHF), 4   ***up to atomic number Z" not in f.raw
    assert set(f.image_files) == {(2, 0, 0), (-2, 0, 0), (10, -12, 0)}


@pytest.mark.parametrize(("code", "name"), [(0, "kirkland"), (2, "peng"), (3, "doyle_turner")])
def test_scatter_factor_names(tmp_path: Path, code: int, name: str) -> None:
    d = make_folder(tmp_path, INP.replace("scatter_factor_method     = 1",
                                          f"scatter_factor_method = {code}"))
    assert read_felix(d).scattering_factors == name


SI_CIF = CIF.replace("Cu1 Cu 0 0 0 0.55", "Si1 Si 0 0 0 0.55")


def test_kappa_methods_are_honoured(tmp_path: Path) -> None:
    d = make_folder(tmp_path, INP.replace("scatter_factor_method     = 1",
                                          "scatter_factor_method = 5"), cif=SI_CIF)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = read_felix(d)
    assert f.scatter_factor_method == 5 and f.scattering_factors == "kappa"
    (tmp_path / "m4").mkdir()
    d4 = make_folder(tmp_path / "m4", INP.replace("scatter_factor_method     = 1",
                                                  "scatter_factor_method = 4"), cif=SI_CIF)
    with pytest.warns(UserWarning, match=r"felix\.inp:9: scatter_factor_method 4 .*relativistic"):
        f4 = read_felix(d4)
    assert f4.scattering_factors == "kappa"


def test_kappa_without_orbitals_falls_back_to_kirkland(tmp_path: Path) -> None:
    # Felix's kappa tables reach Z = 54 (LiNbO3's felix.inp asks for 4): qcbed's has no Cu
    # or Nb orbitals, so the set-up would fail deep in the engine; it uses Kirkland instead
    d = make_folder(tmp_path, INP.replace("scatter_factor_method     = 1",
                                          "scatter_factor_method = 4"))
    with pytest.warns(UserWarning, match=r"felix\.inp:9: .*no Hartree-Fock orbitals for Cu; "
                                         r"the Kirkland factors"):
        f = read_felix(d)
    assert f.scatter_factor_method == 4 and f.scattering_factors == "kirkland"


def test_read_felix_inp_and_hkl_directly(tmp_path: Path) -> None:
    d = make_folder(tmp_path)
    raw, lines = read_felix_inp(d / "felix.inp")
    assert raw["incident_beam_direction"] == [0, 0, 1] and lines["normal"] == 21
    (d / "plain.hkl").write_text("0 0 2\n# comment\n1 1 1  extra\n")
    assert np.array_equal(read_felix_hkl(d / "plain.hkl"), [[0, 0, 2], [1, 1, 1]])


# ---------------------------------------------------------------------- images
def test_image_names(tmp_path: Path) -> None:
    d = make_folder(tmp_path, images=("Si_-1-1+3.dm3", "Si_+0+0+0.DM3", "other.txt"))
    files = felix_image_files(d)
    assert set(files) == {(-1, -1, 3), (0, 0, 0)}
    assert files[(-1, -1, 3)] == d / "Si_-1-1+3.dm3"


def test_image_without_hkl_warns(tmp_path: Path) -> None:
    d = make_folder(tmp_path, images=("Si_+1+1+1.dm3", "overview.dm3", "Si_1_1_1.dm3"))
    with pytest.warns(UserWarning, match=r"skipped: Si_1_1_1\.dm3, overview\.dm3"):
        files = felix_image_files(d)
    assert list(files) == [(1, 1, 1)]


def test_two_images_for_one_reflection(tmp_path: Path) -> None:
    d = make_folder(tmp_path, images=("A_+1+1+1.dm3", "B_+1+1+1.dm3"))
    with pytest.raises(InputError) as info:
        felix_image_files(d)
    msg = str(info.value)
    assert str(d) in msg and "(1, 1, 1)" in msg and "A_+1+1+1.dm3" in msg


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("missing", ["felix.inp", "felix.cif", "felix.hkl"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    d = make_folder(tmp_path)
    (d / missing).unlink()
    with pytest.raises(InputError) as info:
        read_felix(d)
    msg = str(info.value)
    assert str(d) in msg and f"missing {missing}" in msg and info.value.tag == missing


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        read_felix(tmp_path / "nowhere")
    with pytest.raises(InputError, match="not a folder"):
        felix_image_files(tmp_path / "nowhere")


@pytest.mark.parametrize("key", ["incident_beam_direction", "accelerating_voltage_kv",
                                 "image_radius", "delta_thickness"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    inp = "\n".join(x for x in INP.splitlines() if not x.startswith(key))
    d = make_folder(tmp_path, inp)
    with pytest.raises(InputError) as info:
        read_felix(d)
    msg = str(info.value)
    assert str(d / "felix.inp") in msg and f"[{key}]" in msg and "missing required key" in msg


@pytest.mark.parametrize(("old", "new", "line", "fragments"), [
    ("incident_beam_direction   = [0, 0, 1]", "incident_beam_direction = [0, 1]", 19,
     ("[incident_beam_direction]", "three numbers", "[0, 1]")),
    ("x_direction               = [1, 0, 0]", "x_direction = [0, 0, 0]", 20,
     ("not all zero",)),
    ("accelerating_voltage_kv   = 300", "accelerating_voltage_kv = 'high'", 29,
     ("must be a number", "'high'")),
    ("accelerating_voltage_kv   = 300", "accelerating_voltage_kv = -3", 29, ("> 0",)),
    ("image_radius              = 32", "image_radius = 3.5", 30, ("expected an integer",)),
    ("scatter_factor_method     = 1", "scatter_factor_method = 7", 9,
     ("unknown option", "one of [0, 1, 2, 3, 4, 5]", "7")),
    ("absorption_method         = 1", "absorption_method = 3", 11, ("one of [0, 1, 2]",)),
    ("final_thickness           = 900.0", "final_thickness = 100.0", 23,
     ("below initial_thickness",)),
    ("normal                    = [0, 0, 1]", "normal = [0, 0, 1", 21, ("unterminated list",)),
    ("note                      = 'a#b'", "note = 'a#b", 33, ("unterminated string",)),
    ("g_limit                   = 2.5", "g_limit =", 17, ("key without a value",)),
])
def test_bad_values(tmp_path: Path, old: str, new: str, line: int,
                    fragments: tuple[str, ...]) -> None:
    assert old in INP
    d = make_folder(tmp_path, INP.replace(old, new))
    with pytest.raises(InputError) as info:
        read_felix(d)
    msg = str(info.value)
    assert f"{d / 'felix.inp'}:{line}" in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_bad_hkl_line(tmp_path: Path) -> None:
    d = make_folder(tmp_path, hkl="[0, 0, 2]\n[1, 1]\n")
    with pytest.raises(InputError) as info:
        read_felix(d)
    assert f"{d / 'felix.hkl'}:2" in str(info.value) and "[1, 1]" in str(info.value)
    d = make_folder(tmp_path, hkl="\n# nothing\n")
    with pytest.raises(InputError, match="no reflections"):
        read_felix(d)


def test_bad_cif_in_folder(tmp_path: Path) -> None:
    d = make_folder(tmp_path, cif=CIF.replace("_cell_length_a 3.615\n", ""))
    with pytest.raises(InputError) as info:
        read_felix(d)
    assert str(d / "felix.cif") in str(info.value) and "_cell_length_a" in str(info.value)


def test_read_crystal_unknown_kind(tmp_path: Path) -> None:
    p = tmp_path / "x.xyz"
    p.write_text("1")
    with pytest.raises(InputError, match="cannot tell the input format"):
        read_crystal(p)
    with pytest.raises(InputError, match="no such file or folder"):
        read_crystal(tmp_path / "missing.xyz")


def test_normal_direction_alias(tmp_path: Path) -> None:
    """Older Felix input files name the surface normal 'normal_direction'."""
    d = make_folder(tmp_path, inp=INP.replace("normal                    = [0, 0, 1]",
                                              "normal_direction          = [1, 1, 2]"))
    fx = read_felix(d)
    np.testing.assert_array_equal(fx.normal, [1, 1, 2])
    # without either key the error names the key that is missing
    (tmp_path / "b").mkdir()
    d2 = make_folder(tmp_path / "b", inp=INP.replace("normal                    = [0, 0, 1]",
                                                     ""))
    with pytest.raises(InputError, match="normal"):
        read_felix(d2)


def test_image_radius_differing_from_images_follows_images(tmp_path: Path,
                                                           si_dlacbed_dir: Path) -> None:
    import shutil

    from qcbed.experiment.readers import read_felix_images

    d = tmp_path / "si"
    shutil.copytree(si_dlacbed_dir, d)
    inp = (d / "felix.inp").read_text()
    (d / "felix.inp").write_text(inp.replace("image_radius              = 76",
                                             "image_radius              = 70"))
    with pytest.warns(UserWarning, match="following the images"):
        stack = read_felix_images(d, clip_negative=True)
    ref = read_felix_images(si_dlacbed_dir, clip_negative=True)
    assert stack.images.shape == ref.images.shape == (stack.images.shape[0], 152, 152)
    rc = np.array([[10.0, 20.0], [140.0, 3.0]])
    np.testing.assert_allclose(stack.geometry.pixel_to_kt(rc), ref.geometry.pixel_to_kt(rc))
