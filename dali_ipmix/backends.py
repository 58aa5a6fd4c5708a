"""Backends: who executes a drawn plan. One interface, chosen once per call.

A backend replays an :class:`~dali_ipmix.plan.IPMixPlan` (every random decision, drawn on the host)
on a batch; backends differ only in where and how, never in what (``docs/ipmix-spec.md``):

- ``"arrays"``: the array executor (``execute.py``): NumPy on the CPU (the default for NumPy
  inputs, and the reference of every other backend); on CuPy the same array calls, for comparison.
- ``"cuda"``: the compiled core (``csrc/``) replayed from one plan table with ``2 t + 1`` launches
  per view and no host synchronisation (``table.py``, ``cuda.py``); the default for CuPy inputs.
- the native DALI operator runs the same compiled core inside DALI (``fn.ipmix(backend="native")``).

Replay a plan on another backend::

    >>> import numpy as np
    >>> from dali_ipmix import IPMixConfig, ipmix_batch
    >>> x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    >>> out, plan = ipmix_batch(x, x[::-1].copy(), IPMixConfig.cifar(), rng=0, return_plan=True)
    >>> again = get_backend("arrays", x).execute(plan, x, x[::-1].copy())
    >>> bool((again == out).all())
    True
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .execute import array_module, execute_arrays, nvtx_range, warp_affine_batched
from .plan import IPMixPlan


class Backend(Protocol):
    """Executes plans. ``images``/``mixing``: (N, H, W, 3) uint8 arrays of the backend's kind."""

    name: str

    def execute(self, plan: IPMixPlan, images, mixing):
        """(N, H, W, 3) float32, 0..255, on the inputs' device."""


class ArrayBackend:
    """The array executor (``execute.execute_arrays``) on NumPy or CuPy inputs.

    ``warp``: ``"pil"`` (default: PIL's C warp on NumPy, the reference semantics) or ``"batched"``
    (the compiled core's bilinear arithmetic, as on CuPy): affine results may differ by one grey level.
    """

    name = "arrays"

    def __init__(self, warp: str = "pil"):
        if warp not in ("pil", "batched"):
            raise ValueError(f"warp={warp!r} is invalid: use 'pil' or 'batched'")
        self.warp = warp

    def execute(self, plan, images, mixing):
        return execute_arrays(plan, images, mixing,
                              warp=warp_affine_batched if self.warp == "batched" else None)


class CudaBackend:
    """The compiled core on CUDA through CuPy (``cuda.cuda_executor``); CuPy inputs only."""

    name = "cuda"

    def execute(self, plan, images, mixing):
        if array_module(images) is np:
            raise TypeError("backend 'cuda' runs on CuPy arrays, got NumPy inputs; use backend='arrays' "
                            "(or None) for NumPy, or move the batch to the GPU with cupy.asarray")
        from .cuda import cuda_executor
        with nvtx_range("execute_table", array_module(images)):
            return cuda_executor()(plan, images, mixing)


BACKENDS = {"arrays": ArrayBackend(), "cuda": CudaBackend()}


def get_backend(backend, images) -> Backend:
    """The backend for ``backend`` (None, a name from :data:`BACKENDS`, or an object with
    ``execute``); None picks ``"arrays"`` for NumPy ``images`` and ``"cuda"`` for CuPy ones."""
    if backend is None:
        return BACKENDS["arrays" if array_module(images) is np else "cuda"]
    if isinstance(backend, str):
        try:
            return BACKENDS[backend]
        except KeyError:
            raise ValueError(f"backend={backend!r} is unknown: use one of {sorted(BACKENDS)} or None"
                             ) from None
    if not callable(getattr(backend, "execute", None)):
        raise TypeError(f"backend must be None, a name from {sorted(BACKENDS)} or an object with an "
                        f"execute(plan, images, mixing) method, got {type(backend).__name__}")
    return backend
