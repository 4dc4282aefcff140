"""Images that are copies of each other: symmetrised data are not independent measurements.

Processed LACBED sets are often symmetrised: the image of a reflection is
replaced by a mirrored or rotated copy of a symmetry-equivalent one (the
shared Si D-LACBED holds 45 images of which 17 are independent: the
±h±h±l images are exact left–right and up–down mirrors of each other).
Counting such copies as independent data multiplies the information the fit
believes it has: the χ²-scaled esds shrink by √m for a family of m copies.

:func:`copy_groups` finds images equal to another one under the eight
operations of the square (identity, the two mirrors, the transpose and
anti-transpose, the three rotations), to a relative tolerance. A refinement
weights each compared image by 1/m, m the number of compared images in its
group, and counts Σ 1/m per sample in the degrees of freedom, so every
independent image counts once (Press et al. 2007, §15.1: χ² over independent
measurements).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError

__all__ = ["SQUARE_OPERATIONS", "copies_summary", "copy_groups", "copy_multiplicity",
           "copy_operations"]

#: The eight operations of the square as functions of an image (for non-square
#: images only the first four apply).
SQUARE_OPERATIONS: dict[str, object] = {
    "identity": lambda a: a,
    "mirror_lr": lambda a: a[:, ::-1],
    "mirror_ud": lambda a: a[::-1, :],
    "rotate_180": lambda a: a[::-1, ::-1],
    "transpose": lambda a: a.T,
    "anti_transpose": lambda a: a[::-1, ::-1].T,
    "rotate_90": lambda a: np.rot90(a, 1),
    "rotate_270": lambda a: np.rot90(a, -1),
}


def _same(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol))


def _prepared(images: ArrayLike, rtol: float) -> tuple[np.ndarray, float, dict]:
    """Images (NaN → inf), the absolute tolerance and the operations that apply."""
    imgs = np.asarray(images, dtype=float)
    if imgs.ndim != 3:
        raise InputError("copy detection needs a stack of images (n, H, W)", tag="images",
                         found=imgs.shape)
    if not (np.isfinite(rtol) and rtol >= 0):
        raise InputError("rtol must be a finite number >= 0", tag="rtol", found=rtol)
    imgs = np.nan_to_num(imgs, nan=np.inf)
    finite = np.isfinite(imgs)
    scale = float(np.abs(imgs[finite]).max()) if finite.any() else 1.0
    names = list(SQUARE_OPERATIONS)
    if imgs.shape[1] != imgs.shape[2]:
        names = names[:4]
    return imgs, rtol * scale, {k: SQUARE_OPERATIONS[k] for k in names}


def _copy_matches(images: ArrayLike, rtol: float
                  ) -> tuple[np.ndarray, set[str]]:
    """Group labels and the names of the non-identity operations seen between copies
    (or mapping an image onto itself)."""
    imgs, tol, ops = _prepared(images, rtol)
    labels = np.full(len(imgs), -1)
    reps: list[int] = []
    seen: set[str] = set()
    # a cheap fingerprint first: the sorted pixel values are invariant under every
    # operation, so only images with equal sorted values can be copies
    keys = [np.sort(im.ravel()) for im in imgs]
    for i, im in enumerate(imgs):
        seen.update(k for k, op in ops.items()
                    if k != "identity" and _same(op(im), im, tol))
        for g, r in enumerate(reps):
            if not _same(keys[i], keys[r], tol):
                continue
            hits = [k for k, op in ops.items() if _same(op(imgs[r]), im, tol)]
            if hits:
                labels[i] = g
                seen.update(k for k in hits if k != "identity")
                break
        else:
            labels[i] = len(reps)
            reps.append(i)
    return labels, seen


def copy_groups(images: ArrayLike, rtol: float = 1e-6) -> np.ndarray:
    """Group label of every image; images in one group are copies of each other.

    Parameters
    ----------
    images : array_like (n, H, W)
        The images (any units); NaN pixels compare equal to NaN.
    rtol : float
        Two images are copies when one equals the other under one of the
        operations of the square to within ``rtol`` × the largest |pixel| of the
        stack (exact copies, not look-alikes: a real measurement of a
        symmetry-equivalent reflection differs by its noise).

    Returns
    -------
    ndarray (n,) int
        Group labels 0, 1, … in order of first appearance.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(12.0).reshape(3, 4)
    >>> copy_groups([a, a[:, ::-1], a + 1]).tolist()
    [0, 0, 1]
    """
    return _copy_matches(images, rtol)[0]


def copy_operations(images: ArrayLike, rtol: float = 1e-6) -> list[str]:
    """Names of the image operations (:data:`SQUARE_OPERATIONS`, not the identity)
    under which an image of the stack is an exact copy of another one or of itself.

    Two parts of the image plane related by one of these operations carry the same
    data for the copied images, so disjoint regions meant to be independent must
    not be images of each other under them (:func:`qcbed.refine.reproducibility.
    independent_tiles`).

    Parameters
    ----------
    images : array_like (n, H, W)
    rtol : float
        As :func:`copy_groups`.

    Returns
    -------
    list of str
        In the order of :data:`SQUARE_OPERATIONS`; empty without copies.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(12.0).reshape(3, 4)
    >>> copy_operations([a, a[:, ::-1], a + 1])
    ['mirror_lr']
    """
    seen = _copy_matches(images, rtol)[1]
    return [k for k in SQUARE_OPERATIONS if k in seen]


def copy_multiplicity(groups: ArrayLike) -> np.ndarray:
    """Number of members of each element's group (1 for an independent image).

    Examples
    --------
    >>> copy_multiplicity([0, 0, 1, 0]).tolist()
    [3, 3, 1, 3]
    """
    g = np.asarray(groups, dtype=int)
    _, inv, counts = np.unique(g, return_inverse=True, return_counts=True)
    return counts[inv]


def copies_summary(multiplicity: ArrayLike | None) -> str:
    """``"the n compared images hold k independent ones …"``, or ``""`` without copies.

    Examples
    --------
    >>> copies_summary([2, 2, 1])
    'the 3 compared images hold 2 independent ones (exact mirrored/rotated copies: counted once)'
    """
    if multiplicity is None:
        return ""
    m = np.asarray(multiplicity, float)
    if not np.any(m > 1):
        return ""
    return (f"the {len(m)} compared images hold {float(np.sum(1.0 / m)):.0f} independent "
            "ones (exact mirrored/rotated copies: counted once)")
