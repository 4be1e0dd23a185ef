"""Regression: four small runs give the numbers recorded in tests/data/reference_runs.npz.

The reference was recorded (``tests/data/record_reference.py``) before the core was split
into stages; the same key and configuration must still give the same metrics and final
parameters, bit for bit on the library versions it was recorded with (XLA may round
differently on others, so there the check allows float rounding).
"""

import importlib.metadata as md
import json
import os
import sys

import numpy as np
import pytest

HERE = os.path.join(os.path.dirname(__file__), "data")
sys.path.insert(0, HERE)
from record_reference import CONFIGS, record  # noqa: E402

sys.path.remove(HERE)


@pytest.fixture(scope="module")
def reference():
    data = np.load(os.path.join(HERE, "reference_runs.npz"))
    versions = json.loads(str(data["__versions__"]))
    same = all(md.version(p) == v for p, v in versions.items())
    return {k: data[k] for k in data.files if k != "__versions__"}, same


@pytest.fixture(scope="module")
def today():
    return record()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_numbers_as_recorded(name, reference, today):
    expected, exact = reference
    keys = sorted(k for k in expected if k.startswith(name + "|"))
    assert keys == sorted(k for k in today if k.startswith(name + "|"))  # the same metrics and parameters
    for k in keys:
        if exact:
            np.testing.assert_array_equal(today[k], expected[k], err_msg=k)
        else:
            np.testing.assert_allclose(today[k], expected[k], rtol=1e-4, atol=1e-6, err_msg=k)
