"""actors.wire: msgpack frames between the core and the store process."""

import dataclasses
import enum
import types
import typing

import msgpack
import pytest

import actors.messages as m
from actors import wire
from protocol.lifecycle import CommandStatus
from protocol.values import (
    Availability,
    CommandSpec,
    DeviceFacts,
    Discovery,
    Event,
    Reading,
    RelayState,
    Response,
)

SPEC = CommandSpec(
    id=42, device_uuid="esp32-relay-01", command_type="relay_control",
    parameters={"relay_id": 1, "state": True, "duration": 5000, "nested": {"a": (1, 2.5, None)}},
    topic="relay/command", timeout=30.0, max_attempts=3, created_at=1736332200.125, expires_at=1736332500.0,
)
FACTS = DeviceFacts(
    device_type="relay_board", firmware_version="1.2.0", capabilities=("relay", "can_bus"),
    ip_address="192.168.1.100", mac_address="AA:BB:CC:DD:EE:FF", relay_count=16, hardware_revision="v2.1",
    serial_number="ESP32-001", name="Relays front", boot_id=17, status_interval=5.0,
)
TOKEN = m.Token(generation=3, mid=65535, qos=1)
ROW = ("esp32-relay-01", 17, 981, 0, 1736332200.0, 1736332200.5, "can_raw", "0x123", None, None, None, b"\x0a\x1b\x2c\x3d")
KNOWN = m.KnownDevice(uuid="esp32-relay-01", status="online", device_type="relay_board", boot_id=17,
                      status_interval=5.0, protocol="fw22", encoding="msgpack", last_seen=1736332200.0)
STATE = m.CommandState(spec=SPEC, status="sent", attempts=2, sent_at=1736332201.0)
TRANSITION = m.CommandTransition(command_id=42, status="failed", attempts=3, result={"code": 7, "relays": (1, 2)},
                                 error_message="relay stuck")

EXAMPLES = {
    "Availability": [Availability(online=False, boot_id=17, reason="will"), Availability(True)],
    "CommandSpec": [SPEC, CommandSpec(id=1, device_uuid="d", command_type="reboot", parameters=None)],
    "DeviceFacts": [FACTS, DeviceFacts(capabilities={"relays": 16, "can": False}), DeviceFacts()],
    "Discovery": [Discovery("network_scan", "10.0.0.2", "AA:BB", "sensor_board", -72.0), Discovery()],
    "Event": [Event("safety_shutoff", {"channel": 2, "reason": "heartbeat_timeout"}, channel=2), Event("error")],
    "Reading": [Reading("can", "RPM", 2500.0, "rpm", "0x200", None, 1736332200.0),
                Reading("can_raw", "0x123", None, raw=b"\x00\xff")],
    "RelayState": [RelayState(1, True), RelayState(16, False)],
    "Response": [Response("42", "succeeded", {"relay": 1}, None, 2.3), Response("x", "accepted")],
    "Token": [TOKEN, m.Token(0, 0, 0)],
    "CommandTransition": [TRANSITION, m.CommandTransition(1, "sent", attempts=1)],
    "CommandState": [STATE, m.CommandState(spec=SPEC, status="queued")],
    "KnownDevice": [KNOWN, m.KnownDevice(uuid="u", status="discovered")],
    "TelemetryRows": [m.TelemetryRows(rows=(ROW, ROW[:3] + (1,) + ROW[4:]), tokens=(TOKEN, m.Token(3, 1, 0))),
                      m.TelemetryRows(rows=(), tokens=())],
    "DeviceWrite": [
        m.DeviceWrite(
            uuid="esp32-relay-01", at=1736332200.0, ensure="v1", facts=FACTS,
            discovery=Discovery("network_scan"), status="online", boot_id=17, protocol="v1", encoding="json",
            last_seen=1736332200.0,
            events=((1736332200.0, "announce", {"boot_id": 17, "firmware_version": "1.2.0"}),
                    (1736332200.0, "online", {"previous": None})),
            transitions=(TRANSITION, m.CommandTransition(43, "sent", attempts=1)),
            rows=(ROW,), tokens=(TOKEN,),
        ),
        m.DeviceWrite(uuid="u", at=0.0),
    ],
    "Committed": [m.Committed(tokens=(TOKEN, m.Token(4, 9, 1)))],
    "TransitionRefused": [m.TransitionRefused("u", 42, "sent", "cancelled"), m.TransitionRefused("u", 1, "sent", None)],
    "CommandsRequested": [m.CommandsRequested(commands=(STATE, m.CommandState(SPEC, "accepted", 1)))],
    "CancelsRequested": [m.CancelsRequested(commands=(("u1", 1), ("u2", 7)))],
    "StoreReady": [m.StoreReady(pid=1234, devices=(KNOWN,), commands=(STATE,)), m.StoreReady(pid=1)],
    "Flush": [m.Flush(), m.Flush("size")],
    "Flushed": [m.Flushed(), m.Flushed("size")],
    "SnapshotRequest": [m.SnapshotRequest(request_id=9)],
    "SnapshotReply": [m.SnapshotReply(request_id=9, actors=(
        {"name": "DbWriter", "mailbox": 0, "counters": {"batches": 3}, "relays": {1: True}},
        {"name": "TelemetryBatcher", "buffered": 12, "oldest_age_s": 0.02},
    ))],
    "Stop": [m.Stop(), m.Stop("signal")],
    "ReloadCommands": [m.ReloadCommands(device_uuid="esp32-relay-01")] if hasattr(m, "ReloadCommands") else [],
}


# ------------------------------------------------------------------ examples for types added later


def _example_for(tp, depth=0):
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return {"k": (1, "two", 3.5, None, True)}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _example_for(inner[0], depth)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return (_example_for(args[0], depth),)
        return tuple(_example_for(a, depth) for a in args)
    if origin is dict:
        k, v = typing.get_args(tp)
        return {_example_for(k, depth): _example_for(v, depth)}
    if tp is tuple:
        return ("text", 1, None, b"\x00")
    if tp is dict:
        return {"k": 1}
    if tp is str:
        return "text"
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 1.25
    if tp is bytes:
        return b"\x01\x02"
    if dataclasses.is_dataclass(tp):
        return _auto_example(tp, depth + 1)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return list(tp)[-1]
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):  # a NamedTuple (TelemetryRow)
        hints = typing.get_type_hints(tp)
        return tp(*(_example_for(hints[f], depth) for f in tp._fields))
    raise NotImplementedError(f"no example for {tp!r}")


def _auto_example(cls, depth=0):
    hints = typing.get_type_hints(cls, vars(__import__(cls.__module__, fromlist=["_"])))
    return cls(**{f.name: _example_for(hints[f.name], depth) for f in dataclasses.fields(cls)})


def examples():
    out = []
    for name, cls in sorted(wire.registered().items()):
        given = EXAMPLES.get(name) or [_auto_example(cls)]
        out.extend(pytest.param(example, id=f"{name}-{i}") for i, example in enumerate(given))
    return out


def test_every_registered_type_has_an_example():
    registered = wire.registered()
    for name in ("Token", "DeviceWrite", "StoreReady", "CommandSpec", "Reading"):
        assert name in registered
    for name, cls in registered.items():
        built = EXAMPLES.get(name) or [_auto_example(cls)]
        assert built and all(type(e) is cls for e in built), name


@pytest.mark.parametrize("name", sorted(wire.registered()))
def test_generated_example_round_trips(name):
    # guards message types added after these tests were written
    example = _auto_example(wire.registered()[name])
    back = wire.decode(wire.encode(example))
    assert back == example and type(back) is type(example)


def _assert_same(a, b):
    """Equal, and every nested registered value of the same type."""
    assert type(a) is type(b) or (isinstance(a, tuple) and isinstance(b, tuple)), (a, b)
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    else:
        assert a == b


@pytest.mark.parametrize("message", examples())
def test_round_trip(message):
    frame = wire.encode(message)
    assert isinstance(frame, bytes)
    back = wire.decode(frame)
    assert back == message
    assert type(back) is type(message)
    _assert_same(message, back)
    assert wire.encode(back) == frame  # stable


def test_nested_types_come_back_as_themselves():
    back = wire.decode(wire.encode(EXAMPLES["StoreReady"][0]))
    assert type(back.devices[0]) is m.KnownDevice
    assert type(back.commands[0]) is m.CommandState
    assert type(back.commands[0].spec) is CommandSpec
    write = wire.decode(wire.encode(EXAMPLES["DeviceWrite"][0]))
    assert type(write.facts) is DeviceFacts and type(write.discovery) is Discovery
    assert all(type(t) is m.CommandTransition for t in write.transitions)
    assert all(type(t) is m.Token for t in write.tokens)
    assert write.rows[0][-1] == b"\x0a\x1b\x2c\x3d" and isinstance(write.rows[0][-1], bytes)


def test_lists_come_back_as_tuples():
    msg = m.CommandTransition(1, "succeeded", result={"values": [1, 2, [3]]})
    back = wire.decode(wire.encode(msg))
    assert back.result == {"values": (1, 2, (3,))}
    hash(back.result["values"])  # immutable


def test_str_enum_travels_as_its_value():
    msg = m.CommandState(spec=SPEC, status=CommandStatus.SENT, attempts=1)
    back = wire.decode(wire.encode(msg))
    assert back.status == "sent" == CommandStatus.SENT
    assert back == msg


def test_other_enum_travels_as_its_value():
    class Color(enum.Enum):
        RED = 1

    back = wire.decode(wire.encode(m.SnapshotReply(1, actors=(Color.RED,))))
    assert back.actors == (1,)


def test_sets_travel_sorted():
    back = wire.decode(wire.encode(m.SnapshotReply(1, actors=(frozenset({3, 1, 2}),))))
    assert back.actors == ((1, 2, 3),)


def test_large_and_odd_values():
    msg = m.SnapshotReply(request_id=2**63 - 1, actors=(float("inf"), -0.0, "é ünïcode", b"", {}, ()))
    back = wire.decode(wire.encode(msg))
    assert back.request_id == 2**63 - 1
    assert back.actors[0] == float("inf") and back.actors[2] == "é ünïcode" and back.actors[3] == b""


# ------------------------------------------------------------------ refusals


def test_encode_refuses_unregistered_messages():
    with pytest.raises(TypeError):
        wire.encode({"not": "a message"})
    with pytest.raises(TypeError):
        wire.encode(m.Deadline(key="k", at=1.0))  # in-process only


def test_encode_refuses_unregistered_nested_value():
    @dataclasses.dataclass(frozen=True)
    class Private:
        x: int

    with pytest.raises(TypeError):
        wire.encode(m.SnapshotReply(1, actors=(Private(1),)))


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x93\x01", msgpack.packb(5), msgpack.packb({"a": 1}),
                                    msgpack.packb([1, 2, 3])])
def test_decode_refuses_garbage(frame):
    with pytest.raises(wire.WireError):
        wire.decode(frame)


def test_decode_refuses_unknown_extension():
    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb(msgpack.ExtType(9, b"\x90")))


def test_decode_refuses_unknown_type_name():
    body = msgpack.packb(["NoSuchMessage", 1])
    with pytest.raises(wire.WireError, match="NoSuchMessage"):
        wire.decode(msgpack.packb(msgpack.ExtType(1, body)))


def test_decode_refuses_wrong_field_count():
    body = msgpack.packb(["Token", 1, 2])  # three fields expected
    with pytest.raises(wire.WireError, match="Token"):
        wire.decode(msgpack.packb(msgpack.ExtType(1, body)))


def test_decode_refuses_bad_nested_value():
    inner = msgpack.ExtType(1, msgpack.packb(["Token", 1]))
    body = msgpack.packb(["Committed", [inner]])
    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb(msgpack.ExtType(1, body)))


def test_decode_refuses_truncated_frame():
    frame = wire.encode(EXAMPLES["DeviceWrite"][0])
    for cut in (1, len(frame) // 2, len(frame) - 1):
        with pytest.raises(wire.WireError):
            wire.decode(frame[:cut])


def test_a_bare_value_type_is_a_message_too():
    # A registered value type on its own is a message too (it is registered).
    assert wire.decode(wire.encode(RelayState(1, True))) == RelayState(1, True)


def test_register_refuses_non_dataclass_and_duplicate_names():
    with pytest.raises(TypeError):
        wire.wire(int)

    @dataclasses.dataclass(frozen=True)
    class Token:  # same name as actors.messages.Token
        x: int

    with pytest.raises(TypeError):
        wire.wire(Token)
    assert wire.registered()["Token"] is m.Token


def test_a_batch_of_tokens_travels_packed_and_comes_back_the_same():
    from actors.messages import Committed, Token

    tokens = tuple(Token(3, mid, mid % 2) for mid in range(1, 2001))
    data = wire.encode(Committed(tokens))
    back = wire.decode(data)
    assert back == Committed(tokens)
    assert all(type(t) is Token for t in back.tokens)
    assert len(data) < 2000 * 8  # flat ints, not one extension per token


def test_a_tuple_of_mixed_types_is_not_packed():
    from actors.messages import SnapshotReply, Token

    mixed = SnapshotReply(1, (Token(1, 2, 1), {"name": "x"}))
    assert wire.decode(wire.encode(mixed)) == mixed


def test_telemetry_rows_come_back_as_telemetry_rows():
    from protocol.values import TelemetryRow, new_row

    rows = (new_row(ROW), new_row(ROW[:3] + (1,) + ROW[4:]))
    for message in (m.TelemetryRows(rows, (m.Token(1, 2, 1),)), m.DeviceWrite("u", 1.0, rows=rows[:1])):
        back = wire.decode(wire.encode(message))
        assert back == message
        assert all(type(r) is TelemetryRow for r in back.rows)
    assert back.rows[0].metric == "0x123" and back.rows[0].raw == ROW[-1]


def test_telemetry_rows_of_the_wrong_width_are_refused():
    bad = msgpack.ExtType(3, msgpack.packb([["too", "short"]]))
    with pytest.raises(wire.WireError):
        wire._unpack(msgpack.packb(bad))


def test_enums_come_back_as_enums():
    from protocol.values import Dialect, Encoding

    known = m.KnownDevice("u", "online", protocol=Dialect.FW22, encoding=Encoding.MSGPACK)
    back = wire.decode(wire.encode(m.StoreReady(1, devices=(known, known))))
    assert back.devices[0] == known
    assert type(back.devices[0].protocol) is Dialect and type(back.devices[1].encoding) is Encoding
    transition = wire.decode(wire.encode(m.CommandTransition(1, CommandStatus.SENT)))
    assert type(transition.status) is CommandStatus


def test_an_unknown_enum_value_is_refused():
    bad = msgpack.ExtType(4, msgpack.packb(["Dialect", "v9"]))
    with pytest.raises(wire.WireError):
        wire._unpack(msgpack.packb(bad))
