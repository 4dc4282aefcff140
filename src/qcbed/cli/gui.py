"""``qcbed gui [PATH]``: the interactive app in the browser (see docs/gui.md)."""

from __future__ import annotations

import click

from ._common import engine_options, executor, settings, wrap


@click.command("gui")
@click.argument("path", required=False, type=click.Path(exists=True))
@click.option("--port", type=int, default=8050, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (the default serves this machine only).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser window.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Folder for exported project files, the demo and runs started in the app "
                   "(default: a temporary folder for the demo, else the current folder).")
@click.option("--preview-side", type=int, default=40, show_default=True,
              help="Samples along the longer side of the orientation preview.")
@click.option("--accuracy", type=float, default=1e-2, show_default=True,
              help="Intensity accuracy of the interactive views (the engine picks its beam "
                   "thresholds for it); refinements use the project's [engine] accuracy.")
@engine_options
@wrap
def command(path: str | None, port: int, host: str, no_browser: bool, workdir: str | None,
            preview_side: int, accuracy: float, quiet: bool | None, workers: str | None
            ) -> None:
    """Explore, tune by eye, draw ROIs and refine in a local web app.

    PATH is a Felix folder, a project file (.toml), a PyExtal .dat file (simulation
    only), a LACBED stack (.h5 from 'qcbed extract'; data only) or a results folder;
    without PATH the built-in demo (Si 111 systematic-row CBED) is opened. The app
    serves http://HOST:PORT/ until interrupted (Ctrl-C).
    """
    from ..gui.server import serve
    from ..gui.session import open_session

    q, w = settings(quiet, workers)
    log = (lambda s: None) if q else click.echo
    log("opening " + (path or "the built-in demo") + " …")
    session = open_session(path, workdir=workdir, executor=executor(w),
                           preview_side=preview_side, accuracy=accuracy)
    serve(session, host, port, open_browser=not no_browser, log=click.echo)
