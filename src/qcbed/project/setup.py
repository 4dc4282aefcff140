"""Building what a project describes: crystal, data, geometry, regions, engine → :class:`Setup`."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bloch.beams import BeamSelection
from ..bloch.geometry import ZoneFrame
from ..bloch.simulation import Simulation
from ..errors import InputError
from ..experiment import (
    ROI,
    CBEDPattern,
    DetectorModel,
    ExperimentGeometry,
    LACBEDStack,
    Region,
    read_felix_images,
    read_image,
    read_npy_stack,
)
from ..io import read_input
from ..parallel import make_executor
from ..scattering.structure_factors import PotentialModel
from .schema import CoarseStep, Project


# ====================================================================== building
@dataclass
class Setup:
    """The objects a project describes, built and checked.

    Attributes
    ----------
    project : Project
    crystal : Crystal
        With the ``crystal.b_iso`` overrides applied.
    data : CBEDPattern or LACBEDStack
    geometry : ExperimentGeometry
    hkl : ndarray (n_refl, 3)
        Reflections compared.
    regions : list of Region
    masks : ndarray (n_regions, n_refl) bool
        Which reflections each region uses.
    voltage_kv : float
    executor : Executor or None
    input_files : list of Path
        Every file read (hashed into the results' provenance).
    warnings : list of str
    """

    project: Project
    crystal: Any
    data: Any
    geometry: Any
    hkl: np.ndarray
    regions: list
    masks: np.ndarray
    voltage_kv: float
    executor: Any = None
    input_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _pool_kt: tuple[np.ndarray, float] | None = None

    # ------------------------------------------------------------ engine
    def pool_range(self) -> tuple[np.ndarray, float]:
        """(kt centre, radius) in Å⁻¹ over which the automatic pool must be complete."""
        if self._pool_kt is None:
            kts = [self.geometry.display_to_kt(reg.points()).reshape(-1, 2)
                   for reg in self.regions]
            p = self.geometry.pixel_size
            for st in self.project.coarse:
                c, size = self.template(st)
                half = (np.asarray(size) - 1) / 2 * st.template_step + st.margin * \
                    st.template_step
                corners = np.array([[c[0] - half[0], c[1] - half[1]],
                                    [c[0] + half[0], c[1] + half[1]],
                                    [c[0] - half[0], c[1] + half[1]],
                                    [c[0] + half[0], c[1] - half[1]]])
                kts.append(self.geometry.display_to_kt(corners))
            k = np.concatenate(kts)
            centre = 0.5 * (k.min(axis=0) + k.max(axis=0))
            radius = float(np.max(np.linalg.norm(k - centre, axis=1))) + 5 * p
            self._pool_kt = (centre, radius)
        return self._pool_kt

    def template(self, step: CoarseStep) -> tuple[np.ndarray, tuple[int, int]]:
        """Centre (display row, col) and size (rows, cols) of a coarse step's template."""
        if step.template_center is not None:
            centre = np.asarray(step.template_center, float)
        else:
            centre = np.asarray(self.geometry.reference, float)
        if step.template_size is not None:
            size = step.template_size
        else:
            reg = self.regions[0]
            pts = reg.points().reshape(-1, 2)
            ext = (pts.max(axis=0) - pts.min(axis=0)) / step.template_step
            size = (max(int(ext[0]) | 1, 3), max(int(ext[1]) | 1, 3))
        return centre, (int(size[0]), int(size[1]))

    def plasmon_losses(self, voltage_kv: float | None = None):
        """The plasmon-loss model of data that are not energy-filtered
        (:class:`~qcbed.experiment.plasmon.PlasmonLosses`), or None for energy-filtered
        data. E_p: ``data.plasmon_energy_ev`` or the crystal's free-electron value
        (estimated, with a warning, for crystals with d- or f-block elements:
        :func:`~qcbed.experiment.plasmon.estimated_plasmon_energy`)."""
        from ..experiment.plasmon import PlasmonLosses, estimated_plasmon_energy

        d = self.project.data
        if d["energy_filtered"]:
            return None
        e, src = d["plasmon_energy_ev"], "data.plasmon_energy_ev"
        if e is None:
            e, estimated = estimated_plasmon_energy(self.crystal)
            src = "free-electron value of the crystal's valence electrons"
            if estimated:
                els = ", ".join(estimated)
                src = (f"free-electron estimate counting the s and d electrons of {els} "
                       "(approximate)")
                warnings.warn(
                    f"{self.project.source}: [data] plasmon_energy_ev not given; the "
                    f"plasmon-loss model uses the free-electron estimate E_p = {e:.1f} eV, "
                    f"which counts the outer s and d electrons of {els} (only approximate "
                    "for d- and f-shell elements, Egerton 2011 §3.3.1): give the measured "
                    "plasmon energy in [data] plasmon_energy_ev", stacklevel=2)
        return PlasmonLosses(e, float(voltage_kv or self.voltage_kv),
                             mean_free_path=d["plasmon_mean_free_path"],
                             cutoff_mrad=d["plasmon_cutoff_mrad"], energy_source=src,
                             acceptance_mrad=d.get("plasmon_acceptance_mrad"))

    def simulation(self, *, crystal=None, voltage_kv: float | None = None,
                   mode: str | None = None):
        """The engine set-up of the project (automatic or explicit pool, outputs = ``hkl``)."""
        e = self.project.engine
        g = self.project.geometry
        centre, radius = self.pool_range()
        # thresholds fixed in the file are honoured; otherwise the engine chooses them
        # for [engine] accuracy, checked at the plan's starting thickness
        sel = None
        if e["sgmin"] is not None or e["omega"] is not None or not e["bethe"]:
            sel = BeamSelection(sgmin=0.3 if e["sgmin"] is None else e["sgmin"],
                                omega=30.0 if e["omega"] is None else e["omega"],
                                sgmax=e["sgmax"], bethe=e["bethe"],
                                min_strong=e["min_strong"])
        t0 = self.project.thickness
        kw: dict[str, Any] = dict(
            normal=g["normal"], outputs=self.hkl,
            potential=PotentialModel(e["elastic"], e["absorption"], xi=e["xi"]),
            selection=sel, mode=mode or e["mode"], gmax=e["gmax"], smax=e["smax"],
            holz=e["holz"], kt_center=centre, kt_radius=radius, min_pool=e["min_pool"],
            chunk_size=e["chunk_size"], executor=self.executor, accuracy=e["accuracy"],
            min_strong=e["min_strong"], tail=e["tail"],
            check_thickness=None if t0 is None else [float(t0)])
        if e["pool"] is not None:
            kw["pool"] = e["pool"]
        return Simulation(crystal or self.crystal, voltage_kv or self.voltage_kv, g["zone"],
                          g["x_axis"], **kw)

    def roi(self, geometry=None, refine: Iterable[str] = (), regions: list | None = None,
            masks: np.ndarray | None = None):
        """The refinement dataset (:class:`~qcbed.experiment.ROI`) for a geometry.

        ``regions`` replaces the project's regions (tiles of the first one: its
        reflection mask applies to all, unless ``masks`` (n_regions, n_refl) is given).
        """
        if masks is None:
            masks = self.masks if regions is None else np.repeat(self.masks[:1], len(regions),
                                                                 0)
        return ROI(self.data, self.regions if regions is None else regions,
                   geometry or self.geometry, hkl=self.hkl, masks=masks, refine=tuple(refine),
                   disc_shifts=self.project.roi["disc_shifts"],
                   count_copies_once=self.project.data["count_copies_once"])


def _err(project: Project, msg: str, tag: str, expected: Any = None, found: Any = None
         ) -> InputError:
    return InputError(msg, source=project.source, tag=tag, expected=expected, found=found)


def _read_crystal(project: Project) -> tuple[Any, dict, Path]:
    src = project.path(project.crystal["source"])
    if not src.exists():
        raise _err(project, "crystal source not found", "crystal.source",
                   expected="an existing CIF, .dat file or Felix folder", found=str(src))
    crystal, settings = read_input(src)
    if project.crystal["b_iso"]:
        try:
            crystal = crystal.with_b_iso(project.crystal["b_iso"])
        except InputError as exc:
            raise _err(project, "unknown site label", "crystal.b_iso", expected=exc.expected,
                       found=exc.found) from None
    return crystal, settings or {}, src


def _load_array(project: Project, name: str, tag: str) -> tuple[np.ndarray, Path]:
    p = project.path(name)
    if not p.is_file():
        raise _err(project, "file not found", tag, expected="an existing file", found=str(p))
    from ..experiment.readers import load_npy

    return load_npy(p, tag=tag), p


#: [data] variance values that are not files: Poisson σ² = max(I, floor), or the model
#: σ² = g·I + σ₀² estimated from the images (:mod:`qcbed.experiment.noise`).
VARIANCE_KEYWORDS = ("poisson", "estimated")


def _read_data(project: Project) -> tuple[Any, list[Path]]:
    """The data object and the files read."""
    d = project.data
    neg = dict(clip_negative=d["clip_negative"], allow_negative=d["allow_negative"])
    files: list[Path] = []
    try:
        detector = DetectorModel(**d["detector"]) if d["detector"] else None
    except InputError as exc:
        raise _err(project, exc.reason, f"data.detector.{exc.tag}", expected=exc.expected,
                   found=exc.found) from None
    if d["format"] == "felix":
        folder = project.path(d["folder"])
        if not folder.is_dir():
            raise _err(project, "Felix folder not found", "data.folder",
                       expected="an existing folder", found=str(folder))
        stack = read_felix_images(folder, require_hkl=d["require_hkl"],
                                  variance_floor=d["variance_floor"], **neg)
        files = [Path(f) for f in stack.metadata.get("files", [])]
    elif d["format"] == "lacbed_h5":
        from ..larbed import load_stack

        p = project.path(d["files"][0])
        if not p.is_file():
            raise _err(project, "LACBED stack file not found", "data.files[0]",
                       expected="an existing .h5 file from 'qcbed extract'", found=str(p))
        try:
            stack = load_stack(p)
        except InputError as exc:
            raise _err(project, f"{exc.reason} ({p})", "data.files[0]", expected=exc.expected,
                       found=exc.found) from None
        files = [p]
    elif d["format"] == "npy_stack":
        img = project.path(d["files"][0])
        gv = project.path(d["g_vectors"])
        for p, tag in ((img, "data.files"), (gv, "data.g_vectors")):
            if not p.is_file():
                raise _err(project, "file not found", tag, expected="an existing file",
                           found=str(p))
        var = None
        if d["variance"] not in VARIANCE_KEYWORDS:
            var = project.path(d["variance"])
            if not var.is_file():
                raise _err(project, "variance file not found", "data.variance",
                           expected="'poisson' or an existing .npy file", found=str(var))
            files.append(var)
        stack = read_npy_stack(img, var, gv, variance_floor=d["variance_floor"], **neg)
        files += [img, gv]
    else:
        paths = []
        for i, f in enumerate(d["files"]):
            p = project.path(f)
            if not p.is_file():
                raise _err(project, "data file not found", f"data.files[{i}]",
                           expected="an existing image file", found=str(p))
            if d["format"] not in ("auto",) and p.suffix.lower().lstrip(".") != d["format"]:
                raise _err(project, "file suffix differs from data.format", f"data.files[{i}]",
                           expected=f".{d['format']}", found=p.suffix)
            paths.append(p)
        files += paths
        if d["kind"] == "cbed":
            pat = read_image(paths[0], detector=detector, **neg)
            changes: dict[str, Any] = {"hkl": np.asarray(d["hkl"], int)}
            if d["background"] is not None:
                changes["background"] = d["background"]
            if d["mask"] is not None:
                m, mp = _load_array(project, d["mask"], "data.mask")
                if m.shape != pat.shape:
                    raise _err(project, "mask shape differs from the image", "data.mask",
                               expected=pat.shape, found=m.shape)
                changes["mask"] = m.astype(bool)
                files.append(mp)
            try:
                return CBEDPattern(**{**_fields(pat), **changes}), files
            except InputError as exc:
                raise _err(project, exc.reason, f"data.{exc.tag or 'files'}",
                           expected=exc.expected, found=exc.found) from None
        imgs = []
        for i, p in enumerate(paths):
            im = read_image(p, **neg).image
            if imgs and im.shape != imgs[0].shape:
                raise _err(project, "LACBED images differ in shape", f"data.files[{i}]",
                           expected=imgs[0].shape, found=im.shape)
            imgs.append(im)
        var = None
        if d["variance"] not in VARIANCE_KEYWORDS:
            var, vp = _load_array(project, d["variance"], "data.variance")
            files.append(vp)
            if var.shape != (len(imgs),) + imgs[0].shape:
                raise _err(project, "variance maps must have the shape of the stack",
                           "data.variance", expected=(len(imgs),) + imgs[0].shape,
                           found=var.shape)
        mask = None
        if d["mask"] is not None:
            mask, mp = _load_array(project, d["mask"], "data.mask")
            files.append(mp)
        try:
            stack = LACBEDStack(np.stack(imgs), np.asarray(d["hkl"], int), variance=var,
                                variance_floor=d["variance_floor"], mask=mask,
                                source=str(paths[0].parent))
        except InputError as exc:
            raise _err(project, exc.reason, f"data.{exc.tag or 'files'}", expected=exc.expected,
                       found=exc.found) from None
    if d["variance"] == "estimated":
        from ..experiment.noise import with_estimated_variance

        try:
            stack, _nm = with_estimated_variance(stack)
        except InputError as exc:
            raise _err(project, f"cannot estimate the noise: {exc.reason}", "data.variance",
                       expected=exc.expected, found=exc.found) from None
    return stack, files


def _fields(obj: Any) -> dict:
    from dataclasses import fields

    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def build_setup(project: Project, *, executor: Any = None) -> Setup:
    """Read the crystal and the data and build geometry and regions of a project.

    Parameters
    ----------
    project : Project
    executor : Executor, str or int, optional
        Engine executor (:func:`qcbed.parallel.make_executor`); default the project's
        ``engine.executor``.

    Raises
    ------
    InputError
        Missing or unreadable files, wrong shapes, a geometry that does not fit the
        data, reflections without an image, bad regions.
    """
    crystal, settings, csrc = _read_crystal(project)
    data, files = _read_data(project)
    g = project.geometry
    voltage = g["voltage_kv"] or settings.get("voltage_kv") or getattr(data, "voltage_kv", None)
    if voltage is None:
        raise _err(project, "no accelerating voltage", "geometry.voltage_kv",
                   expected="voltage_kv in kV (or a .dat/Felix crystal source)", found=None)
    try:
        frame = ZoneFrame(crystal.lattice, g["zone"], g["x_axis"], g["normal"])
    except InputError as exc:
        raise _err(project, exc.reason, "geometry." + {"xaxis": "x_axis", "norm": "normal"}.get(
            exc.tag or "zone", exc.tag or "zone"), expected=exc.expected,
            found=exc.found) from None
    zc = crystal.lattice.cartesian_direct(g["zone"])
    gx = crystal.lattice.cartesian_reciprocal(g["x_axis"])
    if np.linalg.norm(np.cross(zc, gx)) < 1e-6 * np.linalg.norm(zc) * np.linalg.norm(gx):
        raise _err(project, "x axis is parallel to the zone axis", "geometry.x_axis",
                   expected="a reciprocal vector not parallel to the zone axis",
                   found=list(g["x_axis"]))
    try:
        geom = ExperimentGeometry(
            frame, data.shape, rotation=g["rotation"], gl=g["gl"], tilt0=g["tilt0"],
            reference=g["reference"], mirror=g["mirror"], shift=g["shift"],
            disc_shifts=g["disc_shifts"], mode=g["mode"], display_shape=g["display_shape"])
    except InputError as exc:
        raise _err(project, exc.reason, f"geometry.{exc.tag or ''}".rstrip("."),
                   expected=exc.expected, found=exc.found) from None
    # reflections
    data_hkl = data.hkl if isinstance(data, LACBEDStack) else np.asarray(data.hkl, int)
    if project.roi["hkl"] is not None:
        hkl = np.asarray(project.roi["hkl"], int).reshape(-1, 3)
        have = {tuple(h) for h in np.asarray(data_hkl)}
        for h in hkl:
            if tuple(h) not in have:
                raise _err(project, "reflection has no image/disc in the data", "roi.hkl",
                           expected="reflections of data.hkl", found=tuple(int(x) for x in h))
    elif isinstance(data, LACBEDStack) and data.metadata.get("felix_hkl") is not None:
        hkl = np.vstack([np.zeros((1, 3), int), np.asarray(data.metadata["felix_hkl"], int)])
    else:
        hkl = np.asarray(data_hkl, int).reshape(-1, 3)
    regions, masks = [], []
    for i, rs in enumerate(project.roi["regions"]):
        try:
            regions.append(Region(np.asarray(rs["corners"]), rs["samples"][0], rs["samples"][1],
                                  rs["pad"]))
        except InputError as exc:
            raise _err(project, exc.reason, f"roi.regions[{i}].{exc.tag}",
                       expected=exc.expected, found=exc.found) from None
        m = np.ones(len(hkl), bool)
        if rs["reflections"] is not None:
            use = {tuple(x) for x in rs["reflections"]}
            known = {tuple(int(v) for v in h) for h in hkl}
            bad = sorted(use - known)
            if bad:
                raise _err(project, "region uses a reflection that is not compared",
                           f"roi.regions[{i}].reflections", expected="reflections of roi.hkl",
                           found=bad[0])
            m = np.array([tuple(int(v) for v in h) in use for h in hkl])
        masks.append(m)
    for h in project.roi["disc_shifts"]:
        if not any(np.array_equal(h, x) for x in hkl):
            raise _err(project, "disc shift of a reflection that is not compared",
                       "roi.disc_shifts", expected="reflections of roi.hkl", found=tuple(h))
    ex = executor if executor is not None else project.engine["executor"]
    try:
        # 'auto': the engine picks (local processes for large jobs, serial for small ones)
        ex_obj = None if ex in (None, "auto") else make_executor(ex)
    except InputError as exc:
        raise _err(project, exc.reason, "engine.executor", expected=exc.expected,
                   found=exc.found) from None
    inputs = [csrc] if csrc.is_file() else sorted(p for p in csrc.iterdir()
                                                  if p.suffix in (".inp", ".cif", ".hkl"))
    return Setup(project=project, crystal=crystal, data=data, geometry=geom, hkl=hkl,
                 regions=regions, masks=np.array(masks), voltage_kv=float(voltage),
                 executor=ex_obj, input_files=inputs + list(files))


def build_dataset_setups(project: Project, *, executor: Any = None) -> list[Setup]:
    """One :class:`Setup` per dataset of a project with ``[[data]]`` blocks; an error's
    key names the block (``data[1].geometry.zone``)."""
    out = []
    for k in range(len(project.datasets)):
        try:
            out.append(build_setup(project.dataset_view(k), executor=executor))
        except InputError as exc:
            raise retag_dataset_error(exc, k) from None
    return out


def retag_dataset_error(exc: InputError, k: int) -> InputError:
    """``exc`` with its key moved into ``[[data]]`` block ``k`` (``geometry.zone`` →
    ``data[k].geometry.zone``, ``data.files[0]`` → ``data[k].files[0]``)."""
    tag = exc.tag or ""
    for sec in ("data", "geometry", "roi", "engine"):
        if tag == sec or tag.startswith(sec + ".") or tag.startswith(sec + "["):
            tag = f"data[{k}]" + tag[len(sec):] if sec == "data" else f"data[{k}].{tag}"
            break
    else:
        tag = f"data[{k}]" + (f": {tag}" if tag else "")
    return InputError(exc.reason, source=exc.source, line=exc.line, tag=tag,
                      expected=exc.expected, found=exc.found)
