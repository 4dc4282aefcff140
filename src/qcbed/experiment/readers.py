"""Readers of experimental images: DM3/DM4, Felix D-LACBED folders, PyExtal ``.npy``, TIFF.

Every reader validates the pixels: missing files, shape mismatches, NaN or
negative pixels raise :class:`qcbed.errors.InputError` with the file, how many
pixels and the first few pixel indices. Negative pixels can be set to zero with
``clip_negative=True`` or kept with ``allow_negative=True`` (background-subtracted
data); neither happens silently.

* :func:`read_dm` — one DM3/DM4 image (rosettasciio,
  ``rsciio.digitalmicrograph.file_reader``) → :class:`CBEDPattern`;
* :func:`read_pattern` (alias :func:`read_image`) — ``.dm3``/``.dm4``/``.npy``/``.tif``/
  ``.tiff`` by suffix → :class:`CBEDPattern`: the one reader of CBED patterns;
* :func:`read_felix_images` — a Felix D-LACBED folder (one ``<name>_+h+k+l.dm3`` per
  reflection, ``felix.inp``/``felix.cif``/``felix.hkl``) → :class:`LACBEDStack` with
  the Felix image geometry attached;
* :func:`read_npy_stack` — PyExtal-style ``.npy`` image stack + variance ``.npy`` +
  g-vector ``.npy`` → :class:`LACBEDStack`;
* :func:`read_lacbed` — either of the two by the path: the one reader of LACBED stacks.
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..bloch.geometry import ZoneFrame
from ..errors import InputError
from ..io.felix import felix_image_files, read_felix
from .detector import DetectorModel
from .geometry import ExperimentGeometry
from .patterns import CBEDPattern, LACBEDStack, check_pixels

__all__ = ["load_npy", "read_dm", "read_felix_images", "read_image", "read_lacbed",
           "read_npy_stack", "read_pattern"]

PathType = str | PathLike[str]


def _existing(path: PathType, what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such {what}", source=p, found="missing")
    if what == "file" and not p.is_file():
        raise InputError("not a file", source=p, found="a folder")
    return p


# ====================================================================== DM3/DM4
def _dm_array(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The squeezed 2-D image and its axes/metadata from a DM3/DM4 file."""
    try:
        from rsciio.digitalmicrograph import file_reader
    except ImportError as exc:  # pragma: no cover - rosettasciio is a dependency
        raise InputError("reading DM3/DM4 needs rosettasciio", source=path) from exc
    try:
        signals = file_reader(str(path))
    except Exception as exc:  # rsciio raises many kinds of errors for bad files
        raise InputError(f"cannot read the DM file: {exc}", source=path) from None
    if not signals:
        raise InputError("the DM file holds no image", source=path)
    sig = signals[0]
    data = np.asarray(sig["data"])
    axes = [a for a in sig.get("axes", []) if a.get("size", 1) > 1]
    img = np.squeeze(data)
    if img.ndim != 2:
        raise InputError("expected a single 2-D image", source=path, expected="(H, W)",
                         found=data.shape)
    meta: dict[str, Any] = {"axes": axes, "metadata": sig.get("metadata", {})}
    return img, meta


def _pixel_size(meta: dict[str, Any]) -> float | None:
    """Å⁻¹ per pixel from DM axes calibrated in 1/nm or 1/Å (else None)."""
    axes = meta.get("axes", [])
    if len(axes) < 2:
        return None
    units = {str(a.get("units", "")).strip() for a in axes[-2:]}
    scales = [float(a.get("scale", 1.0)) for a in axes[-2:]]
    if len(units) != 1 or not np.isclose(scales[0], scales[1], rtol=1e-6):
        return None
    u = units.pop().replace(" ", "")
    factor = {"1/nm": 0.1, "nm^-1": 0.1, "nm-1": 0.1, "1/Å": 1.0, "1/A": 1.0}.get(u)
    return None if factor is None else scales[0] * factor


def read_dm(path: PathType, *, detector: DetectorModel | None = None,
            clip_negative: bool = False, allow_negative: bool = False,
            voltage_kv: float | None = None) -> CBEDPattern:
    """Read one DM3/DM4 image as a :class:`CBEDPattern`.

    Parameters
    ----------
    path : str or path
        ``.dm3`` or ``.dm4`` file (a singleton leading axis is squeezed).
    detector : DetectorModel, optional
        Detector model to attach (default: Poisson).
    clip_negative, allow_negative : bool
        What to do with negative pixels (default: InputError).
    voltage_kv : float, optional
        Accelerating voltage to record (kV).

    Returns
    -------
    CBEDPattern
        ``pixel_size`` (Å⁻¹ per pixel) is set when the file is calibrated in 1/nm or
        1/Å; the DM axes and metadata are in ``metadata``.
    """
    p = _existing(path)
    img, meta = _dm_array(p)
    img = check_pixels(img, p, clip_negative=clip_negative, allow_negative=allow_negative)
    return CBEDPattern(img, detector or DetectorModel(), pixel_size=_pixel_size(meta),
                       voltage_kv=voltage_kv, source=str(p), metadata=meta)


# ====================================================================== generic image
def load_npy(path: PathType, tag: str | None = None) -> np.ndarray:
    """The array of a NumPy ``.npy`` file (no pickles), or an InputError saying why not.

    Parameters
    ----------
    path : str or path
        The file.
    tag : str, optional
        The key that named the file (project files), shown in messages.

    Raises
    ------
    InputError
        Missing file, a file that is not ``.npy`` (text, another format, empty),
        a truncated file or one holding pickled objects.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", source=p,
                         tag=tag) from None
    if not head.startswith(b"\x93NUMPY"):
        try:
            head.decode("utf-8")
            looks = "text" if head else "an empty file"
        except UnicodeDecodeError:
            looks = "binary data of another format"
        raise InputError("not a NumPy .npy file", source=p, tag=tag,
                         expected="a file written by numpy.save (starting with \\x93NUMPY)",
                         found=looks)
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, EOFError, SyntaxError, TokenError…
        raise InputError(f"cannot read the .npy file: {exc}", source=p, tag=tag) from None


def _read_array(p: Path) -> tuple[np.ndarray, dict[str, Any]]:
    suffix = p.suffix.lower()
    if suffix in (".dm3", ".dm4"):
        return _dm_array(p)
    if suffix == ".npy":
        return load_npy(p), {}
    if suffix in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError as exc:
            raise InputError("reading TIFF needs the tifffile package "
                             "(pip install tifffile)", source=p) from exc
        try:
            return np.asarray(tifffile.imread(p)), {}
        except Exception as exc:  # tifffile raises several kinds
            raise InputError(f"cannot read the TIFF file: {exc}", source=p) from None
    raise InputError("unknown image format", source=p,
                     expected=".dm3, .dm4, .npy, .tif or .tiff", found=suffix or "no suffix")


def read_pattern(path: PathType, *, detector: DetectorModel | None = None,
                 clip_negative: bool = False, allow_negative: bool = False,
                 voltage_kv: float | None = None) -> CBEDPattern:
    """Read a single image (``.dm3``, ``.dm4``, ``.npy``, ``.tif``/``.tiff``) as a CBED pattern.

    TIFF needs ``tifffile`` (imported only when used). Singleton axes are squeezed.
    See :func:`read_dm` for the options.
    """
    p = _existing(path)
    arr, meta = _read_array(p)
    img = np.squeeze(np.asarray(arr))
    if img.ndim != 2:
        raise InputError("expected a single 2-D image", source=p, expected="(H, W)",
                         found=np.shape(arr))
    img = check_pixels(img, p, clip_negative=clip_negative, allow_negative=allow_negative)
    return CBEDPattern(img, detector or DetectorModel(), pixel_size=_pixel_size(meta),
                       voltage_kv=voltage_kv, source=str(p), metadata=meta)


#: The former name of :func:`read_pattern` (the same function).
read_image = read_pattern


def read_lacbed(path: PathType, **kw: Any) -> LACBEDStack:
    """Read a LACBED stack: a Felix D-LACBED folder or a PyExtal ``.npy`` image stack.

    Parameters
    ----------
    path : path
        A folder (:func:`read_felix_images`) or a ``.npy`` stack (:func:`read_npy_stack`;
        pass ``variance=`` and ``g_vectors=`` there).
    **kw
        Passed to the reader.
    """
    p = Path(path)
    if p.is_dir():
        return read_felix_images(p, **kw)
    if p.suffix.lower() == ".npy":
        return read_npy_stack(p, **kw)
    if not p.exists():
        raise InputError("no such file or folder", source=p, found="missing")
    raise InputError("unknown LACBED stack format", source=p,
                     expected="a Felix D-LACBED folder or a .npy image stack",
                     found=p.suffix or "no suffix")


# ====================================================================== PyExtal npy
def read_npy_stack(images: PathType | ArrayLike, variance: PathType | ArrayLike | None = None,
                   g_vectors: PathType | ArrayLike | None = None, *,
                   geometry: ExperimentGeometry | None = None, clip_negative: bool = False,
                   allow_negative: bool = False, variance_floor: float = 1.0,
                   voltage_kv: float | None = None) -> LACBEDStack:
    """A PyExtal-style LARBED stack: images (n, H, W), variances (n, H, W), g vectors (n, 3).

    Parameters
    ----------
    images : path or array
        ``.npy`` file or array of shape (n_refl, H, W).
    variance : path or array, optional
        Variance maps of the same shape (> 0). Default: Poisson, max(I, floor).
    g_vectors : path or array
        hkl of every image, (n_refl, 3) integers (PyExtal's ``gindex``).
    geometry : ExperimentGeometry, optional
        Pixel ↔ k_t geometry, if known.
    clip_negative, allow_negative : bool
        What to do with negative pixels (default: InputError).
    variance_floor : float
        Floor of the default Poisson variance.

    Raises
    ------
    InputError
        Missing files, wrong shapes (image count ≠ g-vector count, variance shape),
        non-integer g vectors, NaN or negative pixels, non-positive variances.
    """
    if g_vectors is None:
        raise InputError("the g vectors (hkl of every image) are required",
                         source="read_npy_stack", tag="g_vectors")

    def load(x, name):
        if isinstance(x, (str, PathLike)):
            p = _existing(x)
            return load_npy(p), str(p)
        return np.asarray(x), name

    imgs, src = load(images, "images")
    if imgs.ndim != 3:
        raise InputError("the image stack must be (n_refl, H, W)", source=src,
                         found=imgs.shape)
    imgs = check_pixels(imgs, src, clip_negative=clip_negative, allow_negative=allow_negative)
    g, gsrc = load(g_vectors, "g_vectors")
    g = np.asarray(g)
    if g.ndim != 2 or g.shape[1] != 3:
        raise InputError("g vectors must be (n_refl, 3)", source=gsrc, found=g.shape)
    if len(g) != len(imgs):
        raise InputError("number of g vectors differs from the number of images",
                         source=gsrc, expected=len(imgs), found=len(g))
    var = None
    if variance is not None:
        var, vsrc = load(variance, "variance")
        if var.shape != imgs.shape:
            raise InputError("variance maps must have the shape of the images", source=vsrc,
                             expected=imgs.shape, found=var.shape)
        bad = ~np.isfinite(var) | (var <= 0)
        if bad.any():
            first = [tuple(int(v) for v in r) for r in np.argwhere(bad)[:5]]
            raise InputError(f"{int(bad.sum())} variance pixels are not positive and finite "
                             f"(first at {first})", source=vsrc, expected="> 0",
                             found=int(bad.sum()))
    return LACBEDStack(imgs, g, variance=var, variance_floor=variance_floor,
                       geometry=geometry, voltage_kv=voltage_kv, source=src,
                       metadata={"g_vectors": gsrc})


# ====================================================================== Felix
def _felix_image_radius(shape: tuple[int, ...], radius: int, inp: Path) -> int:
    """The image radius the Felix images imply (they win over ``image_radius``).

    Felix images are 2R × 2R pixels spanning ± ``convergence_angle``; older input
    files may give an ``image_radius`` that differs from the images. The images
    are followed (the pixel size becomes convergence_angle / (size/2)), with a
    warning; images that are not square with an even size are refused.
    """
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] % 2:
        raise InputError("Felix D-LACBED images must be square with an even size "
                         "(2·image_radius pixels)", source=inp, tag="image_radius",
                         expected=(2 * radius, 2 * radius), found=tuple(shape))
    if shape[0] != 2 * radius:
        warnings.warn(f"{inp}: image_radius = {radius} but the images are "
                      f"{shape[0]} x {shape[1]} pixels; following the images (image radius "
                      f"{shape[0] // 2}, pixel size convergence_angle/{shape[0] // 2})",
                      UserWarning, stacklevel=3)
    return shape[0] // 2


def read_felix_images(folder: PathType, *, clip_negative: bool = False,
                      allow_negative: bool = False, require_hkl: bool = True,
                      variance_floor: float = 1.0) -> LACBEDStack:
    """Read a Felix D-LACBED folder: one ``<name>_+h+k+l.dm3`` image per reflection.

    The images are ordered 000 first, then the reflections of ``felix.hkl`` in file
    order, then any other images in file-name order. The stack's geometry is the
    Felix image geometry (:meth:`ExperimentGeometry.felix`, identical to
    :meth:`qcbed.bloch.grids.TiltGrid.felix`) in the zone frame of ``felix.inp``
    (incident beam direction, x direction, normal) and the lattice of ``felix.cif``.

    Parameters
    ----------
    folder : str or path
        The Felix folder.
    clip_negative, allow_negative : bool
        What to do with negative pixels (default: InputError).
    require_hkl : bool
        Every reflection of ``felix.hkl`` (and 000) must have an image (default);
        otherwise the missing ones are skipped with a warning.
    variance_floor : float
        Floor of the Poisson variance maps.

    Returns
    -------
    LACBEDStack
        ``metadata['felix_hkl']`` is the (n, 3) list of ``felix.hkl``; ``voltage_kv``
        from ``felix.inp``; Poisson variances.

    Raises
    ------
    InputError
        Missing folder/files, images of different or wrong shape (2R × 2R expected),
        missing images for ``felix.hkl`` reflections, NaN or negative pixels.
    """
    d = _existing(folder, "folder")
    with warnings.catch_warnings():
        # scattering-factor/CIF remarks concern the simulation set-up, not the images
        warnings.simplefilter("ignore", UserWarning)
        inp = read_felix(d)
    files = felix_image_files(d)
    if not files:
        raise InputError("no <name>_+h+k+l.dm3 images in the Felix folder", source=d,
                         expected="one image per reflection", found="none")
    wanted = [(0, 0, 0)] + [tuple(int(v) for v in h) for h in inp.hkl]
    missing = [h for h in wanted if h not in files]
    if missing:
        msg = (f"{len(missing)} reflections of felix.hkl (with 000) have no image "
               f"(first: {missing[:5]})")
        if require_hkl:
            raise InputError(msg, source=d, expected="<name>_+h+k+l.dm3 for each",
                             found=len(missing))
        warnings.warn(f"{d}: {msg}; they are skipped", UserWarning, stacklevel=2)
    order = [h for h in wanted if h in files] + [h for h in files if h not in set(wanted)]
    images = []
    for h in order:
        img, _ = _dm_array(files[h])
        if images and img.shape != images[0].shape:
            raise InputError("the images of a Felix folder differ in size", source=files[h],
                             expected=images[0].shape, found=img.shape)
        images.append(check_pixels(img, files[h], clip_negative=clip_negative,
                                   allow_negative=allow_negative))
    radius = _felix_image_radius(images[0].shape, inp.image_radius, d / "felix.inp")
    frame = ZoneFrame(inp.crystal.lattice, tuple(inp.zone), tuple(inp.x_direction),
                      tuple(inp.zone_normal))
    geom = ExperimentGeometry.felix(frame, inp.convergence_angle, radius)
    return LACBEDStack(np.stack(images), np.array(order, dtype=int),
                       variance_floor=variance_floor, geometry=geom,
                       voltage_kv=inp.accelerating_voltage_kv, source=str(d),
                       metadata={"felix_hkl": np.asarray(inp.hkl).copy(),
                                 "files": [str(files[h]) for h in order],
                                 "thickness": inp.initial_thickness})
