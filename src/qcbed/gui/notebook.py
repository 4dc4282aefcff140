"""The app's panels inside a Jupyter notebook.

:func:`show` serves a dataset from a background thread of the kernel (on
127.0.0.1, a free port) and returns an :class:`AppView` that renders as an
``<iframe>`` of one panel of the app (``explore``, ``refine`` or ``results``)::

    from qcbed.gui.notebook import show
    app = show("si-110-dlacbed")        # the Explore & tune panel, in the notebook
    app.panel("refine")                 # the same session's Refine panel
    app.session.update({"thickness": 1500.0})   # drive it from Python too
    app.close()

The objects themselves (LACBED stacks, CBED patterns, ROIs, refinement results)
render through their own ``_repr_html_``/``plot()`` (:mod:`qcbed.experiment.notebook`,
:mod:`qcbed.refine.notebook`).
"""

from __future__ import annotations

import html
import os
from typing import Any

from ..errors import InputError
from .server import start_in_thread
from .session import Session, open_session

__all__ = ["AppView", "show"]

PANELS = ("explore", "refine", "results")


class AppView:
    """One panel of a running app, shown as an iframe in a notebook.

    Attributes
    ----------
    session : Session
    url : str
        Root URL of the server (``http://127.0.0.1:PORT/``).
    name : str
        The panel.
    """

    def __init__(self, session: Session, server: Any, url: str, name: str = "explore",
                 height: int = 760) -> None:
        if name not in PANELS:
            raise InputError("unknown panel", expected=", ".join(PANELS), found=name)
        self.session = session
        self._server = server
        self.url = url
        self.name = name
        self.height = int(height)

    @property
    def src(self) -> str:
        """The iframe's address."""
        return f"{self.url}?tab={self.name}&embed=1"

    def panel(self, name: str, height: int | None = None) -> AppView:
        """Another panel of the same running app."""
        return AppView(self.session, self._server, self.url, name,
                       self.height if height is None else height)

    def _repr_html_(self) -> str:
        return (f"<iframe src='{html.escape(self.src)}' style='width:100%;height:"
                f"{self.height}px;border:1px solid #ddd;border-radius:6px' "
                f"title='qcbed {self.name}'></iframe>")

    def close(self) -> None:
        """Stop the server (the session stays usable from Python)."""
        self._server.shutdown()
        self._server.server_close()


def show(target: str | os.PathLike | Session | None = None, *, panel: str = "explore",
         height: int = 760, **open_kw: Any) -> AppView:
    """Serve a dataset (or an open :class:`Session`) and show one panel in the notebook.

    Parameters
    ----------
    target : path, Session or None
        What :func:`qcbed.gui.session.open_session` opens (None: the demo), or a session.
    panel : {'explore', 'refine', 'results'}
    height : int
        Iframe height in pixels.
    **open_kw
        Passed to :func:`~qcbed.gui.session.open_session` (workdir, executor, …).
    """
    session = target if isinstance(target, Session) else open_session(target, **open_kw)
    server, url = start_in_thread(session)
    return AppView(session, server, url, panel, height)
