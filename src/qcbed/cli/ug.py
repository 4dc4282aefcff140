"""``qcbed ug``: print structure factors U_g of a crystal."""

from __future__ import annotations

import sys

import click
import numpy as np

from .._core.checks import MAX_GMAX, MAX_MILLER_INDEX, MAX_VOLTAGE_KV, check_number
from .._core.guard import check_memory
from ..errors import InputError, QcbedError


def _parse_hkl(text: str) -> tuple[int, int, int]:
    """(h, k, l) of an ``--hkl 'h,k,l'`` option (InputError naming the option)."""
    parts = text.replace(" ", "").split(",")
    ok = len(parts) == 3 and all(p.lstrip("+-").isdigit() for p in parts)
    if not ok or any(abs(int(p)) > MAX_MILLER_INDEX for p in parts):
        raise InputError("a reflection must be three integers separated by commas",
                         tag="--hkl", expected=f"h,k,l with |h| ≤ {MAX_MILLER_INDEX}, e.g. "
                         "1,1,1", found=text)
    return (int(parts[0]), int(parts[1]), int(parts[2]))


@click.command("ug")
@click.argument("source", type=click.Path(exists=True))
@click.option("--voltage", "-V", type=float, default=None,
              help="Accelerating voltage in kV (default: from the file, else 200).")
@click.option("--gmax", type=float, default=1.0, show_default=True,
              help="List reflections with |g| ≤ gmax (Å⁻¹).")
@click.option("--hkl", "hkl_list", multiple=True, help="Reflection 'h,k,l' (repeatable).")
@click.option("--elastic", default="kirkland", show_default=True,
              help="Elastic scattering factors (kirkland, lobato, peng, doyle_turner, wk, "
                   "xray_mott_bethe).")
@click.option("--absorption", default="bird_king", show_default=True,
              help="Absorption model (none, proportional, bird_king, wk, wk_phonon, wk_core).")
@click.option("--origin", type=click.Choice(["file", "centre"]), default="file",
              show_default=True, help="Phase origin: as in the file, or a centre of symmetry.")
def command(source: str, voltage: float | None, gmax: float, hkl_list: tuple[str, ...],
            elastic: str, absorption: str, origin: str) -> None:
    """Print U_g and U′_g (Å⁻²) of the independent-atom model for SOURCE.

    SOURCE is a CIF, a PyExtal .dat file or a Felix input folder.
    """
    from ..crystal import Crystal
    from ..io import read_input
    from ..scattering.structure_factors import PotentialModel, structure_factors

    try:
        if voltage is not None:
            check_number(voltage, "--voltage", low=0.0, low_open=True, high=MAX_VOLTAGE_KV,
                         unit="kV")
        check_number(gmax, "--gmax", low=0.0, low_open=True, high=MAX_GMAX, unit="Å⁻¹")
        hkl_given = [_parse_hkl(h) for h in hkl_list]
        crystal, settings = read_input(source)
        assert isinstance(crystal, Crystal)
        kv = voltage or (settings or {}).get("voltage_kv") or 200.0
        if origin == "centre":
            crystal = crystal.centred()[0]
        if hkl_list:
            hkl = np.array(hkl_given, dtype=int)
        else:
            lat = crystal.lattice
            n = np.ceil(gmax * np.array([lat.a, lat.b, lat.c])).astype(int)
            check_memory(float(np.prod(2.0 * n + 1)) * 64, f"the reflections with |g| ≤ {gmax:g}"
                         " Å⁻¹", tag="--gmax", hint="lower --gmax")
            grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in n], indexing="ij"),
                            -1).reshape(-1, 3)
            glen = lat.g_length(grid)
            grid = grid[(glen <= gmax) & (glen > 0)]
            # one representative per |g| shell and sign pattern, sorted by |g|
            grid = grid[np.lexsort((-grid[:, 2], -grid[:, 1], -grid[:, 0],
                                    np.round(lat.g_length(grid), 8)))]
            hkl = grid
        model = PotentialModel(elastic=elastic, absorption=absorption)
        sf = structure_factors(crystal, hkl, kv, model)
    except QcbedError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"# {crystal!r}")
    click.echo(f"# {kv:g} kV; {model.describe()}; U in 1/A^2, origin: {origin}")
    click.echo(f"# {'h':>3} {'k':>3} {'l':>3} {'|g| (1/A)':>10} {'Re U':>13} {'Im U':>13} "
               f"{'Re U_abs':>13} {'Im U_abs':>13}")
    glen = crystal.lattice.g_length(hkl)
    for h, gl, u, ua in zip(hkl, glen, sf.u, sf.u_abs):
        if abs(u) < 1e-12 and abs(ua) < 1e-12 and not hkl_list:
            continue
        click.echo(f"  {h[0]:3d} {h[1]:3d} {h[2]:3d} {gl:10.5f} {u.real:13.6e} {u.imag:13.6e} "
                   f"{ua.real:13.6e} {ua.imag:13.6e}")
