"""The GPU path's host side, measured without a GPU: a recording stand-in for the device.

:class:`RecordingDevice` is a :class:`~dali_ipmix.table.Device` that allocates nothing and runs
nothing: it records each launch and upload, and its arrays count every attempt to read device data
back to the host (``int()``, ``bool()``, ``numpy.asarray``, ``.get()``, ``.item()``...), which on a real
device would be a host synchronisation. :func:`host_profile` runs what one JSD batch of ``fn.ipmix``
costs the host on the CUDA executor (two plans drawn, two table executions, the clean view's cast)
through it, so the number is the host's own work: Python, NumPy and the plan table, not the GPU.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import IPMixConfig
from ..plan import draw_plan
from ..table import TableExecutor


class RecordedArray:
    """A device array that is never allocated: shape and dtype only; reading it back counts a sync."""

    def __init__(self, device, shape, dtype):
        self.device, self.shape, self.dtype = device, tuple(shape), np.dtype(dtype)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __getitem__(self, index):
        return RecordedArray(self.device, np.empty(self.shape, np.bool_)[index].shape, self.dtype)

    def view(self, dtype):
        dtype = np.dtype(dtype)
        return RecordedArray(self.device, self.shape[:-1] + (self.shape[-1] * self.dtype.itemsize // dtype.itemsize,),
                             dtype)

    def astype(self, dtype):
        self.device.launches.append("astype")
        return RecordedArray(self.device, self.shape, dtype)

    def _sync(self, *args, **kwargs):
        self.device.syncs += 1
        return np.zeros(self.shape, self.dtype)

    __array__ = get = _sync

    def item(self):
        self.device.syncs += 1
        return 0

    def __int__(self):
        return self.item()

    __float__ = __index__ = __int__

    def __bool__(self):
        self.device.syncs += 1
        return True

    def tolist(self):
        return self._sync().tolist()


class RecordingDevice:
    """Counts launches (by kernel name), uploads (bytes) and host synchronisations."""

    def __init__(self):
        self.launches, self.uploads, self.syncs = [], [], 0

    def upload(self, host):
        self.uploads.append(np.asarray(host).nbytes)
        return RecordedArray(self, np.shape(host), np.asarray(host).dtype)

    def empty(self, shape, dtype):
        return RecordedArray(self, shape, dtype)

    def contiguous(self, array):
        return array

    def launch(self, name, blocks, args):
        self.launches.append(name)


def host_profile(batch_size=256, size=224, config=None, batches=20, warmup=3, seed=0):
    """Host cost of JSD batches on the CUDA executor, measured against :class:`RecordingDevice`.

    Returns a dict: ``host_ms_per_jsd_batch`` (median over ``batches``, plan drawing included),
    ``launches_per_view``, ``uploads_per_view``, ``table_bytes_per_view``, ``host_syncs_per_batch``,
    and the settings.
    """
    config = IPMixConfig.imagenet(jsd=True) if config is None else config
    device = RecordingDevice()
    executor = TableExecutor(device)
    images = device.empty((batch_size, size, size, 3), np.uint8)
    mixing = device.empty((batch_size, size, size, 3), np.uint8)
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(warmup + batches):
        device.launches.clear()
        device.uploads.clear()
        start = time.perf_counter()
        for _ in range(2):    # two views, as fn.ipmix in JSD mode
            executor(draw_plan(batch_size, size, size, config, rng), images, mixing)
        images.astype(np.float32)   # the clean view
        times.append(time.perf_counter() - start)
    kernel_launches = [name for name in device.launches if name != "astype"]
    return dict(batch_size=batch_size, size=size, k=config.k, t=config.t,
                host_ms_per_jsd_batch=round(1e3 * float(np.median(times[warmup:])), 3),
                host_ms_per_jsd_batch_min=round(1e3 * float(np.min(times[warmup:])), 3),
                launches_per_view=len(kernel_launches) // 2,
                uploads_per_view=len(device.uploads) // 2,
                table_bytes_per_view=int(sum(device.uploads) // 2),
                host_syncs_per_batch=device.syncs / (warmup + batches))
