"""The optional extras: a missing module is reported with the extra that brings it; the progress bar
works without tqdm."""

import sys

import pytest

from dali_ipmix import extras


def test_a_missing_extra_module_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)      # import skimage -> ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"the sample photos needs scikit-image, which is not installed: "
                                          r"pip install 'dali-ipmix\[demo\]'"):
        extras.require("skimage.data", "the sample photos")


def test_other_import_errors_pass_unchanged():
    with pytest.raises(ModuleNotFoundError, match="No module named 'not_a_module_of_ours'"):
        extras.require("not_a_module_of_ours", "x")


def test_lazy_attributes_name_the_torch_extra(monkeypatch):
    import dali_ipmix
    monkeypatch.delitem(dali_ipmix.__dict__, "jsd_loss", raising=False)
    monkeypatch.delitem(sys.modules, "dali_ipmix.losses", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"dali_ipmix.jsd_loss needs PyTorch.*dali-ipmix\[torch\]"):
        dali_ipmix.jsd_loss


def test_progress_without_tqdm_prints_lines(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with extras.progress_bar(5, "work", "img") as bar:
        bar.update(2)
        bar.update(3)
    assert capsys.readouterr().err.strip().splitlines()[-1] == "work: 5/5 img"
    with extras.progress_bar(5, "quiet", "img", disable=True) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""
