"""The plasmon-loss transfer applied to a refinement's model, region by region.

The physics and the transfer are :mod:`qcbed.experiment.plasmon`; this module applies
it to the model intensities of a :class:`~qcbed.refine.fine.Refinement` after the
probe convolution (both are convolutions on the same region grids, so their order
does not matter), with its effect on the derivatives:

* every analytic Jacobian column gets the same (linear) transfer;
* ``thickness`` also acts through τ = t/λ_p: ∂I/∂t += (1/λ_p) ∂I/∂τ;
* ``plasmon.lambda_scale`` s (λ_p = s·λ_p⁰): ∂I/∂s = −(τ/s) ∂I/∂τ.

With a thickness gradient (``thickness.dkx/dky``) τ uses the central thickness.

The transfer acts on the region's *sampled* grid, so the samples must resolve the
pattern: on the Si D-LACBED images the transfer on a grid of every 1–2 detector pixels
reproduces the pixel-level real-space convolution (5 × 5 sub-pixel kernel) to 2–5 % of
the plasmon term, every 8 pixels only to 15–35 %. Regions sampled more coarsely than
:data:`MAX_SPACING_PX` detector pixels are warned about.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputError

__all__ = ["MAX_SPACING_PX", "plasmon_losses", "plasmon_record", "region_steps"]

#: Largest sample spacing (detector pixels) at which the plasmon transfer on the sampled
#: grid is accurate (module docstring); coarser regions get a warning.
MAX_SPACING_PX = 2.0


def region_steps(kt: np.ndarray, start: int, shape: tuple[int, int]) -> np.ndarray:
    """(2, 2) k_t steps (Å⁻¹) of a region's samples along rows and columns.

    The samples ``kt[start : start + ny·nx]`` (row-major) must form a regular
    (affine) grid."""
    ny, nx = shape
    if ny < 2 or nx < 2:
        raise InputError("the plasmon-loss model needs regions of at least 2 x 2 samples",
                         found=shape)
    pts = np.asarray(kt[start:start + ny * nx], float).reshape(ny, nx, 2)
    a0 = pts[1, 0] - pts[0, 0]
    a1 = pts[0, 1] - pts[0, 0]
    ii, jj = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    pred = pts[0, 0] + ii[..., None] * a0 + jj[..., None] * a1
    tol = 1e-6 * max(float(np.linalg.norm(a0)), float(np.linalg.norm(a1)))
    if float(np.max(np.abs(pred - pts))) > tol:
        raise InputError("the plasmon-loss model needs regions sampled on a regular k_t grid",
                         found=f"deviation {float(np.max(np.abs(pred - pts))):.3g} 1/A")
    return np.array([a0, a1])


def _tau(ref) -> tuple[float, float, float]:
    """(τ, λ_p in Å, the λ_p scale) at the current parameter values."""
    t = float(ref.params["thickness"].value)
    s = float(ref.params["plasmon.lambda_scale"].value)
    lam = s * ref.plasmon.mfp
    return t / lam, lam, s


def plasmon_record(ref) -> dict:
    """What the refinement's plasmon-loss model used (for result files), or {}."""
    if getattr(ref, "plasmon", None) is None:
        return {}
    tau, lam, s = _tau(ref)
    p = ref.params["plasmon.lambda_scale"]
    return {**ref.plasmon.as_dict(), "lambda_scale": s, "lambda_scale_esd": p.esd,
            "lambda_scale_refined": bool(p.refine), "mean_free_path_used_A": lam,
            "t_over_lambda": tau}


def plasmon_losses(ref, inten: np.ndarray, grads: dict[str, np.ndarray] | None
                   ) -> np.ndarray:
    """The model intensities (n_refl, n_pts) with the plasmon losses added; updates
    ``grads`` (∂I/∂value per parameter) in place when given."""
    model = ref.plasmon
    tau, lam, s = _tau(ref)
    steps = getattr(ref, "_plasmon_steps", None)
    if steps is None:
        steps = [region_steps(ref.data.kt, reg.start, reg.shape) for reg in ref.data.regions]
        ref._plasmon_steps = steps
        coarse = max((max(getattr(reg, "spacing", (1.0, 1.0))) for reg in ref.data.regions),
                     default=1.0)
        if coarse > MAX_SPACING_PX:
            warnings.warn(f"plasmon losses: region samples {coarse:g} detector pixels apart "
                          f"under-resolve the pattern (the transfer acts on the sampled "
                          f"grid; accurate up to {MAX_SPACING_PX:g} px, roi_step)",
                          UserWarning, stacklevel=2)
    out = inten.copy()
    new = {k: v.copy() for k, v in grads.items()} if grads is not None else None
    want_tau = grads is not None and ("thickness" in grads or
                                      ref.params["plasmon.lambda_scale"].refine)
    if want_tau:
        d_tau = np.zeros_like(inten)
    for reg, st in zip(ref.data.regions, steps):
        sl = slice(reg.start, reg.start + reg.size)
        n = inten.shape[0]
        img = inten[:, sl].reshape(n, *reg.shape)
        if want_tau:
            conv, dt = model.convolve(img, st, tau, derivative=True)
            d_tau[:, sl] = dt.reshape(n, -1)
        else:
            conv = model.convolve(img, st, tau)
        out[:, sl] = conv.reshape(n, -1)
        if new:
            names = list(new)
            stack = np.stack([grads[k][:, sl].reshape(n, *reg.shape) for k in names])
            conv_g = model.convolve(stack, st, tau)
            for k, g in zip(names, conv_g):
                new[k][:, sl] = g.reshape(n, -1)
    if grads is not None:
        if "thickness" in grads:
            new["thickness"] = new["thickness"] + d_tau / lam
        if ref.params["plasmon.lambda_scale"].refine:
            new["plasmon.lambda_scale"] = -(tau / s) * d_tau
        grads.clear()
        grads.update(new)
    return out
