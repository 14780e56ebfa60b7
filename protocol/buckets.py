"""Which ownership bucket a device falls in (issue 13, several instances).

Pure: the instances of one share group agree on it without talking, and
storage/ uses the same number where a write is fenced by a lease. CRC-32 of
the uuid's UTF-8 bytes (zlib's, the same on every platform and Python),
modulo the bucket count.
"""

from __future__ import annotations

import zlib

DEFAULT_BUCKETS = 256


def bucket_of(uuid: str, buckets: int = DEFAULT_BUCKETS) -> int:
    if buckets <= 0:
        raise ValueError(f"bucket count must be positive, got {buckets}")
    return zlib.crc32(uuid.encode("utf-8")) % buckets
