"""The command lifecycle (PROTOCOL.md "Commands and the Config App"): rows
inserted into `commands` as the Config App does, delivered to a test device
over a real broker, answered or not."""

from __future__ import annotations

import time

import pytest

from tests.integration.devices import decode
from tests.integration.helpers import inspect
from tests.support.broker import wait_until

# The single-instance behaviour, on both backends (tests/integration/conftest.py).
ENGINES = ("sqlite", "postgresql")

LONG = 30.0  # a row timeout no test waits for: the command is sent once


def online_device(devices, db, **kw):
    dev = devices(**kw)
    dev.announce(boot_id=1)  # status_interval 5: timeout 15 s, longer than any test here
    wait_until(lambda: db.field(dev.uuid, "status") == "online", 10, what=f"{dev.uuid} online")
    return dev


def stays(predicate, duration: float, what: str) -> None:
    """A negative check: `predicate` holds for the whole observation window
    (waiting, with that deadline, for it to stop holding must time out)."""
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(lambda: not predicate(), duration, what=f"a break of: {what}")
    assert predicate(), what


def test_pick_up_delivery_and_success(gateway, db, devices):
    dev = online_device(devices, db)
    inserted_at = time.time()
    cid = db.insert_command(dev.uuid, "relay_control", {"relay_id": 1, "state": True, "duration": 5000}, timeout=LONG)
    [cmd] = dev.wait_commands(1)
    [msg] = dev.command_messages()
    assert msg.topic == f"autocore/devices/{dev.uuid}/command"
    assert msg.qos == 2
    assert cmd["command_id"] == str(cid)
    assert cmd["command_type"] == "relay_control"
    assert cmd["parameters"] == {"relay_id": 1, "state": True, "duration": 5000}
    assert cmd["attempt"] == 1
    assert cmd["timeout"] == LONG
    assert cmd["gateway_id"] == "autocore-gateway"
    assert "expires_at" in cmd and "timestamp" in cmd
    row = db.wait_command(cid, "sent")
    assert row["attempts"] == 1
    assert row["sent_at"] >= inserted_at
    # Picked up within the poll interval (50 ms here), with a generous margin for a loaded machine.
    assert row["sent_at"] - inserted_at < 2.0

    dev.respond(cmd["command_id"], success=True, result={"relay_id": 1, "state": True})
    row = db.wait_command(cid, "succeeded")
    assert decode(row["result"].encode()) == {"relay_id": 1, "state": True}
    assert row["error_message"] is None
    assert row["completed_at"] >= row["sent_at"]
    assert len(dev.commands) == 1


def test_failure_response(gateway, db, devices):
    dev = online_device(devices, db)
    cid = db.insert_command(dev.uuid, "relay_control", timeout=LONG)
    [cmd] = dev.wait_commands(1)
    dev.respond(cmd["command_id"], success=False, error_message="relay 1 is locked out")
    row = db.wait_command(cid, "failed")
    assert row["error_message"] == "relay 1 is locked out"
    assert row["completed_at"] is not None


def test_no_response_retries_with_the_same_id_then_timeout(gateway, db, devices):
    dev = online_device(devices, db)
    cid = db.insert_command(dev.uuid, "reboot", {}, max_attempts=3)  # timeout NULL: the gateway's 0.5 s
    row = db.wait_command(cid, "timeout", timeout=10)
    cmds = dev.wait_commands(3)
    assert [(c["command_id"], c["attempt"]) for c in cmds] == [(str(cid), 1), (str(cid), 2), (str(cid), 3)]
    assert row["attempts"] == 3
    assert row["error_message"]
    stays(lambda: len(dev.commands) == 3, 1.0, "no send after the last attempt timed out")
    # The retries were spaced by the timeout.
    at = [m.at for m in dev.command_messages()]
    assert at[1] - at[0] >= 0.4 and at[2] - at[1] >= 0.4


def test_accepted_then_final(gateway, db, devices):
    dev = online_device(devices, db)
    cid = db.insert_command(dev.uuid, "firmware_update", {"url": "http://x/fw.bin"})  # timeout 0.5 s
    [cmd] = dev.wait_commands(1)
    dev.accept(cmd["command_id"])
    db.wait_command(cid, "accepted")
    # Accepted: it waits for the final answer without being sent again,
    # well past the 0.5 s after which an unanswered command is re-sent.
    stays(lambda: len(dev.commands) == 1 and db.command(cid)["status"] == "accepted", 1.5,
          "an accepted command is neither re-sent nor timed out")
    dev.respond(cmd["command_id"], success=True, result={"version": "2.0"})
    row = db.wait_command(cid, "succeeded")
    assert row["attempts"] == 1
    assert len(dev.commands) == 1


def test_held_while_offline_then_sent_when_online(gateway, db, devices):
    dev = devices(connect=False).connect(will_boot_id=1)
    dev.announce(boot_id=1)
    wait_until(lambda: db.field(dev.uuid, "status") == "online", 10, what="online")
    dev.drop()
    wait_until(lambda: db.field(dev.uuid, "status") == "offline", 10, what="offline by the Will")

    cid = db.insert_command(dev.uuid, "relay_control", timeout=LONG)
    db.wait_command(cid, "queued")  # claimed, and held

    dev.connect(will_boot_id=2)
    back_at = time.time()
    dev.announce(boot_id=2)
    [cmd] = dev.wait_commands(1)
    assert cmd["command_id"] == str(cid) and cmd["attempt"] == 1
    row = db.wait_command(cid, "sent")
    assert row["sent_at"] >= back_at, "sent only once the device was back"
    assert row["attempts"] == 1


def test_expires_while_the_device_is_offline(gateway, db, devices):
    dev = devices(connect=False).connect(will_boot_id=1)
    dev.announce(boot_id=1)
    wait_until(lambda: db.field(dev.uuid, "status") == "online", 10, what="online")
    dev.drop()
    wait_until(lambda: db.field(dev.uuid, "status") == "offline", 10, what="offline by the Will")

    cid = db.insert_command(dev.uuid, "relay_control", ttl_s=1.0)
    row = db.wait_command(cid, "expired", timeout=10)
    assert row["error_message"]
    assert row["attempts"] == 0
    assert row["completed_at"] >= row["expires_at"]

    dev.connect(will_boot_id=2)
    dev.announce(boot_id=2)
    dev.telemetry(seq=1, boot_id=2)
    wait_until(lambda: db.count(dev.uuid) == 1, 10, what="the device back")
    stays(lambda: dev.commands == [], 0.5, "an expired command is never sent")


def test_window_of_one_keeps_order(gateway, db, devices):
    dev = online_device(devices, db)
    first = db.insert_command(dev.uuid, "step", {"n": 1}, timeout=LONG)
    second = db.insert_command(dev.uuid, "step", {"n": 2}, timeout=LONG)
    third = db.insert_command(dev.uuid, "step", {"n": 3}, timeout=LONG)
    [c1] = dev.wait_commands(1)
    assert c1["command_id"] == str(first)
    db.wait_command(second, "queued")
    # The feed may claim the third a poll after the second (it was inserted
    # after): wait for it to be queued, not sent, behind the first.
    db.wait_command(third, "queued")
    assert len(dev.commands) == 1

    answered_at = time.time()
    dev.respond(c1["command_id"])
    c2 = dev.wait_commands(2)[1]
    assert c2["command_id"] == str(second)
    assert db.wait_command(second, "sent")["sent_at"] >= answered_at
    assert db.command(third)["status"] == "queued"
    assert len(dev.commands) == 2

    dev.respond(c2["command_id"])
    c3 = dev.wait_commands(3)[2]
    assert c3["command_id"] == str(third)
    dev.respond(c3["command_id"])
    db.wait_command(third, "succeeded")
    assert [c["parameters"]["n"] for c in dev.commands] == [1, 2, 3]
    assert [db.command(i)["status"] for i in (first, second, third)] == ["succeeded"] * 3


def test_cancel_of_a_queued_command_and_of_a_sent_one(gateway, db, devices):
    dev = online_device(devices, db)
    sent = db.insert_command(dev.uuid, "step", {"n": 1}, timeout=LONG)
    queued = db.insert_command(dev.uuid, "step", {"n": 2}, timeout=LONG)
    [c1] = dev.wait_commands(1)
    db.wait_command(queued, "queued")

    db.request_cancel(queued)
    row = db.wait_command(queued, "cancelled")
    assert row["completed_at"] is not None

    # Already sent: it cannot be taken back, so it runs to its own end.
    db.request_cancel(sent)
    wait_until(lambda: db.command(sent)["status"] == "sent" and db.command(sent)["error_message"], 10,
               what="the cancel of a sent command refused")
    dev.respond(c1["command_id"], success=True)
    db.wait_command(sent, "succeeded")
    stays(lambda: len(dev.commands) == 1, 0.5, "the cancelled command is never sent")


def test_unknown_and_late_responses_change_nothing(gateway, db, devices):
    dev = online_device(devices, db)
    cid = db.insert_command(dev.uuid, "step", timeout=LONG)
    [cmd] = dev.wait_commands(1)

    dev.respond("999999", success=False, error_message="who?")
    dev.respond("not-a-number", success=True)

    def device() -> dict:
        return inspect(gateway.socket_path, "device", uuid=dev.uuid)["device"]

    wait_until(lambda: device()["counters"].get("unknown_response") == 2, 10, what="two unknown responses counted")
    assert db.command(cid)["status"] == "sent"

    dev.respond(cmd["command_id"], success=True, result={"ok": 1})
    db.wait_command(cid, "succeeded")
    dev.respond(cmd["command_id"], success=False, error_message="too late")
    wait_until(lambda: device()["counters"].get("late_response") == 1, 10, what="the late response counted")
    row = db.command(cid)
    assert row["status"] == "succeeded"
    assert row["error_message"] is None
    assert decode(row["result"].encode()) == {"ok": 1}


def test_a_msgpack_device_gets_its_commands_in_msgpack(gateway, db, devices):
    dev = devices(encoding="msgpack")
    dev.announce(boot_id=1)
    wait_until(lambda: db.field(dev.uuid, "encoding") == "msgpack", 10, what="the msgpack device")
    cid = db.insert_command(dev.uuid, "relay_control", {"relay_id": 2, "state": False}, timeout=LONG)
    dev.wait_commands(1)
    [msg] = dev.command_messages()
    assert msg.qos == 2
    assert msg.payload[:1] != b"{", "a device is answered in the encoding it last used"
    body = msg.body
    assert (body["command_id"], body["parameters"], body["attempt"]) == (str(cid), {"relay_id": 2, "state": False}, 1)
    dev.respond(body["command_id"], success=True)
    db.wait_command(cid, "succeeded")


def test_relay_command_topic(gateway, db, devices):
    dev = online_device(devices, db)
    cid = db.insert_command(dev.uuid, "relay_control", {"relays": [{"relay_id": 1, "action": "turn_on", "duration": 5000},
                                                                   {"relay_id": 3, "action": "toggle"}]},
                            topic="relay/command", timeout=LONG)
    dev.wait_commands(1, timeout=5)
    [msg] = dev.command_messages()
    assert msg.topic == f"autocore/devices/{dev.uuid}/relay/command"
    assert msg.qos == 2
    body = msg.body
    assert body["command_id"] == str(cid)
    assert body["relays"] == [{"relay_id": 1, "action": "turn_on", "duration": 5000}, {"relay_id": 3, "action": "toggle"}]
    assert body["attempt"] == 1
    dev.respond(body["command_id"], success=True)
    db.wait_command(cid, "succeeded")


def test_a_row_that_cannot_be_sent_fails(gateway, db, devices):
    dev = online_device(devices, db)
    cid = db.insert_command(dev.uuid, "relay_control", {"no_relays": True}, topic="relay/command", timeout=LONG)
    row = db.wait_command(cid, "failed", timeout=5)
    assert row["error_message"]
    assert dev.commands == []


def test_restart_recovery_resends_with_the_same_id_and_next_attempt(gateways, db, devices):
    gw = gateways()
    dev = online_device(devices, db)
    cid = db.insert_command(dev.uuid, "relay_control", timeout=LONG)
    [cmd] = dev.wait_commands(1)
    assert cmd["attempt"] == 1
    db.wait_command(cid, "sent")
    assert gw.stop() == 0, "\n".join(gw.lines)
    assert db.command(cid)["status"] == "sent"

    gateways()  # the same database, the same broker session
    cmds = dev.wait_commands(2)
    assert (cmds[1]["command_id"], cmds[1]["attempt"]) == (str(cid), 2)
    row = db.wait_command(cid, "sent")
    wait_until(lambda: db.command(cid)["attempts"] == 2, 5, what="attempts 2 in the row")
    dev.respond(cmds[1]["command_id"], success=True)
    db.wait_command(cid, "succeeded")
    assert len(dev.commands) == 2
    assert row["sent_at"] is not None


def test_restart_recovery_of_queued_and_accepted_commands(gateways, db, devices):
    gw = gateways()
    answering = online_device(devices, db)
    accepted = db.insert_command(answering.uuid, "firmware_update", timeout=LONG)
    [cmd] = answering.wait_commands(1)
    answering.accept(cmd["command_id"])
    db.wait_command(accepted, "accepted")

    away = devices(connect=False).connect(will_boot_id=1)
    away.announce(boot_id=1)
    wait_until(lambda: db.field(away.uuid, "status") == "online", 10, what="online")
    away.drop()
    wait_until(lambda: db.field(away.uuid, "status") == "offline", 10, what="offline by the Will")
    queued = db.insert_command(away.uuid, "relay_control", timeout=LONG)
    db.wait_command(queued, "queued")
    assert gw.stop() == 0, "\n".join(gw.lines)

    gateways()
    # Accepted: waits for its final answer, not sent again.
    answering.respond(cmd["command_id"], success=True, result={"done": True})
    row = db.wait_command(accepted, "succeeded")
    assert row["attempts"] == 1
    assert len(answering.commands) == 1
    # Queued for a device that is away: held until it is back, then sent (attempt 1).
    away.connect(will_boot_id=2)
    away.announce(boot_id=2)
    [sent] = away.wait_commands(1)
    assert (sent["command_id"], sent["attempt"]) == (str(queued), 1)
    away.respond(sent["command_id"])
    db.wait_command(queued, "succeeded")
