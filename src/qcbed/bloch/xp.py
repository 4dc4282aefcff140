"""Array-module dispatch for the Bloch-wave kernel: one algorithm for numpy and torch.

The kernel (:mod:`qcbed.bloch.solver`, :mod:`~qcbed.bloch.perturbation`,
:mod:`~qcbed.bloch.guard`) is written once against the few operations below and
takes its array module from its arguments (:func:`namespace`), in the manner of the
Python array API standard's ``array_namespace``. Everything else it uses —
arithmetic, ``@``, indexing, ``.conj()``, ``.swapaxes``, ``.real``/``.imag``,
``.sum/.any/.all(axis=…)`` — is spelled the same in numpy and torch.

:class:`NumpyOps` runs on the host (LAPACK through ``numpy.linalg``);
:class:`TorchOps` on a torch device (CPU or CUDA). torch is never imported here:
a :class:`TorchOps` is made from a tensor, whose module supplies torch.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np


class NumpyOps:
    """The kernel's operations in numpy (host, LAPACK)."""

    name = "numpy"
    complex = np.complex128
    bool = np.bool_
    linalg_errors: tuple[type[BaseException], ...] = (np.linalg.LinAlgError,)
    #: Most complex elements per batched step; None: the host's
    #: :data:`qcbed.bloch.solver.BATCH_ELEMENTS`.
    batch_elements: int | None = None

    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        """A host array → this module's array (no copy when nothing changes)."""
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def is_complex(self, a: np.ndarray) -> bool:
        return np.iscomplexobj(a)

    def to_complex(self, a: np.ndarray) -> np.ndarray:
        return a.astype(np.complex128, copy=False)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def nonzero(self, mask: np.ndarray) -> np.ndarray:
        """Indices of the true entries of a 1-D mask."""
        return np.nonzero(mask)[0]

    def take(self, table: np.ndarray, index: np.ndarray) -> np.ndarray:
        """table[index] for a 1-D table and any index array."""
        return table.take(index)

    def stack(self, arrays: list, axis: int) -> np.ndarray:
        return np.stack(arrays, axis)

    def amax(self, a: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
        return np.amax(a, axis=axis)

    def maximum(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(a, b)

    def isfinite(self, a: np.ndarray) -> np.ndarray:
        return np.isfinite(a)

    def exp(self, a: np.ndarray) -> np.ndarray:
        return np.exp(a)

    def einsum(self, spec: str, *ops: np.ndarray) -> np.ndarray:
        return np.einsum(spec, *ops)

    def real_times_complex(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a @ b for a real ``a`` and a complex ``b``: one real product over b's
        interleaved real and imaginary parts (half the flops of a complex product)."""
        b = np.ascontiguousarray(b)
        return (a @ b.view(np.float64)).view(np.complex128)

    def complex_from(self, re: np.ndarray, im: np.ndarray) -> np.ndarray:
        """re + i·im from two real arrays (written in place: no complex temporaries)."""
        out = np.empty(re.shape, np.complex128)
        out.real = re
        out.imag = im
        return out

    def sq_norms(self, x: np.ndarray, axis: int) -> np.ndarray:
        """Σ |x|² over ``axis`` (1: columns, 2: rows) of a batch of matrices (g, n, m):
        one fused pass over the interleaved real and imaginary parts."""
        if not np.iscomplexobj(x):
            return np.einsum("gjk,gjk->gj" if axis == 2 else "gjk,gjk->gk", x, x)
        v = np.ascontiguousarray(x).view(np.float64)
        if axis == 2:
            return np.einsum("gjk,gjk->gj", v, v)
        return np.einsum("gjk,gjk->gk", v, v).reshape(len(x), -1, 2).sum(-1)

    def eigh(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.linalg.eigh(a)

    def eig(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.linalg.eig(a)

    def solve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.solve(a, b)

    def inv(self, a: np.ndarray) -> np.ndarray:
        return np.linalg.inv(a)

    def errstate(self) -> contextlib.AbstractContextManager:
        """Silence invalid-value warnings of comparisons with NaN."""
        return np.errstate(invalid="ignore")


class TorchOps(NumpyOps):
    """The kernel's operations in torch on one device (CPU or CUDA).

    Parameters
    ----------
    torch : module
        The torch module.
    device : torch.device
    """

    name = "torch"

    def __init__(self, torch: Any, device: Any) -> None:
        self.torch = torch
        self.device = device
        self.complex = torch.complex128
        self.bool = torch.bool
        self.linalg_errors = (RuntimeError,)
        # GPUs want large batches; on the CPU the host's cache-friendly size
        self.batch_elements = 1 << 26 if device.type == "cuda" else None

    def asarray(self, a: Any, dtype: Any = None):
        if isinstance(a, self.torch.Tensor):
            return a.to(device=self.device, dtype=dtype or a.dtype)
        a = np.asarray(a)
        if a.dtype == np.bool_ or dtype is not None:
            return self.torch.as_tensor(np.ascontiguousarray(a), dtype=dtype,
                                        device=self.device)
        return self.torch.as_tensor(np.ascontiguousarray(a), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy()

    def is_complex(self, a) -> bool:
        return a.is_complex()

    def to_complex(self, a):
        return a if a.dtype == self.torch.complex128 else a.to(self.torch.complex128)

    def zeros(self, shape, dtype):
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def _dtype(self, dtype):
        table = {complex: self.torch.complex128, np.complex128: self.torch.complex128,
                 bool: self.torch.bool, np.bool_: self.torch.bool,
                 float: self.torch.float64, np.float64: self.torch.float64}
        return table.get(dtype, dtype)

    def arange(self, n: int):
        return self.torch.arange(n, device=self.device)

    def nonzero(self, mask):
        return self.torch.nonzero(mask)[:, 0]

    def take(self, table, index):
        return table[index]

    def stack(self, arrays: list, axis: int):
        return self.torch.stack(arrays, axis)

    def amax(self, a, axis):
        return self.torch.amax(a, dim=axis)

    def maximum(self, a, b):
        return self.torch.maximum(a, b)

    def isfinite(self, a):
        return self.torch.isfinite(a)

    def exp(self, a):
        return self.torch.exp(a)

    def einsum(self, spec: str, *ops):
        return self.torch.einsum(spec, *ops)

    def real_times_complex(self, a, b):
        torch = self.torch
        b = b.resolve_conj().contiguous()
        br = torch.view_as_real(b).reshape(*b.shape[:-1], 2 * b.shape[-1])
        out = a @ br
        return torch.view_as_complex(out.reshape(*out.shape[:-1], -1, 2).contiguous())

    def complex_from(self, re, im):
        return self.torch.complex(re, im)

    def sq_norms(self, x, axis: int):
        if not x.is_complex():
            return (x * x).sum(axis)
        return (x.real ** 2 + x.imag ** 2).sum(axis)

    def eigh(self, a):
        return self.torch.linalg.eigh(a)

    def eig(self, a):
        return self.torch.linalg.eig(a)

    def solve(self, a, b):
        return self.torch.linalg.solve(a, b)

    def inv(self, a):
        return self.torch.linalg.inv(a)

    def errstate(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


NUMPY = NumpyOps()


def namespace(a: Any) -> NumpyOps:
    """The operations for the array module of ``a`` (a numpy array or a torch tensor)."""
    if isinstance(a, np.ndarray | np.generic):
        return NUMPY
    mod = type(a).__module__
    if mod.startswith("torch"):
        return TorchOps(sys.modules["torch"], a.device)
    raise TypeError(f"the Bloch-wave kernel runs on numpy arrays or torch tensors, "
                    f"not {type(a).__name__}")
