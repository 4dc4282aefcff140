"""The bottom layer: mechanisms every other folder shares, written once.

* :mod:`~qcbed._core.hkl` — reflection keys ``"h,k,l"`` and names ``"U(h,k,l)"``;
* :mod:`~qcbed._core.files` — atomic file writes (temporary file + ``os.replace``);
* :mod:`~qcbed._core.jsonio` — strict JSON encoding (numpy scalars/arrays, NaN → null);
* :mod:`~qcbed._core.parameters` — :class:`Parameter`, :class:`ParameterSet` and the
  grammar of refinable-parameter names.

Together with :mod:`qcbed.errors` and :mod:`qcbed.constants` (public paths kept) this
layer imports nothing else from qcbed (see ``docs/architecture.md``).
"""
