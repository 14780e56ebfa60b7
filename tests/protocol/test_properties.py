"""Property tests: round trips, and that no input raises anything but Rejected."""

from __future__ import annotations

import copy

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import decode as codec_decode
from protocol.codec import encode
from protocol.decode import decode_message
from protocol.topics import UUID_RE, device_topic, discovery_topic, parse_v1
from protocol.values import BAD_UUID, TOO_LARGE, Dialect, Encoding, Kind, Message, Rejected, Topic
from tests.protocol.helpers import INBOUND, INBOUND_TOPICS, MAX, PREFIX

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -----------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_scalars = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
json_maps = st.dictionaries(st.text(max_size=10), json_values, max_size=6)

# MessagePack also carries bytes, NaN, infinities, non-text keys and extension types.
mp_scalars = json_scalars | st.floats() | st.binary(max_size=20) | st.builds(msgpack.ExtType, st.integers(0, 127),
                                                                               st.binary(max_size=4))
mp_keys = st.text(max_size=8) | INT64 | st.binary(max_size=4) | st.booleans() | st.none()
mp_values = st.recursive(
    mp_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(mp_keys, inner, max_size=4),
    max_leaves=20,
)

uuids = st.from_regex(UUID_RE, fullmatch=True)
prefix_level = st.text(st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)), min_size=1,
                       max_size=8)
prefixes = st.lists(prefix_level, min_size=1, max_size=3).map("/".join)
bad_uuid_levels = st.one_of(
    st.sampled_from(["", "+", "#", "a" * 65, ".", "a.b", "ção", "-a", "_a", "a b"]),
    st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), max_size=70).filter(
        lambda s: UUID_RE.fullmatch(s) is None),
)
all_topics = st.sampled_from(INBOUND_TOPICS + [f"{PREFIX}/devices/esp32-relay-01/status/operational",
                                              f"{PREFIX}/devices/esp32-relay-01/relays/state",
                                              f"{PREFIX}/errors/esp32-relay-01/relay",
                                              f"{PREFIX}/telemetry/relays/data"])


def decodes_or_rejects(topic: str, payload: bytes, prefix: str = PREFIX) -> Message | Rejected:
    try:
        message = decode_message(topic, payload, prefix=prefix, max_payload=MAX)
    except Rejected as error:
        assert error.reason and isinstance(error.detail, str)
        return error
    assert isinstance(message, Message)
    return message


# -- codec ----------------------------------------------------------------------


@FAST
@given(json_maps, st.sampled_from(list(Encoding)))
def test_codec_round_trip(obj, encoding):
    assert codec_decode(encode(obj, encoding), 10**7) == (obj, encoding)


# -- topics ---------------------------------------------------------------------

DEVICE_KINDS = [Kind.ANNOUNCE, Kind.STATUS, Kind.TELEMETRY, Kind.RELAY_STATUS, Kind.RESPONSE, Kind.COMMAND,
                Kind.RELAY_COMMAND, Kind.AVAILABILITY]


@FAST
@given(prefixes, uuids, st.sampled_from(DEVICE_KINDS))
def test_topic_build_parse_round_trip(prefix, uuid, kind):
    assert parse_v1(device_topic(prefix, uuid, kind), prefix) == Topic(kind, uuid, Dialect.V1)
    assert parse_v1(discovery_topic(prefix, uuid), prefix) == Topic(Kind.DISCOVERY, uuid, Dialect.V1)


@FAST
@given(bad_uuid_levels, st.sampled_from(["devices/{}/telemetry", "devices/{}/announce", "devices/{}/relay/status",
                                         "discovery/{}"]))
def test_bad_uuid_levels_are_bad_uuid(level, shape):
    topic = f"{PREFIX}/" + shape.format(level)
    with pytest.raises(Rejected) as caught:
        decode_message(topic, b"{}", prefix=PREFIX, max_payload=MAX)
    assert caught.value.reason == BAD_UUID


# -- nothing but Rejected -----------------------------------------------------------


@FAST
@given(all_topics, st.binary(max_size=200))
def test_arbitrary_bytes(topic, payload):
    decodes_or_rejects(topic, payload)


@FAST
@given(all_topics, st.sampled_from([b"{", b"\x80", b"\x8f", b"\xde", b"\xdf", b" "]), st.binary(max_size=200))
def test_arbitrary_bytes_after_a_plausible_first_byte(topic, first, rest):
    decodes_or_rejects(topic, first + rest)


@FAST
@given(all_topics, json_maps, st.sampled_from(list(Encoding)))
def test_arbitrary_json_maps(topic, obj, encoding):
    decodes_or_rejects(topic, encode(obj, encoding))


@FAST
@given(all_topics, st.dictionaries(st.text(max_size=10), mp_values, max_size=6))
def test_arbitrary_messagepack_maps(topic, obj):
    decodes_or_rejects(topic, msgpack.packb(obj, use_bin_type=True))


def _paths(obj, path=()):
    """Every place in a payload where a value can be swapped."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield path + (key,)
            yield from _paths(value, path + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield path + (i,)
            yield from _paths(value, path + (i,))


def _replace(obj, path, value):
    out = copy.deepcopy(obj)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_examples_with_one_value_swapped(data):
    """The PROTOCOL.md examples with one value, anywhere, replaced by an
    arbitrary one: a Message or a Rejected, both encodings, every kind."""
    suffix, example = data.draw(st.sampled_from(sorted(INBOUND.values(), key=str)))
    path = data.draw(st.sampled_from(list(_paths(example))))
    encoding = data.draw(st.sampled_from(list(Encoding)))
    value = data.draw(json_values if encoding is Encoding.JSON else mp_values)
    payload = _replace(example, path, value)
    if encoding is Encoding.JSON:
        blob = encode(payload, encoding)
    else:
        blob = msgpack.packb(payload, use_bin_type=True)
    decodes_or_rejects(f"{PREFIX}/{suffix}", blob)


@FAST
@given(json_maps)
def test_status_claimed_by_fw22_never_raises_anything_else(obj):
    obj = {**obj, "protocol_version": "2.2.0"}
    decodes_or_rejects(f"{PREFIX}/devices/esp32-relay-01/status", encode(obj))


# -- size ------------------------------------------------------------------------


@FAST
@given(st.text(max_size=40), st.binary(min_size=1, max_size=64))
def test_oversize_is_too_large_before_anything_else(topic, payload):
    with pytest.raises(Rejected) as caught:
        decode_message(topic, payload, prefix=PREFIX, max_payload=len(payload) - 1)
    assert caught.value.reason == TOO_LARGE
