"""CIF reader (gemmi): symmetry sources, displacement parameters, charges, blocks, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from qcbed.errors import InputError
from qcbed.io import read_cif, read_cif_string, read_crystal

CELL_CUBIC = """_cell_length_a 5.6533(2)
_cell_length_b 5.6533(2)
_cell_length_c 5.6533(2)
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
"""

GAAS = f"""data_GaAs
_chemical_formula_sum 'Ga As'
{CELL_CUBIC}_symmetry_space_group_name_H-M 'F -4 3 m'
_symmetry_Int_Tables_number 216
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_B_iso_or_equiv
Ga1 Ga3+ 0 0 0 1.0 0.62(3)
As1 As3- 0.25 0.25 0.25 ? 0.55
"""

# monoclinic P 1 21/c 1 (No. 14) with anisotropic U for one site, isotropic U for the other
MONO = """data_mono
_cell_length_a 5.10
_cell_length_b 6.20
_cell_length_c 7.30
_cell_angle_alpha 90
_cell_angle_beta 101.5(1)
_cell_angle_gamma 90
_space_group_name_H-M_alt 'P 1 21/c 1'
_space_group_IT_number 14
loop_
_space_group_symop_id
_space_group_symop_operation_xyz
1 x,y,z
2 -x,y+1/2,-z+1/2
3 -x,-y,-z
4 x,-y+1/2,z+1/2
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_U_iso_or_equiv
_atom_site_adp_type
Fe1 Fe2+ 0.1234(5) 0.2345 0.3456 0.0100 Uani
O1 O2- 0.4 0.1 0.2 0.0150(8) Uiso
loop_
_atom_site_aniso_label
_atom_site_aniso_U_11
_atom_site_aniso_U_22
_atom_site_aniso_U_33
_atom_site_aniso_U_12
_atom_site_aniso_U_13
_atom_site_aniso_U_23
Fe1 0.0110(2) 0.0090 0.0100 0.0000 0.0020 0.0000
"""

SI_ORIGIN2_OPS = """data_si2
_cell_length_a 5.4307
_cell_length_b 5.4307
_cell_length_c 5.4307
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'F d -3 m'
loop_
_space_group_symop_operation_xyz
{ops}
loop_
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Si 0.125 0.125 0.125 0.4668
"""


def _si_origin2_cif() -> str:
    import gemmi

    ops = gemmi.find_spacegroup_by_name("F d -3 m:2").operations()
    return SI_ORIGIN2_OPS.format(ops="\n".join(f"'{op.triplet()}'" for op in ops))


def with_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# ---------------------------------------------------------------------- real file
def test_felix_cif(si_dlacbed_dir: Path) -> None:
    with pytest.warns(UserWarning, match=r"felix\.cif:11: _citation_title has no value"):
        c, meta = read_cif(si_dlacbed_dir / "felix.cif", return_metadata=True)
    assert len(c.atoms) == 8
    assert c.space_group_symbol == "F d -3 m:1"
    assert c.lattice.a == 5.431
    s = c.sites[0]
    assert (s.label, s.element, s.charge, s.b_iso, s.occupancy) == ("Si1", "Si", 0, 0.6, 1.0)
    assert meta["symmetry_from"] == "_space_group_symop_operation_xyz"
    assert meta["block"] == "121532-ICSD"
    assert meta["repairs"] and meta["space_group"]["number"] == "227"
    assert c.name == "Silicon"


def test_read_crystal_dispatch_cif(tmp_path: Path) -> None:
    p = tmp_path / "gaas.cif"
    p.write_text(GAAS)
    assert len(read_crystal(p).atoms) == 8


# ---------------------------------------------------------------------- content
def test_gaas_charges_esd_and_defaults() -> None:
    c, meta = read_cif_string(GAAS, return_metadata=True)
    assert c.space_group_number == 216
    assert len(c.atoms) == 8
    ga, as_ = c.sites
    assert (ga.element, ga.charge, ga.b_iso) == ("Ga", 3, 0.62)
    assert (as_.element, as_.charge, as_.occupancy) == ("As", -3, 1.0)  # '?' occupancy → 1
    assert c.lattice.a == 5.6533
    assert meta["esd"]["_cell_length_a"] == pytest.approx(0.0002)
    assert meta["esd"]["Ga1:_atom_site_B_iso_or_equiv"] == pytest.approx(0.03)
    assert meta["symmetry_from"] == "_symmetry_space_group_name_H-M"
    assert c.name == "Ga As"


@pytest.mark.parametrize("symbol", ["Si0+", "O2-", "Fe3+", "Ga+", "Cl1-"])
def test_type_symbols_with_charges(symbol: str) -> None:
    text = GAAS.replace("Ga1 Ga3+", f"Ga1 {symbol}")
    site = read_cif_string(text).sites[0]
    el = symbol.rstrip("+-0123456789")
    charge = {"Si0+": 0, "O2-": -2, "Fe3+": 3, "Ga+": 1, "Cl1-": -1}[symbol]
    assert (site.element, site.charge) == (el, charge)


def test_monoclinic_anisotropic_u() -> None:
    c, meta = read_cif_string(MONO, return_metadata=True)
    assert c.space_group_number == 14
    assert len(c.atoms) == 8  # two general positions × 4
    fe, o = c.sites
    u = np.array([[0.011, 0.0, 0.002], [0.0, 0.009, 0.0], [0.002, 0.0, 0.010]])
    assert np.allclose(fe.u_aniso, u)
    assert fe.charge == 2 and o.charge == -2
    assert o.u_aniso is None and o.b_iso == pytest.approx(8 * np.pi**2 * 0.015)
    assert fe.b_iso == pytest.approx(8 * np.pi**2 * 0.010)
    # the crystal model's β of the Fe atom at the site position is 2π² N U N
    nrec = np.diag(c.lattice.reciprocal_parameters)
    i = next(i for i, f in enumerate(c.atoms.frac) if np.allclose(f, fe.xyz))
    assert np.allclose(c.atoms.beta[i], 2 * np.pi**2 * nrec @ u @ nrec)
    assert meta["esd"]["Fe1:_atom_site_aniso_U_11"] == pytest.approx(0.0002)
    assert meta["esd"]["Fe1:_atom_site_fract_x"] == pytest.approx(0.0005)
    assert meta["esd"]["_cell_angle_beta"] == pytest.approx(0.1)


def test_anisotropic_b_converted() -> None:
    text = MONO.replace("_atom_site_aniso_U_", "_atom_site_aniso_B_")
    fe = read_cif_string(text).sites[0]
    assert np.allclose(fe.u_aniso[0, 0], 0.011 / (8 * np.pi**2))
    assert np.allclose(fe.u_aniso[0, 2], 0.002 / (8 * np.pi**2))


def test_aniso_only_site_gets_equivalent_b() -> None:
    text = MONO.replace("Fe1 Fe2+ 0.1234(5) 0.2345 0.3456 0.0100 Uani",
                        "Fe1 Fe2+ 0.1234(5) 0.2345 0.3456 ? Uani")
    fe = read_cif_string(text).sites[0]
    assert fe.u_aniso is not None and fe.b_iso > 0


def test_operations_preferred_over_symbol() -> None:
    c, meta = read_cif_string(_si_origin2_cif(), return_metadata=True)
    assert meta["symmetry_from"] == "_space_group_symop_operation_xyz"
    assert c.space_group_symbol == "F d -3 m:2"
    assert len(c.atoms) == 8
    assert np.allclose(c.inversion_centre(), 0)


def test_hm_symbol_only_warns_about_origin_choice() -> None:
    text = SI_ORIGIN2_OPS.replace("loop_\n_space_group_symop_operation_xyz\n{ops}\n", "")
    with pytest.warns(UserWarning, match="two origin choices"):
        c, meta = read_cif_string(text, return_metadata=True)
    assert c.space_group_symbol == "F d -3 m:1"
    assert meta["symmetry_from"] == "_space_group_name_H-M_alt"


def test_hm_symbol_with_coordinate_system_code() -> None:
    text = GAAS.replace("'F -4 3 m'", "'F d -3 m'").replace(
        "_symmetry_Int_Tables_number 216", "_space_group_IT_coordinate_system_code 2")
    text = text.replace("Ga1 Ga3+ 0 0 0", "Ga1 Ga3+ 0.125 0.125 0.125")
    text = text.replace("As1 As3- 0.25 0.25 0.25 ? 0.55\n", "").replace("'Ga As'", "'Ga'")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = read_cif_string(text)
    assert c.space_group_symbol == "F d -3 m:2" and len(c.atoms) == 8


def test_it_number_only() -> None:
    text = GAAS.replace("_symmetry_space_group_name_H-M 'F -4 3 m'\n", "")
    c, meta = read_cif_string(text, return_metadata=True)
    assert c.space_group_number == 216
    assert meta["symmetry_from"] == "_symmetry_Int_Tables_number"


def test_rhombohedral_number_with_rhombohedral_cell() -> None:
    text = """data_r
_cell_length_a 5
_cell_length_b 5
_cell_length_c 5
_cell_angle_alpha 60
_cell_angle_beta 60
_cell_angle_gamma 60
_space_group_IT_number 166
loop_
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Bi1 0.2 0.2 0.2 0.5
"""
    assert read_cif_string(text).space_group_symbol == "R -3 m:R"


def test_hall_symbol() -> None:
    text = GAAS.replace("_symmetry_space_group_name_H-M 'F -4 3 m'",
                        "_space_group_name_Hall 'F -4 2 3'")
    c, meta = read_cif_string(text, return_metadata=True)
    assert c.space_group_number == 216 and meta["symmetry_from"] == "_space_group_name_Hall"


def test_ops_that_disagree_with_declared_number_warn() -> None:
    text = MONO.replace("_space_group_IT_number 14", "_space_group_IT_number 15")
    with pytest.warns(UserWarning, match="declares 15"):
        c = read_cif_string(text)
    assert c.space_group_number == 14


def test_missing_displacement_parameters_warn() -> None:
    text = GAAS.replace("0.62(3)", ".").replace("? 0.55", "1 ?")
    with pytest.warns(UserWarning, match=r"no displacement parameter for site\(s\) Ga1, As1"):
        c = read_cif_string(text)
    assert all(s.b_iso == 0 for s in c.sites)


def test_label_only_and_type_symbol_only() -> None:
    text = GAAS.replace("_atom_site_type_symbol\n", "").replace(" Ga3+ ", " ").replace(
        " As3- ", " ")
    c = read_cif_string(text)
    assert [s.element for s in c.sites] == ["Ga", "As"]
    text = GAAS.replace("_atom_site_label\n", "").replace("Ga1 ", "").replace("As1 ", "")
    c = read_cif_string(text)
    assert [s.label for s in c.sites] == ["Ga3+1", "As3-2"]
    assert [s.charge for s in c.sites] == [3, -3]


def test_single_site_as_pairs() -> None:
    text = f"""data_cu
{CELL_CUBIC}_space_group_IT_number 225
_atom_site_label Cu1
_atom_site_fract_x 0
_atom_site_fract_y 0
_atom_site_fract_z 0
_atom_site_U_iso_or_equiv 0.007
"""
    c = read_cif_string(text)
    assert len(c.atoms) == 4 and c.sites[0].b_iso == pytest.approx(8 * np.pi**2 * 0.007)


# ---------------------------------------------------------------------- blocks
MULTI = GAAS + "\n" + MONO


def test_multiple_blocks_need_block() -> None:
    with pytest.raises(InputError) as info:
        read_cif_string(MULTI, source="multi.cif")
    msg = str(info.value)
    assert "multi.cif" in msg and "2 data blocks" in msg
    assert "'GaAs'" in msg and "'mono'" in msg


def test_choose_block() -> None:
    assert read_cif_string(MULTI, block="mono").space_group_number == 14
    assert read_cif_string(MULTI, block="data_GaAs").space_group_number == 216
    assert read_cif_string(MULTI, block=1).space_group_number == 14
    with pytest.raises(InputError, match=r"no data block of that name.*'GaAs', 'mono'"):
        read_cif_string(MULTI, block="nope")
    with pytest.raises(InputError, match="block index out of range"):
        read_cif_string(MULTI, block=5)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("tag", ["_cell_length_b", "_cell_angle_gamma"])
def test_missing_cell_tag(tmp_path: Path, tag: str) -> None:
    lines = [x for x in GAAS.splitlines() if not x.startswith(tag)]
    p = tmp_path / "broken.cif"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        read_cif(p)
    err = info.value
    assert str(p) in str(err) and f"[{tag}]" in str(err) and err.tag == tag
    assert "missing mandatory cell parameter" in str(err)


def test_missing_coordinate_tag(tmp_path: Path) -> None:
    text = GAAS.replace("_atom_site_fract_z\n", "").replace(" 0 0 0 1.0", " 0 0 1.0").replace(
        " 0.25 0.25 0.25 ?", " 0.25 0.25 ?")
    p = tmp_path / "nofz.cif"
    p.write_text(text)
    with pytest.raises(InputError) as info:
        read_cif(p)
    assert str(p) in str(info.value) and "[_atom_site_fract_z]" in str(info.value)


def test_unknown_coordinate_value() -> None:
    text = GAAS.replace("As1 As3- 0.25 0.25 0.25", "As1 As3- 0.25 ? 0.25")
    with pytest.raises(InputError, match=r"\[_atom_site_fract_y\].*site As1"):
        read_cif_string(text, source="x.cif")


def test_non_numeric_value_names_tag_and_line() -> None:
    text = GAAS.replace("_cell_length_c 5.6533(2)", "_cell_length_c five")
    with pytest.raises(InputError) as info:
        read_cif_string(text, source="bad.cif")
    err = info.value
    assert err.tag == "_cell_length_c" and err.line == 5 and err.found == "five"
    assert "bad.cif:5 [_cell_length_c]" in str(err) and "expected a number" in str(err)


def test_no_symmetry() -> None:
    text = GAAS.replace("_symmetry_space_group_name_H-M 'F -4 3 m'\n", "").replace(
        "_symmetry_Int_Tables_number 216\n", "")
    with pytest.raises(InputError, match=r"no symmetry information.*_space_group_IT_number"):
        read_cif_string(text, source="nosym.cif")


def test_bad_symbol_and_bad_operation() -> None:
    text = GAAS.replace("'F -4 3 m'", "'Q 9 9'")
    with pytest.raises(InputError, match=r"\[_symmetry_space_group_name_H-M\].*'Q 9 9'"):
        read_cif_string(text)
    text = MONO.replace("2 -x,y+1/2,-z+1/2", "2 -x,y+1/2,-q")
    with pytest.raises(InputError, match=r"\[_space_group_symop_operation_xyz\]"):
        read_cif_string(text)


def test_metric_incompatible_with_symmetry() -> None:
    text = GAAS.replace("_cell_length_b 5.6533(2)", "_cell_length_b 5.8")
    with pytest.raises(InputError, match="not compatible with the cell"):
        read_cif_string(text, source="tetragonal.cif")


def test_aniso_label_without_site() -> None:
    text = MONO.replace("Fe1 0.0110(2)", "Fe9 0.0110(2)")
    with pytest.raises(InputError, match=r"\[_atom_site_aniso_label\].*unknown site.*Fe9"):
        read_cif_string(text)


def test_incomplete_aniso_loop() -> None:
    text = MONO.replace("_atom_site_aniso_U_23\n", "").replace(
        "0.0100 0.0000 0.0020 0.0000\n", "0.0100 0.0000 0.0020\n")
    with pytest.raises(InputError, match=r"\[_atom_site_aniso_U_23\].*incomplete"):
        read_cif_string(text)


def test_occupancy_out_of_range_names_source() -> None:
    text = GAAS.replace("0 0 0 1.0 0.62(3)", "0 0 0 1.7 0.62(3)")
    with pytest.raises(InputError, match=r"occ\.cif.*occupancy out of range.*1\.7"):
        read_cif_string(text, source="occ.cif")


def test_invalid_cif_syntax_names_line() -> None:
    text = GAAS + "loop_\n_a\n_b\n1 2 3\n"
    with pytest.raises(InputError) as info:
        read_cif_string(text, source="syntax.cif")
    assert "syntax.cif" in str(info.value) and "not a valid CIF" in str(info.value)
    assert info.value.line is not None


def test_tag_without_value_is_repaired_with_warning() -> None:
    text = GAAS.replace("_chemical_formula_sum 'Ga As'", "_journal_name\n\n"
                        "_chemical_formula_sum 'Ga As'")
    with pytest.warns(UserWarning, match=r"t\.cif:2: _journal_name has no value"):
        c, meta = read_cif_string(text, source="t.cif", return_metadata=True)
    assert len(c.atoms) == 8 and meta["repairs"]


def test_missing_file_and_empty_text(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the file"):
        read_cif(tmp_path / "nope.cif")
    with pytest.raises(InputError, match=r"not a valid CIF|no data block"):
        read_cif_string("# only a comment\n", source="empty.cif")
