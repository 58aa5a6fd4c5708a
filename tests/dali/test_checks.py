"""Argument checks (dali_ipmix.checks): every integer argument takes Python and NumPy integers and
refuses bool, strings and floats; an error names the argument, the value and the rule; non-finite
normalisation is refused. All checked before any file is listed."""

import math

import numpy as np
import pytest

from dali_ipmix import IPMixConfig, checks, ipmix_batch
from dali_ipmix.fn import normalize_args
from dali_ipmix.iterator import IPMixIterator, shard_defaults
from dali_ipmix.graphs import training_pipeline, validation_pipeline

from dali_data import collect_epoch

NOT_INTEGERS = [True, np.bool_(False), "3", 2.0, np.float64(1.0), [1]]


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), np.intp(3)])
def test_integers_python_and_numpy_accepted_as_int(value):
    out = checks.integer("seed", value, 0)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_non_integers_refused_naming_argument_and_rule(value):
    with pytest.raises(ValueError) as err:
        checks.integer("batch_size", value, 1)
    msg = str(err.value)
    assert msg.startswith(f"batch_size={value!r} is invalid") and "an integer >= 1" in msg, msg


def test_bounds_name_the_rule():
    with pytest.raises(ValueError, match=r"^seed=-1 is invalid: must be >= 0$"):
        checks.integer("seed", -1, 0)
    with pytest.raises(ValueError, match=r"^k=33 is invalid: must be <= 32"):
        checks.integer("k", 33, 1, 32)
    assert checks.optional_integer("device_id", None, 0) is None
    with pytest.raises(ValueError, match=r"device_id='0' is invalid: expected an integer >= 0 .*or None"):
        checks.optional_integer("device_id", "0", 0)


# ------------------------------------------------------------------------------------ pipelines
def _call(which, tmp_path, **kw):
    """A pipeline on a folder that does not exist: an argument error must come first."""
    args = dict(batch_size=2, preset="cifar", size=16, device="cpu")
    args.update(kw)
    if which == "training":
        return training_pipeline(str(tmp_path / "missing"), mixing_root=str(tmp_path / "missing"), **args)
    args.pop("start_epoch", None)
    return validation_pipeline(str(tmp_path / "missing"), **args)


INTEGER_ARGS = ["batch_size", "size", "seed", "shard_id", "num_shards", "num_threads", "device_id",
                "prefetch_queue_depth", "start_epoch"]


@pytest.mark.parametrize("which", ["training", "validation"])
@pytest.mark.parametrize("name", INTEGER_ARGS)
@pytest.mark.parametrize("value", [True, "3", 2.0])
def test_pipeline_integer_arguments_refuse_bool_str_float_up_front(tmp_path, which, name, value):
    if which == "validation" and name == "start_epoch":
        pytest.skip("validation pipelines have no start_epoch")
    with pytest.raises(ValueError) as err:
        _call(which, tmp_path, **{name: value})
    assert f"{name}={value!r} is invalid" in str(err.value), str(err.value)


@pytest.mark.parametrize("name,value,rule", [
    ("seed", -1, "must be >= 0"), ("seed", 2**63, "must be <= 9223372036854775807"),
    ("start_epoch", 2**64, "must be <= 9223372036854775807"), ("start_epoch", -1, "must be >= 0"),
    ("batch_size", 0, "must be >= 1"), ("size", 1, "must be >= 2"), ("num_threads", -1, "must be >= 0"),
    ("device_id", -1, "must be >= 0"), ("prefetch_queue_depth", 0, "must be >= 1"),
])
def test_pipeline_integer_arguments_out_of_range_name_the_rule(tmp_path, name, value, rule):
    with pytest.raises(ValueError) as err:
        _call("training", tmp_path, **{name: value})
    assert f"{name}={value} is invalid: {rule}" in str(err.value), str(err.value)


def test_shard_arguments(tmp_path):
    assert shard_defaults(np.int64(1), np.int64(2)) == (1, 2)
    assert all(type(v) is int for v in shard_defaults(np.int32(0), np.int32(3)))
    for bad in [(True, 2), ("0", 2), (0.0, 2), (0, 2.0), (0, "2")]:
        with pytest.raises(ValueError, match=r"(shard_id|num_shards)=.* is invalid: expected an integer"):
            shard_defaults(*bad)


def test_numpy_integers_everywhere_give_the_python_integer_run(dali_tree, dali_mixing):
    """``shard_id=np.int64(0)`` and the other integers as NumPy scalars: the same run as Python ints."""
    def run(cast):
        pipe = training_pipeline(dali_tree[0], mixing_root=dali_mixing, preset="cifar", device="cpu",
                                 batch_size=cast(4), size=cast(16), seed=cast(3), shard_id=cast(0),
                                 num_shards=cast(1), start_epoch=cast(1), num_threads=cast(2),
                                 prefetch_queue_depth=cast(2))
        info = pipe.source
        assert all(type(v) is int for v in (info.seed, info.size, info.batch_size, info.shard_id,
                                             info.num_shards, info.start_epoch))
        it = IPMixIterator(pipe)
        return collect_epoch(it)
    assert run(np.int64) == run(int)


# ------------------------------------------------------------------------------- other callers
def test_ipmix_batch_fractals_cache_and_config_use_the_same_checks(tmp_path):
    from dali_ipmix.fractals import write_fractal_set
    from dali_ipmix.mixing_cache import MixingCache
    x = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"num_threads=True is invalid: expected an integer >= 0"):
        ipmix_batch(x, x, IPMixConfig.cifar(), 0, num_threads=True)
    assert ipmix_batch(x, x, IPMixConfig.cifar(jsd=False), 0, num_threads=np.int64(1)).shape == x.shape
    with pytest.raises(ValueError, match=r"n='2' is invalid"):
        write_fractal_set(tmp_path / "f", "2", size=16)
    with pytest.raises(ValueError, match=r"seed=-3 is invalid: must be >= 0"):
        write_fractal_set(tmp_path / "f", 2, size=16, seed=-3)
    with pytest.raises(ValueError, match=r"side=2.0 is invalid"):
        MixingCache.build(["a.png"], 2.0)
    assert IPMixConfig.cifar(k=np.int64(2)).k == 2
    with pytest.raises(ValueError, match=r"IPMixConfig.k='2' is invalid: expected an integer in 1..32"):
        IPMixConfig.cifar(k="2")


# ---------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("key,values,needle", [
    ("mean", [math.nan, 0, 0], "entry nan"), ("mean", math.inf, "expected a finite real number"),
    ("std", [1, math.inf, 1], "entry inf"), ("std", [1, 0, 1], "entry 0: expected a finite real number > 0"),
    ("std", -2.0, "> 0"), ("mean", ["a", 0, 0], "entry 'a'"), ("std", True, "True"),
    ("std", np.array([1.0, np.nan, 1.0]), "entry nan"),
])
def test_non_finite_or_zero_normalisation_is_refused(key, values, needle):
    norm = dict(mean=[0.0], std=[1.0])
    norm[key] = values
    with pytest.raises(ValueError) as err:
        normalize_args(norm)
    msg = str(err.value)
    assert f"normalize[{key!r}]=" in msg and needle in msg, msg


@pytest.mark.parametrize("backend", ["python", "native"])
def test_both_ipmix_routes_refuse_non_finite_normalisation(backend):
    from nvidia.dali import fn, pipeline_def

    from dali_ipmix import native
    from dali_ipmix.fn import ipmix
    if backend == "native" and not native.available():
        pytest.skip("native plugin not built")
    x = [np.zeros((8, 8, 3), np.uint8)]

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe(norm):
        a = fn.external_source(source=lambda: x, layout="HWC", batch=True)
        return ipmix(a, a, config=IPMixConfig.cifar(jsd=False), backend=backend, normalize=norm)

    for norm in (dict(mean=[0.0], std=[math.nan]), dict(mean=[math.inf], std=[1.0])):
        with pytest.raises(ValueError, match=r"normalize\['(mean|std)'\]=.* is invalid"):
            pipe(norm)
    with pytest.raises(ValueError, match=r"seed='1' is invalid"):
        ipmix(None, None, backend=backend, seed="1")


def test_rng_seed_of_ipmix_batch():
    x = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"rng=-1 is invalid: must be >= 0 \(a seed\)"):
        ipmix_batch(x, x, IPMixConfig.cifar(jsd=False), -1)
    with pytest.raises(TypeError, match="rng must be"):
        ipmix_batch(x, x, IPMixConfig.cifar(jsd=False), True)
    assert ipmix_batch(x, x, IPMixConfig.cifar(jsd=False), np.uint32(5)).shape == x.shape
