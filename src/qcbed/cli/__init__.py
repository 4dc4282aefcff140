"""The ``qcbed`` command line.

Sub-commands live in their own modules and are attached to :data:`main` by
:func:`_register`; each module exposes a click command named ``command``.

Global options (before the sub-command): ``--quiet`` turns progress bars off and
``--workers``/``--executor`` chooses the engine executor
(:func:`qcbed.parallel.make_executor`: ``N`` local processes, ``1``/``serial``,
``dask``, ``tcp://scheduler:8786``, ``mpi``; default: all cores). Commands that
run the engine accept the same two options after their name as well.
"""

from __future__ import annotations

import importlib

import click

from .._version import __version__

_SUBCOMMANDS = ("ug", "extract", "demo", "simulate", "compare", "refine", "validate",
                "import_felix", "import_larbed", "export", "resume", "gui")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qcbed")
@click.option("--quiet", "-q", is_flag=True, default=False,
              help="No progress bars (and less output).")
@click.option("--workers", "--executor", "workers", default=None, metavar="SPEC",
              help="Engine executor: N local processes (1 = serial), 'serial', 'dask', "
                   "'tcp://scheduler:8786' or 'mpi' (default: all cores).")
@click.pass_context
def main(ctx: click.Context, quiet: bool, workers: str | None) -> None:
    """qcbed: quantitative convergent-beam electron diffraction."""
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["workers"] = workers


def _register() -> None:
    for name in _SUBCOMMANDS:
        mod = importlib.import_module(f"{__name__}.{name}")
        main.add_command(mod.command)


_register()
