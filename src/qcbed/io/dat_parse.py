"""Tokenising and parsing of PyExtal/EMAPS ``.dat`` files: keyword lines → values.

:class:`DatParser` reads the file line by line (comments, numbers, counts such as
``hkl N`` followed by N lines) into a dict of checked values per keyword, the
``atom`` lines and the line of each keyword; it knows nothing of the crystal model.
:func:`qcbed.io.dat_model.build_dat_input` turns its result into a
:class:`~qcbed.io.dat_model.DatInput`; :func:`qcbed.io.dat.read_dat` does both.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.checks import MAX_MILLER_INDEX, check_integer
from ..errors import InputError
from ._common import is_number, parse_number, readonly

#: Every keyword the reader knows, in the order of the PyExtal documentation.
KEYWORDS: tuple[str, ...] = (
    "crystal", "cell", "atom", "spg", "v0", "hv", "zone", "norm", "kt", "xaxis", "conv",
    "samp", "hkl", "sele", "sgmax", "sgmin", "omeg", "aper", "out", "abs", "adj",
)
#: Keywords a file must contain.
MANDATORY_KEYWORDS: tuple[str, ...] = ("cell", "atom", "spg", "hv", "zone")


# '#' starts a comment at the line start or after white space (not in 'Si#1')
_COMMENT_RE = re.compile(r"(^|\s)#.*$")
# largest `samp` (pixels per disc radius): a (2·samp + 1)² tilt net of 4·10⁸ directions
_MAX_SAMP = 10_000


def split_title(first: str) -> tuple[str, str | None]:
    """(title, keyword) of the first line: the title without a leading ``#``, and the
    keyword it starts with (None when it starts with none)."""
    title = first.strip().lstrip("#").strip()
    first_word = _COMMENT_RE.sub("", first).split()[:1]
    keyword = first_word[0] if first_word and first_word[0].lower() in KEYWORDS else None
    return title, keyword


@dataclass
class AtomLine:
    """One ``atom`` line: its line number, label and numbers (x y z, DW…, [occ])."""

    line: int
    label: str
    values: list[float]


class DatParser:
    """Line-by-line parser; keeps the position for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.pos = 1  # index into self.lines; line 0 is the title
        self.values: dict[str, Any] = {}
        self.lines_of: dict[str, int] = {}
        self.atoms: list[AtomLine] = []

    # ---------------------------------------------------------------- errors
    def error(self, message: str, line: int | None, tag: str | None = None,
              expected: Any = None, found: Any = None) -> InputError:
        if line is None:
            message += " (at end of file)"
        return InputError(message, source=self.path, line=line, tag=tag, expected=expected,
                          found=found)

    # ---------------------------------------------------------------- tokens
    @staticmethod
    def content(raw: str) -> str:
        """The line without its comment, stripped.

        ``#`` starts a comment at the start of a line or after white space;
        inside a word it is part of it (site labels such as ``Si#1``).
        """
        return _COMMENT_RE.sub("", raw).strip()

    def next_content(self, start: int) -> tuple[int, str] | None:
        """(index, content) of the first non-blank, non-comment line at or after ``start``."""
        for i in range(start, len(self.lines)):
            c = self.content(self.lines[i])
            if c:
                return i, c
        return None

    def numbers(self, tokens: list[str], line: int, tag: str) -> list[float]:
        out = []
        for t in tokens:
            try:
                value, _ = parse_number(t)
            except ValueError:
                raise self.error(f"`{tag}`: value is not a number", line, tag,
                                 expected="a number", found=t) from None
            if not np.isfinite(value):
                raise self.error(f"`{tag}`: number too large (not finite)", line, tag,
                                 expected="a finite number", found=t)
            out.append(value)
        return out

    def fixed(self, tokens: list[str], n: int, line: int, tag: str, what: str) -> list[float]:
        if len(tokens) != n:
            raise self.error(f"`{tag}` takes {n} value{'s' if n > 1 else ''} ({what})", line,
                             tag, expected=f"{n} value{'s' if n > 1 else ''}",
                             found=f"{len(tokens)}: {' '.join(tokens) or '(none)'}")
        return self.numbers(tokens, line, tag)

    def integer(self, value: float, line: int, tag: str, what: str, token: str,
                low: int | None = None, high: int | None = None) -> int:
        try:
            return check_integer(value, what, low=low, high=high)
        except InputError as exc:
            raise self.error(f"`{tag}`: {exc.reason}", line, tag, expected=exc.expected,
                             found=token) from None

    def miller(self, value: float, line: int, tag: str, token: str) -> int:
        return self.integer(value, line, tag, "a Miller index", token, -MAX_MILLER_INDEX,
                            MAX_MILLER_INDEX)

    def hkl_lines(self, n: int, line: int, tag: str) -> np.ndarray:
        """Read n lines of three integers after the ``tag n`` line."""
        rows: list[list[int]] = []
        i = self.pos
        while len(rows) < n:
            nxt = self.next_content(i)
            if nxt is None:
                raise self.error(f"`{tag} {n}` announces {n} reflections but the file ends "
                                 f"after {len(rows)}", None, tag, expected=f"{n} lines of h k l",
                                 found=f"{len(rows)} lines")
            i, c = nxt
            toks = c.split()
            if not is_number(toks[0]):
                raise self.error(f"`{tag} {n}` (line {line}) announces {n} reflections but "
                                 f"only {len(rows)} follow before `{toks[0]}`", i + 1, tag,
                                 expected=f"{n} lines of h k l", found=f"{len(rows)} lines")
            vals = self.fixed(toks, 3, i + 1, tag, "h k l")
            rows.append([self.miller(v, i + 1, tag, t) for v, t in zip(vals, toks)])
            i += 1
        self.pos = i
        nxt = self.next_content(i)
        if nxt is not None and is_number(nxt[1].split()[0]):
            extra = 0
            j = i
            while (nx := self.next_content(j)) is not None and is_number(nx[1].split()[0]):
                extra += 1
                j = nx[0] + 1
            raise self.error(f"`{tag} {n}` (line {line}) is followed by more than {n} "
                             "reflection lines", nxt[0] + 1, tag, expected=f"{n} lines",
                             found=f"{n + extra} lines")
        return readonly(np.array(rows, dtype=int).reshape(-1, 3))

    # ---------------------------------------------------------------- keywords
    def store(self, key: str, value: Any, line: int) -> None:
        if key in self.values:
            warnings.warn(f"{self.path}:{line}: keyword `{key}` repeated (first on line "
                          f"{self.lines_of[key]}); the last value is used", UserWarning,
                          stacklevel=4)
        self.values[key] = value
        self.lines_of[key] = line

    def parse(self) -> None:
        """Read every keyword line after the title into :attr:`values`, :attr:`atoms`."""
        while True:
            nxt = self.next_content(self.pos)
            if nxt is None:
                break
            idx, c = nxt
            self.pos = idx + 1
            line = idx + 1
            toks = c.split()
            kw = toks[0].lower()
            if is_number(kw):
                raise self.error("a line of numbers where a keyword was expected (does a "
                                 "count such as `hkl N` or `adj N` match the lines that "
                                 "follow?)", line, expected=f"one of {list(KEYWORDS)}",
                                 found=c)
            if kw not in KEYWORDS:
                raise self.error(f"unknown keyword `{toks[0]}`", line, toks[0],
                                 expected=f"one of {list(KEYWORDS)}", found=toks[0])
            getattr(self, f"kw_{kw}")(toks[1:], line, c)

    def kw_crystal(self, args: list[str], line: int, text: str) -> None:
        rest = text.split(None, 1)[1] if len(text.split(None, 1)) > 1 else ""
        if ":" in rest:
            name, _, opts = rest.partition(":")
        else:  # tolerate a missing ':' before the options
            m0 = re.search(r"\S+\s*=", rest)
            name, opts = (rest[:m0.start()], rest[m0.start():]) if m0 else (rest, "")
        modes = {"dw": "iso", "occ": "1"}
        opts = opts.strip()
        for m in re.finditer(r"(\S+?)\s*=\s*(\S+)", opts):
            key, val = m.group(1).lower(), m.group(2).lower()
            if key not in modes:
                raise self.error(f"unknown `crystal` option `{m.group(1)}`", line, "crystal",
                                 expected="dw = iso|bij|uij, occ = 1|par", found=m.group(0))
            allowed = ("iso", "bij", "uij") if key == "dw" else ("1", "par")
            if val not in allowed:
                raise self.error(f"`crystal`: bad value of `{key}`", line, "crystal",
                                 expected=" | ".join(allowed), found=m.group(2))
            modes[key] = val
        leftover = re.sub(r"(\S+?)\s*=\s*(\S+)", "", opts).strip()
        if leftover:
            raise self.error("`crystal`: cannot read the options after ':'", line, "crystal",
                             expected="dw = iso|bij|uij occ = 1|par", found=leftover)
        self.store("crystal", (name.strip(), modes["dw"], modes["occ"]), line)

    def kw_cell(self, args: list[str], line: int, text: str) -> None:
        self.store("cell", self.fixed(args, 6, line, "cell", "a b c in Å, α β γ in degrees"),
                   line)

    def kw_atom(self, args: list[str], line: int, text: str) -> None:
        if len(args) < 5:
            raise self.error("`atom` needs a label, x y z and the displacement parameter(s)",
                             line, "atom", expected="atom Lbl x y z DW... [occ]",
                             found=f"{len(args)} values: {' '.join(args) or '(none)'}")
        self.atoms.append(AtomLine(line, args[0], self.numbers(args[1:], line, "atom")))
        self.lines_of.setdefault("atom", line)

    def kw_spg(self, args: list[str], line: int, text: str) -> None:
        if len(args) not in (1, 2):
            raise self.error("`spg` takes the space-group number and an optional setting",
                             line, "spg", expected="1 or 2 values (N [setting])",
                             found=f"{len(args)}: {' '.join(args) or '(none)'}")
        num = self.numbers(args[:1], line, "spg")[0]
        n = self.integer(num, line, "spg", "the space-group number", args[0], 1, 230)
        self.store("spg", (n, args[1] if len(args) == 2 else None), line)

    def _scalar(self, key: str, args: list[str], line: int, what: str,
                positive: bool = False, nonnegative: bool = False) -> float:
        v = self.fixed(args, 1, line, key, what)[0]
        if positive and not v > 0:
            raise self.error(f"`{key}` must be positive", line, key, expected=f"{what} > 0",
                             found=args[0])
        if nonnegative and not v >= 0:
            raise self.error(f"`{key}` must not be negative", line, key,
                             expected=f"{what} ≥ 0", found=args[0])
        return v

    def kw_v0(self, args: list[str], line: int, text: str) -> None:
        self.store("v0", self._scalar("v0", args, line, "mean inner potential in V"), line)

    def kw_hv(self, args: list[str], line: int, text: str) -> None:
        self.store("hv", self._scalar("hv", args, line, "voltage in kV", positive=True), line)

    def _vector(self, key: str, args: list[str], line: int, what: str,
                nonzero: bool = True) -> np.ndarray:
        v = np.array(self.fixed(args, 3, line, key, what))
        if nonzero and not np.any(v):
            raise self.error(f"`{key}` must not be the zero vector", line, key,
                             expected="three numbers, not all zero", found=" ".join(args))
        return readonly(v)

    def kw_zone(self, args: list[str], line: int, text: str) -> None:
        self.store("zone", self._vector("zone", args, line, "u v w"), line)

    def kw_norm(self, args: list[str], line: int, text: str) -> None:
        self.store("norm", self._vector("norm", args, line, "u v w"), line)

    def kw_kt(self, args: list[str], line: int, text: str) -> None:
        self.store("kt", self._vector("kt", args, line, "reciprocal components",
                                      nonzero=False), line)

    def kw_xaxis(self, args: list[str], line: int, text: str) -> None:
        self.store("xaxis", self._vector("xaxis", args, line, "h k l"), line)

    def kw_conv(self, args: list[str], line: int, text: str) -> None:
        self.store("conv", self._scalar("conv", args, line, "disc radius in |xaxis|",
                                        positive=True), line)

    def kw_samp(self, args: list[str], line: int, text: str) -> None:
        v = self._scalar("samp", args, line, "pixels per disc radius", positive=True)
        self.store("samp", self.integer(v, line, "samp", "the pixel count", args[0], 1,
                                        _MAX_SAMP), line)

    def _count(self, key: str, args: list[str], line: int, minimum: int) -> int:
        v = self.fixed(args, 1, line, key, "a count")[0]
        return self.integer(v, line, key, "the count", args[0], minimum, len(self.lines))

    def kw_hkl(self, args: list[str], line: int, text: str) -> None:
        n = self._count("hkl", args, line, 1)
        self.store("hkl", self.hkl_lines(n, line, "hkl"), line)

    def kw_out(self, args: list[str], line: int, text: str) -> None:
        n = self._count("out", args, line, 1)
        self.store("out", self.hkl_lines(n, line, "out"), line)

    def kw_sele(self, args: list[str], line: int, text: str) -> None:
        v = self.fixed(args, 4, line, "sele", "sgmax gmax bmin kflag")
        kflag = self.integer(v[3], line, "sele", "kflag", args[3])
        for value, token, what in zip(v[:2], args[:2], ("sgmax", "gmax")):
            if not value > 0:
                raise self.error(f"`sele`: {what} must be positive", line, "sele",
                                 expected=f"{what} > 0", found=token)
        self.store("sele", (v[0], v[1], v[2], kflag), line)

    def kw_sgmax(self, args: list[str], line: int, text: str) -> None:
        self.store("sgmax", self._scalar("sgmax", args, line, "2K|S_g| in Å⁻²",
                                        positive=True), line)

    def kw_sgmin(self, args: list[str], line: int, text: str) -> None:
        self.store("sgmin", self._scalar("sgmin", args, line, "2K|S_g| in Å⁻²",
                                        nonnegative=True), line)

    def kw_omeg(self, args: list[str], line: int, text: str) -> None:
        self.store("omeg", self._scalar("omeg", args, line, "Bethe strength threshold",
                                        nonnegative=True), line)

    def kw_aper(self, args: list[str], line: int, text: str) -> None:
        self.store("aper", self._scalar("aper", args, line, "radius in Å⁻¹",
                                        nonnegative=True), line)

    def kw_abs(self, args: list[str], line: int, text: str) -> None:
        self.store("abs", self._scalar("abs", args, line, "mean absorption potential",
                                        nonnegative=True), line)

    def kw_adj(self, args: list[str], line: int, text: str) -> None:
        n = self._count("adj", args, line, 0)
        rows_hkl: list[list[int]] = []
        rows_val: list[list[float]] = []
        i = self.pos
        while (nxt := self.next_content(i)) is not None:
            j, c = nxt
            toks = c.split()
            if not is_number(toks[0]):
                break
            if len(toks) != 7:
                raise self.error("`adj` line needs h k l |U| φ |U′| φ′", j + 1, "adj",
                                 expected="7 values", found=f"{len(toks)}: {c}")
            vals = self.numbers(toks, j + 1, "adj")
            rows_hkl.append([self.miller(v, j + 1, "adj", t) for v, t in zip(vals[:3], toks[:3])])
            rows_val.append(vals[3:])
            i = j + 1
        self.pos = i
        if len(rows_hkl) != n:
            warnings.warn(f"{self.path}:{line}: `adj {n}` announces {n} reflections but "
                          f"{len(rows_hkl)} adj lines follow; all {len(rows_hkl)} are read",
                          UserWarning, stacklevel=3)
        self.store("adj", (readonly(np.array(rows_hkl, dtype=int).reshape(-1, 3)),
                           readonly(np.array(rows_val, dtype=float).reshape(-1, 4))), line)
