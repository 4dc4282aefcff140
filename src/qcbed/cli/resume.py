"""``qcbed resume``: continue a killed refinement from its checkpoint."""

from __future__ import annotations

import click

from ._common import engine_options, executor, settings, wrap


@click.command("resume")
@click.argument("path", type=click.Path(exists=True))
@engine_options
@wrap
def command(path: str, quiet: bool | None, workers: str | None) -> None:
    """Continue the interrupted run of PATH: a project file, its output folder or a
    checkpoint in that folder. Finished steps are skipped; the interrupted fine step
    continues from its last checkpoint (Levenberg–Marquardt resumes exactly)."""
    from ..project import resume_run

    q, w = settings(quiet, workers)
    res = resume_run(path, executor=executor(w), progress=not q)
    if res.fine is not None:
        click.echo(res.fine.summary())
    click.echo(f"results in {res.out_dir}: " + ", ".join(p.name for p in res.files.values()))
