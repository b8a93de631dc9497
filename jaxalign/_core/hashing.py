"""One content digest of arrays, for cache keys and resume checks.

``array_digest(*arrays)`` is the sha256 (hex) of each array's dtype, shape
and contents, in order; ``None`` counts as a marker, so ``(a, None)`` and
``(None, a)`` differ. Text arrays (numpy ``U`` or object) are hashed through
their strings joined by a unit separator, so the digest does not depend on
numpy's fixed-width padding of the longest string. Used by the study runner
(unit and features keys) and by fine-tuning (the data a checkpoint was
trained on).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["array_digest"]


def array_digest(*arrays) -> str:
    """sha256 (64 hex digits) of the arrays' dtypes, shapes and contents.

    >>> import numpy as np
    >>> array_digest(np.arange(3)) == array_digest(np.arange(3))
    True
    >>> array_digest(np.arange(3)) == array_digest(np.arange(3.0))
    False
    """
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        if a.dtype.kind == "U" or a.dtype == object:
            h.update("\x1f".join(map(str, a.ravel())).encode())
        else:
            h.update(a.tobytes())
    return h.hexdigest()
