"""The shared mechanisms of qcbed._core: atomic writes, strict JSON, hkl keys, names."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qcbed._core.files import atomic_write, atomic_write_text
from qcbed._core.hkl import hkl_key, hkl_name, key_hkl
from qcbed._core.jsonio import dumps
from qcbed._core.parameters import Parameter, parse_parameter_name
from qcbed.errors import InputError


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_keeps_the_suffix_for_numpy(tmp_path: Path):
    target = tmp_path / "x.npy"
    atomic_write(target, lambda t: np.save(t, np.arange(3)))
    np.testing.assert_array_equal(np.load(target), [0, 1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_strict_json_writes_null_for_nan():
    text = dumps({"a": np.float64("nan"), "b": [1.0, math.inf], "c": np.arange(2),
                  "d": Path("p"), "e": 1 + 2j, "f": np.bool_(True)})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": [0, 1], "d": "p",
                                "e": [1.0, 2.0], "f": True}
    assert "NaN" in dumps({"a": float("nan")}, nan_as_null=False)


def test_hkl_keys_and_names():
    assert hkl_key((1, -1, np.int64(0))) == "1,-1,0"
    assert key_hkl("1,-1,0") == (1, -1, 0)
    assert hkl_name("Uabs", (2, 0, -2)) == "Uabs(2,0,-2)"
    kind, h, canon = parse_parameter_name(" U( 2, 0,-2)")
    assert (kind, h, canon) == ("U", (2, 0, -2), hkl_name("U", (2, 0, -2)))


def test_parameter_checks_its_bounds():
    with pytest.raises(InputError):
        Parameter("thickness", 5.0, "thickness", 1.0, lower=10.0)
