"""Firmware 2.2 command outcomes in the pure window: holds, toggles, plans
that cannot be sent (PROTOCOL.md "Commands to a 2.2 device")."""

from actors.rules.commands import CommandWindow, Plan
from protocol.values import CommandSpec, RelayState

UUID = "esp32-relay-01"


def spec(cid, expires_at=300.0):
    return CommandSpec(id=cid, device_uuid=UUID, command_type="relay_control", parameters={},
                       timeout=5.0, max_attempts=3, created_at=0.0, expires_at=expires_at)


def run_hold(window, until, start=0.0, step_s=0.05):
    """Tick the window as the Scheduler would (at each deadline) until `until`."""
    beats, transitions = [], []
    now = start
    while now <= until:
        nd = window.next_deadline()
        if nd is None or nd > until:
            break
        now = max(now, nd)
        step = window.tick(now, True, lambda s: HOLD)
        beats += [(now, seq) for _, _, seq in step.beats]
        transitions += step.transitions
    return beats, transitions


HOLD = Plan(retry=False, hold_s=2.0, hold_channel=3, silent=True)


def test_hold_beats_every_interval_until_release_then_succeeds_at_full_duration():
    w = CommandWindow(beat_s=0.25)
    w.take(spec(1), "queued", 0, 0.0)
    first = w.pump(0.0, True, lambda s: HOLD)
    assert first.sends == []  # a hold sends heartbeats, not relays/set
    assert [(c, seq) for _, c, seq in first.beats] == [(3, 1)]
    assert [(cid, st) for cid, st, _ in first.transitions] == [(1, "sent")]
    beats, transitions = run_hold(w, 3.0)
    # The relay falls 1 s after the last heartbeat: the last one goes at 1.0 s.
    assert [round(t, 2) for t, _ in beats] == [0.25, 0.5, 0.75, 1.0]
    assert [seq for _, seq in beats] == [2, 3, 4, 5]
    assert [(cid, st) for cid, st, _ in transitions] == [(1, "succeeded")]
    assert transitions[0][2]["result"] == {"held_s": 2.0, "heartbeats": 5}
    assert w.next_deadline() is None


def test_shutoff_of_held_channel_before_release_fails_the_hold():
    w = CommandWindow(beat_s=0.25)
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, lambda s: HOLD)
    step = w.shutoff(3, 0.6, True, lambda s: HOLD)
    assert [(cid, st) for cid, st, _ in step.transitions] == [(1, "failed")]
    assert "before the hold ended" in step.transitions[0][2]["error_message"]
    assert w.out == {}


def test_shutoff_after_release_is_the_expected_letting_go():
    w = CommandWindow(beat_s=0.25)
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, lambda s: HOLD)
    run_hold(w, 1.5)
    assert w.shutoff(3, 1.9, True, lambda s: HOLD).transitions == []
    _, transitions = run_hold(w, 3.0, start=1.9)
    assert [(cid, st) for cid, st, _ in transitions] == [(1, "succeeded")]


def test_shutoff_of_another_channel_changes_nothing():
    w = CommandWindow(beat_s=0.25)
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, lambda s: HOLD)
    assert w.shutoff(4, 0.5, True, lambda s: HOLD).transitions == []


def test_cancel_stops_a_hold_at_once():
    w = CommandWindow(beat_s=0.25)
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, lambda s: HOLD)
    run_hold(w, 0.5)
    step = w.cancel(1)
    assert [(cid, st) for cid, st, _ in step.transitions] == [(1, "cancelled")]
    assert w.next_deadline() is None  # no more heartbeats


def test_device_offline_stops_a_hold_and_fails_it():
    w = CommandWindow(beat_s=0.25)
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, lambda s: HOLD)
    step = w.offline(0.4)
    assert [(cid, st) for cid, st, _ in step.transitions] == [(1, "failed")]
    assert w.next_deadline() is None


def test_toggle_confirmed_when_the_channel_flips_and_never_resent():
    relays = {2: False}
    w = CommandWindow(relays=relays)
    plan = Plan(retry=False, toggle=2, silent=True)
    w.take(spec(1), "queued", 0, 0.0)
    assert len(w.pump(0.0, True, lambda s: plan).sends) == 1
    # A report that still shows the old state confirms nothing.
    assert w.relay_states((RelayState(2, False),), 1.0, True, lambda s: plan).transitions == []
    relays[2] = True
    step = w.relay_states((RelayState(2, True),), 2.0, True, lambda s: plan)
    assert [(cid, st) for cid, st, _ in step.transitions] == [(1, "succeeded")]


def test_unconfirmed_toggle_times_out_saying_no_confirmation_without_resending():
    w = CommandWindow(relays={2: False})
    plan = Plan(retry=False, toggle=2, silent=True)
    w.take(spec(1), "queued", 0, 0.0)
    w.pump(0.0, True, lambda s: plan)
    step = w.tick(5.0, True, lambda s: plan)
    assert step.sends == []
    assert [(cid, st) for cid, st, _ in step.transitions] == [(1, "timeout")]
    assert "no confirmation" in step.transitions[0][2]["error_message"]


def test_plan_error_fails_the_command_without_sending():
    w = CommandWindow()
    bad = Plan(error="parameters.channel: expected 1..64 or \"all\"")
    w.take(spec(1), "queued", 0, 0.0)
    w.take(spec(2), "queued", 0, 0.0)
    step = w.pump(0.0, True, lambda s: bad if s.id == 1 else Plan())
    assert [(cid, st) for cid, st, _ in step.transitions] == [(1, "failed"), (2, "sent")]
    assert step.transitions[0][2]["error_message"].startswith("parameters.channel")
    assert [s.id for s, _ in step.sends] == [2]
