"""What a run leaves behind: result files with provenance, the HTML report, density maps.

* :mod:`~qcbed.output.results` — ``results.json`` (schema ``RESULT_SCHEMA``),
  ``results.h5``, ``structure_factors.hkl``, provenance, simulation files;
* :mod:`~qcbed.output.report` — ``report.html`` with figures;
* :mod:`~qcbed.output.density` — deformation-density / difference maps, cube files.

The old paths :mod:`qcbed.results`, :mod:`qcbed.report` and :mod:`qcbed.density`
are the same modules (aliases).
"""
