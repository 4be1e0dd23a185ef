"""Regression: four small runs give the numbers recorded in tests/data/reference_runs.npz.

The reference was recorded (``tests/data/record_reference.py``) before the core was split
into stages; the same key and configuration must still give the same metrics and final
parameters, bit for bit on the library versions and the kind of processor it was recorded with
(``__machine__``: vendor, AVX-512 or not; XLA compiles for the host's instruction set and rounds
differently on others), or with a record of this machine's kind (``reference_runs.machine-*.npz``,
recorded with ``--this-machine`` after agreeing with the first to float rounding). Elsewhere the
check allows float rounding.
"""

import os
import sys

import numpy as np
import pytest

HERE = os.path.join(os.path.dirname(__file__), "data")
sys.path.insert(0, HERE)
from record_reference import CONFIGS, assert_close, load, record  # noqa: E402

sys.path.remove(HERE)


@pytest.fixture(scope="module")
def reference():
    return load()


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
            assert_close(k, today[k], expected[k])
