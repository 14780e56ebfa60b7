"""What devices may not do to the gateway: flood it (rate limit), send it
garbage on any topic, or send values no column can hold; and a device actor
that crashes is restarted while the gateway carries on."""

from __future__ import annotations

import random
import re
import time

import msgpack

from gateway.control import ControlError
from protocol.decode import subscriptions
from tests.integration.helpers import inspect, telemetry_line
from tests.support.broker import wait_until

# The single-instance behaviour, on both backends (tests/integration/conftest.py).
ENGINES = ("sqlite", "postgresql")

MAX_PAYLOAD = 4096


def rejections(gw) -> dict:
    return inspect(gw.socket_path, "stats")["stats"]["router"]["rejections"]


def unacknowledged(gw) -> int:
    return inspect(gw.socket_path, "stats")["stats"]["mqtt"]["unacknowledged"]


def test_rate_limit_holds_a_flooding_device_and_spares_the_others(gateways, db, devices):
    gw = gateways(device_rate=5, device_burst=10)
    noisy, quiet = devices(), devices()
    started = time.time()
    infos = []
    for seq in range(1, 51):
        infos.append(noisy.client.publish(noisy.topic("telemetry"), telemetry_line(seq), qos=1))
        if seq % 10 == 0:
            quiet.telemetry(seq=seq // 10, boot_id=1, wait=False)
    for info in infos:
        info.wait_for_publish(10)

    def noisy_done():
        try:
            device = inspect(gw.socket_path, "device", uuid=noisy.uuid).get("device", {})
        except ControlError:  # "no device": its first message is not through the Router yet
            return None
        limited = device.get("rejections", {})
        stored = db.count(noisy.uuid)
        return (stored, limited.get("rate_limited", 0)) if stored + limited.get("rate_limited", 0) == 50 else None

    stored, limited = wait_until(noisy_done, 10, what="all 50 messages of the noisy device stored or rate-limited")
    elapsed = time.time() - started
    # A bucket of 10 plus 5 tokens a second for as long as the flood lasted.
    assert 10 <= stored <= 10 + 5 * elapsed + 1, (stored, elapsed)
    assert stored + limited == 50
    # The first ones pass, the rest is dropped: what is stored starts at seq 1 without a gap.
    seqs = [r["seq"] for r in db.telemetry(noisy.uuid)]
    assert seqs[:10] == list(range(1, 11))

    wait_until(lambda: db.count(quiet.uuid) == 5, 10, what="every message of the quiet device")
    assert "rate_limited" not in inspect(gw.socket_path, "device", uuid=quiet.uuid)["device"]["rejections"]
    # Dropped messages are acknowledged all the same: nothing is left for the broker to send again.
    wait_until(lambda: unacknowledged(gw) == 0, 5, what="every message acknowledged")
    assert rejections(gw)["rate_limited"] == limited


def garbage_payloads() -> dict[str, bytes]:
    rnd = random.Random(20261125)
    return {
        "random bytes": bytes(rnd.getrandbits(8) for _ in range(64)),
        "random after a msgpack map byte": b"\x85" + bytes(rnd.getrandbits(8) for _ in range(40)),
        "empty": b"",
        "truncated JSON": b'{"seq": 1, "analog',
        "JSON array": b"[1, 2, 3]",
        "JSON array after white space": b" [1, 2]",
        "JSON text": b' "text"',
        "JSON NaN": b'{"analog_sensors": {"x": NaN}}',
        "wrong types everywhere": b'{"seq": "x", "boot_id": -1, "analog_sensors": 5, "device_type": 5, '
                                  b'"firmware_version": [], "status": 42, "command_id": null, "success": "yes", '
                                  b'"device_info": 7, "relays": "all"}',
        "nested 3000 deep": b'{"a":' * 3000 + b"1" + b"}" * 3000,
        "msgpack array": msgpack.packb([1, 2]),
        "msgpack int keys": msgpack.packb({1: 2, 3: 4}),
        "bad UTF-8": b'{"seq": "\xff\xfe"}',
        "2.2 with wrong types": b'{"protocol_version": "2.2.0", "status": 5, "uuid": 7}',
        "protocol_version a number": b'{"protocol_version": 7, "seq": 1, "analog_sensors": {"x": 1}}',
        "oversize": b'{"analog_sensors": {"x": 1}, "pad": "' + b"a" * MAX_PAYLOAD + b'"}',
    }


# One field of the wrong type (or missing) in an otherwise valid payload, per topic.
WRONG_FIELDS = [
    ("announce", b'{"device_type": 5, "firmware_version": "1.0"}'),
    ("announce", b'{"device_type": "relay_board", "firmware_version": "1.0", "boot_id": "7"}'),
    ("announce", b'{"device_type": "relay_board", "firmware_version": "1.0", "capabilities": "relay"}'),
    ("announce", b'{"device_type": "relay_board", "firmware_version": "1.0", "uuid": "someone-else"}'),
    ("announce", b'{"firmware_version": "1.0"}'),
    ("status", b'{"status": 42}'),
    ("status", b'{"status": "sleeping"}'),
    ("telemetry", b'{"seq": "x", "analog_sensors": {"fuel_level": 1}}'),
    ("telemetry", b'{"seq": -1, "analog_sensors": {"fuel_level": 1}}'),
    ("telemetry", b'{"analog_sensors": [1, 2]}'),
    ("telemetry", b'{"gps": {"latitude": [1]}}'),
    ("telemetry", b'{"can_frames": [{"id": "0x1", "data": "zz"}]}'),
    ("telemetry", b'{"seq": 1}'),
    ("relay/status", b'{"relays": "all"}'),
    ("relay/status", b'{"relays": [{"relay_id": "one", "state": true}]}'),
    ("response", b'{"command_id": "1", "success": "yes"}'),
    ("response", b'{"success": true}'),
    ("response", b'{"command_id": [1], "success": true}'),
]

VALID_TELEMETRY = b'{"seq": 1, "boot_id": 1, "analog_sensors": {"fuel_level": 1}}'

# Topics whose uuid level is not a device id (a wildcard cannot be
# published, so: other characters, too long, a leading dash, empty).
BAD_UUID_TOPICS = [
    "autocore/devices/bad.uuid/telemetry",
    "autocore/devices/bad uuid/telemetry",
    "autocore/devices/-leading-dash/announce",
    "autocore/devices/" + "x" * 65 + "/telemetry",
    "autocore/devices//telemetry",
    "autocore/devices/gar\u00e7on/status",
    "autocore/discovery/bad.uuid",
    "autocore/errors/bad.uuid/relay",
]


def test_garbage_on_every_topic_leaves_the_gateway_serving(gateways, db, devices, broker):
    gw = gateways(max_payload=MAX_PAYLOAD)
    sender = devices("garbage-sender")
    sent = 0
    started = time.monotonic()
    for topic_filter, _ in subscriptions("autocore"):
        topic = topic_filter.replace("+", "garbage-1")
        for payload in garbage_payloads().values():
            sender.publish("", payload, topic=topic)
            sent += 1
    for kind, payload in WRONG_FIELDS:
        sender.publish("", payload, topic=f"autocore/devices/garbage-2/{kind}")
        sent += 1
    sender.publish("", b'{"device_info": 7}', topic="autocore/discovery/garbage-2")
    sent += 1
    for topic in BAD_UUID_TOPICS:
        body = VALID_TELEMETRY if "telemetry" in topic else b'{"device_type": "x", "firmware_version": "1", "status": "online"}'
        sender.publish("", body, topic=topic)
        sent += 1

    wait_until(lambda: sum(rejections(gw).values()) >= sent, 20, what=f"{sent} messages rejected")
    assert sum(rejections(gw).values()) == sent, rejections(gw)
    assert rejections(gw).get("too_large", 0) >= len(subscriptions("autocore"))

    # Still serving: the next valid message is stored.
    dev = devices()
    dev.announce(boot_id=1)
    dev.telemetry(seq=1, boot_id=1)
    wait_until(lambda: db.count(dev.uuid) == 1 and db.field(dev.uuid, "status") == "online", 10,
               what="the valid message after the garbage")
    # Nothing of the garbage reached the database.
    assert db.one("SELECT COUNT(*) FROM telemetry WHERE device_uuid != ?", dev.uuid) == 0
    assert [r["uuid"] for r in db.rows("SELECT uuid FROM gateway_devices")] == [dev.uuid]
    assert db.one("SELECT COUNT(*) FROM device_events WHERE device_uuid != ?", dev.uuid) == 0
    wait_until(lambda: unacknowledged(gw) == 0, 5, what="the garbage acknowledged")
    assert gw.proc.poll() is None
    # Rejections are logged at most once a second per device.
    logged = [line for line in gw.lines if "rejected a message" in line and "(device garbage-1)" in line]
    assert 1 <= len(logged) <= time.monotonic() - started + 1


def test_values_out_of_range_are_rejected_and_harm_no_one(gateways, db, devices):
    """Integers no SQLite INTEGER column (and no msgpack frame between the
    two processes) can hold: seq 1e300 is an integer by the schema's rules,
    2^63 is one past SQLite's largest. A device sending them must not stop
    the gateway for everyone."""
    gw = gateways()
    bad, good = devices(), devices()
    poison = [
        ("telemetry", b'{"seq": 1e300, "boot_id": 1, "analog_sensors": {"x": 1}}'),
        ("telemetry", b'{"seq": 9223372036854775808, "boot_id": 1, "analog_sensors": {"x": 1}}'),
        ("announce", b'{"device_type": "relay_board", "firmware_version": "1", "relay_count": 9223372036854775808}'),
        ("announce", b'{"device_type": "relay_board", "firmware_version": "1", "boot_id": 9223372036854775808}'),
    ]
    for n, (kind, payload) in enumerate(poison):
        bad.publish(kind, payload)
        good.telemetry(seq=n + 1, boot_id=1)
        wait_until(lambda n=n: db.count(good.uuid) == n + 1, 10,
                   what=f"the good device served after poison {payload.decode()[:60]}")
    wait_until(lambda: unacknowledged(gw) == 0, 5, what="every message acknowledged")
    assert db.one("SELECT COUNT(*) FROM telemetry WHERE device_uuid = ?", bad.uuid) == 0
    assert gw.proc.poll() is None


def test_the_input_that_once_crashed_a_device_actor_is_now_rejected(gateways, db, devices):
    """An announce whose boot_id (1e300) no database column can hold used to
    crash the device's actor when it was sent to the store. The schema now
    bounds integers to 64 bits, so it is a counted rejection and no actor
    fails. No input on the wire is known to crash a device actor any more;
    restarts after a crash (with the rest of its work handed on and its
    commands reloaded) are tested with real actors in
    tests/actors/test_supervisor.py."""
    gw = gateways()
    dev, other = devices(), devices()
    dev.announce(boot_id=1)
    other.announce(boot_id=1)
    wait_until(lambda: db.field(dev.uuid, "status") == "online" and db.field(other.uuid, "status") == "online", 10,
               what="both online")
    cid = db.insert_command(dev.uuid, "step", timeout=30.0)
    [cmd] = dev.wait_commands(1)
    db.wait_command(cid, "sent")

    dev.publish("announce", b'{"device_type": "relay_board", "firmware_version": "1", "boot_id": 1e300}')
    gw.wait_for_line("integer of at most 64 bits")

    def supervisor() -> dict:
        actors = inspect(gw.socket_path, "actors")["actors"]
        return next(a for a in actors if a.get("name") == "DeviceSupervisor")["counters"]

    # The device is served as before, its command still in hand.
    dev.telemetry(seq=1, boot_id=1)
    wait_until(lambda: db.count(dev.uuid) == 1, 10, what="the device served")
    dev.respond(cmd["command_id"], success=True)
    db.wait_command(cid, "succeeded")
    other.telemetry(seq=1, boot_id=1)
    wait_until(lambda: db.count(other.uuid) == 1, 10, what="the other device")
    wait_until(lambda: unacknowledged(gw) == 0, 5, what="the rejected message acknowledged")
    assert supervisor().get("device_failures") is None
    assert gw.proc.poll() is None
    assert not [line for line in gw.lines if "Unhandled exception" in line]
