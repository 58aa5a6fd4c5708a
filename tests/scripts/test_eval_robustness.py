"""pipelines/eval_robustness.py on tiny generated CIFAR-10-C and ImageNet-C folders, on the CPU.

The checkpoints come from one-step runs of the training scripts. The CIFAR-C labels are built from an
independent forward pass of the checkpoint so that the expected error of every corruption and severity
is known exactly (severity s of gaussian_noise: 0, 25, 50, 75, 100 % wrong), which pins down the data
layout, the normalisation and the averaging.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from dali_ipmix._scripts import robustness as R
from dali_ipmix.constants import IMAGENET_MEAN, IMAGENET_STD
from script_data import SCRIPTS, load_script, make_cifar, make_imagefolder, run_script

N = 20          # images per severity
K = 4           # CIFAR classes
DESIGNED = "gaussian_noise"  # the corruption whose labels make the error 0, 25, 50, 75, 100 % by severity


@pytest.fixture(scope="module")
def ev():
    return load_script("eval_robustness")


def _call(ev, argv):
    return ev.main([str(a) for a in argv])


def _fails(ev, argv) -> str:
    with pytest.raises(SystemExit) as err:
        _call(ev, argv)
    return str(err.value)


# ----------------------------------------------------------------------------------- unit tests
def test_rms_calibration_error_by_hand():
    rms = R.rms_calibration_error
    # bins of 2 after sorting: conf (.3, .6) acc 1/2 -> |.5 - .45| = .05; conf (.8, .9) acc 1/2 -> .35
    assert rms([0.9, 0.8, 0.6, 0.3], [1, 0, 1, 0], bin_size=2) == pytest.approx(np.sqrt(0.5 * 0.05**2 + 0.5 * 0.35**2))
    assert rms([0.9, 0.8, 0.6, 0.3], [1, 0, 1, 0], bin_size=2) == pytest.approx(0.25)
    # 5 samples, bins of 2: [0:2] and [2:5] (the last bin takes the remainder, and it counts)
    assert rms([0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 1, 1, 1], bin_size=2) == pytest.approx(
        np.sqrt(0.4 * 0.15**2 + 0.6 * 0.6**2))
    assert rms([0.5, 0.5, 0.5], [1, 0, 1]) == pytest.approx(1 / 6)  # fewer than 100 samples: one bin
    assert rms(np.ones(250), np.ones(250)) == 0.0
    conf = np.r_[np.full(100, 0.2), np.full(150, 0.9)]  # default bins: [0:100], [100:250]
    corr = np.r_[np.zeros(100), np.ones(150)]
    assert rms(conf, corr) == pytest.approx(np.sqrt(0.4 * 0.2**2 + 0.6 * 0.1**2))


def test_mce_normalisation():
    table = {"a": 0.5, "b": 0.25}
    errors = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.05] * 5}
    # CE = sum of the 5 errors / sum of the reference's 5 errors (5 x its severity mean)
    assert R.corruption_errors(errors, table) == pytest.approx({"a": 1.5 / 2.5, "b": 0.25 / 1.25})
    assert R.mean_ce(errors, table) == pytest.approx(0.4)
    assert R.mean_ce({c: [e] * 5 for c, e in R.ALEXNET_ERR.items()}) == pytest.approx(1.0)
    assert tuple(R.ALEXNET_ERR) == R.CORRUPTIONS and len(R.CORRUPTIONS) == 15
    assert (R.ALEXNET_ERR["gaussian_noise"], R.ALEXNET_ERR["brightness"], R.ALEXNET_ERR["jpeg_compression"]) == \
        (0.886428, 0.564592, 0.606500)
    with pytest.raises(KeyError):
        R.corruption_errors({"c": [0.1] * 5}, table)


def test_cifar_normalisation_is_the_training_one(ev):
    # The arrays are normalised as the pipelines' crop_mirror_normalize does: (x / 255 - mean) / std.
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    (x, y), = ev.array_batches(images, np.arange(3), 8, torch.device("cpu"))
    expect = (images.transpose(0, 3, 1, 2) / 255 - np.reshape(IMAGENET_MEAN, (1, 3, 1, 1))) / \
        np.reshape(IMAGENET_STD, (1, 3, 1, 1))
    np.testing.assert_allclose(x.numpy(), expect, atol=1e-5)
    assert y.tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------ CIFAR-10-C
def _reference_predict(ckpt_path, images):
    """(confidence, prediction) of the checkpoint's WRN-10-1, independently of the eval script."""
    from dali_ipmix._scripts.models import WideResNet
    net = WideResNet(10, 1, K)
    net.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True)["model"])
    net.eval()
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        conf, pred = net(x).softmax(1).max(1)
    return conf.numpy().astype(np.float64), pred.numpy()


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    folder, arrays = make_cifar(root, "cifar-10", train=32, test=N, classes=K)
    run_script([SCRIPTS / "train_cifar.py", folder, "--loader", "pytorch", "--no-jsd", "--device", "cpu",
                "--arch", "wrn-10-1", "-b", "16", "-j", "0", "--epochs", "1", "--max-steps", "1",
                "--output", root / "run"])
    ckpt = root / "run" / "checkpoint.pth"
    base = arrays["val"][0]
    rng = np.random.default_rng(5)
    data = {}
    for i, c in enumerate([*ev_corruptions(), "speckle_noise"]):
        sets = [np.clip(base + rng.normal(0, 12 * (s - 1) + i, base.shape), 0, 255) for s in (1, 2, 3, 4)]
        sets.append(rng.integers(0, 256, base.shape))  # severity 5: pure noise
        data[c] = np.concatenate(sets).astype(np.uint8)
    # Labels from the designed corruption's predictions: at severity s the first 5 (s - 1) images get a
    # wrong label (cycling through the other classes, so every class appears), the rest the predicted one.
    _, pred = _reference_predict(ckpt, data[DESIGNED])
    labels = pred.copy()
    for s in range(5):
        for j in range(5 * s):
            k = s * N + j
            labels[k] = (pred[k] + 1 + k % (K - 1)) % K
    cdir = root / "CIFAR-10-C"
    cdir.mkdir()
    np.save(cdir / "labels.npy", labels.astype(np.int64))
    for c, a in data.items():
        np.save(cdir / f"{c}.npy", a)
    return {"root": root, "pickles": folder, "clean": arrays["val"], "ckpt": ckpt, "dir": cdir, "data": data,
            "labels": labels}


def ev_corruptions():
    return ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
            "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
            "jpeg_compression")


def test_cifar_c_errors_layout_and_calibration(tmp_path, cifar, ev):
    out_json = tmp_path / "c10c.json"
    log = run_script([SCRIPTS / "eval_robustness.py", cifar["ckpt"], "--cifar-c", cifar["dir"], "--clean",
                      cifar["pickles"], "--device", "cpu", "-b", str(N), "--json", out_json])
    assert "mean corruption error" in log and "extra corruptions" in log
    out = json.loads(out_json.read_text())
    assert list(out["corruptions"]) == list(ev_corruptions()) and out["complete"] and not out["missing_corruptions"]
    assert (out["arch"], out["num_classes"], out["benchmark"]) == ("wrn-10-1", K, "CIFAR-C")
    # The designed corruption: severity s has 5 (s - 1) of 20 wrong, in data-layout order.
    assert out["corruptions"][DESIGNED]["errors"] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    labels = cifar["labels"]
    for c, r in {**out["corruptions"], **out["extra_corruptions"]}.items():
        conf, pred = _reference_predict(cifar["ckpt"], cifar["data"][c])
        correct = pred == labels
        want = [1 - correct[s * N:(s + 1) * N].mean() for s in range(5)]
        assert r["errors"] == pytest.approx(want, abs=1e-9), c
        assert r["error"] == pytest.approx(np.mean(want)) and r["images_per_severity"] == [N] * 5
        calib = [R.rms_calibration_error(conf[s * N:(s + 1) * N], correct[s * N:(s + 1) * N]) for s in range(5)]
        assert r["rms_calibration_errors"] == pytest.approx(calib, abs=1e-5), c
        assert all(0 <= v <= 1 for v in r["errors"] + r["rms_calibration_errors"])
    # Extra corruptions are reported apart and stay out of the mean.
    assert list(out["extra_corruptions"]) == ["speckle_noise"]
    assert out["mean_corruption_error"] == pytest.approx(np.mean([r["error"] for r in out["corruptions"].values()]))
    assert out["mean_rms_calibration_error"] == pytest.approx(
        np.mean([r["rms_calibration_error"] for r in out["corruptions"].values()]))
    # Clean error on the pickles' test split, with their labels.
    images, clean_labels = cifar["clean"]  # as written into the test pickle
    conf, pred = _reference_predict(cifar["ckpt"], images)
    correct = pred == clean_labels
    assert out["clean"]["error"] == pytest.approx(1 - correct.mean())
    assert out["clean"]["rms_calibration_error"] == pytest.approx(R.rms_calibration_error(conf, correct), abs=1e-5)
    assert out["clean"]["images"] == N


def test_cifar_c_missing_corruption(tmp_path, cifar, ev):
    part = tmp_path / "part"
    shutil.copytree(cifar["dir"], part)
    (part / "fog.npy").unlink()
    (part / "speckle_noise.npy").unlink()
    base = [cifar["ckpt"], "--cifar-c", part, "--device", "cpu", "-b", str(N)]
    msg = _fails(ev, base)
    assert "fog.npy" in msg and "--allow-missing" in msg
    out = _call(ev, [*base, "--allow-missing"])
    assert out["missing_corruptions"] == ["fog"] and not out["complete"] and "fog" not in out["corruptions"]
    assert len(out["corruptions_in_mean"]) == 14
    assert out["mean_corruption_error"] == pytest.approx(np.mean([r["error"] for r in out["corruptions"].values()]))
    assert out["corruptions"][DESIGNED]["errors"] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # A wrong-shaped file and a model that does not fit are errors too.
    np.save(part / "fog.npy", np.zeros((7, 32, 32, 3), np.uint8))
    assert "fog.npy: shape (7, 32, 32, 3)" in _fails(ev, base)
    (part / "fog.npy").unlink()
    assert "do not fit --arch wrn-16-1" in _fails(ev, [*base, "--allow-missing", "--arch", "wrn-16-1"])


# ------------------------------------------------------------------------------------ ImageNet-C
IC = ("gaussian_noise", "jpeg_compression")


def _imagenet_c(root, classes=3, size=32, seed=7):
    from PIL import Image
    from script_data import _image
    rng = np.random.default_rng(seed)
    for c in IC:
        for s in range(1, 6):
            for k in range(classes):
                d = root / c / str(s) / f"class{k:02d}"
                d.mkdir(parents=True)
                for i in range(2):
                    img = np.clip(_image(rng, k, size) + rng.normal(0, 15 * s, (size, size, 3)), 0, 255)
                    Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def inet(tmp_path_factory):
    root = tmp_path_factory.mktemp("inet")
    data = make_imagefolder(root / "data", classes=3, train_per_class=2, val_per_class=2)
    run_script([SCRIPTS / "train_imagenet.py", data, "--loader", "pytorch", "--device", "cpu", "--arch", "resnet18",
                "--size", "32", "-b", "4", "-j", "0", "--epochs", "1", "--max-steps", "1", "--output", root / "run"])
    return {"data": data, "ckpt": root / "run" / "checkpoint.pth", "c": _imagenet_c(root / "ImageNet-C")}


def test_imagenet_c_mce_uses_the_alexnet_table(tmp_path, inet, ev):
    out_json = tmp_path / "inc.json"
    base = [inet["ckpt"], "--imagenet-c", inet["c"], "--device", "cpu", "--size", "32", "-b", "4", "-j", "1"]
    msg = _fails(ev, base)
    assert "missing corruption folder(s) shot_noise" in msg and "--allow-missing" in msg
    run_script([SCRIPTS / "eval_robustness.py", *base, "--allow-missing", "--clean", inet["data"] / "val",
                "--json", out_json])
    out = json.loads(out_json.read_text())
    assert (out["benchmark"], out["arch"], out["num_classes"], out["loader"]) == ("ImageNet-C", "resnet18", 3, "dali-ipmix")
    assert list(out["corruptions"]) == list(IC) and not out["extra_corruptions"] and not out["complete"]
    assert len(out["missing_corruptions"]) == 13 and "shot_noise" in out["missing_corruptions"]
    assert out["clean"]["images"] == 6
    alexnet = {"gaussian_noise": 0.886428, "jpeg_compression": 0.606500}  # Hendrycks & Dietterich (2019)
    for c, r in out["corruptions"].items():
        assert len(r["errors"]) == 5 and all(0 <= e <= 1 for e in r["errors"] + r["rms_calibration_errors"])
        assert r["images_per_severity"] == [6] * 5
        assert r["alexnet_error"] == alexnet[c] and r["ce"] == pytest.approx(sum(r["errors"]) / (5 * alexnet[c]))
    assert out["mce"] == pytest.approx(np.mean([np.mean(out["corruptions"][c]["errors"]) / alexnet[c] for c in IC]))
    assert out["mean_corruption_error"] == pytest.approx(np.mean([out["corruptions"][c]["error"] for c in IC]))
    # The DALI path decodes and normalises only: torchvision's CenterCrop(size) + Normalize gives the same.
    tv = _call(ev, [*base, "--allow-missing", "--loader", "torchvision", "-j", "0"])
    for c in IC:
        assert tv["corruptions"][c]["errors"] == pytest.approx(out["corruptions"][c]["errors"], abs=1e-9)
        assert tv["corruptions"][c]["rms_calibration_errors"] == pytest.approx(
            out["corruptions"][c]["rms_calibration_errors"], abs=1e-4)


def test_imagenet_c_dali_batches_are_decode_and_normalise_only(inet, ev):
    """The DALI feeding of a severity folder gives exactly torchvision's CenterCrop(size) + Normalize tensors."""
    folder = inet["c"] / "gaussian_noise" / "3"
    batches = {}
    for loader in ("dali-ipmix", "torchvision"):
        args = ev.parse_args([str(inet["ckpt"]), "--imagenet-c", str(inet["c"]), "--size", "32", "-b", "4", "-j", "1" if
                              loader == "dali-ipmix" else "0", "--loader", loader])
        check = ev.ClassCheck(3, {})
        xs, ys = zip(*ev.folder_batches(args, folder, "cifar", torch.device("cpu"), check))
        batches[loader] = torch.cat(xs), torch.cat(ys)
        assert check.names == ["class00", "class01", "class02"]
    (xd, yd), (xt, yt) = batches["dali-ipmix"], batches["torchvision"]
    assert xd.shape == (6, 3, 32, 32) and yd.tolist() == yt.tolist() == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(xd, xt, atol=1e-5, rtol=0)


def test_imagenet_c_class_and_size_checks(tmp_path, inet, ev):
    base = ["--device", "cpu", "--size", "32", "-b", "4", "-j", "1", "--allow-missing"]
    four = _imagenet_c(tmp_path / "four", classes=4)
    assert "4 class folders but the model has 3 outputs" in _fails(ev, [inet["ckpt"], "--imagenet-c", four, *base])
    big = _imagenet_c(tmp_path / "big", size=40)
    assert "40x40 pixels, expected 32x32" in _fails(ev, [inet["ckpt"], "--imagenet-c", big, *base])
    renamed = tmp_path / "renamed"
    shutil.copytree(inet["c"], renamed)
    for d in renamed.glob("*/*/class02"):
        d.rename(d.with_name("class99"))
    assert "differ from the training classes" in _fails(ev, [inet["ckpt"], "--imagenet-c", renamed, *base])
