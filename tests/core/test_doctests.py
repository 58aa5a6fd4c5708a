"""The replay examples in the docstrings run as written."""

import doctest

import pytest

import dali_ipmix.execute
import dali_ipmix.table


@pytest.mark.parametrize("module", [dali_ipmix.execute, dali_ipmix.table])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
