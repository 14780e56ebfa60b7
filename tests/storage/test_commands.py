"""Commands: the lifecycle is enforced by the database update itself."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.lifecycle import FINAL, IN_FLIGHT, TRANSITIONS, CommandStatus, can_transition
from storage import commands
from storage.models import Command

from .conftest import OtherProgram

S = CommandStatus
ALL = list(CommandStatus)


def new_command(device="d1", now=1000.0, **kw):
    return commands.insert_command(device, "relay_control", {"relay_id": 1, "state": True}, now=now, ttl_s=300.0, **kw)


def force_status(command_id, status):
    """Test set-up: put a row in any state, bypassing the lifecycle."""
    Command.update(status=str(getattr(status, "value", status))).where(Command.id == command_id).execute()


def test_insert_defaults(db):
    cid = new_command(now=1000.0)
    c = commands.get_command(cid)
    assert (c.status, c.topic, c.attempts, c.max_attempts, c.timeout) == ("pending", "command", 0, 3, None)
    assert (c.created_at, c.expires_at, c.sent_at, c.completed_at) == (1000.0, 1300.0, None, None)
    assert c.parameters == {"relay_id": 1, "state": True}
    rc = commands.insert_command("d1", "relay_control", {"relays": []}, topic="relay/command", now=1.0, ttl_s=5,
                                 timeout=30.0, max_attempts=5)
    r = commands.get_command(rc)
    assert (r.topic, r.timeout, r.max_attempts, r.expires_at) == ("relay/command", 30.0, 5, 6.0)
    with pytest.raises(ValueError):
        commands.insert_command("d1", "x", {}, topic="elsewhere", now=1.0, ttl_s=5)


def test_config_app_insert_gets_sql_defaults(db, other_program):
    # The Config App writes only what it knows; SQL defaults fill the rest.
    other_program.execute("INSERT INTO commands (device_uuid, command_type, parameters) VALUES ('d1', 'reboot', '{}')")
    (c,) = commands.pending_commands()
    assert (c.status, c.topic, c.attempts, c.max_attempts, c.expires_at) == ("pending", "command", 0, 3, None)
    assert c.created_at > 1.7e9  # a real epoch time, from the SQL default
    spec = commands.to_spec(c, default_timeout=5.0, default_ttl=300.0)
    assert spec.expires_at == pytest.approx(c.created_at + 300.0)


def test_every_pair_of_states_follows_the_lifecycle(db):
    """Exhaustive over protocol.lifecycle.TRANSITIONS: allowed pairs move,
    every other pair is refused and changes nothing."""
    for old, new in itertools.product(ALL, ALL):
        cid = new_command()
        force_status(cid, old)
        before = commands.get_command(cid)
        moved = commands.transition(cid, new, 2000.0, attempts=9, result={"r": 1}, error_message="e")
        after = commands.get_command(cid)
        assert moved == can_transition(old, new) == (new in TRANSITIONS[old]), (old, new)
        if moved:
            assert after.status == new.value
            assert after.attempts == 9 and after.result == {"r": 1} and after.error_message == "e"
            assert after.sent_at == (2000.0 if new is S.SENT else None)
            assert after.completed_at == (2000.0 if new in FINAL else None)
        else:
            assert after == before, (old, new)


def test_unknown_states(db):
    cid = new_command()
    with pytest.raises(ValueError):
        commands.transition(cid, "exploded", 1.0)
    force_status(cid, "garbage-from-elsewhere")
    assert not any(commands.transition(cid, s, 1.0) for s in ALL)
    assert not commands.transition(12345, S.QUEUED, 1.0)  # no such row


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(ALL), max_size=12))
def test_random_walks_match_the_lifecycle(db, steps):
    cid = new_command()
    state = S.PENDING
    final_row = None
    for i, new in enumerate(steps):
        moved = commands.transition(cid, new, 3000.0 + i, attempts=i)
        assert moved == can_transition(state, new)
        if final_row is not None:
            # A finished command never changes again.
            assert not moved and commands.get_command(cid) == final_row
        if moved:
            state = new
            if new in FINAL:
                final_row = commands.get_command(cid)
        assert commands.get_command(cid).status == state.value


def test_final_commands_never_change(db):
    for final in FINAL:
        cid = new_command()
        force_status(cid, final)
        snapshot = commands.get_command(cid)
        for new in ALL:
            assert not commands.transition(cid, new, 5.0, attempts=99, error_message="x")
        assert not commands.request_cancel(cid, 5.0)
        assert commands.get_command(cid) == snapshot


def test_resend_keeps_the_id_and_moves_sent_at(db):
    cid = new_command()
    (claimed,) = commands.claim([cid], 1.0)
    assert commands.transition(cid, S.SENT, 10.0, attempts=1)
    assert commands.transition(cid, S.SENT, 15.0, attempts=2)
    c = commands.get_command(cid)
    assert (c.id, c.attempts, c.sent_at, c.status) == (claimed.id, 2, 15.0, "sent")
    assert commands.transition(cid, S.TIMEOUT, 20.0, error_message="no answer")
    assert commands.get_command(cid).completed_at == 20.0


def test_pending_commands_in_id_order(db):
    ids = [new_command(device=f"d{i % 3}") for i in range(10)]
    force_status(ids[4], S.CANCEL_REQUESTED)
    assert [c.id for c in commands.pending_commands()] == [i for i in ids if i != ids[4]]
    assert [c.id for c in commands.pending_commands(limit=3)] == ids[:3]


def test_claim_moves_pending_to_queued_and_skips_the_rest(db):
    a, b, c, d, e = (new_command() for _ in range(5))
    commands.request_cancel(b, 1.0)  # the Config App got there first
    force_status(c, S.CANCELLED)
    assert [r.id for r in commands.claim([a], 2.0)] == [a]
    claimed = commands.claim([e, d, c, b, a, 999, d], 3.0)
    assert [r.id for r in claimed] == [d, e]
    assert all(r.status == "queued" for r in claimed)
    statuses = {r.id: r.status for r in commands.list_commands()}
    assert statuses == {a: "queued", b: "cancel_requested", c: "cancelled", d: "queued", e: "queued"}
    assert commands.claim([], 4.0) == []
    assert commands.claim([a, d], 4.0) == []  # claimed already


def test_claim_is_atomic_against_a_concurrent_canceller(db, engine, db_url):
    """The Config App cancels rows while the gateway claims them: each row
    ends either queued (claimed, and reported) or cancel_requested (not
    reported), never both and never lost."""
    ids = [new_command() for _ in range(400)]
    done = threading.Event()

    def config_app():
        conn = OtherProgram(engine, db_url)
        for cid in reversed(ids):
            conn.execute("UPDATE commands SET status = 'cancel_requested' WHERE id = ? AND status = 'pending'", (cid,))
        conn.close()
        done.set()

    t = threading.Thread(target=config_app)
    t.start()
    claimed: list[int] = []
    for chunk in range(0, len(ids), 20):
        claimed += [r.id for r in commands.claim(ids[chunk:chunk + 20], 5.0)]
    t.join(30)
    assert done.is_set()
    statuses = {r.id: r.status for r in commands.list_commands(limit=1000)}
    assert {i for i, s in statuses.items() if s == "queued"} == set(claimed)
    assert {s for s in statuses.values()} <= {"queued", "cancel_requested"}
    assert len(statuses) == len(ids)


def test_claim_fills_missing_expiry(db):
    cid = new_command(now=100.0)
    Command.update(expires_at=None).where(Command.id == cid).execute()
    (r,) = commands.claim([cid], 200.0, default_ttl_s=60.0)
    assert r.expires_at == 160.0  # created_at + ttl, not now + ttl


def test_in_flight_and_cancel_requested(db):
    by_status = {}
    for status in ALL:
        cid = new_command()
        force_status(cid, status)
        by_status[status] = cid
    assert {r.status for r in commands.in_flight()} == {s.value for s in IN_FLIGHT}
    assert [r.id for r in commands.cancel_requested()] == [by_status[S.CANCEL_REQUESTED]]


def test_cancel_of_a_sent_command_writes_back_the_real_state(db):
    cid = new_command()
    commands.claim([cid], 1.0)
    commands.transition(cid, S.SENT, 2.0, attempts=1)
    assert commands.request_cancel(cid, 3.0)
    (c,) = commands.cancel_requested()
    assert c.sent_at == 2.0  # it went out: cannot be unsent
    assert commands.transition(cid, S.SENT, 4.0)
    assert commands.transition(cid, S.SUCCEEDED, 5.0, result={"ok": True})


def test_list_commands_filters(db):
    a = new_command(device="d1")
    b = new_command(device="d2")
    c = new_command(device="d1")
    commands.claim([c], 1.0)
    assert [r.id for r in commands.list_commands()] == [c, b, a]  # newest first
    assert [r.id for r in commands.list_commands(device_uuid="d1")] == [c, a]
    assert [r.id for r in commands.list_commands(status="queued")] == [c]
    assert [r.id for r in commands.list_commands(limit=1)] == [c]
    assert commands.get_command(424242) is None


def test_to_spec(db):
    cid = new_command(now=50.0, timeout=None, max_attempts=4)
    spec = commands.to_spec(commands.get_command(cid), default_timeout=7.5)
    assert (spec.id, spec.device_uuid, spec.command_type, spec.topic) == (cid, "d1", "relay_control", "command")
    assert (spec.timeout, spec.max_attempts, spec.created_at, spec.expires_at) == (7.5, 4, 50.0, 350.0)
    own = commands.insert_command("d1", "x", None, now=1.0, ttl_s=2.0, timeout=1.5)
    spec = commands.to_spec(commands.get_command(own), default_timeout=7.5)
    assert (spec.timeout, spec.parameters) == (1.5, {})
