"""``qcbed export SOURCE -o OUT``: qcbed data as EMD 1.0 (py4DSTEM) or HyperSpy files."""

from __future__ import annotations

import click

from ._common import wrap


@click.command("export")
@click.argument("source", type=click.Path(exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
              help="Output file: .emd or .h5 (EMD 1.0, emdfile/py4DSTEM) or .hspy (HyperSpy).")
@click.option("--format", "fmt", type=click.Choice(["emd", "hspy"]), default=None,
              help="Output format (default: from the extension).")
@wrap
def command(source: str, output: str, fmt: str | None) -> None:
    """Export SOURCE — a LACBED stack (qcbed extract), a simulation (qcbed simulate) or a
    results folder / results.h5 (refinement residuals) — with its axes, units and
    metadata as EMD 1.0 (py4DSTEM.read, emdfile.read) or .hspy (hyperspy.api.load)."""
    from ..output.export import export, read_items

    path = export(source, output, fmt)
    names = [it.name for it in read_items(source)]
    click.echo(f"wrote {path}: {', '.join(names)}")
