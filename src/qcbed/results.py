"""Alias of :mod:`qcbed.output.results` (the documented path; the same module object)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("qcbed.output.results")
