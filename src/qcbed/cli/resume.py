"""``qcbed resume``: continue a killed refinement from its checkpoint."""

from __future__ import annotations

import click

from ._common import engine_options, executor, settings, wrap


@click.command("resume")
@click.argument("path", type=click.Path(exists=True))
@click.option("--force", is_flag=True,
              help="Also for a finished run: run the last fine step again from its "
                   "checkpoint and rewrite the results.")
@engine_options
@wrap
def command(path: str, force: bool, quiet: bool | None, workers: str | None) -> None:
    """Continue the interrupted run of PATH: a project file, its output folder or a
    checkpoint in that folder. Finished steps are skipped; the interrupted fine step
    continues from its last checkpoint (Levenberg–Marquardt resumes exactly).
    A finished run is left as it is (exit status 0) unless --force is given; files
    changed since the run started are named (by SHA-256) in a warning."""
    from ..project import RunFinished, resume_run

    q, w = settings(quiet, workers)
    try:
        res = resume_run(path, force=force, executor=executor(w), progress=not q)
    except RunFinished as exc:
        click.echo(str(exc))
        return
    if res.fine is not None:
        click.echo(res.fine.summary())
    click.echo(f"results in {res.out_dir}: " + ", ".join(p.name for p in res.files.values()))
