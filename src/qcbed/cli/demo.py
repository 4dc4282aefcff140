"""``qcbed demo``: simulate a noisy Si CBED pattern with known truth and refine it."""

from __future__ import annotations

import time

import click

from ._common import engine_options, executor, settings, wrap


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="qcbed-demo",
              show_default=True, help="Folder for the data, the project file and the results.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=1, show_default=True,
              help="Seed of the Poisson noise (0 ≤ seed < 2^32).")
@click.option("--fast", is_flag=True, help="A smaller, quicker version (for tests).")
@click.option("--force", is_flag=True,
              help="Replace the files of an earlier demo in OUT (project.toml, si.cif, "
                   "data/pattern.npy, truth.json, results/).")
@engine_options
@wrap
def command(out_dir: str, seed: int, fast: bool, force: bool, quiet: bool | None,
            workers: str | None) -> None:
    """Simulate a noisy Si 111 systematic-row CBED pattern with known truth, refine it
    (coarse, then fine), print refined versus true values with esd, and write the results
    (results.h5, result.json, structure_factors.hkl, report.html) under OUT/results.

    Needs no external data.
    """
    from ..demo import run_demo

    q, w = settings(quiet, workers)
    t0 = time.perf_counter()
    run, _truth, table = run_demo(out_dir, seed=seed, fast=fast, executor=executor(w),
                                  progress=not q, overwrite=force)
    click.echo(table)
    click.echo(f"results in {run.out_dir}: " + ", ".join(p.name for p in run.files.values()))
    click.echo(f"open {run.files['report']} in a browser; total {time.perf_counter() - t0:.1f} s")
