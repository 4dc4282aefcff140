"""Helpers shared by the sub-commands: global options, executor, errors, warnings."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..errors import QcbedError


def engine_options(f: Callable) -> Callable:
    """Add ``--quiet`` and ``--workers``/``--executor`` to a sub-command (they override the
    global options of the same name)."""
    f = click.option("--workers", "--executor", "workers", default=None, metavar="SPEC",
                     help="Engine executor: N local processes (1 = serial), 'serial', "
                          "'dask', 'tcp://scheduler:8786' or 'mpi'.")(f)
    f = click.option("--quiet", "-q", is_flag=True, default=None,
                     help="No progress bars (and less output).")(f)
    return f


def settings(quiet: bool | None, workers: str | None) -> tuple[bool, Any]:
    """(quiet, executor spec) from the sub-command's options and the group's."""
    ctx = click.get_current_context(silent=True)
    obj = (ctx.find_root().obj if ctx is not None else None) or {}
    q = bool(quiet) if quiet is not None else bool(obj.get("quiet", False))
    w = workers if workers is not None else obj.get("workers")
    configure_logging(q)
    return q, w


class _EchoHandler(logging.Handler):
    """Log records of qcbed as lines on the terminal (warnings and errors on stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=record.levelno >= logging.WARNING)


def configure_logging(quiet: bool) -> None:
    """Send the ``qcbed`` loggers to the terminal: INFO (step summaries) unless ``quiet``."""
    log = logging.getLogger("qcbed")
    for h in [h for h in log.handlers if isinstance(h, _EchoHandler)]:
        log.removeHandler(h)
    log.addHandler(_EchoHandler())
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def executor(spec: Any) -> Any:
    """The executor object for a spec (None: the engine's default)."""
    if spec is None:
        return None
    from ..parallel import make_executor

    return make_executor(spec)


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Print qcbed errors as ``error: …`` and exit with status 2; show warnings once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        except QcbedError as exc:
            _show(caught)
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            _show(caught)
            click.echo("interrupted", err=True)
            sys.exit(130)
    _show(caught)


def _show(caught: list) -> None:
    seen = set()
    for w in caught:
        msg = str(w.message)
        if msg in seen or issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            continue
        seen.add(msg)
        click.echo(f"warning: {msg}", err=True)


def wrap(f: Callable) -> Callable:
    """Decorator: run the command inside :func:`handle_errors`."""
    @functools.wraps(f)
    def inner(*a: Any, **kw: Any) -> Any:
        with handle_errors():
            return f(*a, **kw)
    return inner


def parse_roi_step(text: str) -> int | str:
    """``--roi-step``: 'auto' or an integer."""
    from ..errors import InputError

    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError("--roi-step must be 'auto' or an integer ≥ 1", tag="--roi-step",
                         found=text) from None
