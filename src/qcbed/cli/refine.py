"""``qcbed refine PROJECT``: run a project's refinement plan and write the results."""

from __future__ import annotations

import click

from ._common import engine_options, executor, settings, wrap


@click.command("refine")
@click.argument("project", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: [project] output of the file).")
@click.option("--regions", type=click.IntRange(min=0), default=None,
              help="Repeat the last fine step on N >= 2 disjoint tiles of the ROI and report "
                   "mean and spread (overrides [plan] regions; 0: off).")
@click.option("--budget/--no-budget", default=None,
              help="Error budget of the refined parameters against the fixed inputs "
                   "(default: [plan] budget, true).")
@click.option("--force", is_flag=True,
              help="Replace the results of an earlier run in the output folder (as "
                   "[project] overwrite = true).")
@engine_options
@wrap
def command(project: str, out_dir: str | None, regions: int | None, budget: bool | None,
            force: bool, quiet: bool | None, workers: str | None) -> None:
    """Run the refinement plan of PROJECT (a TOML project file): coarse steps, then fine
    steps; write results.h5, result.json, structure_factors.hkl and report.html.

    A checkpoint is written after every iteration; continue a killed run with
    'qcbed resume PROJECT'.
    """
    from dataclasses import replace

    from ..errors import InputError, QcbedError
    from ..project import RUN_STATE, ProjectRun, load_project

    q, w = settings(quiet, workers)
    proj = load_project(project)
    if regions is not None:
        if regions == 1:
            raise InputError("a spread needs at least two regions", tag="--regions",
                             expected="0 (off) or >= 2", found=1)
        proj = replace(proj, regions=regions)
    if budget is not None:
        proj = replace(proj, budget=budget)
    run = ProjectRun(proj, out_dir=out_dir, executor=executor(w), progress=not q,
                     overwrite=force or None)
    try:
        res = run.run()
    except (QcbedError, KeyboardInterrupt):
        if run.started and (run.out_dir / RUN_STATE).is_file():
            click.echo(f"the run stopped; continue it with: qcbed resume {run.out_dir}",
                       err=True)
        raise
    if res.fine is not None:
        click.echo(res.fine.summary())
    click.echo(f"results in {res.out_dir}: " + ", ".join(p.name for p in res.files.values()))
