"""Payload codec: JSON or MessagePack, told apart by the first byte.

orjson decodes JSON about 6 x faster than the standard library (FIELD-NOTES),
and the decode sits on the per-message hot path.
"""

from __future__ import annotations

from typing import Any

import msgpack
import orjson

from protocol.values import BAD_ENCODING, SCHEMA, TOO_LARGE, Encoding, Rejected

_JSON_FIRST = frozenset(b"{ \t\r\n")
_MSGPACK_MAP_FIRST = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def detect(payload: bytes) -> Encoding:
    """The encoding of a payload by its first byte, or Rejected."""
    if not payload:
        raise Rejected(BAD_ENCODING, "empty payload")
    first = payload[0]
    if first in _JSON_FIRST:
        return Encoding.JSON
    if first in _MSGPACK_MAP_FIRST:
        return Encoding.MSGPACK
    raise Rejected(BAD_ENCODING, f"payload is neither a JSON object nor a MessagePack map (first byte 0x{first:02x})")


def decode(payload: bytes, max_payload: int) -> tuple[dict[str, Any], Encoding]:
    """Decode a payload into a mapping with text keys, or raise Rejected."""
    if len(payload) > max_payload:
        raise Rejected(TOO_LARGE, f"payload of {len(payload)} bytes is over the limit of {max_payload}")
    encoding = detect(payload)
    try:
        if encoding is Encoding.JSON:
            obj = orjson.loads(payload)
        else:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (orjson.JSONDecodeError, ValueError, msgpack.UnpackException, TypeError) as exc:
        raise Rejected(BAD_ENCODING, f"not valid {encoding.value}: {exc}") from None
    except RecursionError:
        raise Rejected(BAD_ENCODING, f"{encoding.value} nested too deeply") from None
    if not isinstance(obj, dict):
        raise Rejected(SCHEMA, f"payload must be an object, got {type_name(obj)}")
    for key in obj:
        if not isinstance(key, str):
            raise Rejected(SCHEMA, f"payload keys must be text, got {key!r}")
    return obj, encoding


def encode(obj: Any, encoding: Encoding = Encoding.JSON) -> bytes:
    if encoding is Encoding.MSGPACK:
        return msgpack.packb(obj, use_bin_type=True)
    return orjson.dumps(obj)


def type_name(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return type(value).__name__
