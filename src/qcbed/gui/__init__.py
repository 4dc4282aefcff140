"""The interactive level: a local browser app and notebook panels (``qcbed gui``).

* :mod:`~qcbed.gui.session` — :class:`Session`: one dataset, its tunable parameters,
  ROI, images, project export (no web code);
* :mod:`~qcbed.gui.jobs` — refinements run in a background thread, streamed, stoppable;
* :mod:`~qcbed.gui.results` — a finished results folder as data for the page;
* :mod:`~qcbed.gui.server` — the HTTP server (standard library) and its JSON API;
* :mod:`~qcbed.gui.notebook` — the app's panels embedded in Jupyter.

See ``docs/gui.md``.
"""

from .session import Frame, Session, open_session

__all__ = ["Frame", "Session", "open_session"]
