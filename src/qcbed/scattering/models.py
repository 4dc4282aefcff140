"""Registry of scattering-factor parameterisations.

Every elastic model is a function ``f(element, s, charge) -> f_e`` returning the
electron scattering factor f_e in Å at s = sinθ/λ = |g|/2 (Å⁻¹), in the
first-Born convention of Kirkland (2010, eq. 5.15) and the International
Tables Vol. C §4.3 (f_e(0) ≈ 5.8 Å for Si). Models register themselves under
a short name; :func:`elastic_form_factor` dispatches.

Absorptive models return f′_e(s) in Å for a given element, B (Å²) and
accelerating voltage, such that the absorptive structure factor is
F′_g = Σ_j occ_j f′_j(s) exp(−2πi g·r_j) (the Debye–Waller factor is already
inside f′ for thermal-diffuse absorption; see :mod:`qcbed.scattering.absorption`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError

#: (element, s [Å⁻¹] array, charge) -> f_e [Å] array
ElasticFunction = Callable[[str, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class ElasticModel:
    """A registered elastic electron scattering-factor parameterisation.

    Attributes
    ----------
    name : str
        Registry key (``'kirkland'``).
    function : ElasticFunction
        f_e(element, s, charge) in Å.
    reference : str
        Full citation of the published parameters.
    elements : frozenset of str
        Elements (neutral) the table covers.
    s_max : float
        Largest s (Å⁻¹) for which the fit is published as valid.
    """

    name: str
    function: ElasticFunction
    reference: str
    elements: frozenset[str]
    s_max: float = np.inf


_ELASTIC: dict[str, ElasticModel] = {}
_ALIASES = {
    "kirkland2010": "kirkland", "lobato2014": "lobato", "lobato_van_dyck": "lobato",
    "peng1996": "peng", "doyle-turner": "doyle_turner", "doyleturner": "doyle_turner",
    "dt": "doyle_turner", "weickenmeier_kohl": "wk", "weickenmeier-kohl": "wk",
    "mott_bethe": "xray_mott_bethe", "mott-bethe": "xray_mott_bethe", "xray": "xray_mott_bethe",
    "coppens": "kappa", "hansen_coppens": "kappa", "hansen-coppens": "kappa",
    "clementi_roetti": "kappa", "clementi-roetti": "kappa",
}


def canonical_model_name(name: str) -> str:
    """Canonical registry key for a model name or alias (case-insensitive)."""
    key = name.strip().lower().replace(" ", "_")
    return _ALIASES.get(key, key)


def register_elastic(model: ElasticModel) -> None:
    """Add an elastic model to the registry (replacing one of the same name)."""
    _ELASTIC[model.name] = model


def elastic_model(name: str) -> ElasticModel:
    """The registered elastic model called ``name`` (aliases accepted)."""
    _load_builtin_models()
    key = canonical_model_name(name)
    if key not in _ELASTIC:
        raise InputError("unknown scattering-factor model", expected=sorted(_ELASTIC),
                         found=name)
    return _ELASTIC[key]


def available_elastic_models() -> list[str]:
    """Names of the registered elastic models."""
    _load_builtin_models()
    return sorted(_ELASTIC)


def elastic_form_factor(element: str, s: ArrayLike, model: str = "kirkland",
                        charge: int = 0) -> np.ndarray:
    """Electron scattering factor f_e(s) in Å.

    Parameters
    ----------
    element : str
        Element symbol (``'Si'``).
    s : array_like
        s = sinθ/λ = |g|/2 in Å⁻¹ (≥ 0).
    model : str
        Parameterisation: see :func:`available_elastic_models`.
    charge : int
        Formal ionic charge; models without ionic tables use the neutral atom.

    Returns
    -------
    ndarray
        f_e in Å, same shape as ``s``.
    """
    m = elastic_model(model)
    s_arr = np.abs(np.asarray(s, dtype=float))
    return m.function(element, s_arr, int(charge))


_LOADED = False


def _load_builtin_models() -> None:
    """Import the modules that register the built-in models (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from importlib import import_module

    for mod in ("parameterisations", "weickenmeier_kohl", "kappa"):
        try:
            import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:  # pragma: no cover - during development only
            if exc.name != f"{__package__}.{mod}":
                raise
