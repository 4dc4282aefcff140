"""``qcbed validate PROJECT``: check a project file before a long run."""

from __future__ import annotations

import sys

import click

from ._common import wrap


@click.command("validate")
@click.argument("project", type=click.Path(dir_okay=False))
@wrap
def command(project: str) -> None:
    """Check PROJECT: keys and values, files, data shapes, geometry, regions of interest,
    beams and parameters. Each problem names the key, the expected and the found value.
    Exit status 0 when valid, 2 otherwise."""
    from ..project import validate_project

    rep = validate_project(project)
    click.echo(rep.text())
    if not rep.ok:
        sys.exit(2)
