"""One rule for a ``devices=`` argument that names devices: a count or a list.

``pick_devices(devices, available, kinds)`` turns an int k (the first k of
``available``), a jax device or a sequence of devices into a checked list:
no empty list, no non-device entries, no device twice, no count beyond what
is available. The callers keep their own meaning of ``None``, ``"auto"`` and
meshes (``jaxalign.lm`` splits weights over them, ``jaxalign.features``
splits batches), and pass ``kinds``, the accepted forms for the messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pick_devices"]


def pick_devices(devices, available: list, kinds: str) -> list:
    """The devices ``devices`` names: an int (the first k of ``available``), a device or a sequence.

    Raises ValueError (a count out of range, an empty list, a device twice)
    or TypeError (anything else, or entries that are not jax devices), each
    message naming ``devices`` and, for a wrong type, ``kinds``.
    """
    import jax

    if isinstance(devices, jax.Device):
        devices = [devices]
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices={devices}, but {len(available)} devices are available")
        return list(available[: int(devices)])
    if isinstance(devices, (Sequence, np.ndarray)) and not isinstance(devices, (str, bytes)):
        chosen = list(np.asarray(devices, dtype=object).ravel())
        if not chosen:
            raise ValueError("devices is an empty list")
        wrong = [d for d in chosen if not isinstance(d, jax.Device)]
        if wrong:
            raise TypeError(f"devices must be jax devices (e.g. jax.devices()[:4]); got {wrong[:3]!r}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"devices lists a device twice: {chosen}")
        return chosen
    raise TypeError(f"devices must be {kinds}; got {type(devices).__name__}")
