import pytest

from dali_ipmix import IPMixConfig
from dali_ipmix.ops import DEFAULT_OPS, EXTRA_OPS


def test_presets_match_spec_table():
    inet, cifar = IPMixConfig.imagenet(), IPMixConfig.cifar()
    assert (inet.k, inet.t, inet.beta, inet.severity) == (3, 3, 4.0, 1.0)
    assert (cifar.k, cifar.t, cifar.beta, cifar.severity) == (3, 3, 3.0, 3.0)
    assert inet.patch_sizes_for(224, 224) == (4, 8, 16, 32, 64, 224)
    assert cifar.patch_sizes_for(32, 32) == (4, 8, 16, 32)
    assert inet.source_from_image and not cifar.source_from_image
    assert inet.jsd and cifar.jsd and not inet.all_ops and not cifar.all_ops
    assert inet.op_names == DEFAULT_OPS and len(DEFAULT_OPS) == 10


def test_other_sizes_use_image_size_as_largest_patch_and_drop_larger():
    assert IPMixConfig.imagenet().patch_sizes_for(160, 160) == (4, 8, 16, 32, 64, 160)
    assert IPMixConfig.imagenet().patch_sizes_for(40, 48) == (4, 8, 16, 32, 40)
    assert IPMixConfig.cifar().patch_sizes_for(64, 64) == (4, 8, 16, 64)


def test_all_ops_and_restricted_op_lists():
    assert IPMixConfig.imagenet(all_ops=True).op_names == DEFAULT_OPS + EXTRA_OPS
    cfg = IPMixConfig.imagenet(ops=("rotate", "invert"))
    assert cfg.op_names == ("rotate", "invert")
    assert IPMixConfig.imagenet(ops=["sharpness"], all_ops=True).op_names == (
        ("sharpness",) + tuple(o for o in EXTRA_OPS if o != "sharpness"))


@pytest.mark.parametrize("field,value,needle", [
    ("k", 0, "k=0"), ("k", 2.5, "k=2.5"), ("t", -1, "t=-1"),
    ("beta", 0, "beta=0"), ("beta", -1.0, "beta=-1.0"), ("beta", float("nan"), "beta=nan"),
    ("severity", 0, "severity=0"), ("severity", 11, "severity=11"),
    ("patch_sizes", (4, 1), "entry 1"), ("patch_sizes", (4, "8"), "entry '8'"),
    ("ops", ("rotate", "blur"), "blur"), ("ops", (), "empty"),
])
def test_invalid_values_name_field_value_and_rule(field, value, needle):
    with pytest.raises((ValueError, TypeError)) as err:
        IPMixConfig.imagenet(**{field: value})
    msg = str(err.value)
    assert needle in msg, msg
    assert any(w in msg for w in ("must", "allowed", "expected", "empty", "invalid")), msg


def test_empty_patch_sizes_need_whole_image():
    with pytest.raises(ValueError, match="patch_sizes"):
        IPMixConfig.imagenet(patch_sizes=(), whole_image_patch=False)
    assert IPMixConfig.imagenet(patch_sizes=()).patch_sizes_for(50, 50) == (50,)
    with pytest.raises(ValueError, match="no patch size fits"):
        IPMixConfig.imagenet(patch_sizes=(64,), whole_image_patch=False).patch_sizes_for(32, 32)


def test_unknown_op_lists_allowed_names():
    with pytest.raises(ValueError, match="allowed names are .*rotate"):
        IPMixConfig.cifar(ops=("rotat",))


@pytest.mark.parametrize("field", ["whole_image_patch", "source_from_image", "all_ops", "jsd"])
@pytest.mark.parametrize("value", ["False", "no", 2, 0, 1.0, None])
def test_flags_must_be_bool_and_the_error_names_field_value_and_rule(field, value):
    with pytest.raises(TypeError) as err:
        IPMixConfig.imagenet(**{field: value})
    assert f"{field}={value!r}" in str(err.value) and "expected True or False" in str(err.value)


def test_numpy_scalars_are_accepted_and_stored_as_python_types():
    import numpy as np
    cfg = IPMixConfig.imagenet(k=np.int64(2), t=np.int32(1), beta=np.float32(4.0), severity=np.float64(2),
                               jsd=np.bool_(False), all_ops=np.True_)
    assert (cfg.k, cfg.t, cfg.beta, cfg.severity, cfg.jsd, cfg.all_ops) == (2, 1, 4.0, 2.0, False, True)
    assert all(type(v) in (int, float, bool) for v in (cfg.k, cfg.t, cfg.beta, cfg.severity, cfg.jsd))
    assert cfg == IPMixConfig.imagenet(k=2, t=1, beta=4.0, severity=2.0, jsd=False, all_ops=True)
    with pytest.raises(ValueError, match="beta=True"):
        IPMixConfig.imagenet(beta=True)


@pytest.mark.parametrize("field,value,rule", [("k", 33, "must be <= 32"), ("t", 10**9, "must be <= 32"),
                                              ("k", 10**9, "must be <= 32")])
def test_k_and_t_have_stated_upper_bounds(field, value, rule):
    from dali_ipmix.config import K_MAX, T_MAX
    assert (K_MAX, T_MAX) == (32, 32)
    with pytest.raises(ValueError) as err:
        IPMixConfig.imagenet(**{field: value})
    assert f"{field}={value}" in str(err.value) and rule in str(err.value)
    IPMixConfig.imagenet(**{field: 32})   # the bound itself is allowed
    assert "1..32" in IPMixConfig.__doc__ and "0..32" in IPMixConfig.__doc__ and "2 x 2" in IPMixConfig.__doc__
