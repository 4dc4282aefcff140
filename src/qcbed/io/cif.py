"""Crystal structures from CIF files, parsed with gemmi.

Symmetry is taken, in this order of preference, from

1. the explicit operations ``_space_group_symop_operation_xyz`` /
   ``_symmetry_equiv_pos_as_xyz`` (exact, any setting and origin);
2. a Hall symbol (``_space_group_name_Hall``, ``_symmetry_space_group_name_Hall``);
3. a Hermann–Mauguin symbol (``_space_group_name_H-M_alt``,
   ``_symmetry_space_group_name_H-M``), with ``_space_group_IT_coordinate_system_code``
   when given;
4. the International Tables number (``_space_group_IT_number``,
   ``_symmetry_Int_Tables_number``).

With 3 or 4 and a group that has two origin choices and none is stated, gemmi's
first setting (origin choice 1) is used and a ``UserWarning`` says so.

Displacement parameters: ``_atom_site_aniso_U_ij`` (Å²) or
``_atom_site_aniso_B_ij`` (Å², converted as U_ij = B_ij / 8π²) matched to the
sites by ``_atom_site_aniso_label``; otherwise ``_atom_site_B_iso_or_equiv``
(Å²) or ``_atom_site_U_iso_or_equiv`` (Å², B = 8π² U). Sites without any get
B = 0 with a ``UserWarning``. Numbers may carry a standard uncertainty in
parentheses (``5.431(2)``); the uncertainties are returned in the metadata.
"""

from __future__ import annotations

import re
import warnings
from os import PathLike
from pathlib import Path
from typing import Any, Literal, overload

import gemmi
import numpy as np
from gemmi import cif as gcif

from ..crystal import Crystal, Lattice, Site, parse_type_symbol, space_group_from_number
from ..errors import InputError
from ._common import parse_number, u_equivalent_b, with_location

__all__ = ["read_cif", "read_cif_string"]

_CELL_TAGS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
              "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
_OPS_TAGS = ("_space_group_symop_operation_xyz", "_symmetry_equiv_pos_as_xyz",
             "_space_group_symop.operation_xyz")
_HALL_TAGS = ("_space_group_name_Hall", "_symmetry_space_group_name_Hall")
_HM_TAGS = ("_space_group_name_H-M_alt", "_symmetry_space_group_name_H-M")
_NUMBER_TAGS = ("_space_group_IT_number", "_symmetry_Int_Tables_number")
_SETTING_TAG = "_space_group_IT_coordinate_system_code"
_NAME_TAGS = ("_chemical_name_common", "_chemical_name_mineral", "_chemical_name_systematic",
              "_chemical_formula_sum")
_ANISO_SUFFIX = ("11", "22", "33", "12", "13", "23")
_FORMULA_TAGS = ("_chemical_formula_sum", "_chemical_formula_structural")
_FORMULA_RE = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")
#: Largest difference of an element's share of the atoms between the sites and the
#: formula before :func:`_check_composition` warns.
_COMPOSITION_TOLERANCE = 0.005
_MAX_REPAIRS = 100
_GEMMI_MSG_RE = re.compile(
    r"^string:(?P<line>\d+)?(?::\d+\(\d+\))?(?: in data_\S*)?:\s*(?P<msg>.*)$", re.DOTALL)


# ====================================================================== public API
@overload
def read_cif(path: str | PathLike[str], block: str | int | None = None, *,
             return_metadata: Literal[False] = False) -> Crystal: ...
@overload
def read_cif(path: str | PathLike[str], block: str | int | None = None, *,
             return_metadata: Literal[True]) -> tuple[Crystal, dict[str, Any]]: ...
def read_cif(path: str | PathLike[str], block: str | int | None = None, *,
             return_metadata: bool = False) -> Crystal | tuple[Crystal, dict[str, Any]]:
    """Read a crystal structure from a CIF file.

    Parameters
    ----------
    path : str or path
        The CIF file.
    block : str or int, optional
        Data-block name (with or without ``data_``) or index. Required when
        the file holds several blocks.
    return_metadata : bool
        Also return a dict with the block name, where the symmetry came from
        and the standard uncertainties (see Returns).

    Returns
    -------
    Crystal
        Lattice (Å, degrees), sites (fractional coordinates, occupancy, B in Å²
        or U^{ij} in Å²) and the symmetry operations.
    metadata : dict, only with ``return_metadata=True``
        ``source``, ``block``, ``blocks`` (all block names), ``symmetry_from``
        (the tag used), ``space_group`` (declared H-M symbol / number, when
        present), ``esd`` ({tag or ``'label:tag'``: standard uncertainty, in the
        tag's unit}) and ``repairs`` (syntax repairs that were applied).

    Raises
    ------
    InputError
        Unreadable or invalid CIF, several blocks without ``block``, unknown
        block, a missing mandatory tag (cell, fractional coordinates, a label or
        type symbol, symmetry), non-numeric values, or a structure the crystal
        model rejects. The message names the file, the tag and (where gemmi
        knows it) the line.

    Warns
    -----
    UserWarning
        Missing displacement parameters (B = 0 used), an unstated origin
        choice, symmetry operations that disagree with the declared group, or
        a repaired syntax error (a tag without value, as in some ICSD exports,
        read as ``?``).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", source=p) from None
    crystal, meta = _read(text, str(p), block)
    return (crystal, meta) if return_metadata else crystal


@overload
def read_cif_string(text: str, block: str | int | None = None, *, source: str = "<string>",
                    return_metadata: Literal[False] = False) -> Crystal: ...
@overload
def read_cif_string(text: str, block: str | int | None = None, *, source: str = "<string>",
                    return_metadata: Literal[True]) -> tuple[Crystal, dict[str, Any]]: ...
def read_cif_string(text: str, block: str | int | None = None, *, source: str = "<string>",
                    return_metadata: bool = False) -> Crystal | tuple[Crystal, dict[str, Any]]:
    """Read a crystal structure from CIF text; see :func:`read_cif`.

    Parameters
    ----------
    text : str
        The CIF content.
    block : str or int, optional
        Data-block name or index (required with several blocks).
    source : str
        Name used for the text in error messages.
    return_metadata : bool
        Also return the metadata dict of :func:`read_cif`.
    """
    crystal, meta = _read(text, source, block)
    return (crystal, meta) if return_metadata else crystal


# ====================================================================== internals
def _read(text: str, source: str, block: str | int | None) -> tuple[Crystal, dict[str, Any]]:
    doc, repairs = _parse_document(text, source)
    blk = _select_block(doc, block, source)
    crystal, meta = _crystal_from_block(blk, source)
    meta.update(source=source, block=blk.name, blocks=[b.name for b in doc], repairs=repairs)
    return crystal, meta


def _parse_document(text: str, source: str) -> tuple[gcif.Document, list[str]]:
    """gemmi Document of ``text``; repairs tags without a value (read as '?') with a warning."""
    lines = text.splitlines()
    repairs: list[str] = []
    for _ in range(_MAX_REPAIRS + 1):
        try:
            doc = gcif.read_string("\n".join(lines) + "\n")
            break
        except (RuntimeError, ValueError) as exc:
            msg = str(exc)
            m = _GEMMI_MSG_RE.match(msg)
            line = int(m.group("line")) if m and m.group("line") else None
            reason = m.group("msg") if m else msg
            nv = re.match(r"^(_\S+) has no value$", reason)
            if nv and line is not None and 1 <= line <= len(lines) and \
                    nv.group(1) in lines[line - 1] and len(repairs) < _MAX_REPAIRS:
                tag = nv.group(1)
                lines[line - 1] = lines[line - 1].replace(tag, f"{tag} ?", 1)
                repairs.append(f"line {line}: {tag} had no value; read as '?'")
                warnings.warn(f"{source}:{line}: {tag} has no value (not valid CIF); read as "
                              "'?' (unknown)", UserWarning, stacklevel=4)
                continue
            raise InputError(f"not a valid CIF: {reason}", source=source, line=line) from None
    if len(doc) == 0:
        raise InputError("no data block in the CIF", source=source,
                         expected="a 'data_NAME' block", found="none")
    return doc, repairs


def _select_block(doc: gcif.Document, block: str | int | None, source: str) -> gcif.Block:
    names = [b.name for b in doc]
    if block is None:
        if len(doc) > 1:
            raise InputError(f"the CIF holds {len(doc)} data blocks; choose one with block=",
                             source=source, tag="block", expected=f"one of {names}",
                             found=None)
        return doc[0]
    if isinstance(block, (int, np.integer)):
        if not -len(doc) <= int(block) < len(doc):
            raise InputError("block index out of range", source=source, tag="block",
                             expected=f"0..{len(doc) - 1} (blocks {names})", found=block)
        return doc[int(block)]
    want = str(block)
    want = want[5:] if want.lower().startswith("data_") else want
    for b in doc:
        if b.name.lower() == want.lower():
            return b
    raise InputError("no data block of that name", source=source, tag="block",
                     expected=f"one of {names}", found=block)


def _line_of(block: gcif.Block, tag: str) -> int | None:
    item = block.find_pair_item(tag) or block.find_loop_item(tag)
    if item is None:
        return None
    n = item.line_number
    return int(n) if n and n > 0 else None


def _first_value(block: gcif.Block, tags: tuple[str, ...]) -> tuple[str, str] | None:
    """(tag, raw value) of the first tag present with a non-null value."""
    for tag in tags:
        v = block.find_value(tag)
        if v is not None and not gcif.is_null(v):
            return tag, v
    return None


def _number(raw: str, tag: str, block: gcif.Block, source: str, *, label: str | None = None
            ) -> tuple[float, float | None]:
    text = gcif.as_string(raw)
    try:
        return parse_number(text)
    except ValueError:
        where = f" of site {label}" if label else ""
        raise InputError(f"value{where} is not a number", source=source,
                         line=_line_of(block, tag), tag=tag, expected="a number",
                         found=text) from None


def _crystal_from_block(block: gcif.Block, source: str) -> tuple[Crystal, dict[str, Any]]:
    esd: dict[str, float] = {}
    meta: dict[str, Any] = {"esd": esd}

    # ------------------------------------------------------------------ cell
    cell = []
    for tag in _CELL_TAGS:
        raw = block.find_value(tag)
        if raw is None or gcif.is_null(raw):
            raise InputError("missing mandatory cell parameter", source=source, tag=tag,
                             line=_line_of(block, tag), expected=f"a value for {tag}",
                             found="no tag" if raw is None else raw)
        value, e = _number(raw, tag, block, source)
        cell.append(value)
        if e is not None:
            esd[tag] = e
    try:
        lattice = Lattice(*cell)
    except InputError as exc:
        raise with_location(exc, source, None, "_cell_*") from None

    # ------------------------------------------------------------------ sites
    sites, missing_dw = _sites(block, source, lattice, esd)
    if missing_dw:
        warnings.warn(f"{source}: no displacement parameter for site(s) "
                      f"{', '.join(missing_dw)} (_atom_site_B_iso_or_equiv, "
                      "_atom_site_U_iso_or_equiv or _atom_site_aniso_*); B = 0 Å² used",
                      UserWarning, stacklevel=4)

    # ------------------------------------------------------------------ name
    name_item = _first_value(block, _NAME_TAGS)
    name = gcif.as_string(name_item[1]).strip() if name_item else block.name

    # ------------------------------------------------------------------ symmetry
    crystal = _crystal_with_symmetry(block, source, lattice, sites, name, meta)
    _check_overlaps(crystal, source)
    _check_composition(crystal, block, source)
    return crystal, meta


def _sites(block: gcif.Block, source: str, lattice: Lattice, esd: dict[str, float]
           ) -> tuple[list[Site], list[str]]:
    for axis in "xyz":
        tag = f"_atom_site_fract_{axis}"
        if len(block.find_values(tag)) == 0:
            raise InputError("missing mandatory tag", source=source, tag=tag,
                             line=_line_of(block, "_atom_site_label")
                             or _line_of(block, "_atom_site_type_symbol"),
                             expected=f"fractional coordinates {tag}", found="no such tag")
    # column indices: 0-2 fract_x/y/z, 3 label, 4 type_symbol, 5 occupancy, 6 B, 7 U
    table = block.find("_atom_site_", ["fract_x", "fract_y", "fract_z", "?label",
                                       "?type_symbol", "?occupancy", "?B_iso_or_equiv",
                                       "?U_iso_or_equiv"])
    if len(table) == 0:
        raise InputError("the fractional coordinates are not in one _atom_site_ loop",
                         source=source, tag="_atom_site_fract_x",
                         line=_line_of(block, "_atom_site_fract_x"),
                         expected="one loop with _atom_site_fract_x, _y, _z", found="none")
    if not (table.has_column(3) or table.has_column(4)):
        raise InputError("atom sites need a label or a type symbol", source=source,
                         tag="_atom_site_label", line=_line_of(block, "_atom_site_fract_x"),
                         expected="_atom_site_label or _atom_site_type_symbol",
                         found="neither")

    aniso = _aniso(block, source)
    labels: list[str] = []
    sites: list[Site] = []
    missing_dw: list[str] = []
    negative_b: list[str] = []
    for i, row in enumerate(table):
        def cell(col: int, row: gcif.Table.Row = row) -> str | None:
            if not table.has_column(col):
                return None
            v = row[col]
            return None if gcif.is_null(v) else v

        type_symbol = cell(4)
        label = gcif.as_string(cell(3)) if cell(3) is not None else \
            f"{gcif.as_string(type_symbol or 'X')}{i + 1}"
        labels.append(label)
        try:
            element, charge = parse_type_symbol(gcif.as_string(type_symbol or label))
        except InputError as exc:
            tag = "_atom_site_type_symbol" if type_symbol else "_atom_site_label"
            raise with_location(exc, source, _line_of(block, tag), tag) from None
        xyz = []
        for col, axis in zip((0, 1, 2), "xyz"):
            tag = f"_atom_site_fract_{axis}"
            raw = cell(col)
            if raw is None:
                raise InputError(f"site {label}: coordinate is missing ('?' or '.')",
                                 source=source, tag=tag, line=_line_of(block, tag),
                                 expected="a number", found=row[col])
            value, e = _number(raw, tag, block, source, label=label)
            xyz.append(value)
            if e is not None:
                esd[f"{label}:{tag}"] = e
        occupancy = 1.0
        if cell(5) is not None:
            occupancy, e = _number(cell(5), "_atom_site_occupancy", block, source, label=label)
            if e is not None:
                esd[f"{label}:_atom_site_occupancy"] = e
        b_iso: float | None = None
        if cell(6) is not None:
            b_iso, e = _number(cell(6), "_atom_site_B_iso_or_equiv", block, source, label=label)
            if e is not None:
                esd[f"{label}:_atom_site_B_iso_or_equiv"] = e
        elif cell(7) is not None:
            u, e = _number(cell(7), "_atom_site_U_iso_or_equiv", block, source, label=label)
            b_iso = 8 * np.pi**2 * u
            if e is not None:
                esd[f"{label}:_atom_site_U_iso_or_equiv"] = e
        u_aniso = None
        if label in aniso:
            u_aniso, u_esd = aniso[label]
            esd.update({f"{label}:{k}": v for k, v in u_esd.items()})
            if b_iso is None:
                b_iso = max(u_equivalent_b(u_aniso, lattice.reciprocal_parameters,
                                           lattice.metric), 0.0)
        if b_iso is None:
            missing_dw.append(label)
            b_iso = 0.0
        elif b_iso < 0:
            negative_b.append(f"{label} ({b_iso:.4g} Å²)")
            b_iso = 0.0
        try:
            sites.append(Site(label=label, element=element, xyz=tuple(xyz),
                              occupancy=occupancy, b_iso=b_iso, u_aniso=u_aniso,
                              charge=charge))
        except InputError as exc:
            raise with_location(exc, source, _line_of(block, "_atom_site_fract_x"),
                                "_atom_site_*") from None
    if negative_b:
        warnings.warn(f"{source}: negative isotropic displacement parameter of site(s) "
                      f"{', '.join(negative_b)}: unphysical (a refinement artefact); B = 0 Å² "
                      "used", UserWarning, stacklevel=4)
    unknown = sorted(set(aniso) - set(labels))
    if unknown:
        raise InputError("anisotropic displacement parameters for unknown site label(s)",
                         source=source, tag="_atom_site_aniso_label",
                         line=_line_of(block, "_atom_site_aniso_label"),
                         expected=f"labels of _atom_site_label {labels}", found=unknown)
    dup = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dup and aniso:
        raise InputError("duplicate site labels: anisotropic parameters cannot be matched",
                         source=source, tag="_atom_site_label",
                         line=_line_of(block, "_atom_site_label"), expected="unique labels",
                         found=dup)
    return sites, missing_dw


def _aniso(block: gcif.Block, source: str
           ) -> dict[str, tuple[np.ndarray, dict[str, float]]]:
    """{label: (U11 U22 U33 U12 U13 U23 in Å², esd dict)} from the aniso loop."""
    u_tags = [f"?U_{s}" for s in _ANISO_SUFFIX]
    b_tags = [f"?B_{s}" for s in _ANISO_SUFFIX]
    table = block.find("_atom_site_aniso_", ["label", *u_tags, *b_tags])
    out: dict[str, tuple[np.ndarray, dict[str, float]]] = {}
    if len(table) == 0:
        return out
    has_u = [table.has_column(1 + k) for k in range(6)]
    has_b = [table.has_column(7 + k) for k in range(6)]
    if any(has_u):
        kind, offset, scale, present = "U", 1, 1.0, has_u
    elif any(has_b):
        kind, offset, scale, present = "B", 7, 1.0 / (8 * np.pi**2), has_b
    else:
        return out
    if not all(present):
        missing = [f"_atom_site_aniso_{kind}_{s}" for s, h in zip(_ANISO_SUFFIX, present)
                   if not h]
        raise InputError("incomplete anisotropic displacement loop", source=source,
                         tag=missing[0], line=_line_of(block, "_atom_site_aniso_label"),
                         expected=f"all six _atom_site_aniso_{kind}_ij", found=f"missing "
                         f"{missing}")
    skipped = []
    for row in table:
        label = gcif.as_string(row[0])
        raws = [row[offset + k] for k in range(6)]
        if any(gcif.is_null(r) for r in raws):
            skipped.append(label)
            continue
        vals, e_d = [], {}
        for k, raw in enumerate(raws):
            tag = f"_atom_site_aniso_{kind}_{_ANISO_SUFFIX[k]}"
            v, e = _number(raw, tag, block, source, label=label)
            vals.append(v * scale)
            if e is not None:
                e_d[tag] = e
        out[label] = (np.array(vals), e_d)
    if skipped:
        warnings.warn(f"{source}: anisotropic displacement parameters of {', '.join(skipped)} "
                      "are unknown ('?'); the isotropic value is used", UserWarning,
                      stacklevel=5)
    return out


def _crystal_with_symmetry(block: gcif.Block, source: str, lattice: Lattice,
                           sites: list[Site], name: str, meta: dict[str, Any]) -> Crystal:
    declared_hm = _first_value(block, _HM_TAGS)
    declared_num = _first_value(block, _NUMBER_TAGS)
    declared_hall = _first_value(block, _HALL_TAGS)
    setting = _first_value(block, (_SETTING_TAG,))
    meta["space_group"] = {
        "hm": gcif.as_string(declared_hm[1]) if declared_hm else None,
        "number": gcif.as_string(declared_num[1]) if declared_num else None,
        "hall": gcif.as_string(declared_hall[1]) if declared_hall else None,
    }

    def build(**kw: Any) -> Crystal:
        try:
            return Crystal(lattice, sites, name=name, **kw)
        except InputError as exc:
            tag = meta["symmetry_from"]
            raise with_location(exc, source, _line_of(block, tag), tag) from None

    # 1. explicit operations
    for tag in _OPS_TAGS:
        col = block.find_values(tag)
        if len(col) == 0:
            continue
        ops = [gcif.as_string(v) for v in col if not gcif.is_null(v)]
        if not ops:
            continue
        meta["symmetry_from"] = tag
        crystal = build(operations=ops)
        _check_declared(crystal, declared_hm, declared_num, source)
        return crystal

    # 2. Hall symbol
    if declared_hall:
        meta["symmetry_from"] = declared_hall[0]
        hall = gcif.as_string(declared_hall[1]).strip()
        try:
            sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(hall))
        except Exception:
            sg = None
        if sg is None:
            raise InputError("cannot interpret the Hall symbol", source=source,
                             tag=declared_hall[0], line=_line_of(block, declared_hall[0]),
                             expected="a Hall symbol such as '-F 4vw 2vw 3'", found=hall)
        return build(space_group=sg)

    # 3. Hermann–Mauguin symbol
    if declared_hm:
        meta["symmetry_from"] = declared_hm[0]
        hm = gcif.as_string(declared_hm[1]).strip()
        code = gcif.as_string(setting[1]).strip() if setting else ""
        full = hm if ":" in hm or code.upper() not in ("1", "2", "H", "R") else f"{hm}:{code}"
        sg = gemmi.find_spacegroup_by_name(full, alpha=lattice.alpha, gamma=lattice.gamma)
        if sg is None:
            raise InputError("unknown Hermann–Mauguin symbol", source=source,
                             tag=declared_hm[0], line=_line_of(block, declared_hm[0]),
                             expected="a space-group symbol such as 'F d -3 m'", found=hm)
        if ":" not in full:
            _warn_origin(sg, source, declared_hm[0])
        return build(space_group=sg)

    # 4. IT number
    if declared_num:
        meta["symmetry_from"] = declared_num[0]
        value, _ = _number(declared_num[1], declared_num[0], block, source)
        code = gcif.as_string(setting[1]).strip() if setting else None
        try:
            if value != round(value):
                raise InputError("space-group number must be an integer", expected="1..230",
                                 found=declared_num[1])
            sg = space_group_from_number(int(value), code if code and code.upper() in
                                         ("1", "2", "H", "R") else None)
            if sg.number in (146, 148, 155, 160, 161, 166, 167) and not code:
                hex_cell = abs(lattice.gamma - 120.0) < 1e-3
                sg = space_group_from_number(int(value), "H" if hex_cell else "R")
        except InputError as exc:
            raise with_location(exc, source, _line_of(block, declared_num[0]),
                                declared_num[0]) from None
        if not code:
            _warn_origin(sg, source, declared_num[0])
        return build(space_group=sg)

    raise InputError("no symmetry information", source=source, tag=_OPS_TAGS[0],
                     expected="one of " + ", ".join(_OPS_TAGS[:2] + _HALL_TAGS + _HM_TAGS
                                                    + _NUMBER_TAGS), found="none of them")


def _warn_origin(sg: gemmi.SpaceGroup, source: str, tag: str) -> None:
    """Warn when ``sg`` has two origin choices and the file did not say which."""
    if sg.ext not in ("1", "2"):
        return
    warnings.warn(f"{source} [{tag}]: space group {sg.number} has two origin choices and the "
                  f"file does not say which; using {sg.xhm()} (list the symmetry operations "
                  "or give _space_group_IT_coordinate_system_code to be explicit)",
                  UserWarning, stacklevel=5)


def _check_declared(crystal: Crystal, hm: tuple[str, str] | None, num: tuple[str, str] | None,
                    source: str) -> None:
    """Warn when the explicit operations do not match the declared space group."""
    got = crystal.space_group_number
    if got is None:
        return
    if num is not None:
        try:
            declared = int(float(gcif.as_string(num[1])))
        except ValueError:
            declared = None
        if declared is not None and declared != got:
            warnings.warn(f"{source} [{num[0]}]: the symmetry operations form space group "
                          f"{got} ({crystal.space_group_symbol}) but the file declares "
                          f"{declared}; the operations are used", UserWarning, stacklevel=5)
            return
    if hm is not None:
        sg = gemmi.find_spacegroup_by_name(gcif.as_string(hm[1]).strip())
        if sg is not None and sg.number != got:
            warnings.warn(f"{source} [{hm[0]}]: the symmetry operations form space group "
                          f"{got} ({crystal.space_group_symbol}) but the file declares "
                          f"{gcif.as_string(hm[1])!r}; the operations are used", UserWarning,
                          stacklevel=5)


def _formula(text: str) -> dict[str, float] | None:
    """{element: count} of a formula such as ``'C9 H11 N O3'``, ``Ge98Sn2``, ``'Ni1.056 Sn1'``.

    None when the text is not a plain sum formula (brackets, charges, words).
    """
    compact = text.replace(" ", "")
    if not compact or _FORMULA_RE.sub("", compact):
        return None
    out: dict[str, float] = {}
    for el, n in _FORMULA_RE.findall(compact):
        try:
            out[el] = out.get(el, 0.0) + (float(n) if n else 1.0)
        except ValueError:
            return None
    return out or None


def _cell_contents(crystal: Crystal) -> dict[str, float]:
    """{element: Σ occupancy} over every atom of the unit cell."""
    atoms = crystal.atoms
    out: dict[str, float] = {}
    for el, occ in zip(atoms.elements, atoms.occupancy):
        out[el] = out.get(el, 0.0) + float(occ)
    return out


def _check_composition(crystal: Crystal, block: gcif.Block, source: str) -> None:
    """Warn when the sites (expanded by symmetry) disagree with the declared formula.

    Compares the share of each element of the atoms in the cell (Σ occupancy) with
    ``_chemical_formula_sum`` (a missing element, a wrong occupancy), and, where the
    shares agree, the number of atoms with Z × the formula (``_cell_formula_units_Z``;
    a factor ≥ 1.5 off means duplicated or missing atoms, e.g. operations of the other
    origin choice).
    """
    item = _first_value(block, _FORMULA_TAGS)
    formula = _formula(gcif.as_string(item[1])) if item else None
    if not formula:
        return
    cell = _cell_contents(crystal)
    n_cell, n_formula = sum(cell.values()), sum(formula.values())
    if n_cell <= 0 or n_formula <= 0:
        return
    elements = sorted(set(cell) | set(formula))
    share_cell = {e: cell.get(e, 0.0) / n_cell for e in elements}
    share_formula = {e: formula.get(e, 0.0) / n_formula for e in elements}
    off = [e for e in elements if abs(share_cell[e] - share_formula[e]) > _COMPOSITION_TOLERANCE]
    have = ", ".join(f"{e} {cell.get(e, 0.0):.4g}" for e in elements)
    if off:
        absent = [e for e in off if cell.get(e, 0.0) == 0.0]
        extra = f" ({', '.join(absent)} on no site)" if absent else ""
        warnings.warn(f"{source} [{item[0]}]: the sites do not match the formula "
                      f"{gcif.as_string(item[1])!r}{extra}: the cell holds {have} (Σ "
                      "occupancy); the sites are used", UserWarning, stacklevel=4)
        return
    z_item = _first_value(block, ("_cell_formula_units_Z",))
    if z_item is None:
        return
    try:
        z = float(parse_number(gcif.as_string(z_item[1]))[0])
    except ValueError:
        return
    ratio = n_cell / (z * n_formula) if z > 0 else 1.0
    if not 1 / 1.5 < ratio < 1.5:
        warnings.warn(f"{source} [_cell_formula_units_Z]: the cell holds {n_cell:.4g} atoms "
                      f"but Z × formula = {z:g} × {n_formula:g} = {z * n_formula:.4g}: are the "
                      "symmetry operations those of the coordinates' setting (origin choice)?",
                      UserWarning, stacklevel=4)


def _check_overlaps(crystal: Crystal, source: str, tol: float = 0.01) -> None:
    """Warn when atoms closer than ``tol`` Å share more than a full site (Σ occupancy > 1).

    Mixed sites (Al 0.85 + Sc 0.15 at one position) are fine; two full atoms at one
    place are an error in the file (a site given twice, or a wrong origin choice).
    """
    atoms = crystal.atoms
    frac = np.asarray(atoms.frac, float)
    if len(frac) < 2 or len(frac) > 20000:
        return
    occ = np.asarray(atoms.occupancy, float)
    basis = crystal.lattice.direct_basis
    bad: set[str] = set()
    labels = [crystal.sites[i].label for i in atoms.site_index]
    for i in range(len(frac) - 1):
        d = frac[i + 1:] - frac[i]
        d -= np.rint(d)
        close = np.nonzero(np.linalg.norm(d @ basis, axis=1) < tol)[0] + i + 1
        if len(close) and occ[i] + occ[close].sum() > 1.0 + 1e-3:
            bad.update([labels[i], *(labels[j] for j in close)])
    if bad:
        warnings.warn(f"{source}: atoms of sites {', '.join(sorted(bad))} overlap (closer than "
                      f"{tol:g} Å) with a total occupancy above 1", UserWarning, stacklevel=4)
