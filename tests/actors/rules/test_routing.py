"""RoutingRules, the Router's decisions, without an actor: what is stored
on the fast path, what goes to a device's actor, what is refused (and
counted) and what needs nothing stored."""

from __future__ import annotations

import orjson
import pytest

import actors.rules.routing as routing
from actors.messages import KnownDevice, RawInbound, Token
from actors.rules.routing import INTERNAL_ERROR, RoutingRules, guess_uuid
from protocol.values import RATE_LIMITED

DEV = "esp32-relay-01"
TELEMETRY = orjson.dumps({"seq": 5, "boot_id": 3, "analog_sensors": {"fuel_level": 67.8, "oil_pressure": 45.2}})
ANNOUNCE = orjson.dumps({"device_type": "relay_board", "firmware_version": "1.0", "boot_id": 3})
STATUS = orjson.dumps({"last_restart_reason": "normal"})  # a status report without numbers: alive, nothing to store
STATE_22 = orjson.dumps({"protocol_version": "2.2.0", "board_id": 1, "channels": {"1": True}})


def rules(rate=200.0, burst=10000.0):
    return RoutingRules("autocore", 65536, 300.0, rate, burst)


def raw(level, payload, mid, uuid=DEV, at=1000.0):
    return RawInbound(f"autocore/devices/{uuid}/{level}", payload, 1, at, Token(1, mid, 1))


def test_telemetry_takes_the_fast_path_with_its_rows_and_a_summary_for_its_device():
    r = rules()
    out = r.route([raw("telemetry", TELEMETRY, 1), raw("telemetry", TELEMETRY, 2)])
    assert len(out.rows) == 4 and out.row_tokens == [Token(1, 1, 1), Token(1, 2, 1)]
    assert {row[7] for row in out.rows} == {"fuel_level", "oil_pressure"}
    assert all(row[0] == DEV and row[1:3] == (3, 5) for row in out.rows)
    ((uuid, seen),) = out.seen
    assert uuid == DEV and seen.count == 2 and seen.seqs == ((3, 5), (3, 5)) and seen.dialect == "v1"
    assert out.devices == () and out.done == [] and out.refused == []
    assert r.counters["batches"] == 1 and r.counters["messages"] == 2
    assert r.batch_sizes == {"2-99": 1}


def test_what_changes_a_device_goes_to_its_actor_and_a_bare_status_needs_nothing_stored():
    r = rules()
    out = r.route([raw("announce", ANNOUNCE, 1), raw("status", STATUS, 2)])
    ((uuid, messages),) = out.devices
    assert uuid == DEV and [m.message.kind for m in messages] == ["announce"] and messages[0].token == Token(1, 1, 1)
    assert [u for u, _ in out.seen] == [DEV]
    assert out.done == [Token(1, 2, 1)] and out.rows == []


def test_a_flood_is_refused_from_the_topic_and_counted_per_device():
    r = rules(rate=1.0, burst=2.0)
    out = r.route([raw("telemetry", TELEMETRY, mid) for mid in range(1, 5)] + [raw("telemetry", TELEMETRY, 9, uuid="other")])
    assert [t.mid for t in out.row_tokens] == [1, 2, 9]
    assert [t.mid for t in out.done] == [3, 4]
    assert [(u, reason) for u, _, reason, _ in out.refused] == [(DEV, RATE_LIMITED)] * 2
    assert r.rejections_by_device[DEV] == {RATE_LIMITED: 2} and "other" not in r.rejections_by_device
    # the bucket fills again with time
    assert r.route([raw("telemetry", TELEMETRY, 10, at=1001.5)]).row_tokens == [Token(1, 10, 1)]


def test_an_invalid_message_is_refused_with_its_reason_and_acknowledged():
    r = rules()
    out = r.route([raw("telemetry", b"{not json", 1), raw("nonsense", TELEMETRY, 2)])
    assert [t.mid for t in out.done] == [1, 2] and out.rows == []
    assert [u for u, _, _, _ in out.refused] == [DEV, DEV]
    assert sum(r.rejections.values()) == 2 and sum(r.rejections_by_device[DEV].values()) == 2


def test_a_decoder_bug_is_a_rejection_not_a_crash(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(routing, "decode_message", broken)
    r = rules()
    out = r.route([raw("telemetry", TELEMETRY, 1)])
    assert [(reason, detail) for _, _, reason, detail in out.refused] == [(INTERNAL_ERROR, "KeyError: 'oops'")]
    assert out.done == [Token(1, 1, 1)]


def test_a_v1_device_with_a_boot_sends_its_2_2_messages_to_its_actor_until_the_operator_unlocks():
    r = rules()
    r.load([KnownDevice(DEV, "online", boot_id=3, protocol="v1")])
    out = r.route([raw("relays/state", STATE_22, 1)])
    assert out.seen == () and out.rows == [] and [m.message.kind for _, ms in out.devices for m in ms] == ["fw22_relays_state"]
    assert r.counters["dialect_checked"] == 1
    mark = r.mark()
    assert r.lock(DEV, False, after=mark) is False
    assert [u for u, _ in r.route([raw("relays/state", STATE_22, 2)]).seen] == [DEV]
    # a v1 message with a boot locks it again; an unlock judged by the older mark is ignored
    r.route([raw("announce", ANNOUNCE, 3)])
    assert r.lock(DEV, False, after=mark) is True
    assert r.lock("a-2-2-board", True) is True


@pytest.mark.parametrize("topic, uuid", [("autocore/devices/d1/x", "d1"), ("autocore/errors/b2/y", "b2"),
                                         ("somewhere/else", "?")])
def test_a_refused_topic_is_counted_under_its_uuid_level(topic, uuid):
    assert guess_uuid(topic) == uuid
