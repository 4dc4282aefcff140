"""Reader for PyExtal/EMAPS ``.dat`` simulation input files.

The format (Ni, Busch & Zuo, PyExtal; EMAPS) is a sequential keyword file:
the first line is a title, ``#`` starts a comment (whole line or trailing),
and each further line starts with a keyword::

    crystal silicon : dw = iso occ = 1
    cell 5.4307 5.4307 5.4307 90.0 90.0 90.0
    atom Si 0.125 0.125 0.125 0.4668
    spg 227 2
    hv 300
    zone 1 1 0
    ...
    hkl 19
     0 0 0
     1 -1 -1
    ...
    adj 2
    -1 1 1 0.0575 0 4.37E-04 180

Known keywords: see :data:`KEYWORDS`. Units follow ``docs/conventions.md``.
:func:`read_dat` reads a file; the tokenising/parsing lives in
:mod:`qcbed.io.dat_parse`, the model (:class:`DatInput`) and its building in
:mod:`qcbed.io.dat_model`, and their public names are re-exported here.
The ``adj`` values are kept exactly as written (PyExtal's phase convention);
:meth:`DatInput.adjustments_qcbed` converts them to qcbed's convention (see the
"PyExtal .dat files" section of ``docs/conventions.md``).
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path

from ..errors import InputError
from .dat_model import DatInput, build_dat_input
from .dat_parse import KEYWORDS, MANDATORY_KEYWORDS, DatParser, split_title

__all__ = ["KEYWORDS", "MANDATORY_KEYWORDS", "DatInput", "read_dat"]


def read_dat(path: str | PathLike[str]) -> DatInput:
    """Read a PyExtal/EMAPS ``.dat`` input file.

    Parameters
    ----------
    path : str or path
        The ``.dat`` file.

    Returns
    -------
    DatInput
        Crystal and settings; see its field docstrings for units.

    Raises
    ------
    InputError
        Unreadable file, unknown keyword, wrong number of values, a value that
        is not a number, ``hkl N`` / ``out N`` with a different number of lines,
        missing mandatory keywords (``cell``, ``atom``, ``spg``, ``hv``,
        ``zone``), k_t not perpendicular to the zone axis, or a crystal the
        model rejects. The message names the file, the line (or "end of file"),
        the keyword and the expected versus the found value.

    Warns
    -----
    UserWarning
        ``adj N`` followed by a different number of adj lines (all are read),
        a repeated keyword (the last wins), a PyExtal valence label (``SIVAL``),
        or a title line that looks like a keyword.

    Notes
    -----
    * ``atom`` labels select the element (``Si``, ``Si#1``, ``SIVAL``, ``SI+4``);
      the label is kept as the site label.
    * ``dw = iso``: one B in Å². ``dw = bij``: β11 β22 β33 β12 β13 β23
      (T = exp(−Σ β_ij h_i h_j)), converted to U_ij = β_ij / (2π² a*_i a*_j).
      ``dw = uij``: U11 U22 U33 U12 U13 U23 in Å².
    * ``kt`` is checked against the zone axis: |h·u| ≤ 10⁻³ |k_t| |u|.
    * ``adj`` values are kept as written; see :meth:`DatInput.adjustments_qcbed`.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", source=p) from None
    if not text.strip():
        raise InputError("empty file", source=p, expected="a title line and keywords",
                         found="an empty file")
    parser = DatParser(p, text)
    title, keyword = split_title(parser.lines[0] if parser.lines else "")
    if keyword is not None:
        warnings.warn(f"{p}:1: the first line is the title, but it starts with the keyword "
                      f"`{keyword}`; it is not read as a keyword", UserWarning,
                      stacklevel=2)
    parser.parse()
    return build_dat_input(parser, title)
