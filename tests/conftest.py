"""Shared fixtures. The DALI fixtures (prefix ``dali_``) build tiny on-disk data sets once per session;
see ``dali_data.py`` for the colour coding that lets a test recognise every sample."""

import os
import sys

import pytest

#: The test helpers (data makers, test images, the g++ harnesses, the script runner) live in
#: tests/support; the tests import them by module name.
SUPPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

from dali_data import make_mixing, make_tree  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_core: checks what the real IPMix core does (fails against an identity stub)")


@pytest.fixture(scope="session")
def dali_tree(tmp_path_factory):
    """ImageFolder tree of 21 solid 20x24 JPEGs, 3 classes x 7: ``(root, {index: (path, label)})``."""
    root = tmp_path_factory.mktemp("dali_tree")
    return str(root), make_tree(root)


@pytest.fixture(scope="session")
def dali_mixing(tmp_path_factory):
    """Folder of 5 random-noise PNG mixing pictures (two in a sub-folder), sizes 30..42 x 32..40."""
    root = tmp_path_factory.mktemp("dali_mixing")
    make_mixing(root)
    return str(root)


@pytest.fixture
def dali_cpu():
    """Common CPU pipeline arguments for the DALI tests."""
    return dict(device="cpu", num_threads=2)
