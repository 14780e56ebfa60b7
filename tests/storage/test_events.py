"""The device history."""

from __future__ import annotations

from storage import events
from storage.db import database


def test_append_and_list(db):
    n = events.append_events([
        ("d1", 1.0, "announce", {"firmware_version": "1.2.0"}),
        ("d1", 2.0, "offline", {"reason": "will"}),
        ("d2", 1.5, "discovered", None),
        ("d1", 3.0, "error", ["a", 1]),
    ])
    assert n == 4
    assert [(e.event, e.detail) for e in events.list_events("d1")] == [
        ("error", ["a", 1]), ("offline", {"reason": "will"}), ("announce", {"firmware_version": "1.2.0"}),
    ]
    assert [e.device_uuid for e in events.list_events()] == ["d1", "d1", "d2", "d1"]
    assert [e.ts for e in events.list_events(limit=2)] == [3.0, 2.0]
    assert [e.event for e in events.list_events(event="offline")] == ["offline"]
    assert [e.ts for e in events.list_events("d1", since=2.0)] == [3.0, 2.0]
    # detail is JSON text in the table, for the Config App.
    stored = database.execute_sql("SELECT detail FROM device_events WHERE event = 'offline'").fetchone()[0]
    assert stored == '{"reason":"will"}'


def test_many_events_in_one_call(db):
    assert events.append_events((f"d{i % 5}", float(i), "online", {"i": i}) for i in range(1000)) == 1000
    assert len(events.list_events(limit=5000)) == 1000
    assert events.append_events([]) == 0


def test_detail_that_is_not_json_is_returned_as_text(db):
    database.execute_sql("INSERT INTO device_events (device_uuid, ts, event, detail) VALUES ('d', 1, 'x', 'not json')")
    (e,) = events.list_events("d")
    assert e.detail == "not json"
