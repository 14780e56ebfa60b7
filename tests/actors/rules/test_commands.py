"""The command lifecycle of one device (PROTOCOL.md "Commands and the Config App")."""

import random

import pytest

from actors.rules.commands import DEFAULT_PLAN, CommandStep, CommandWindow, Plan
from protocol.lifecycle import CommandStatus as S, can_transition, is_final
from protocol.values import CommandSpec, RelayState, Response

UUID = "esp32-relay-01"


def spec(cid, *, timeout=5.0, max_attempts=3, created_at=0.0, expires_at=300.0, command_type="relay_control"):
    return CommandSpec(
        id=cid, device_uuid=UUID, command_type=command_type, parameters={"relay_id": 1, "state": True},
        timeout=timeout, max_attempts=max_attempts, created_at=created_at, expires_at=expires_at,
    )


def default_plan(_spec):
    return DEFAULT_PLAN


def plan_of(mapping):
    return lambda s: mapping.get(s.id, DEFAULT_PLAN)


def ok(cid, **kw):
    return Response(command_id=str(cid), outcome="succeeded", **kw)


def sent_ids(step):
    return [(s.id, attempt) for s, attempt in step.sends]


def statuses(step):
    return [(cid, status) for cid, status, _ in step.transitions]


def assert_no_busy_loop(window, now):
    nd = window.next_deadline()
    assert nd is None or nd > now, f"next deadline {nd} is not after {now}: the caller would spin"


# ------------------------------------------------------------------ order and window


def test_window_of_one_sends_in_id_order_one_at_a_time():
    w = CommandWindow(window=1)
    for cid in (3, 1, 2):  # arrival order is not id order
        w.take(spec(cid), "queued", 0, 0.0)
    step = w.pump(0.0, True, default_plan)
    assert sent_ids(step) == [(1, 1)]
    assert statuses(step) == [(1, "sent")]
    assert step.transitions[0][2] == {"attempts": 1}
    assert w.pump(1.0, True, default_plan).sends == []  # window full
    step = w.response(ok(1), 2.0, True, default_plan)
    assert statuses(step) == [(1, "succeeded"), (2, "sent")]
    assert sent_ids(step) == [(2, 1)]
    step = w.response(ok(2), 3.0, True, default_plan)
    assert sent_ids(step) == [(3, 1)]
    step = w.response(ok(3), 4.0, True, default_plan)
    assert step.sends == [] and statuses(step) == [(3, "succeeded")]
    assert w.next_deadline() is None


def test_larger_window():
    w = CommandWindow(window=2)
    for cid in (1, 2, 3):
        w.take(spec(cid), "queued", 0, 0.0)
    assert sent_ids(w.pump(0.0, True, default_plan)) == [(1, 1), (2, 1)]
    assert sent_ids(w.response(ok(2), 1.0, True, default_plan)) == [(3, 1)]


def test_take_is_idempotent():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(1), "queued", 0, 0.0)
    assert [s.id for s in w.queue] == [1]
    w.pump(0.0, True, default_plan)
    w.take(spec(1), "queued", 0, 0.0)  # already out
    assert w.queue == []
    w.response(ok(1), 1.0, True, default_plan)
    w.take(spec(1), "queued", 0, 2.0)  # already finished: never again
    assert w.queue == [] and w.out == {}


def test_held_while_offline_sent_when_online():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    step = w.pump(0.0, False, default_plan)
    assert step.sends == [] and step.transitions == []
    assert w.tick(100.0, False, default_plan).sends == []
    step = w.pump(120.0, True, default_plan)
    assert sent_ids(step) == [(1, 1)]


# ------------------------------------------------------------------ retries


def test_retry_same_id_next_attempt_then_timeout():
    w = CommandWindow()
    w.take(spec(7, timeout=5.0, max_attempts=3), "queued", 0, 0.0)
    assert sent_ids(w.pump(0.0, True, default_plan)) == [(7, 1)]
    assert w.next_deadline() == 5.0
    assert w.tick(4.999, True, default_plan).transitions == []  # not before the timeout
    step = w.tick(5.0, True, default_plan)
    assert sent_ids(step) == [(7, 2)]
    assert step.transitions == [(7, "sent", {"attempts": 2})]
    assert step.sends[0][0] == spec(7)  # same command, same id
    assert w.next_deadline() == 10.0
    step = w.tick(10.0, True, default_plan)
    assert sent_ids(step) == [(7, 3)]
    step = w.tick(15.0, True, default_plan)
    assert step.sends == []
    assert statuses(step) == [(7, "timeout")]
    assert "3 attempt" in step.transitions[0][2]["error_message"]
    assert w.next_deadline() is None
    # the answer that finally comes is late and changes nothing
    late = w.response(ok(7), 16.0, True, default_plan)
    assert late.transitions == [] and late.counters == ["late_response"]


def test_timeout_lets_the_next_command_go():
    w = CommandWindow()
    w.take(spec(1, max_attempts=1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.tick(5.0, True, default_plan)
    assert statuses(step) == [(1, "timeout"), (2, "sent")]


def test_retry_waits_while_offline_and_goes_when_online():
    w = CommandWindow()
    w.take(spec(1, expires_at=100.0), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.tick(5.0, False, default_plan)  # the device went offline
    assert step.sends == [] and step.transitions == []
    assert_no_busy_loop(w, 5.0)
    step = w.pump(20.0, True, default_plan)
    assert sent_ids(step) == [(1, 2)]


def test_retry_waiting_offline_times_out_at_expiry():
    w = CommandWindow()
    w.take(spec(1, expires_at=30.0), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    w.tick(5.0, False, default_plan)
    assert w.next_deadline() == 30.0
    assert w.tick(29.0, False, default_plan).transitions == []
    step = w.tick(30.0, False, default_plan)
    assert statuses(step) == [(1, "timeout")]
    assert w.next_deadline() is None


def test_retry_due_after_expiry_while_offline_does_not_spin():
    # Sent at 0 (timeout 5), expires at 3; the device goes offline. At 5 the
    # retry cannot go and the command has expired: no deadline in the past.
    w = CommandWindow()
    w.take(spec(1, expires_at=3.0), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.tick(5.0, False, default_plan)
    assert_no_busy_loop(w, 5.0)
    assert statuses(step) == [(1, "timeout")]


def test_retry_after_expiry_while_online_is_sent():
    w = CommandWindow()
    w.take(spec(1, expires_at=3.0), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.tick(5.0, True, default_plan)
    assert sent_ids(step) == [(1, 2)]
    assert_no_busy_loop(w, 5.0)


def test_plan_without_retry_is_never_resent():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    plan = plan_of({1: Plan(retry=False)})
    assert sent_ids(w.pump(0.0, True, plan)) == [(1, 1)]
    step = w.tick(5.0, True, plan)
    assert step.sends == []
    assert statuses(step) == [(1, "timeout")]


# ------------------------------------------------------------------ answers


def test_accepted_stops_retries_then_final_answer():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.response(Response("1", "accepted"), 1.0, True, default_plan)
    assert statuses(step) == [(1, "accepted")]
    assert step.sends == []  # still out: the window stays full
    step = w.response(Response("1", "accepted"), 1.5, True, default_plan)
    assert step.transitions == []  # accepted once
    for t in (5.0, 10.0, 14.0):
        step = w.tick(t, True, default_plan)
        assert step.sends == [] and step.transitions == []
    step = w.response(Response("1", "failed", error_message="relay stuck", result={"code": 3}), 14.5, True, default_plan)
    assert step.transitions[0] == (1, "failed", {"result": {"code": 3}, "error_message": "relay stuck"})
    assert sent_ids(step) == [(2, 1)]


def test_accepted_without_final_answer_times_out_eventually():
    w = CommandWindow()
    w.take(spec(1, expires_at=0.0), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    w.response(Response("1", "accepted"), 1.0, True, default_plan)
    nd = w.next_deadline()
    assert nd is not None and nd > 1.0
    step = w.tick(nd, True, default_plan)
    assert statuses(step) == [(1, "timeout")]
    assert step.sends == []


def test_succeeded_with_result():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.response(ok(1, result={"relay": 1, "state": True}, execution_time=2.3), 1.0, True, default_plan)
    assert step.transitions == [(1, "succeeded", {"result": {"relay": 1, "state": True}, "error_message": None})]
    assert step.counters == []


def test_response_applied_once():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    first = w.response(ok(1), 1.0, True, default_plan)
    assert statuses(first) == [(1, "succeeded")]
    for outcome in ("succeeded", "failed", "accepted"):
        again = w.response(Response("1", outcome), 2.0, True, default_plan)
        assert again.transitions == [] and again.sends == []
        assert again.counters == ["late_response"]


@pytest.mark.parametrize("command_id", ["999", "abc", "", "1.5"])
def test_unknown_response_counted(command_id):
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.response(Response(command_id, "succeeded"), 1.0, True, default_plan)
    assert step.transitions == [] and step.sends == []
    assert step.counters == ["unknown_response"]
    assert 1 in w.out


def test_response_for_queued_not_sent_command_is_unknown():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    step = w.response(ok(2), 1.0, True, default_plan)
    assert step.counters == ["unknown_response"]
    assert [s.id for s in w.queue] == [2]


# ------------------------------------------------------------------ expiry and cancel


def test_queued_commands_expire_while_offline_in_order():
    w = CommandWindow()
    w.take(spec(1, expires_at=100.0), "queued", 0, 0.0)
    w.take(spec(2, expires_at=200.0), "queued", 0, 0.0)
    assert w.next_deadline() == 100.0
    assert w.tick(99.9, False, default_plan).transitions == []
    step = w.tick(100.0, False, default_plan)
    assert statuses(step) == [(1, "expired")]
    assert "error_message" in step.transitions[0][2]
    assert_no_busy_loop(w, 100.0)
    assert w.next_deadline() == 200.0
    step = w.pump(150.0, True, default_plan)  # online before the second expires
    assert sent_ids(step) == [(2, 1)]


def test_expired_command_is_not_sent_when_device_comes_online_late():
    w = CommandWindow()
    w.take(spec(1, expires_at=100.0), "queued", 0, 0.0)
    w.take(spec(2, expires_at=500.0), "queued", 0, 0.0)
    step = w.pump(150.0, True, default_plan)  # no tick in between
    assert statuses(step) == [(1, "expired"), (2, "sent")]
    assert sent_ids(step) == [(2, 1)]


def test_no_expiry_means_waiting_indefinitely():
    w = CommandWindow()
    w.take(spec(1, expires_at=0.0), "queued", 0, 0.0)
    assert w.next_deadline() is None
    assert w.tick(1e9, False, default_plan).transitions == []


def test_cancel_queued_command():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    step = w.cancel(2)
    assert statuses(step) == [(2, "cancelled")]
    assert step.counters == []
    assert [s.id for s in w.queue] == [1]
    # a later answer for it is late, not applied
    assert w.response(ok(2), 1.0, True, default_plan).counters == ["late_response"]


@pytest.mark.parametrize("accepted", [False, True])
def test_cancel_of_sent_command_is_refused(accepted):
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    if accepted:
        w.response(Response("1", "accepted"), 1.0, True, default_plan)
    step = w.cancel(1)
    want = "accepted" if accepted else "sent"
    assert statuses(step) == [(1, want)]  # the state it is really in, written back
    assert "already sent" in step.transitions[0][2]["error_message"]
    assert step.counters == ["cancel_refused"]
    assert 1 in w.out  # it runs to its own end
    assert statuses(w.response(ok(1), 2.0, True, default_plan)) == [(1, "succeeded")]


def test_cancel_of_finished_command_does_nothing():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    w.response(ok(1), 1.0, True, default_plan)
    step = w.cancel(1)
    assert step.transitions == [] and step.counters == []


def test_cancel_of_command_never_seen_is_cancelled():
    w = CommandWindow()
    assert statuses(w.cancel(42)) == [(42, "cancelled")]


# ------------------------------------------------------------------ restart take-up


def test_restart_sent_row_resent_with_next_attempt_once_online():
    w = CommandWindow()
    w.take(spec(5, expires_at=300.0), "sent", 1, 10.0)
    w.take(spec(6), "queued", 0, 10.0)
    step = w.pump(10.0, False, default_plan)
    assert step.sends == []
    assert w.next_deadline() == 300.0  # waits for the device until it expires
    step = w.pump(12.0, True, default_plan)
    assert sent_ids(step) == [(5, 2)]  # ahead of the queued one, same id, next attempt
    assert step.transitions == [(5, "sent", {"attempts": 2})]
    step = w.response(ok(5), 13.0, True, default_plan)
    assert sent_ids(step) == [(6, 1)]


def test_restart_sent_row_offline_until_expiry_times_out():
    w = CommandWindow()
    w.take(spec(5, expires_at=50.0), "sent", 1, 10.0)
    assert w.tick(49.0, False, default_plan).transitions == []
    step = w.tick(50.0, False, default_plan)
    assert statuses(step) == [(5, "timeout")]
    assert w.next_deadline() is None


def test_restart_sent_row_on_its_last_attempt_waits_once_more():
    w = CommandWindow()
    w.take(spec(5, max_attempts=3), "sent", 3, 10.0)
    step = w.pump(10.0, True, default_plan)
    assert step.sends == []
    assert w.next_deadline() == 15.0
    step = w.tick(15.0, True, default_plan)
    assert statuses(step) == [(5, "timeout")] and step.sends == []


def test_restart_sent_row_answered_before_resend():
    w = CommandWindow()
    w.take(spec(5), "sent", 1, 10.0)
    step = w.response(ok(5), 11.0, False, default_plan)
    assert statuses(step) == [(5, "succeeded")]
    assert w.pump(12.0, True, default_plan).sends == []


def test_restart_accepted_row_waits_without_resend():
    w = CommandWindow()
    w.take(spec(5), "accepted", 1, 10.0)
    assert w.pump(10.0, True, default_plan).sends == []
    step = w.tick(20.0, True, default_plan)
    assert step.sends == [] and step.transitions == []
    assert statuses(w.response(ok(5), 21.0, True, default_plan)) == [(5, "succeeded")]


def test_restart_queued_row_is_queued():
    w = CommandWindow()
    w.take(spec(5), "queued", 0, 10.0)
    assert sent_ids(w.pump(10.0, True, default_plan)) == [(5, 1)]


def test_restart_takes_up_plan_without_retry():
    # A toggle (never sent twice) that was out when the gateway stopped is not resent.
    w = CommandWindow()
    w.take(spec(5), "sent", 1, 10.0, plan=Plan(retry=False))
    assert w.pump(10.0, True, default_plan).sends == []
    step = w.tick(15.0, True, default_plan)
    assert statuses(step) == [(5, "timeout")] and step.sends == []


def test_restart_takes_up_confirm_plan():
    w = CommandWindow()
    w.take(spec(5), "sent", 1, 10.0, plan=Plan(confirm=(2, True)))
    w.pump(10.0, True, default_plan)
    step = w.relay_states((RelayState(2, True),), 11.0, True, default_plan)
    assert statuses(step) == [(5, "succeeded")]


# ------------------------------------------------------------------ firmware 2.2 confirmation


def test_confirm_by_matching_relay_state():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    plan = plan_of({1: Plan(confirm=(3, True))})
    w.pump(0.0, True, plan)
    assert w.relay_states((RelayState(3, False), RelayState(4, True)), 1.0, True, plan).transitions == []
    assert w.relay_states((RelayState(4, True),), 1.5, True, plan).transitions == []  # channel not reported
    step = w.relay_states((RelayState(1, False), RelayState(3, True)), 2.0, True, plan)
    assert statuses(step) == [(1, "succeeded"), (2, "sent")]
    assert step.transitions[0][2]["result"] == {"confirmed_by": "relays/state"}


def test_confirm_all_channels():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    plan = plan_of({1: Plan(confirm=("all", False))})
    w.pump(0.0, True, plan)
    assert w.relay_states((RelayState(1, False), RelayState(2, True)), 1.0, True, plan).transitions == []
    step = w.relay_states((RelayState(1, False), RelayState(2, False)), 2.0, True, plan)
    assert statuses(step) == [(1, "succeeded")]


def test_relay_state_does_not_end_command_without_confirm_plan():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    assert w.relay_states((RelayState(1, True),), 1.0, True, default_plan).transitions == []


def test_confirm_plan_without_confirmation_times_out_with_message():
    w = CommandWindow()
    w.take(spec(1, max_attempts=2), "queued", 0, 0.0)
    plan = plan_of({1: Plan(confirm=(1, True))})
    w.pump(0.0, True, plan)
    assert sent_ids(w.tick(5.0, True, plan)) == [(1, 2)]  # on/off follow the usual retry rule
    step = w.tick(10.0, True, plan)
    assert statuses(step) == [(1, "timeout")]
    assert "no confirmation" in step.transitions[0][2]["error_message"]


def test_fw22_error_response_fails_confirm_command():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    plan = plan_of({1: Plan(confirm=(1, True))})
    w.pump(0.0, True, plan)
    step = w.response(Response("1", "failed", error_message="invalid channel"), 1.0, True, plan)
    assert statuses(step) == [(1, "failed")]
    assert w.relay_states((RelayState(1, True),), 2.0, True, plan).transitions == []


# ------------------------------------------------------------------ no busy loop, lifecycle invariants


def test_snapshot():
    w = CommandWindow()
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    w.pump(0.0, True, default_plan)
    snap = w.snapshot(1.0)
    assert [q["id"] for q in snap["queued"]] == [2]
    assert snap["out"][0]["id"] == 1 and snap["out"][0]["attempts"] == 1
    assert snap["out"][0]["deadline_in_s"] == 4.0


@pytest.mark.parametrize("seed", range(150))
def test_random_histories_keep_the_rules(seed):
    """Random inputs; after every tick the next deadline is in the future,
    transitions follow the lifecycle, a final state never changes, commands
    first leave in id order, attempts grow by one, the window is respected."""
    rng = random.Random(seed)
    window_size = rng.choice([1, 1, 2])
    w = CommandWindow(window=window_size)
    plans = {}
    plan = lambda s: plans.get(s.id, DEFAULT_PLAN)  # noqa: E731
    state: dict[int, str] = {}
    attempts: dict[int, int] = {}
    first_sent: list[int] = []
    next_id = 1
    now = 0.0
    online = rng.random() < 0.5

    def apply(step: CommandStep):
        for cid, status, fields in step.transitions:
            old = state.get(cid, "queued")
            assert not is_final(old), (cid, old, status)
            if status in ("sent", "accepted") and old == status and "error_message" in fields:
                pass  # a refused cancel writes the state back
            else:
                assert can_transition(old, status), (cid, old, status)
            state[cid] = status
        for s, attempt in step.sends:
            assert attempt == attempts.get(s.id, 0) + 1
            assert attempt <= s.max_attempts
            if attempt > 1:
                assert plan(s).retry or state.get(s.id) is None
            attempts[s.id] = attempt
            if attempt == 1:
                first_sent.append(s.id)
        assert len(w.out) <= max(window_size, 1)

    # rows in flight when the gateway stopped: at most a window of them, the oldest ids
    for _ in range(rng.randint(0, window_size)):
        status = rng.choice(["sent", "accepted"])
        s = spec(next_id, max_attempts=rng.choice([1, 2, 3]), expires_at=rng.choice([0.0, 3.0, 50.0]))
        done = rng.randint(1, s.max_attempts)
        plans[next_id] = Plan(retry=rng.random() < 0.5)
        w.take(s, status, done, now, plan=plans[next_id])
        state[next_id], attempts[next_id] = status, done
        next_id += 1
    apply(w.pump(now, online, plan))

    for _ in range(60):
        r = rng.random()
        if r < 0.25:
            ttl = rng.choice([0.0, 3.0, 20.0, 100.0])
            s = spec(next_id, timeout=rng.choice([1.0, 5.0]), max_attempts=rng.choice([1, 2, 3]),
                     created_at=now, expires_at=now + ttl if ttl else 0.0)
            if rng.random() < 0.3:
                plans[next_id] = Plan(retry=rng.random() < 0.5, confirm=(1, True) if rng.random() < 0.5 else None)
            w.take(s, "queued", 0, now)
            state[next_id] = "queued"
            next_id += 1
            apply(w.pump(now, online, plan))
        elif r < 0.35:
            online = not online
            apply(w.pump(now, online, plan))
        elif r < 0.55 and next_id > 1:
            cid = rng.randrange(1, next_id + 1)
            outcome = rng.choice(["accepted", "succeeded", "failed"])
            apply(w.response(Response(str(cid), outcome), now, online, plan))
        elif r < 0.6 and next_id > 1:
            apply(w.cancel(rng.randrange(1, next_id)))
        elif r < 0.65:
            apply(w.relay_states((RelayState(1, rng.random() < 0.5),), now, online, plan))
        else:
            nd = w.next_deadline()
            if nd is not None and rng.random() < 0.7:
                now = max(now, nd)
            else:
                now += rng.choice([0.5, 1.0, 5.0, 30.0])
            apply(w.tick(now, online, plan))
            assert_no_busy_loop(w, now)
    # in id order, with respect to the commands that were sent at all
    assert first_sent == sorted(first_sent)
