"""Reading the ``[plan]`` of a project file: coarse and fine steps, parameter names
(with dataset indices for several ``[[data]]`` blocks).

Every problem raises :class:`qcbed.errors.InputError` naming the file, the key
(``tag``), the expected and the found value."""

from __future__ import annotations

from collections.abc import Mapping

from .._core.parameters import (
    PER_DATASET_KINDS,
    dataset_name,
    parse_parameter_name,
    split_dataset_name,
)
from .reader import TableReader
from .safety import MAX_N_SCAN
from .schema import COARSE_STEPS, CoarseStep, FineStep


def check_dataset_indices(r: TableReader, fine: list[FineStep], coarse: list[CoarseStep],
                           n: int) -> None:
    """Parameter names with a dataset index (``thickness[1]``) name a per-dataset
    parameter of an existing block."""
    for i, st in enumerate(fine):
        for where, names in (("refine", st.refine), ("bounds", list(st.bounds)),
                             ("scales", list(st.scales))):
            for nm in names:
                base_name, k = split_dataset_name(nm)
                if k is None:
                    continue
                tag = f"plan.fine[{i}].{where}"
                if n == 1:
                    raise r.err("dataset index without [[data]] blocks", tag,
                                expected=f"{base_name} (one dataset)", found=nm)
                if k >= n:
                    raise r.err("no such dataset", tag,
                                expected=f"an index 0…{n - 1} ([[data]] blocks)", found=nm)
                kind = parse_parameter_name(base_name)[0]
                if kind not in PER_DATASET_KINDS:
                    raise r.err("this parameter is shared by all datasets", tag,
                                expected=f"{base_name} without an index (per-dataset ones: "
                                         "thickness, thickness.dkx/dky, voltage, tilt, "
                                         "sampling, probe)",
                                found=nm)
    if n > 1:
        for i, st in enumerate(fine):
            if st.method != "lm":
                raise r.err("a joint refinement runs Levenberg–Marquardt", f"plan.fine[{i}].method",
                            expected="lm with several [[data]] blocks", found=st.method)
        for i, st in enumerate(coarse):
            if st.step == "b_iso":
                raise r.err("a coarse B scan fits one dataset; B is shared by all",
                            f"plan.coarse[{i}].step", expected="orientation_thickness, "
                            "pixel_size or voltage with several [[data]] blocks", found="b_iso")


def array_of_tables(r: TableReader, d: Mapping, key: str) -> list[dict]:
    v = d.get(key, [])
    if isinstance(v, dict):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
        raise r.err("must be an array of tables", f"plan.{key}",
                    expected=f"[[plan.{key}]] tables", found=v)
    return v


def parse_coarse(r: TableReader, t: Mapping, i: int) -> CoarseStep:
    tag = f"plan.coarse[{i}]"
    r.unknown(t, "plan.coarse")
    step = r.get(t, "step", tag + ".step", "str", "orientation_thickness", choices=COARSE_STEPS)
    tr = r.vector(t, "thickness_range", tag + ".thickness_range", 2, None)
    if tr is not None and not 0 < tr[0] < tr[1]:
        raise r.err("thickness range must satisfy 0 < t_min < t_max", tag + ".thickness_range",
                    expected="[t_min, t_max] in Å", found=list(tr))
    ts = r.vector(t, "template_size", tag + ".template_size", 2, None, integer=True)
    if ts is not None and min(ts) < 3:
        raise r.err("template too small", tag + ".template_size", expected="[rows, cols] ≥ 3",
                    found=list(ts))
    br = r.vector(t, "b_range", tag + ".b_range", 2, (0.0, 2.0))
    if not 0 <= br[0] < br[1]:
        raise r.err("B range must satisfy 0 ≤ B_min < B_max", tag + ".b_range",
                    expected="[B_min, B_max] in Å²", found=list(br))
    return CoarseStep(
        step=step, thickness_range=tr,
        n_scan=r.get(t, "n_scan", tag + ".n_scan", "int", 21, lo=3, hi=MAX_N_SCAN),
        xtol=r.get(t, "xtol", tag + ".xtol", "float", None, positive=True),
        margin=r.get(t, "margin", tag + ".margin", "int", 10, lo=1),
        template_size=ts,
        template_center=r.vector(t, "template_center", tag + ".template_center", 2, None),
        template_step=r.get(t, "template_step", tag + ".template_step", "float", 1.0,
                            positive=True),
        reflections=r.vectors(t, "reflections", tag + ".reflections", 3, None, integer=True,
                              min_len=1),
        rel_range=r.get(t, "rel_range", tag + ".rel_range", "float", 0.05, positive=True,
                        hi=0.5),
        half_range=r.get(t, "half_range", tag + ".half_range", "float", 0.5, positive=True),
        labels=r.strings(t, "labels", tag + ".labels", None), b_range=br)


def canonical_name(r: TableReader, name: str, tag: str) -> str:
    """Canonical spelling of a parameter name, keeping a dataset index (``thickness[1]``)."""
    base_name, k = split_dataset_name(name)
    c = parse_parameter_name(base_name, source=r.source, tag=tag)[2]
    return c if k is None else dataset_name(c, k)


def parse_fine(r: TableReader, t: Mapping, i: int) -> FineStep:
    tag = f"plan.fine[{i}]"
    r.unknown(t, "plan.fine")
    names = r.strings(t, "refine", tag + ".refine")
    if not names:
        raise r.err("nothing to refine", tag + ".refine", expected="at least one parameter",
                    found=[])
    canon = []
    for n in names:
        c = canonical_name(r, n, tag + ".refine")
        if c in canon:
            raise r.err("parameter listed twice", tag + ".refine", expected="unique names",
                        found=c)
        canon.append(c)
    bounds = {}
    bt = r.table(t, "bounds", tag + ".bounds")
    for k, v in bt.items():
        c = canonical_name(r, k, f"{tag}.bounds")
        lo, hi = r.vector(bt, k, f"{tag}.bounds.{k}", 2)
        if not lo < hi:
            raise r.err("lower bound must be below the upper bound", f"{tag}.bounds.{k}",
                        expected="[lower, upper] with lower < upper", found=v)
        bounds[c] = (lo, hi)
    scales = {}
    st = r.table(t, "scales", tag + ".scales")
    for k in st:
        c = canonical_name(r, k, f"{tag}.scales")
        scales[c] = r.get(st, k, f"{tag}.scales.{k}", "float", positive=True)
    method = r.get(t, "method", tag + ".method", "str", "lm", choices=("lm", "nested"))
    outer = r.get(t, "outer", tag + ".outer", "str", "lm",
                  choices=("lm", "nelder-mead", "powell"))
    return FineStep(name=r.get(t, "name", tag + ".name", "str", f"fine {i + 1}"),
                    refine=canon, method=method, outer=outer,
                    max_iter=r.get(t, "max_iter", tag + ".max_iter", "int", 30, lo=1),
                    ftol=r.get(t, "ftol", tag + ".ftol", "float", 1e-9, positive=True),
                    xtol=r.get(t, "xtol", tag + ".xtol", "float", 1e-9, positive=True),
                    jacobian=r.get(t, "jacobian", tag + ".jacobian", "str", "analytic",
                                   choices=("analytic", "numeric")),
                    bounds=bounds, scales=scales)
