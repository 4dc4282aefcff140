#!/usr/bin/env python3
# ruff: noqa: E501  (one-off data script: long provenance strings)
"""One-off generator of the scattering-factor tables in ``src/qcbed/scattering/tables``.

Not run in CI. It documents, reproducibly, where every number in the JSON
files came from. The numbers are published facts (the parameter tables of the
papers cited in each JSON file); they were taken from public copies of those
tables, and each table was cross-checked against a second, independent copy.
No code of any other project is used: other packages are only *read* as data.

Inputs
------
``--src DIR`` (default ``/tmp/sf/x``) must hold these PyPI wheels, unpacked
(``pip download --no-deps NAME==VERSION`` then ``unzip``) into ``DIR/<folder>``:

====================  ==========================  ===========================
folder                wheel                       used for
====================  ==========================  ===========================
``diffsims``          diffsims 0.7.0              Kirkland (primary),
                                                  Peng 0-6 (primary),
                                                  Lobato (2nd cross-check)
``abtem``             abtem 1.0.11                cross-checks: Kirkland,
                                                  Lobato, Peng 0-2, 0-6, ions
``py4DSTEM``          py4DSTEM 0.14.18            Lobato (primary)
``dans_diffraction``  dans-diffraction 3.4.0      Peng 1998 ions (primary),
                                                  cross-checks: Peng 0-2,
                                                  ITC X-ray neutral atoms
``pymatgen``          pymatgen 2026.10.24         Doyle-Turner arbiter (3 dp)
====================  ==========================  ===========================

and ``gemmi`` (a qcbed dependency) must be importable: its ``Element.it92``
(ITC Vol. C Table 6.1.1.4, neutral atoms) and ``Element.c4322`` (ITC Vol. C
Table 4.3.2.2 = Peng et al. 1996, 0-2 A^-1) tables are the primary copies of
those two tables (stored there as float32; the published decimals are
recovered exactly with the shortest float32 repr).

Three inputs are not in any wheel and were transcribed by hand from public
source files; the transcriptions are embedded below verbatim:

* ``CCTBX_IT1992_IONS``: the ions (and the ``Hiso``/``Cval``/``Sival``
  entries) of cctbx_project ``cctbx/eltbx/xray_scattering/it1992.cpp``
  (ITC Vol. C 1992 Table 6.1.1.4).
* ``DT_FELIX`` and ``DT_MULTEM``: Doyle & Turner (1968) coefficients from
  WarwickMicroscopy/Felix ``src/felix/set_scatter_factors_mod.f90`` and
  Ivanlh20/multem ``src/atomic_data.hpp``. The two copies (and pymatgen's
  3-decimal copy) contain different typos; every coefficient is decided by a
  documented vote (see :func:`doyle_turner`).

Run ``python tools/make_scattering_tables.py --src /tmp/sf/x`` from the
repository root; it rewrites the JSON files and prints the cross-checks.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "qcbed" / "scattering" / "tables"

SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
    "Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr"
).split()
Z_OF = {el: i + 1 for i, el in enumerate(SYMBOLS)}


def ion_key(el: str, charge: int) -> str:
    """'O2-' style key (magnitude always written: 'Li1+')."""
    return el if charge == 0 else f"{el}{abs(charge)}{'+' if charge > 0 else '-'}"


def parse_ion(label: str) -> tuple[str, int]:
    m = re.fullmatch(r"([A-Z][a-z]?)(\d+)([+-])", label)
    if not m:
        return label, 0
    q = int(m.group(2))
    return m.group(1), q if m.group(3) == "+" else -q


def f32(x: float) -> float:
    """Published decimal of a float32-stored coefficient (shortest repr)."""
    return float(str(np.float32(x)))


# --------------------------------------------------------------------------------------
# hand transcriptions (numbers only)
# --------------------------------------------------------------------------------------
# label a1 a2 a3 a4 b1 b2 b3 b4 c     (cctbx it1992.cpp order)
CCTBX_IT1992_IONS = """
Hiso 0.489918 0.262003 0.196767 0.049879 20.6593 7.74039 49.5519 2.20159 0.001305
H1- 0.897661 0.565616 0.415815 0.116973 53.1368 15.1870 186.576 3.56709 0.002389
Li1+ 0.696800 0.788800 0.341400 0.156300 4.62370 1.95570 0.631600 10.0953 0.016700
Be2+ 6.26030 0.884900 0.799300 0.164700 0.002700 0.831300 2.27580 5.11460 -6.1092
Cval 2.26069 1.56165 1.05075 0.839259 22.6907 0.656665 9.75618 55.5949 0.286977
O1- 4.19160 1.63969 1.52673 -20.307 12.8573 4.17236 47.0179 -0.01404 21.9412
O2- 3.75040 2.84294 1.54298 1.62091 16.5151 6.59203 0.319201 43.3486 0.242060
F1- 3.63220 3.51057 1.26064 0.940706 5.27756 14.7353 0.442258 47.3437 0.653396
Na1+ 3.25650 3.93620 1.39980 1.00320 2.66710 6.11530 0.200100 14.0390 0.404000
Mg2+ 3.49880 3.83780 1.32840 0.849700 2.16760 4.75420 0.185000 10.1411 0.485300
Al3+ 4.17448 3.38760 1.20296 0.528137 1.93816 4.14553 0.228753 8.28524 0.706786
Sival 5.66269 3.07164 2.62446 1.39320 2.66520 38.6634 0.916946 93.5458 1.24707
Si4+ 4.43918 3.20345 1.19453 0.416530 1.64167 3.43757 0.214900 6.65365 0.746297
Cl1- 18.2915 7.20840 6.53370 2.33860 0.006600 1.17170 19.5424 60.4486 -16.378
K1+ 7.95780 7.49170 6.35900 1.19150 12.6331 0.767400 -0.00200 31.9128 -4.9978
Ca2+ 15.6348 7.95180 8.43720 0.853700 -0.00740 0.608900 10.3116 25.9905 -14.875
Sc3+ 13.4008 8.02730 1.65943 1.57936 0.298540 7.96290 -0.28604 16.0662 -6.6667
Ti2+ 9.11423 7.62174 2.27930 0.087899 7.52430 0.457585 19.5361 61.6558 0.897155
Ti3+ 17.7344 8.73816 5.25691 1.92134 0.220610 7.04716 -0.15762 15.9768 -14.652
Ti4+ 19.5114 8.23473 2.01341 1.52080 0.178847 6.67018 -0.29263 12.9464 -13.280
V2+ 10.1060 7.35410 2.28840 0.022300 6.88180 0.440900 20.3004 115.122 1.22980
V3+ 9.43141 7.74190 2.15343 0.016865 6.39535 0.383349 15.1908 63.9690 0.656565
V5+ 15.6887 8.14208 2.03081 -9.5760 0.679003 5.40135 9.97278 0.940464 1.71430
Cr2+ 9.54034 7.75090 3.58274 0.509107 5.66078 0.344261 13.3075 32.4224 0.616898
Cr3+ 9.68090 7.81136 2.87603 0.113575 5.59463 0.334393 12.8288 32.8761 0.518275
Mn2+ 10.8061 7.36200 3.52680 0.218400 5.27960 0.343500 14.3430 41.3235 1.08740
Mn3+ 9.84521 7.87194 3.56531 0.323613 4.91797 0.294393 10.8171 24.1281 0.393974
Mn4+ 9.96253 7.97057 2.76067 0.054447 4.84850 0.283303 10.4852 27.5730 0.251877
Fe2+ 11.0424 7.37400 4.13460 0.439900 4.65380 0.305300 12.0546 31.2809 1.00970
Fe3+ 11.1764 7.38630 3.39480 0.072400 4.61470 0.300500 11.6729 38.5566 0.970700
Co2+ 11.2296 7.38830 4.73930 0.710800 4.12310 0.272600 10.2443 25.6466 0.932400
Co3+ 10.3380 7.88173 4.76795 0.725591 3.90969 0.238668 8.35583 18.3491 0.286667
Ni2+ 11.4166 7.40050 5.34420 0.977300 3.67660 0.244900 8.87300 22.1626 0.861400
Ni3+ 10.7806 7.75868 5.22746 0.847114 3.54770 0.223140 7.64468 16.9673 0.386044
Cu1+ 11.9475 7.35730 6.24550 1.55780 3.36690 0.227400 8.66250 25.8487 0.89000
Cu2+ 11.8168 7.11181 5.78135 1.14523 3.37484 0.244078 7.98760 19.8970 1.14431
Zn2+ 11.9719 7.38620 6.46680 1.39400 2.99460 0.203100 7.08260 18.0995 0.780700
Ga3+ 12.6920 6.69883 6.06692 1.00660 2.81262 0.227890 6.36441 14.4122 1.53545
Ge4+ 12.9172 6.70003 6.06791 0.859041 2.53718 0.205855 5.47913 11.6030 1.45572
Br1- 17.1718 6.33380 5.57540 3.72720 2.20590 19.3345 0.287100 58.1535 3.17760
Rb1+ 17.5816 7.65980 5.89810 2.78170 1.71390 14.7957 0.160300 31.2087 2.07820
Sr2+ 18.0874 8.13730 2.56540 -34.193 1.49070 12.6963 24.5651 -0.01380 41.4025
Y3+ 17.9268 9.15310 1.76795 -33.108 1.35417 11.2145 22.6599 -0.01319 40.2602
Zr4+ 18.1668 10.0562 1.01118 -2.6479 1.21480 10.1483 21.6054 -0.10276 9.41454
Nb3+ 19.8812 18.0653 11.0177 1.94715 0.019175 1.13305 10.1621 28.3389 -12.912
Nb5+ 17.9163 13.3417 10.7990 0.337905 1.12446 0.028781 9.28206 25.7228 -6.3934
Mo3+ 21.1664 18.2017 11.7423 2.30951 0.014734 1.03031 9.53659 26.6307 -14.421
Mo5+ 21.0149 18.0992 11.4632 0.740625 0.014345 1.02238 8.78809 23.3452 -14.316
Mo6+ 17.8871 11.1750 6.57891 0.000000 1.03649 8.48061 0.058881 0.000000 0.344941
Ru3+ 18.5638 13.2885 9.32602 3.00964 0.847329 8.37164 0.017662 22.8870 -3.1892
Ru4+ 18.5003 13.1787 4.71304 2.18535 0.844582 8.12534 0.36495 20.8504 1.42357
Rh3+ 18.8785 14.1259 3.32515 -6.1989 0.764252 7.84438 21.2487 -0.01036 11.8678
Rh4+ 18.8545 13.9806 2.53464 -5.6526 0.760825 7.62436 19.3317 -0.01020 11.2835
Pd2+ 19.1701 15.2096 4.32234 0.000000 0.696219 7.55573 22.5057 0.000000 5.29160
Pd4+ 19.2493 14.7900 2.89289 -7.9492 0.683839 7.14833 17.9144 0.005127 13.0174
Ag1+ 19.1812 15.9719 5.27475 0.357534 0.646179 7.19123 21.7326 66.1147 5.21572
Ag2+ 19.1643 16.2456 4.37090 0.000000 0.645643 7.18544 21.4072 0.000000 5.21404
Cd2+ 19.1514 17.2535 4.47128 0.000000 0.597922 6.80639 20.2521 0.000000 5.11937
In3+ 19.1045 18.1108 3.78897 0.000000 0.551522 6.32470 17.3595 0.000000 4.99635
Sn2+ 19.1094 19.0548 4.56480 0.487000 0.503600 5.83780 23.3752 62.2061 4.78610
Sn4+ 18.9333 19.7131 3.41820 0.019300 5.76400 0.465500 14.0049 -0.75830 3.91820
Sb3+ 18.9755 18.9330 5.10789 0.288753 0.467196 5.22126 19.5902 55.5113 4.69626
Sb5+ 19.8685 19.0302 2.41253 0.000000 5.44853 0.467973 14.1259 0.000000 4.69263
I1- 20.2332 18.9970 7.80690 2.88680 4.35790 0.381500 29.5259 84.9304 4.07140
Cs1+ 20.3524 19.1278 10.2821 0.961500 3.55200 0.308600 23.7128 59.4565 3.27910
Ba2+ 20.1807 19.1136 10.9054 0.77634 3.21367 0.283310 20.0558 51.7460 3.02902
La3+ 20.2489 19.3763 11.6323 0.336048 2.92070 0.250698 17.8211 54.9453 2.40860
Ce3+ 20.8036 19.5590 11.9369 0.612376 2.77691 0.231540 16.5408 43.1692 2.09013
Ce4+ 20.3235 19.8186 12.1233 0.144583 2.65941 0.218850 15.7992 62.2355 1.59180
Pr3+ 21.3727 19.7491 12.1329 0.975180 2.64520 0.214299 15.3230 36.4065 1.77132
Pr4+ 20.9413 20.0539 12.4668 0.296689 2.54467 0.202481 14.8137 45.4643 1.24285
Nd3+ 21.9610 19.9339 12.1200 1.51031 2.52722 0.199237 14.1783 30.8717 1.47588
Pm3+ 22.5527 20.1108 12.0671 2.07492 2.41740 0.185769 13.1275 27.4491 1.19499
Sm3+ 23.1504 20.2599 11.9202 2.71488 2.31641 0.174081 12.1571 24.8242 0.954586
Eu2+ 24.0063 19.9504 11.8034 3.87243 2.27783 0.173530 11.6096 26.5156 1.36389
Eu3+ 23.7497 20.3745 11.8509 3.26503 2.22258 0.163940 11.3110 22.9966 0.759344
Gd3+ 24.3466 20.4208 11.8708 3.71490 2.13553 0.155525 10.5782 21.7029 0.645089
Tb3+ 24.9559 20.3271 12.2471 3.77300 2.05601 0.149525 10.0499 21.2773 0.691967
Dy3+ 25.5395 20.2861 11.9812 4.50073 1.98040 0.143384 9.34972 19.5810 0.689690
Ho3+ 26.1296 20.0994 11.9788 4.93676 1.91072 0.139358 8.80018 18.5908 0.852795
Er3+ 26.7220 19.7748 12.1506 5.17379 1.84659 0.137290 8.36225 17.8974 1.17613
Tm3+ 27.3083 19.3320 12.3339 5.38348 1.78711 0.136974 7.96778 17.2922 1.63929
Yb2+ 28.1209 17.6817 13.3335 5.14657 1.78503 0.159970 8.18304 20.3900 3.70983
Yb3+ 27.8917 18.7614 12.6072 5.47647 1.73272 0.138790 7.64412 16.8153 2.26001
Lu3+ 28.4628 18.1210 12.8429 5.59415 1.68216 0.142292 7.33727 16.3535 2.97573
Hf4+ 28.8131 18.4601 12.7285 5.59927 1.59136 0.128903 6.76232 14.0366 2.39699
Ta5+ 29.1587 18.8407 12.8268 5.38695 1.50711 0.116741 6.31524 12.4244 1.78555
W6+ 29.4936 19.3763 13.0544 5.06412 1.42755 0.104621 5.93667 11.1972 1.01074
Os4+ 30.4190 15.2637 14.7458 5.06795 1.37113 6.84706 0.165191 18.0030 6.49804
Ir3+ 30.4156 15.8620 13.6145 5.82008 1.34323 7.10909 0.204633 20.3254 8.27903
Ir4+ 30.7058 15.5512 14.2326 5.53672 1.30923 6.71983 0.167252 17.4911 6.96824
Pt2+ 29.8429 16.7224 13.2153 6.35234 1.32927 7.38979 0.263297 22.9426 9.85329
Pt4+ 30.9612 15.9829 13.7348 5.92034 1.24813 6.60834 0.168640 16.9392 7.39534
Au1+ 28.0109 17.8204 14.3359 6.58077 1.35321 7.73950 0.356752 26.4043 11.2299
Au3+ 30.6886 16.9029 12.7801 6.52354 1.21990 6.82872 0.212867 18.6590 9.09680
Hg1+ 25.0853 18.4973 16.8883 6.48216 1.39507 7.65105 0.443378 28.2262 12.0205
Hg2+ 29.5641 18.0600 12.8374 6.89912 1.21152 7.05639 0.284738 20.7482 10.6268
Tl1+ 21.3985 20.4723 18.7478 6.82847 1.47110 0.517394 7.43463 28.8482 12.5258
Tl3+ 30.8695 18.3841 11.9328 7.00574 1.10080 6.53852 0.219074 17.2114 9.80270
Pb2+ 21.7886 19.5682 19.1406 7.01107 1.33660 0.488383 6.77270 23.8132 12.4734
Pb4+ 32.1244 18.8003 12.0175 6.96886 1.00566 6.10926 0.147041 14.7140 8.08428
Bi3+ 21.8053 19.5026 19.1053 7.10295 1.23560 6.24149 0.469999 20.3185 12.4711
Bi5+ 33.5364 25.0946 19.2497 6.91555 0.916540 0.39042 5.71414 12.8285 -6.7994
Ra2+ 35.2150 21.6700 7.91342 7.65078 0.604909 3.57670 12.6010 29.8436 13.5431
Ac3+ 35.1736 22.1112 8.19216 7.05545 0.579689 3.41437 12.9187 25.9443 13.4637
Th4+ 35.1007 22.4418 9.78554 5.29444 0.555054 3.24498 13.4661 23.9533 13.3760
U3+ 35.5747 22.5259 12.2165 5.37073 0.520480 3.12293 12.7148 26.3394 13.3092
U4+ 35.3715 22.5326 12.0291 4.79840 0.516598 3.05053 12.5723 23.4582 13.2671
U6+ 34.8509 22.7584 14.0099 1.21457 0.507079 2.89030 13.1767 25.2017 13.1665
Np3+ 35.7074 22.6130 12.9898 5.43227 0.502322 3.03807 12.1449 25.4928 13.2544
Np4+ 35.5103 22.5787 12.7766 4.92159 0.498626 2.96627 11.9484 22.7502 13.2116
Np6+ 35.0136 22.7286 14.3884 1.75669 0.489810 2.81099 12.3300 22.6581 13.1130
Pu3+ 35.8400 22.7169 13.5807 5.66016 0.484938 2.96118 11.5331 24.3992 13.1991
Pu4+ 35.6493 22.6460 13.3595 5.18831 0.481422 2.89020 11.3160 21.8301 13.1555
Pu6+ 35.1736 22.7181 14.7635 2.28678 0.473204 2.73848 11.5530 20.9303 13.0582
"""
# El a1 b1 a2 b2 a3 b3 a4 b4          (Felix RDoyleAndTurner rows, all-zero rows omitted)
DT_FELIX = """
He 0.0906 18.1834 0.1814 6.2109 0.1093 1.8026 0.0362 0.2844
Li 1.6108 107.6384 1.2460 30.4795 0.3257 4.5331 0.0966 0.4951
Be 1.2498 60.8042 1.3335 18.5914 0.3603 3.6534 0.1055 0.4157
B 0.9446 46.4438 1.3120 14.1778 0.4188 3.2228 0.1159 0.3767
C 0.7307 36.9951 1.1951 11.2966 0.4563 2.8139 0.1247 0.3456
N 0.5717 28.8465 1.0425 9.0542 0.4647 2.4213 0.1311 0.3167
O 0.4548 23.7803 0.9173 7.6220 0.4719 2.1440 0.1384 0.2959
F 0.3686 20.2390 0.8109 6.6093 0.4751 1.9310 0.1459 0.2793
Ne 0.3025 17.6396 0.7202 5.8604 0.4751 1.7623 0.1534 0.2656
Na 2.2406 108.0039 1.3326 24.5047 0.9070 3.3914 0.2863 0.4346
Mg 2.2682 73.6704 1.8025 20.1749 0.8394 3.0181 0.2892 0.4046
Al 2.2756 72.3220 2.4280 19.7729 0.8578 3.0799 0.3166 0.4076
Si 2.1293 57.7748 2.5333 16.4756 0.8349 2.8796 0.3216 0.3860
P 1.8882 44.8756 2.4685 13.5383 0.8046 2.6424 0.3204 0.3608
S 1.6591 36.6500 2.3863 11.4881 0.7899 2.4686 0.3208 0.3403
Cl 1.4524 30.9352 2.2976 9.9798 0.7874 2.3336 0.3217 0.3228
Ar 1.2736 26.6823 2.1894 8.8130 0.7927 2.2186 0.3225 0.3071
K 3.9507 137.0748 2.5452 22.4017 1.9795 4.5319 0.4817 0.4340
Ca 4.4696 99.5228 2.9708 22.6958 1.9696 4.1954 0.4818 0.4165
Sc 3.9659 98.9597 2.9169 20.6061 1.9254 3.8557 0.4802 0.3988
Ti 3.5653 81.9821 2.8181 19.0486 1.8930 3.5904 0.4825 0.3855
V 3.2449 76.3789 2.6978 17.7262 1.8597 3.3632 0.4864 0.3743
Cr 2.3066 78.4051 2.3339 15.7851 1.8226 3.1566 0.4901 0.3636
Mn 2.7467 67.7862 2.4556 15.6743 1.7923 2.9998 0.4984 0.3569
Fe 2.5440 64.4244 2.3434 14.8806 1.7588 2.8539 0.5062 0.3502
Co 2.3668 61.4306 2.2361 0.0000 1.7243 2.7247 0.5148 0.3442
Ni 2.2104 58.7267 2.1342 13.5530 1.6891 2.6094 0.5238 0.3388
Cu 1.5792 62.9403 1.8197 12.4527 1.6576 2.5042 0.5323 0.3331
Zn 1.9418 54.1621 1.9501 12.5177 1.6192 2.4164 0.5434 0.3295
Ga 2.3205 65.6019 2.4855 15.4577 1.6879 2.5806 0.5992 0.3510
Ge 2.4467 55.8930 2.7015 14.3930 1.6157 2.4461 0.6009 0.3415
As 2.3989 45.7179 2.7898 12.8166 1.5288 2.2799 0.5936 0.3277
Se 2.2980 38.8296 2.8541 11.5359 1.4555 2.1463 0.5895 0.3163
Br 2.1659 33.8987 2.9037 10.4996 1.3951 2.0413 0.5886 0.3070
Kr 2.0338 29.9992 2.9271 9.5598 1.3425 1.9520 0.5888 0.2986
Rb 4.7760 140.7821 3.8588 18.9910 2.2339 3.7010 0.8683 0.4194
Sr 5.8478 104.9721 4.0026 19.3666 2.3420 3.7368 0.8795 0.4142
Mo 3.1199 72.4642 3.9061 14.6424 2.3615 3.2370 0.8504 0.3662
Ag 2.0355 61.4970 3.2716 11.8237 2.5105 2.8456 0.8372 0.3271
Cd 2.5737 55.6752 3.2586 11.8376 2.5468 2.7842 0.8379 0.3217
In 3.1528 66.6492 3.5565 14.4494 2.8180 2.9758 0.8842 0.3345
Sn 3.4495 59.1042 3.7349 14.1787 2.7779 2.8548 0.8786 0.3270
Sb 3.5644 50.4869 3.8437 13.3156 2.6866 2.6909 0.8638 0.3161
I 3.4728 39.4411 4.0602 11.8161 2.5215 2.4148 0.8398 0.2976
Xe 3.3656 35.5094 4.1468 11.1170 2.4430 2.2940 0.8293 0.2892
Cs 6.0620 155.8336 5.9861 19.6951 3.3033 2.3354 1.0958 0.3793
Ba 7.8212 117.6575 6.0040 18.7782 3.2803 3.2634 1.1030 0.3760
Eu 6.2667 100.2983 4.8440 16.0662 3.2023 2.9803 1.2009 0.3674
Au 2.3880 42.8656 4.2259 9.7430 2.6886 2.2641 1.2551 0.3067
Hg 2.6817 42.8217 4.2414 9.8557 2.7549 2.2951 1.2708 0.3067
Pb 3.5099 52.9141 4.5523 11.8840 3.1539 2.5713 1.3591 0.3205
Bi 3.8412 50.2608 4.6794 11.9988 3.1924 2.5598 1.3625 0.3177
Rn 4.0779 28.4058 4.9778 11.0204 3.0955 2.3549 1.3259 0.2991
U 6.7668 85.9510 6.7287 15.6415 4.0135 2.9364 1.5607 0.3348
"""
# El a1 b1 a2 b2 a3 b3 a4 b4          (MULTEM data_table[Z-1]; it files the Eu row under La)
DT_MULTEM = """
He 0.0906 18.1834 0.1814 6.2109 0.1095 1.8026 0.0362 0.2844
Li 1.6108 107.6384 1.2460 30.4795 0.3257 4.5331 0.0986 0.4951
Be 1.2498 60.8042 1.3335 18.5914 0.3603 3.6534 0.1055 0.4157
B 0.9446 46.4438 1.3120 14.1778 0.4188 3.2228 0.1159 0.3767
C 0.7307 36.9951 1.1951 11.2966 0.4563 2.8139 0.1247 0.3456
N 0.5717 28.8465 1.0425 9.0542 0.4647 2.4213 0.1311 0.3167
O 0.4540 23.7803 0.9173 7.6220 0.4719 2.1440 0.1384 0.2959
F 0.3686 20.2390 0.8109 6.6093 0.4751 1.9310 0.1459 0.2793
Ne 0.3025 17.6390 0.7202 5.8604 0.4751 1.7623 0.1534 0.2656
Na 2.2406 108.0039 1.3326 24.5047 0.9070 3.3914 0.2863 0.4346
Mg 2.2692 73.6704 1.8025 20.1749 0.8394 3.0131 0.2892 0.4046
Al 2.2756 72.3220 2.4280 19.7729 0.8578 3.0799 0.3266 0.4076
Si 2.1293 57.7748 2.5333 16.4756 0.8349 2.6796 0.3216 0.3860
P 1.8882 44.8756 2.4685 13.5383 0.8046 2.6424 0.3204 0.3603
S 1.6591 36.6500 2.3863 11.4881 0.7899 2.4686 0.3208 0.3403
Cl 1.4524 30.9352 2.2926 9.9798 0.7874 2.3336 0.3217 0.3228
Ar 1.2736 26.6823 2.1894 8.8130 0.7927 2.2186 0.3225 0.3071
K 3.9507 137.0748 2.5452 22.4017 1.9795 4.5319 0.4017 0.4340
Ca 4.4696 99.5228 2.9703 22.6958 1.9696 4.1954 0.4818 0.4165
Sc 3.9659 38.9597 2.9169 20.6061 1.9254 3.8557 0.4802 0.3988
Ti 3.5653 81.9821 2.8181 19.0486 1.8930 3.5904 0.4825 0.3855
V 3.2449 76.3789 2.6978 17.7262 1.8597 3.3632 0.4864 0.3743
Cr 2.3066 78.4051 2.3339 15.7851 1.8226 3.1566 0.4901 0.3636
Mn 2.7467 67.7862 2.4556 15.6743 1.7923 2.9998 0.4984 0.3569
Fe 2.5440 64.4244 2.3434 14.5306 1.7588 2.8539 0.5062 0.3502
Co 2.3668 61.4306 2.2361 14.1793 1.7243 2.7247 0.5148 0.3442
Ni 2.2104 58.7267 2.1342 13.5530 1.6891 2.6094 0.5238 0.3388
Cu 1.5792 62.9403 1.8197 12.4527 1.6576 2.5042 0.5323 0.3331
Zn 1.9418 54.1621 1.9501 12.5177 1.6192 2.4164 0.5434 0.3295
Ga 2.3205 65.6019 2.4955 15.4577 1.6879 2.5806 0.5992 0.3510
Ge 2.4467 55.8930 2.7015 14.3930 1.6157 2.4461 0.6009 0.3415
As 2.3989 45.7179 2.7898 32.8166 1.5288 2.2799 0.5936 0.3277
Se 2.2980 38.8296 2.8541 11.5359 1.4555 2.1463 0.5895 0.3163
Br 2.1659 33.8987 2.9037 10.4996 1.3951 2.0413 0.5886 0.3070
Kr 2.0338 29.9992 2.9271 9.5977 1.3425 1.9520 0.5888 0.2986
Rb 4.7760 140.7821 3.8588 18.9910 2.2339 3.7010 0.8683 0.4194
Sr 5.8478 104.9721 4.0026 19.3666 2.3420 3.7368 0.8795 0.4142
Mo 3.1199 72.4642 3.9061 14.6424 2.3615 3.2370 0.8504 0.3662
Ag 2.0355 61.4970 3.2716 11.3237 2.5105 2.8456 0.8372 0.3271
Cd 2.5737 55.6752 3.2536 11.8376 2.5468 2.7842 0.8379 0.3217
In 3.1528 66.6492 3.5565 14.4494 2.8180 2.9758 0.8842 0.3345
Sn 3.4495 59.1042 3.7349 14.1787 2.7779 2.8548 0.8786 0.3270
Sb 3.5644 50.4869 3.8437 13.3156 2.6366 2.6909 0.8638 0.3161
I 3.4728 39.4411 4.0602 11.8161 2.5215 2.4148 0.8398 0.2976
Xe 3.3656 35.5094 4.1468 11.1170 2.4430 2.2940 0.8293 0.2892
Cs 6.0620 155.8336 5.9861 19.6951 3.3033 3.3354 1.0958 0.3793
Ba 7.8212 117.6575 6.0040 18.7782 3.2803 3.2634 1.1030 0.3760
Eu 6.2661 100.2983 4.8440 16.0662 3.2023 2.9803 1.2009 0.3674
Au 2.3880 42.8656 4.2259 9.7430 2.6886 2.2641 1.2551 0.3067
Hg 2.6817 42.8217 4.2414 9.8557 2.7549 2.2951 1.2706 0.3067
Pb 3.5099 52.9141 4.5523 11.8840 3.1539 2.5713 1.3591 0.3205
Bi 3.8412 50.2608 4.6784 11.9988 3.1924 2.5598 1.3625 0.3177
Rn 4.0779 28.4058 4.9778 11.0204 3.0955 2.3549 1.3259 0.2991
U 6.7668 85.9510 6.7287 15.6415 4.0135 2.9364 1.5607 0.3348
"""


def _rows(text: str) -> dict[str, list[float]]:
    out = {}
    for line in text.strip().splitlines():
        p = line.split()
        out[p[0]] = [float(x) for x in p[1:]]
    return out


# --------------------------------------------------------------------------------------
# evaluation helpers (for cross-checks only)
# --------------------------------------------------------------------------------------
S = np.linspace(0.0, 6.0, 601)


def gauss(a, b, s, c=0.0):
    a, b = np.asarray(a), np.asarray(b)
    return (a[:, None] * np.exp(-b[:, None] * s[None, :] ** 2)).sum(0) + c


def maxrel(x, y):
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-12)))


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------
def kirkland(src: Path) -> dict:
    text = (src / "diffsims/diffsims/utils/scattering_params.py").read_text()
    tree = ast.parse(text)
    table = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "scattering_params":
            table = {k.value: [ast.literal_eval(e) for e in v.args[0].elts]
                     for k, v in zip(node.value.keys, node.value.values)}
    assert table is not None and len(table) == 103
    elements = {}
    for z, row in sorted(table.items()):
        chi2, r = row[0], row[1:]
        elements[SYMBOLS[z - 1]] = {"a": r[0:6:2], "b": r[1:6:2], "c": r[6:12:2], "d": r[7:12:2],
                                    "chi2": chi2}
    # cross-check: abTEM 1.0.11 kirkland.json (independent transcription, 10 significant digits)
    ab = json.loads((src / "abtem/abtem/parametrizations/data/kirkland.json").read_text())
    worst_c = worst_f = 0.0
    q = 2 * S
    for el, e in elements.items():
        a, b, c, d = (np.array(x) for x in ab[el])
        mine = np.concatenate([e["a"], e["b"], e["c"], e["d"]])
        worst_c = max(worst_c, maxrel(mine, np.concatenate([a, b, c, d])))
        f1 = sum(e["a"][i] / (q**2 + e["b"][i]) + e["c"][i] * np.exp(-e["d"][i] * q**2) for i in range(3))
        f2 = sum(a[i] / (q**2 + b[i]) + c[i] * np.exp(-d[i] * q**2) for i in range(3))
        worst_f = max(worst_f, maxrel(f1, f2))
    check = (f"103/103 elements compared with abTEM 1.0.11 kirkland.json: max relative coefficient "
             f"difference {worst_c:.1e} (abTEM rounds to 10 significant digits), max relative "
             f"difference of f_e(q) for 0 <= q <= 12 A^-1 {worst_f:.1e}.")
    return {
        "name": "kirkland",
        "source": ("E. J. Kirkland, Advanced Computing in Electron Microscopy, 2nd ed. "
                   "(Springer, New York, 2010), Appendix C (parameters for Z = 1-103), "
                   "doi:10.1007/978-1-4419-6533-2."),
        "formula": ("f_e(q) = sum_{i=1..3} a_i / (q^2 + b_i) + sum_{i=1..3} c_i exp(-d_i q^2), "
                    "q = |g| = 2 sin(theta)/lambda = 2s in A^-1 (no 2 pi), Kirkland 2010 Appendix C."),
        "variable": "q = 2s",
        "units": "a_i in A^-1, b_i in A^-2, c_i in A, d_i in A^2; f_e in A. chi2 = Kirkland's fit residual.",
        "valid_range": "fitted for 0 <= q <= 12 A^-1 (0 <= s <= 6 A^-1)",
        "s_max": 6.0,
        "provenance": ("Transcribed from the copy of Kirkland's fparams table shipped in diffsims 0.7.0 "
                       "(diffsims/utils/scattering_params.py, itself from scikit-ued); 9 significant "
                       "digits as in Kirkland's file."),
        "cross_check": check,
        "elements": elements,
    }


def lobato(src: Path) -> dict:
    ab = json.loads((src / "abtem/abtem/parametrizations/data/lobato.json").read_text())
    assert list(ab)[:103] == SYMBOLS
    elements = {el: {"a": [float(x) for x in ab[el][0]], "b": [float(x) for x in ab[el][1]]}
                for el in SYMBOLS}
    t = np.loadtxt(src / "py4DSTEM/py4DSTEM/process/utils/scattering_factors.txt", dtype=np.float64)
    assert t.shape == (103, 10)
    p4 = {SYMBOLS[i]: (list(t[i, 0::2]), list(t[i, 1::2])) for i in range(103)}
    text = (src / "diffsims/diffsims/utils/lobato_scattering_params.py").read_text()
    ds = None
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ATOMIC_SCATTERING_PARAMS_LOBATO":
            ds = dict(ast.literal_eval(node.value.args[0]))
    g = 2 * S

    def f(a, b):
        a, b = np.asarray(a)[:, None], np.asarray(b)[:, None]
        return (a * (2 + b * g**2) / (1 + b * g**2) ** 2).sum(0)

    wa = wd = fa = fd = 0.0
    swapped = []
    for el, e in elements.items():
        mine = np.array(e["a"] + e["b"])
        d4 = maxrel(mine, np.array(p4[el][0] + p4[el][1]))
        if d4 > 1e-6:
            swapped.append(el)
        else:
            wa = max(wa, d4)
            fa = max(fa, maxrel(f(e["a"], e["b"]), f(*p4[el])))
        a2 = [p[0] for p in ds[el]]
        b2 = [p[1] for p in ds[el]]
        wd = max(wd, maxrel(mine, np.array(a2 + b2)))
        fd = max(fd, maxrel(f(e["a"], e["b"]), f(a2, b2)))
    assert swapped == ["Rb", "Sr"], swapped
    check = (f"103/103 elements compared with diffsims 0.7.0 lobato_scattering_params.py: max relative "
             f"coefficient difference {wd:.1e}, max relative difference of f_e(g), 0 <= g <= 12 A^-1, "
             f"{fd:.1e}. Compared with py4DSTEM 0.14.18 scattering_factors.txt (16-17 digits): "
             f"{wa:.1e} and {fa:.1e} for 101 elements; py4DSTEM has the Rb and Sr rows swapped "
             f"(f_e(0) = 2 sum a_i = 11.78 A belongs to Rb: Peng 1996 gives 11.75 A for Rb, 13.11 A "
             f"for Sr), the other two copies do not.")
    return {
        "name": "lobato",
        "source": ("I. Lobato and D. Van Dyck, 'An accurate parameterization for scattering factors, "
                   "electron densities and electrostatic potentials for neutral atoms that obey all "
                   "physical constraints', Acta Cryst. A70, 636-649 (2014), doi:10.1107/S205327331401643X."),
        "formula": ("f_e(g) = sum_{i=1..5} a_i (2 + b_i g^2) / (1 + b_i g^2)^2, g = |g| = 2s in A^-1 "
                    "(no 2 pi); f_e(0) = 2 sum a_i."),
        "variable": "g = 2s",
        "units": "a_i in A, b_i in A^2; f_e in A.",
        "valid_range": "fitted for 0 <= g <= 12 A^-1 (0 <= s <= 6 A^-1); correct asymptotics beyond",
        "s_max": 6.0,
        "provenance": ("Transcribed from abTEM 1.0.11 abtem/parametrizations/data/lobato.json "
                       "(15 significant digits of the paper's supplementary table)."),
        "cross_check": check,
        "elements": elements,
    }


def _dans_peng(src: Path) -> tuple[dict, dict, list[str]]:
    """Neutral and ionic rows of Dans_Diffraction data/peng.dat (labels fixed from the Z, dZ columns)."""
    neutral, ions, notes = {}, {}, []
    for line in (src / "dans_diffraction/Dans_Diffraction/data/peng.dat").read_text().splitlines()[1:]:
        p = [x.strip() for x in line.split(",")]
        if len(p) < 13:
            continue
        z, dz = int(p[1]), int(float(p[2]))
        vals = [float(x) for x in p[3:13]]
        el = SYMBOLS[z - 1]
        q = -dz  # peng.dat dZ = number of extra electrons
        if p[0] == "I1+" and z == 53:
            q = -1  # Peng (1998) and ITC Table 4.3.2.4 list iodide, I-; peng.dat mislabels it I1+ / dZ -1
            notes.append("peng.dat row 'I1+' (dZ -1) is iodide I1- (Peng 1998; abTEM has I-)")
        key = ion_key(el, q)
        if p[0] != key and p[0] != "I1+":
            notes.append(f"peng.dat label {p[0]!r} (Z={z}, dZ={p[2]}) read as {key!r}")
        dest = neutral if q == 0 else ions
        if key in dest and dest[key] != vals:
            raise ValueError(f"conflicting duplicate rows for {key} in peng.dat")
        dest[key] = vals
    return neutral, ions, notes


def peng_low(src: Path) -> dict:
    import gemmi

    elements = {}
    for z in range(1, 99):
        c = gemmi.Element(z).c4322.get_coefs()
        elements[SYMBOLS[z - 1]] = {"a": [f32(x) for x in c[:5]], "b": [f32(x) for x in c[5:10]]}
    dans, _, _ = _dans_peng(src)
    ab = json.loads((src / "abtem/abtem/parametrizations/data/peng_low.json").read_text())
    n1 = w1 = 0
    for el, v in dans.items():
        n1 += 1
        w1 = max(w1, float(np.max(np.abs(np.array(elements[el]["a"] + elements[el]["b"]) - np.array(v)))))
    w2 = max(float(np.max(np.abs(np.array(e["a"] + e["b"]) - np.array(ab[el][0] + ab[el][1]))))
             for el, e in elements.items())
    missing = sorted(set(elements) - set(dans), key=Z_OF.get)
    diffs = [el for el, v in dans.items()
             if np.max(np.abs(np.array(elements[el]["a"] + elements[el]["b"]) - np.array(v))) > 1e-9]
    assert diffs == ["K"], diffs  # peng.dat prints K a2 as -1.4031 (sign typo); gemmi, abTEM: 1.4031
    w1 = max(float(np.max(np.abs(np.array(elements[el]["a"] + elements[el]["b"]) - np.array(v))))
             for el, v in dans.items() if el != "K")
    check = (f"{n1} elements compared with Dans_Diffraction 3.4.0 data/peng.dat (neutral rows): max "
             f"absolute coefficient difference {w1:.1e} except K, where peng.dat has a2 = -1.4031 (sign "
             f"typo; 1.4031 here and in abTEM); peng.dat lacks {', '.join(missing)}; 98/98 "
             f"compared with abTEM 1.0.11 peng_low.json: {w2:.1e}.")
    return {
        "name": "peng",
        "source": ("L.-M. Peng, G. Ren, S. L. Dudarev and M. J. Whelan, 'Robust parameterization of "
                   "elastic and absorptive electron atomic scattering factors', Acta Cryst. A52, 257-276 "
                   "(1996), doi:10.1107/S0108767395014371, Table 1 (0 <= s <= 2 A^-1); reprinted in "
                   "International Tables for Crystallography Vol. C, Table 4.3.2.2."),
        "formula": "f_e(s) = sum_{i=1..5} a_i exp(-b_i s^2), s = sin(theta)/lambda = |g|/2 in A^-1.",
        "variable": "s",
        "units": "a_i in A, b_i in A^2; f_e in A.",
        "valid_range": "fitted for 0 <= s <= 2 A^-1",
        "s_max": 2.0,
        "provenance": ("Primary copy: gemmi 0.7.5 Element.c4322 (ITC Vol. C Table 4.3.2.2), stored as "
                       "float32 there; the published 4-decimal values are recovered exactly as the "
                       "shortest float32 representation."),
        "cross_check": check,
        "elements": elements,
    }


def peng_high(src: Path) -> dict:
    text = (src / "diffsims/diffsims/utils/atomic_scattering_params.py").read_text()
    table = None
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ATOMIC_SCATTERING_PARAMS":
            table = dict(ast.literal_eval(node.value.args[0]))
    elements = {el: {"a": [p[0] for p in v], "b": [p[1] for p in v]} for el, v in table.items()
                if el in Z_OF}
    elements = dict(sorted(elements.items(), key=lambda kv: Z_OF[kv[0]]))
    ab = json.loads((src / "abtem/abtem/parametrizations/data/peng_high.json").read_text())
    w = max(float(np.max(np.abs(np.array(e["a"] + e["b"]) - np.array(ab[el][0] + ab[el][1]))))
            for el, e in elements.items())
    fw = max(maxrel(gauss(e["a"], e["b"], S), gauss(*ab[el], S)) for el, e in elements.items())
    check = (f"{len(elements)}/{len(ab)} elements compared with abTEM 1.0.11 peng_high.json: max absolute "
             f"coefficient difference {w:.1e}, max relative difference of f_e(s), 0 <= s <= 6, {fw:.1e}.")
    return {
        "name": "peng_high",
        "source": ("L.-M. Peng, G. Ren, S. L. Dudarev and M. J. Whelan, Acta Cryst. A52, 257-276 (1996), "
                   "doi:10.1107/S0108767395014371, Table 3 (0 <= s <= 6 A^-1); reprinted in International "
                   "Tables for Crystallography Vol. C, Table 4.3.2.3."),
        "formula": "f_e(s) = sum_{i=1..5} a_i exp(-b_i s^2), s = sin(theta)/lambda = |g|/2 in A^-1.",
        "variable": "s",
        "units": "a_i in A, b_i in A^2; f_e in A.",
        "valid_range": "fitted for 0 <= s <= 6 A^-1",
        "s_max": 6.0,
        "provenance": ("Transcribed from diffsims 0.7.0 diffsims/utils/atomic_scattering_params.py "
                       "(labelled there 'International Tables Vol. C, table 4.3.2.3')."),
        "cross_check": check,
        "elements": elements,
    }


def peng_ions(src: Path) -> dict:
    _, ions, notes = _dans_peng(src)
    ab = json.loads((src / "abtem/abtem/parametrizations/data/peng_ionic.json").read_text())
    conv = {}
    for k in ab:
        m = re.fullmatch(r"([A-Z][a-z]?)([+-]+)", k)
        conv[ion_key(m.group(1), len(m.group(2)) * (1 if m.group(2)[0] == "+" else -1))] = k
    common = sorted(set(ions) & set(conv), key=lambda k: (Z_OF[parse_ion(k)[0]], parse_ion(k)[1]))
    w = max(float(np.max(np.abs(np.array(ions[k]) - np.array(ab[conv[k]][0] + ab[conv[k]][1]))
                          / np.maximum(np.abs(np.array(ions[k])), 1e-12))) for k in common)
    only_dans = sorted(set(ions) - set(conv))
    only_ab = sorted(set(conv) - set(ions))
    elements = {k: {"a": ions[k][:5], "b": ions[k][5:]} for k in
                sorted(ions, key=lambda k: (Z_OF[parse_ion(k)[0]], parse_ion(k)[1]))}
    check = (f"{len(common)} ions compared with abTEM 1.0.11 peng_ionic.json: max relative coefficient "
             f"difference {w:.1e}; only in peng.dat: {only_dans}; only in abTEM: {only_ab}. "
             + "; ".join(notes) + ".")
    return {
        "name": "peng_ions",
        "source": ("L.-M. Peng, 'Electron scattering factors of ions and their parameterization', "
                   "Acta Cryst. A54, 481-485 (1998), doi:10.1107/S0108767398001901, Table 1; reprinted "
                   "in International Tables for Crystallography Vol. C, Table 4.3.2.4."),
        "formula": ("f_e(s) = sum_{i=1..5} a_i exp(-b_i s^2) + C q / s^2 with q the formal ionic charge "
                    "(q = Z - N), C = m0 e^2 / (8 pi eps0 h^2) = 0.023934 A, s = sin(theta)/lambda in "
                    "A^-1; the Gaussians fit the short-range part, the Coulomb term is added analytically."),
        "variable": "s",
        "units": "a_i in A, b_i in A^2; f_e in A. Keys are element + |charge| + sign ('O2-', 'Li1+').",
        "valid_range": "fitted for 0 <= s <= 6 A^-1",
        "s_max": 6.0,
        "provenance": ("Transcribed from Dans_Diffraction 3.4.0 Dans_Diffraction/data/peng.dat (ionic rows, "
                       "charge taken from its Z and dZ columns, since some labels there are misspelt)."),
        "cross_check": check,
        "elements": elements,
    }


def doyle_turner(src: Path) -> dict:
    felix, multem = _rows(DT_FELIX), _rows(DT_MULTEM)
    pm = json.loads((src / "pymatgen/pymatgen/analysis/diffraction/atomic_scattering_params.json").read_text())
    # Decisions where Felix and MULTEM disagree and pymatgen's 3-decimal copy matches neither
    # (or where Felix and MULTEM share a value that pymatgen and the physics contradict):
    # chosen by agreement with the other digits, the trend along the period and the fit to
    # Peng (1996) and Kirkland (2010) f_e(s) (rms deviation printed in the report).
    overrides = {
        ("Sc", 1): 88.9597,   # Felix 98.9597, MULTEM 38.9597, pymatgen 88.96
        ("Cl", 2): 2.2926,    # Felix 2.2976, MULTEM 2.2926, pymatgen 2.292
        ("Hg", 6): 1.2708,    # Felix 1.2708, MULTEM 1.2706, pymatgen 1.27 (effect < 2e-5)
        ("Rn", 1): 38.4058,   # Felix = MULTEM 28.4058, pymatgen 38.406; 38.4 fits Peng/Kirkland 2x better
    }
    assert set(felix) == set(multem)
    elements, log = {}, []
    for el in sorted(felix, key=Z_OF.get):
        p = [x for pair in pm[el] for x in pair]
        row = []
        for i in range(8):
            f, m, r = felix[el][i], multem[el][i], p[i]
            if (el, i) in overrides:
                v = overrides[(el, i)]
                log.append(f"{el} {'ab'[i % 2]}{i // 2 + 1}: Felix {f}, MULTEM {m}, pymatgen {r} -> {v}")
            elif f == m:
                v = f
                if abs(f - r) > 0.00051:
                    log.append(f"{el} {'ab'[i % 2]}{i // 2 + 1}: Felix = MULTEM {f}, pymatgen {r} -> {v}")
            else:
                ok = [c for c in (f, m) if abs(c - r) <= 0.00051]
                if not ok:  # pymatgen rounds a few values oddly (Fe b2 14.88): take the near one
                    near = sorted((abs(c - r), c) for c in (f, m))
                    if near[0][0] < 0.002 and near[1][0] > 0.01:
                        ok = [near[0][1]]
                if len(ok) != 1:
                    raise ValueError(f"undecided Doyle-Turner coefficient {el} {i}: {f} {m} {r}")
                v = ok[0]
                log.append(f"{el} {'ab'[i % 2]}{i // 2 + 1}: Felix {f}, MULTEM {m}, pymatgen {r} -> {v}")
            row.append(v)
        elements[el] = {"a": row[0::2], "b": row[1::2]}
    four = sorted((el for el, v in pm.items() if el in Z_OF and v[3][0] != 0), key=Z_OF.get)
    assert four == list(elements), (four, list(elements))
    check = ("Three public copies compared coefficient by coefficient: Felix (4 dp), MULTEM (4 dp), "
             "pymatgen 2026.10.24 atomic_scattering_params.json (3 dp; its 54 four-Gaussian entries are "
             "exactly the 54 elements below, the other elements there are a 3-Gaussian fit from another "
             f"source). Felix and MULTEM agree on {432 - sum(1 for el in felix for i in range(8) if felix[el][i] != multem[el][i])} of 432 coefficients; decisions: "
             + "; ".join(log) + ". MULTEM files the Eu row under La; f_e of that row agrees with Peng's "
             "Eu (rms 2.4 %) not La (9 %), so it is Eu, as in Felix and pymatgen.")
    return {
        "name": "doyle_turner",
        "source": ("P. A. Doyle and P. S. Turner, 'Relativistic Hartree-Fock X-ray and electron "
                   "scattering factors', Acta Cryst. A24, 390-397 (1968), doi:10.1107/S0567739468000756, "
                   "electron scattering factor parameters (Table 3)."),
        "formula": "f_e(s) = sum_{i=1..4} a_i exp(-b_i s^2), s = sin(theta)/lambda = |g|/2 in A^-1.",
        "variable": "s",
        "units": "a_i in A, b_i in A^2; f_e in A.",
        "valid_range": "fitted for 0 <= s <= 2 A^-1; neutral atoms only, the 54 elements published",
        "s_max": 2.0,
        "provenance": ("Transcribed by hand from two public source files, WarwickMicroscopy/Felix "
                       "src/felix/set_scatter_factors_mod.f90 and Ivanlh20/multem src/atomic_data.hpp, "
                       "and decided coefficient by coefficient against the 3-decimal copy in pymatgen "
                       "(tools/make_scattering_tables.py)."),
        "cross_check": check,
        "elements": elements,
    }


def xray_itc(src: Path) -> dict:
    import gemmi

    elements = {}
    for z in range(1, 99):
        c = [f32(x) for x in gemmi.Element(z).it92.get_coefs()]
        elements[SYMBOLS[z - 1]] = {"a": c[:4], "b": c[4:8], "c": c[8]}
    extra = {}
    for label, v in _rows(CCTBX_IT1992_IONS).items():
        entry = {"a": v[:4], "b": v[4:8], "c": v[8]}
        el, q = parse_ion(label)
        if q == 0:
            extra[label] = entry
        else:
            elements[label] = entry
    # Tl3+ a2: IT Vol. IV (1974) and cctbx 18.3841; ITC Vol. C (1992) prints 18.3481 (misprint:
    # sum a + c = 77.995 electrons with 18.3841, 77.959 with 18.3481).
    keys = sorted(elements, key=lambda k: (Z_OF[parse_ion(k)[0]], parse_ion(k)[1]))
    elements = {k: elements[k] for k in keys}
    # checks: electron count, independent neutral copy (Dans_Diffraction), ion copy
    worst_n = max(abs(sum(e["a"]) + e["c"] - (Z_OF[parse_ion(k)[0]] - parse_ion(k)[1]))
                  for k, e in elements.items() if k != "H")
    dans = {}
    lines = (src / "dans_diffraction/Dans_Diffraction/data/Dans Element Properties.txt").read_text().splitlines()
    header = None
    for line in lines:
        if line.startswith("Z "):
            header = line.split()
            continue
        if header and line.strip() and not line.startswith("#"):
            p = line.split()
            try:
                z = int(p[0])
            except ValueError:
                continue
            if z > 98 or len(p) != len(header):
                continue
            # fixed columns a1 b1 a2 b2 a3 b3 a4 b4 c follow Nscat; locate by header offset from the end
            ia = header.index("a1") - len(header)
            vals = [float(x) for x in p[ia:ia + 9]]
            dans[SYMBOLS[z - 1]] = vals
    nd, wd, diffs = 0, 0.0, []
    for el, v in dans.items():
        if el not in elements or el == "H":
            continue
        e = elements[el]
        mine = [e["a"][0], e["b"][0], e["a"][1], e["b"][1], e["a"][2], e["b"][2], e["a"][3], e["b"][3], e["c"]]
        nd += 1
        d = float(np.max(np.abs(np.array(mine) - np.array(v))))
        if d > 1e-6:
            diffs.append(f"{el} {d:.1e}")
        wd = max(wd, d)
    check = (f"Neutral atoms (gemmi it92, itself derived from cctbx) compared with the independent copy "
             f"in Dans_Diffraction 3.4.0 'Dans Element Properties.txt' ('ITC p578'): {nd} elements, "
             f"{'identical to all printed digits' if not diffs else 'identical except ' + ', '.join(diffs)}. Ions (hand transcription of "
             f"cctbx it1992.cpp) checked by electron count: |sum a_i + c - (Z - q)| <= {worst_n:.3f} for "
             f"every entry, and spot-compared with the LAMMPS compute_xrd ASFXRD copy (which has typos "
             f"in O1-, Li, Li1+ and Tm that cctbx does not). 'H' is the row ITC prints for H (Stewart, "
             f"Davidson & Simpson 1965 bonded H, as in cctbx and gemmi); the isolated-atom fit is kept "
             f"as 'Hiso' under 'extra_entries' (Dans_Diffraction's 'H'), with ITC's valence-state 'Cval' "
             f"and 'Sival'. O2- is Hovestreydt (1983), added by cctbx. Tl3+ a2 = 18.3841 (IT Vol. IV; "
             f"ITC Vol. C misprints 18.3481, which breaks the electron count).")
    return {
        "name": "xray_itc",
        "source": ("International Tables for Crystallography Vol. C (ed. A. J. C. Wilson, Kluwer, 1992), "
                   "Table 6.1.1.4 (pp. 500-502), a reprint of International Tables for X-ray "
                   "Crystallography Vol. IV (Kynoch, 1974) Table 2.2B (D. T. Cromer & J. B. Mann fits); "
                   "O2-: E. Hovestreydt, Acta Cryst. A39, 268-269 (1983)."),
        "formula": ("f_x(s) = sum_{i=1..4} a_i exp(-b_i s^2) + c, s = sin(theta)/lambda in A^-1 "
                    "(Cromer-Mann form); f_x in electrons."),
        "variable": "s",
        "units": "a_i and c in electrons, b_i in A^2. Ion keys are element + |charge| + sign ('Si4+', 'O2-').",
        "valid_range": "fitted for 0 <= s <= 2 A^-1",
        "s_max": 2.0,
        "provenance": ("Neutral atoms H-Cf: gemmi 0.7.5 Element.it92 (float32 there; published decimals "
                       "recovered as the shortest float32 repr). Ions: transcribed by hand from "
                       "cctbx_project cctbx/eltbx/xray_scattering/it1992.cpp (embedded in "
                       "tools/make_scattering_tables.py)."),
        "cross_check": check,
        "elements": elements,
        "extra_entries": extra,
    }


def dump(table: dict, path: Path) -> None:
    """Readable, compact JSON: metadata indented, one element per line."""
    lines = ["{"]
    items = [(k, v) for k, v in table.items() if k not in ("elements", "extra_entries")]
    for k, v in items:
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    for block in ("elements", "extra_entries"):
        if block not in table:
            continue
        lines.append(f'  "{block}": {{')
        ents = list(table[block].items())
        for j, (el, e) in enumerate(ents):
            comma = "," if j < len(ents) - 1 else ""
            lines.append(f"    {json.dumps(el)}: {json.dumps(e, separators=(', ', ': '))}{comma}")
        lines.append("  },")
    lines[-1] = lines[-1].rstrip(",")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("/tmp/sf/x"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for fn, name in ((kirkland, "kirkland"), (lobato, "lobato"), (peng_low, "peng"),
                     (peng_high, "peng_high"), (peng_ions, "peng_ions"),
                     (doyle_turner, "doyle_turner"), (xray_itc, "xray_itc")):
        table = fn(args.src)
        dump(table, OUT / f"{name}.json")
        print(f"{name}: {len(table['elements'])} entries\n  {table['cross_check']}\n")


if __name__ == "__main__":
    main()
