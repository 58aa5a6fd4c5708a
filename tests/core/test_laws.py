"""The laws' one source (``dali_ipmix/laws.py``): the C header is generated from it and current, the
Python evaluation follows the spec's ranges, and every registered op has a law."""

import numpy as np
import pytest

from dali_ipmix import laws
from dali_ipmix.ops import IMAGE_OPS


def test_the_c_header_is_generated_from_laws_py():
    with open(laws.HEADER) as f:
        committed = f.read()
    assert committed == laws.c_header(), ("csrc/ipx_laws.h is stale: run `python -m dali_ipmix.laws` "
                                          "and rebuild the plugin (./scripts/setup.sh)")


def test_every_op_has_one_law_and_a_distinct_code():
    assert set(laws.LAWS) == set(IMAGE_OPS)
    assert sorted(laws.OP_CODES.values()) == list(range(len(laws.LAWS)))
    for name, op in IMAGE_OPS.items():
        assert (op.family, op.signed, op.param_range) == (laws.LAWS[name].family, laws.LAWS[name].signed,
                                                           laws.LAWS[name].param_range)
        if op.family == laws.AFFINE:
            assert laws.LAWS[name].matrix, name


@pytest.mark.parametrize("name", [n for n, law in laws.LAWS.items() if law.param_range])
def test_parameters_span_their_documented_range(name):
    lo, hi = laws.LAWS[name].param_range
    width = 96
    got = laws.parameter(name, np.array([0.0, 10.0]), np.array([1, 1]), width, width)
    scale = width if name.startswith("translate") else 1   # translate: a fraction of the side
    np.testing.assert_allclose(got, [lo * scale, hi * scale], atol=1e-9)
    if laws.LAWS[name].signed:
        np.testing.assert_array_equal(laws.parameter(name, [7.5], [-1], 30, 40),
                                      -laws.parameter(name, [7.5], [1], 30, 40))


def test_matrices_and_cut():
    np.testing.assert_array_equal(laws.matrix("mirror", np.zeros(2), 8, 10),
                                  np.broadcast_to([[-1.0, 0, 10], [0, 1, 0]], (2, 2, 3)))
    # 90 degrees counter-clockwise: output (u, v) samples input (10 - v, u)
    np.testing.assert_allclose(laws.matrix("rotate", [90.0], 10, 10)[0], [[0, -1, 10], [1, 0, 0]], atol=1e-12)
    assert laws.cut("autocontrast", [2.0], 10, 20).tolist() == [4]     # 2 % of 200 pixels
    assert laws.cut("rotate", [2.0], 10, 20).tolist() == [0]
    assert laws.plan_draws(3, 3) == 10 + 9 * len(laws.STEP_DRAWS)
    assert laws.plan_draws(2, 0) == laws.plan_draws(2, 1)
