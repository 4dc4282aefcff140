"""``qcbed refine PROJECT…``: run refinement plans and write the results.

One project file: its plan runs and its results are written. Several files, a
folder or a glob: a batch (:mod:`qcbed.batch`): each project in turn, finished
ones skipped, interrupted ones resumed, and a summary table (CSV + HTML).
"""

from __future__ import annotations

from pathlib import Path

import click

from ._common import engine_options, executor, settings, wrap


@click.command("refine")
@click.argument("projects", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: [project] output of the file); with several "
                   "projects, each one's results go to OUT/<project file name>.")
@click.option("--regions", type=click.IntRange(min=0), default=None,
              help="Repeat the last fine step on N >= 2 disjoint tiles of the ROI and report "
                   "mean and spread (overrides [plan] regions; 0: off).")
@click.option("--budget/--no-budget", default=None,
              help="Error budget of the refined parameters against the fixed inputs "
                   "(default: [plan] budget, true).")
@click.option("--summary", "summary_dir", type=click.Path(file_okay=False), default=None,
              help="Batch: folder of batch_summary.csv/.html (default: OUT, else the "
                   "current folder).")
@click.option("--force", is_flag=True,
              help="Replace the results of an earlier run in the output folder (as "
                   "[project] overwrite = true); in a batch, also run finished projects "
                   "again instead of skipping them.")
@engine_options
@wrap
def command(projects: tuple[str, ...], out_dir: str | None, regions: int | None,
            budget: bool | None, summary_dir: str | None, force: bool, quiet: bool | None,
            workers: str | None) -> None:
    """Run the refinement plan of PROJECTS (TOML project files, folders of them or glob
    patterns): coarse steps, then fine steps; write results.h5, result.json,
    structure_factors.hkl, refined.cif and report.html.

    A checkpoint is written after every iteration; continue a killed run with
    'qcbed resume PROJECT'. With several projects the batch skips finished ones,
    resumes interrupted ones, goes on after a failure and writes batch_summary.csv and
    batch_summary.html; the exit status is 1 when any project failed.
    """
    from ..batch import expand_projects, run_batch, write_summary
    from ..errors import InputError, QcbedError
    from ..project import RUN_STATE, ProjectRun, load_project

    q, w = settings(quiet, workers)
    log = (lambda s: None) if q else click.echo
    if regions == 1:
        raise InputError("a spread needs at least two regions", tag="--regions",
                         expected="0 (off) or >= 2", found=1)
    changes = {k: v for k, v in (("regions", regions), ("budget", budget)) if v is not None}
    paths = expand_projects(projects)
    if len(paths) == 1 and len(projects) == 1 and Path(projects[0]).is_file() \
            and summary_dir is None:
        from dataclasses import replace

        proj = replace(load_project(paths[0]), **changes)
        run = ProjectRun(proj, out_dir=out_dir, executor=executor(w), progress=not q, log=log,
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
        return
    entries = run_batch(paths, out_root=out_dir, force=force, executor=executor(w),
                        progress=not q, log=log, changes=changes)
    csv_path, html_path = write_summary(entries, summary_dir or out_dir or Path.cwd())
    n_fail = sum(e.status == "failed" for e in entries)
    for e in entries:
        th = e.result.get("thickness", {})
        extra = (f"thickness {th.get('value', float('nan')):.2f} Å, chi2 "
                 f"{e.result.get('chi2') or float('nan'):.4g}" if e.result else e.error)
        click.echo(f"  {e.status:8s} {e.project}: {extra}")
    click.echo(f"summary: {csv_path}, {html_path}")
    if n_fail:
        raise SystemExit(1)
