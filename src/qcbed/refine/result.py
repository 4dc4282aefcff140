"""One interface for refinement outcomes, in the style of ``scipy.optimize.OptimizeResult``.

Every result of :mod:`qcbed.refine` (:class:`~qcbed.refine.fine.RefinementResult`,
:class:`~qcbed.refine.coarse.CoarseResult`) offers

=================  =====================================================
``names``          names of the entries of ``x``
``x``              the solution, ndarray (units of the parameters)
``x_esd``          estimated standard deviations of ``x`` (NaN: none)
``success``        whether the optimiser stopped on a convergence test
``message``        why it stopped
``nit``, ``nfev``  iterations, simulations (engine solves)
``correlation_matrix``  (p, p) correlation of ``x`` (NaN: not estimated)
``model``          the model intensities at the solution (or None)
``experiment``     the experimental intensities compared (or None)
=================  =====================================================

and :meth:`~RefinementOutcome.as_dict`, :meth:`~RefinementOutcome.keys` and
item access (``res["x"]``), as ``OptimizeResult`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OUTCOME_FIELDS = ("names", "x", "x_esd", "success", "message", "nit", "nfev",
                  "correlation_matrix", "model", "experiment")


class RefinementOutcome:
    """Base of the refinement results: the shared fields of :data:`OUTCOME_FIELDS`.

    Subclasses define the fields (as attributes or properties).
    """

    names: list[str]
    x: np.ndarray
    x_esd: np.ndarray
    success: bool
    message: str
    nit: int
    nfev: int
    correlation_matrix: np.ndarray
    model: np.ndarray | None
    experiment: np.ndarray | None

    def keys(self) -> tuple[str, ...]:
        """The shared field names."""
        return OUTCOME_FIELDS

    def __getitem__(self, key: str) -> Any:
        if key not in OUTCOME_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        """The shared fields as a dict."""
        return {k: getattr(self, k) for k in OUTCOME_FIELDS}

    def values_dict(self) -> dict[str, float]:
        """{name: value} of the solution."""
        return {n: float(v) for n, v in zip(self.names, self.x)}
