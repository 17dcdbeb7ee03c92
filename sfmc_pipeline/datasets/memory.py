"""Memory of a large read: the pool that holds what is kept, and handing freed memory back.

What is kept for the whole read (the typed rows) lives in the system allocator's pool, apart from
the default arrow pool that serves each batch's temporaries, so the resident size follows what is
kept rather than what was ever allocated.
"""

from __future__ import annotations

import ctypes

import pyarrow as arrow

KEPT_POOL = arrow.system_memory_pool()


def release_memory() -> None:
    """Hand memory that was freed back to the operating system: the arrow pool's cached pages and
    the C heap's free pages (glibc keeps freed memory of large frames in its heap, where it counts
    as resident; ``malloc_trim`` returns it). Without it the resident size of a read grows with
    what was once allocated rather than with what is live."""
    arrow.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _malloc_trim()
