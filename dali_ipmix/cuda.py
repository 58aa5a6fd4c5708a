"""The compiled core on a CUDA GPU through CuPy: the table executor's device.

``csrc/ipx_kernels.cu`` is compiled once per device with NVRTC (CuPy ``RawModule``, ``--fmad=false``).
Everything runs on CuPy's current stream (inside a DALI ``python_function``: DALI's stream). The plan
table goes up through page-locked staging buffers with an asynchronous copy, so a batch never waits
for the device: a staging buffer is reused only once the event recorded after its copy has passed
(queried, never waited on).

CuPy is imported here only; CPU users never import this module.
"""

from __future__ import annotations

import functools

import cupy
import numpy as np

from .cuda_source import COMPILE_OPTIONS, kernel_source
from .table import THREADS, TableExecutor


class _Staging:
    """Page-locked host buffers for asynchronous uploads, each reused once its copy has completed."""

    def __init__(self):
        self.slots = []   # [pinned memory, bytes, event of the last copy from it]

    def upload(self, host: np.ndarray):
        host = np.ascontiguousarray(host)
        slot = next((s for s in self.slots if s[1] >= host.nbytes and (s[2] is None or s[2].done)), None)
        if slot is None:   # all busy (the device is behind) or too small: one more buffer
            size = max(host.nbytes, 1 << 16)
            slot = [cupy.cuda.alloc_pinned_memory(size), size, None]
            self.slots.append(slot)
        staged = np.frombuffer(slot[0], np.uint8, host.nbytes)
        staged[:] = host.view(np.uint8).ravel()
        dev = cupy.empty(host.shape, host.dtype)
        stream = cupy.cuda.get_current_stream()
        dev.data.copy_from_host_async(slot[0].ptr, host.nbytes, stream)
        slot[2] = stream.record()
        return dev


class CudaDevice:
    """:class:`~dali_ipmix.table.Device` on CuPy's current device and stream."""

    def __init__(self):
        self._modules = {}
        self._functions = {}
        self._staging = {}

    def _function(self, name):
        key = (cupy.cuda.runtime.getDevice(), name)
        fn = self._functions.get(key)
        if fn is None:
            module = self._modules.get(key[0])
            if module is None:
                module = self._modules[key[0]] = cupy.RawModule(code=kernel_source(),
                                                                options=COMPILE_OPTIONS)
            fn = self._functions[key] = module.get_function(name)
        return fn

    def upload(self, host):
        return self._staging.setdefault(cupy.cuda.runtime.getDevice(), _Staging()).upload(host)

    def empty(self, shape, dtype):
        return cupy.empty(shape, dtype)

    def contiguous(self, array):
        return cupy.ascontiguousarray(array)

    def launch(self, name, blocks, args):
        self._function(name)((blocks,), (THREADS,), args)


@functools.lru_cache(maxsize=None)
def cuda_executor() -> TableExecutor:
    """The process-wide table executor on CUDA (compiles on the first launch on each device)."""
    return TableExecutor(CudaDevice())
