"""Every v1 example payload of PROTOCOL.md, decoded into the exact Message
(or built into the exact payload) it stands for."""

from __future__ import annotations

import orjson
import pytest

from protocol.codec import decode as codec_decode
from protocol.outbound import (
    availability_publication,
    broadcast_publication,
    command_publication,
    gateway_status_publication,
)
from protocol.values import (
    Availability,
    CommandSpec,
    DeviceFacts,
    Dialect,
    Discovery,
    Encoding,
    Kind,
    Message,
    Publication,
    Reading,
    RelayState,
    Response,
)
from tests.protocol.helpers import (
    ANNOUNCE,
    DISCOVERY,
    INBOUND,
    RELAY_STATUS,
    RESPONSE,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    STATUS_REPORT,
    T_2025,
    TELEMETRY,
    UUID,
    decode,
)

EXPECTED: dict[str, Message] = {
    "announce": Message(
        uuid=UUID,
        dialect=Dialect.V1,
        kind=Kind.ANNOUNCE,
        boot_id=17,
        facts=DeviceFacts(
            device_type="relay_board",
            firmware_version="1.2.0",
            capabilities=("relay", "can_bus"),
            ip_address="192.168.1.100",
            mac_address="AA:BB:CC:DD:EE:FF",
            relay_count=16,
            hardware_revision="v2.1",
            serial_number="ESP32-001",
            name="Relays front",
            boot_id=17,
            status_interval=5.0,
        ),
    ),
    "status": Message(
        uuid=UUID,
        dialect=Dialect.V1,
        kind=Kind.STATUS,
        device_ts=T_2025,
        readings=(
            Reading("status", "uptime", 86400.0),
            Reading("status", "free_memory", 45312.0),
            Reading("status", "cpu_temperature", 45.5),
            Reading("status", "wifi_signal", -65.0),
            Reading("status", "battery_level", 87.2),
        ),
    ),
    "telemetry": Message(
        uuid=UUID,
        dialect=Dialect.V1,
        kind=Kind.TELEMETRY,
        device_ts=T_2025,
        seq=981,
        boot_id=17,
        readings=(
            Reading("can", "RPM", 2500.0, "rpm", "0x200"),
            Reading("analog", "fuel_level", 67.8),
            Reading("analog", "oil_pressure", 45.2),
            Reading("system", "cpu_temperature", 42.1),
            Reading("system", "memory_usage", 68.0),
            Reading("system", "wifi_signal", -58.0),
            Reading("gps", "latitude", -23.5505),
            Reading("gps", "longitude", -46.6333),
            Reading("gps", "altitude", 760.0),
            Reading("gps", "speed", 65.4),
            Reading("gps", "heading", 180.5),
            Reading("gps", "satellites", 8.0),
            Reading("gps", "accuracy", 3.2),
            Reading("sensor", "coolant_temp", 88.5, "C"),
            Reading("can_raw", "0x123", None, raw=b"\x0a\x1b\x2c\x3d", ts=1736332200.125),
        ),
    ),
    "relay_status": Message(
        uuid=UUID,
        dialect=Dialect.V1,
        kind=Kind.RELAY_STATUS,
        device_ts=T_2025,
        readings=(
            Reading("relay", "relay.1.state", 1.0),
            Reading("relay", "relay.1.current", 0.8),
            Reading("relay", "relay.1.voltage", 12.1),
            Reading("relay", "relay.1.temperature", 35.2),
            Reading("relay", "relay.1.switch_count", 1247.0),
            Reading("relay", "relay.power_consumption", 15.6),
        ),
        relay_states=(RelayState(1, True),),
    ),
    "response": Message(
        uuid=UUID,
        dialect=Dialect.V1,
        kind=Kind.RESPONSE,
        device_ts=T_2025 + 2,
        response=Response(
            command_id="42",
            outcome="succeeded",
            result={"relay_id": 1, "state": True},
            error_message=None,
            execution_time=2.3,
        ),
    ),
    "discovery": Message(
        uuid=UUID,
        dialect=Dialect.V1,
        kind=Kind.DISCOVERY,
        device_ts=T_2025,
        discovery=Discovery(
            discovery_type="network_scan",
            ip_address="192.168.1.120",
            mac_address="AA:BB:CC:DD:EE:01",
            device_type="sensor_board",
            signal_strength=-72.0,
        ),
    ),
}


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("name", sorted(INBOUND))
def test_example_payload_decodes_to_exact_message(name, encoding):
    suffix, payload = INBOUND[name]
    expected = EXPECTED[name]
    message = decode(suffix, payload, encoding)
    assert message == Message(**{**expected.__dict__, "encoding": encoding})


@pytest.mark.parametrize("payload, online", [(STATUS_ONLINE, True), (STATUS_OFFLINE, False)])
def test_status_availability_form(payload, online):
    message = decode(f"devices/{UUID}/status", payload)
    assert message == Message(
        uuid=UUID,
        dialect=Dialect.V1,
        kind=Kind.STATUS,
        boot_id=17,
        availability=Availability(online=online, boot_id=17),
        alive=online,
    )


def test_response_accepted_is_not_final():
    message = decode(f"devices/{UUID}/response", {"command_id": "42", "status": "accepted"})
    assert message.response == Response(command_id="42", outcome="accepted")


def test_response_failure_keeps_error_message():
    message = decode(
        f"devices/{UUID}/response",
        {"command_id": 42, "success": False, "error_message": "relay 1 stuck", "result": None},
    )
    assert message.response == Response(command_id="42", outcome="failed", error_message="relay 1 stuck")


# -- outbound -----------------------------------------------------------------

NOW = T_2025
EXPIRES = T_2025 + 300


def _json(publication: Publication) -> object:
    return orjson.loads(publication.payload)


def test_command_example():
    spec = CommandSpec(
        id=42,
        device_uuid=UUID,
        command_type="relay_control",
        parameters={"relay_id": 1, "state": True, "duration": 5000},
        timeout=30.0,
        created_at=NOW,
        expires_at=EXPIRES,
    )
    publication = command_publication("autocore", spec, attempt=1, now=NOW, gateway_id="autocore-gateway",
                                      encoding=Encoding.JSON)
    assert (publication.topic, publication.qos, publication.retain) == (f"autocore/devices/{UUID}/command", 2, False)
    assert _json(publication) == {
        "command_id": "42",
        "command_type": "relay_control",
        "parameters": {"relay_id": 1, "state": True, "duration": 5000},
        "timestamp": "2025-01-08T10:30:00.000Z",
        "timeout": 30,
        "gateway_id": "autocore-gateway",
        "attempt": 1,
        "expires_at": "2025-01-08T10:35:00.000Z",
    }


def test_relay_command_example():
    relays = [{"relay_id": 1, "action": "turn_on", "duration": 5000}, {"relay_id": 3, "action": "toggle"}]
    spec = CommandSpec(id=43, device_uuid=UUID, command_type="relay_control", parameters={"relays": relays},
                       topic="relay/command", timeout=5.0, expires_at=EXPIRES)
    publication = command_publication("autocore", spec, attempt=2, now=NOW, gateway_id="gw")
    assert (publication.topic, publication.qos, publication.retain) == (
        f"autocore/devices/{UUID}/relay/command", 2, False)
    assert _json(publication) == {
        "command_id": "43",
        "relays": relays,
        "timestamp": "2025-01-08T10:30:00.000Z",
        "timeout": 5,
        "gateway_id": "gw",
        "attempt": 2,
        "expires_at": "2025-01-08T10:35:00.000Z",
    }


def test_command_in_messagepack():
    spec = CommandSpec(id=7, device_uuid=UUID, command_type="reboot", parameters={}, expires_at=EXPIRES)
    publication = command_publication("fleet/a", spec, attempt=3, now=NOW, gateway_id="gw",
                                      encoding=Encoding.MSGPACK)
    obj, encoding = codec_decode(publication.payload, 65536)
    assert encoding is Encoding.MSGPACK
    assert publication.topic == f"fleet/a/devices/{UUID}/command"
    assert obj["command_id"] == "7" and obj["attempt"] == 3 and obj["parameters"] == {}


def test_availability_example():
    assert availability_publication("autocore", UUID, True) == Publication(
        f"autocore/devices/{UUID}/availability", b"online", qos=1, retain=True)
    assert availability_publication("autocore", UUID, False) == Publication(
        f"autocore/devices/{UUID}/availability", b"offline", qos=1, retain=True)


def test_gateway_status_example():
    publication = gateway_status_publication(
        "autocore", "online", "autocore-gateway", now=NOW, uptime=3600.0, devices_online=4,
        ram_mb=42.5, cpu_percent=3.1, version="0.1.0")
    assert (publication.topic, publication.qos, publication.retain) == ("autocore/gateway/status", 1, True)
    assert _json(publication) == {
        "timestamp": "2025-01-08T10:30:00.000Z",
        "status": "online",
        "gateway_id": "autocore-gateway",
        "uptime": 3600,
        "devices_online": 4,
        "memory_usage": {"ram_mb": 42.5, "cpu_percent": 3.1},
        "version": "0.1.0",
    }


def test_broadcast_example():
    publication = broadcast_publication("autocore", "config_update", {"status_interval": 10}, now=NOW)
    assert (publication.topic, publication.qos, publication.retain) == ("autocore/system/broadcast", 1, False)
    assert _json(publication) == {
        "message_type": "config_update",
        "timestamp": "2025-01-08T10:30:00.000Z",
        "data": {"status_interval": 10},
    }
