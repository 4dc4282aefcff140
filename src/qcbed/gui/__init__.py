"""The interactive level: a local browser app and notebook panels (``qcbed gui``).

* :mod:`~qcbed.gui.session` — :func:`open_session`: a path → a :class:`Session`;
* :mod:`~qcbed.gui.state` — :class:`Session`: one dataset, its tunable parameters and
  ROI (no web code), with :mod:`~qcbed.gui.frames` (background solves, images),
  :mod:`~qcbed.gui.exports` (project files) and :mod:`~qcbed.gui.runs` (refinements);
* :mod:`~qcbed.gui.jobs` — refinements run in a background thread, streamed, stoppable;
* :mod:`~qcbed.gui.results` — a finished results folder as data for the page;
* :mod:`~qcbed.gui.server` — the HTTP server (standard library) and its JSON API;
* :mod:`~qcbed.gui.notebook` — the app's panels embedded in Jupyter.

See ``docs/gui.md``.
"""

from .session import Frame, Session, open_session

__all__ = ["Frame", "Session", "open_session"]
