"""The host profile of the CUDA executor (a recording device): its counts, and that it would see a sync."""

import numpy as np

from dali_ipmix import IPMixConfig
from dali_ipmix._scripts.profile import RecordingDevice, host_profile


def test_host_profile_counts_launches_and_no_syncs():
    for cfg in (IPMixConfig.imagenet(), IPMixConfig.cifar(t=5, jsd=True)):
        result = host_profile(batch_size=32, size=32, config=cfg, batches=2, warmup=1)
        assert result["launches_per_view"] == 2 * cfg.t + 1
        assert result["uploads_per_view"] == 1
        assert result["host_syncs_per_batch"] == 0
        assert result["host_ms_per_jsd_batch"] > 0


def test_recorded_arrays_count_every_read_back():
    device = RecordingDevice()
    a = device.empty((4, 8, 8, 3), np.uint8)
    bool(a)
    int(a[0, 0, 0, :1])
    np.asarray(a)
    a.get()
    a[1:3].view(np.uint32).item()
    assert device.syncs == 5
    assert device.empty((4, 8), np.uint8)[1:3].view(np.uint32).shape == (2, 2)
