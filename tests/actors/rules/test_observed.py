"""Relay commands others send a 2.2 board (the Config App's UI, a display),
observed and matched with the board's answer, in the pure device rules: no
threads, no sleeps, the time as an argument."""

from __future__ import annotations

import orjson
import pytest

from actors.messages import CommandState
from actors.rules.commands import Plan
from actors.rules.device import DeviceRules
from actors.rules.observed import MAX_WAITING, RECENT
from protocol import codec, fw22
from protocol.values import CommandSpec, Event, ObservedCommand, RelayState
from tests.actors.rules.device_inputs import logic, message, seen

UUID = "esp32-9c1a77b0e2f41d03"
GATEWAY = "gw-under-test"
RULES = DeviceRules(command_timeout_s=5.0, gateway_id=GATEWAY)

CONFIG_APP = ObservedCommand(channel=3, state=True, function_type="toggle", user="config_app")
DISPLAY_TOGGLE = ObservedCommand(channel=5, command="toggle", user="display", source="esp32-display-7f3a")


def relay(**kw):
    kw.setdefault("status", "online")
    kw.setdefault("dialect", "fw22")
    kw.setdefault("device_type", "esp32_relay")
    kw.setdefault("last_seen", 0.0)
    return logic(UUID, RULES, **kw)


def observe(dev, command, at):
    return message(dev, at, at, "fw22", "json", "fw22_relay_set", alive=False, observed=command)


def state(dev, at, **channels):
    return seen(dev, at, at, 1, "fw22", "json",
                    relay_states=tuple(RelayState(int(k[1:]), v) for k, v in channels.items()))


def error(dev, at, detail):
    return message(dev, at, at, "fw22", "json", "fw22_error", events=(Event("error", detail, channel=None),))


def refusal(payload: bytes | dict, code="ERR_002", message="missing command field"):
    text = payload.decode() if isinstance(payload, bytes) else orjson.dumps(payload).decode()
    return {"protocol_version": "2.2.0", "uuid": UUID, "error_code": code, "error_message": message,
            "context": {"command": text, "topic": "relays/set"}}


def results(step):
    return [d for _, e, d in step.write.events if e == "relay_command_result"]


def names(step):
    return [e for _, e, _ in step.write.events]


CONFIG_APP_PAYLOAD = {"protocol_version": "2.2.0", "channel": 3, "state": True, "function_type": "toggle",
                      "user": "config_app", "timestamp": "2025-01-08T10:30:00Z"}


# ------------------------------------------------------------------ the observed command


def test_observed_command_is_an_event_and_nothing_else():
    dev = relay()
    step = observe(dev, CONFIG_APP, 10.0)
    assert list(step.write.events) == [(10.0, "relay_command", {"channel": 3, "command": None, "state": True,
                                                    "function_type": "toggle", "user": "config_app",
                                                    "source": None, "command_id": None})]
    # never acted on, not the board's message: no sends, no command rows, no liveness, no device row
    assert not step.sends and not step.beats and not step.write.transitions
    assert step.write.ensure is None and step.write.status is None and step.write.last_seen is None and step.write.protocol is None
    assert dev.liveness.last_seen == 0.0 and dev.counters["messages"] == 0
    assert dev.counters["relay_commands_observed"] == 1
    assert dev.commands.out == {} and dev.commands.queue == []
    assert dev.next_wake() <= 15.0


def test_unknown_board_gets_the_event_but_is_not_made_a_device():
    dev = logic("esp32-never-seen", RULES)
    step = observe(dev, CONFIG_APP, 1.0)
    assert names(step) == ["relay_command"]
    assert step.write.ensure is None and step.write.status is None and dev.status is None
    assert not dev.idle()  # it waits for an answer
    step = dev.deadline(6.0)
    assert results(step)[0]["outcome"] == "no_answer"
    assert step.write.ensure is None and step.write.status is None and dev.status is None
    assert dev.idle()


def test_a_v1_device_is_not_turned_fw22_by_an_observed_command():
    dev = logic(UUID, RULES, status="online", dialect="v1", boot_id=3, last_seen=0.0)
    step = observe(dev, CONFIG_APP, 1.0)
    assert names(step) == ["relay_command"] and step.write.protocol is None and dev.dialect == "v1"


@pytest.mark.parametrize("own", [
    ObservedCommand(channel=3, command="on", state=True, user="gateway", source=GATEWAY, command_id="42"),
    ObservedCommand(channel=3, command="on", state=True, user="gateway"),
    ObservedCommand(channel=3, command="on", state=True, source=GATEWAY),
])
def test_the_gateways_own_relays_set_is_ignored(own):
    dev = relay()
    step = observe(dev, own, 1.0)
    assert step.write.events == () and not step.write.changes_anything()
    assert dev.counters["relay_commands_own"] == 1 and dev.counters["relay_commands_observed"] == 0
    assert dev.next_wake() == dev.liveness.deadline()  # nothing waits


def test_the_gateways_own_payload_through_the_decoder_is_ignored():
    payload = fw22.relay_set_publication(UUID, 3, "on", "42", GATEWAY).payload
    observed = fw22.decode(fw22.parse_topic(f"autocore/devices/{UUID}/relays/set"), *codec.decode(payload, 65536)).observed
    dev = relay()
    assert observe(dev, observed, 1.0).write.events == ()


# ------------------------------------------------------------------ applied


def test_applied_when_relays_state_shows_the_requested_state():
    dev = relay()
    state(dev, 0.5, c3=False, c4=False)
    observe(dev, CONFIG_APP, 1.0)
    step = state(dev, 1.2, c3=True, c4=False)
    assert results(step) == [{"channel": 3, "state": True, "outcome": "applied",
                              "observed_command": CONFIG_APP.detail(), "after_s": 0.2,
                              "confirmed_by": "relays/state"}]
    assert step.write.events[0][0] == 1.2
    assert dev.counters["relay_command_applied"] == 1
    assert dev.observed.waiting == [] and dev.deadline(10.0).write.events == ()


def test_a_report_in_the_old_state_does_not_confirm():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    assert results(state(dev, 1.1, c3=False)) == []
    assert results(state(dev, 2.0, c3=True))[0]["outcome"] == "applied"


def test_a_report_after_the_window_does_not_confirm():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    assert results(state(dev, 6.5, c3=True)) == []
    assert results(dev.deadline(6.5))[0]["outcome"] == "no_answer"


def test_toggle_applied_on_a_change_of_the_channel():
    dev = relay()
    state(dev, 0.0, c5=True)
    observe(dev, DISPLAY_TOGGLE, 1.0)
    assert results(state(dev, 1.1, c5=True)) == []  # unchanged
    assert results(state(dev, 1.3, c5=False)) == [{"channel": 5, "state": False, "outcome": "applied",
                                                   "observed_command": DISPLAY_TOGGLE.detail(), "after_s": 0.3,
                                                   "confirmed_by": "relays/state"}]


def test_toggle_without_a_known_state_waits_for_a_relay_change():
    dev = relay()
    observe(dev, DISPLAY_TOGGLE, 1.0)
    assert results(state(dev, 1.1, c5=True)) == []  # a change from what? unknown
    step = message(dev, 1.2, 1.2, "fw22", "json", "fw22_relay_events", alive=False,
                       events=(Event("relay_change", {"event": "relay_change", "channel": 5, "state": False}, channel=5),))
    assert names(step) == ["relay_change", "relay_command_result"]
    assert results(step)[0]["confirmed_by"] == "relay_change" and results(step)[0]["state"] is False


def test_relay_change_with_the_requested_state_confirms_on_off():
    dev = relay()
    observe(dev, ObservedCommand(channel=2, command="off", state=False, user="display"), 1.0)
    change = {"event": "relay_change", "channel": 2, "state": True}
    step = message(dev, 1.1, 1.1, "fw22", "json", "fw22_relay_events", alive=False,
                       events=(Event("relay_change", change, channel=2),))
    assert results(step) == []
    change["state"] = False
    step = message(dev, 1.2, 1.2, "fw22", "json", "fw22_relay_events", alive=False,
                       events=(Event("relay_change", change, channel=2),))
    assert results(step)[0]["outcome"] == "applied"


def test_all_channels():
    dev = relay()
    observe(dev, ObservedCommand(channel="all", command="off", state=False, user="display"), 1.0)
    assert results(state(dev, 1.1, c1=False, c2=True)) == []
    step = state(dev, 1.2, c1=False, c2=False)
    assert results(step)[0]["outcome"] == "applied" and results(step)[0]["state"] is False


def test_applied_leaves_the_gateways_command_window_alone():
    dev = logic(UUID, RULES, status="online", dialect="fw22", last_seen=0.0,
                      plan=lambda dialect, s: Plan(confirm=(3, True), silent=True))
    spec = CommandSpec(id=9, device_uuid=UUID, command_type="relay_control", parameters={"channel": 3, "state": True},
                       timeout=5.0, expires_at=100.0)
    step = dev.take_commands((CommandState(spec, "queued"),), 0.5)
    assert [t.status for t in step.write.transitions] == ["sent"]
    observe(dev, CONFIG_APP, 1.0)
    step = state(dev, 1.2, c3=True)
    # both end: the gateway's command by its own rule, the observed one by its event
    assert [(t.command_id, t.status) for t in step.write.transitions] == [(9, "succeeded")]
    assert results(step)[0]["outcome"] == "applied"


# ------------------------------------------------------------------ error


def test_error_that_echoes_the_config_app_payload():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    step = error(dev, 1.05, refusal(CONFIG_APP_PAYLOAD))
    assert names(step) == ["error", "relay_command_result"]
    assert results(step) == [{"channel": 3, "state": None, "outcome": "error", "observed_command": CONFIG_APP.detail(),
                              "after_s": 0.05, "error_code": "ERR_002", "error_message": "missing command field"}]
    assert dev.counters["relay_command_error"] == 1
    assert dev.deadline(10.0).write.events == ()


def test_error_echoing_the_gateways_own_command_answers_no_observed_one():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    own = fw22.relay_set_publication(UUID, 3, "on", "42", GATEWAY).payload
    step = error(dev, 1.1, refusal(own, code="ERR_004", message="invalid channel"))
    assert results(step) == []
    assert len(dev.observed.waiting) == 1


def test_error_echoing_another_channel_answers_no_observed_one():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    assert results(error(dev, 1.1, refusal({**CONFIG_APP_PAYLOAD, "channel": 4}))) == []
    assert results(error(dev, 1.2, refusal({**CONFIG_APP_PAYLOAD, "user": "someone"}))) == []
    assert results(error(dev, 1.3, refusal(CONFIG_APP_PAYLOAD)))[0]["outcome"] == "error"


def test_error_matched_by_command_id():
    dev = relay()
    first = ObservedCommand(channel=1, command="on", state=True, user="display", command_id="d-1")
    second = ObservedCommand(channel=1, command="on", state=True, user="display", command_id="d-2")
    observe(dev, first, 1.0)
    observe(dev, second, 1.1)
    step = error(dev, 1.2, refusal({"protocol_version": "2.2.0", "channel": 1, "command": "on", "command_id": "d-2"}))
    assert results(step)[0]["observed_command"]["command_id"] == "d-2"
    assert [w.command for w in dev.observed.waiting] == [first]


def test_an_unreadable_echo_answers_the_oldest_command_without_an_id():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    detail = refusal(CONFIG_APP_PAYLOAD)
    detail["context"]["command"] = detail["context"]["command"][:30]
    assert results(error(dev, 1.1, detail))[0]["outcome"] == "error"


def test_errors_that_echo_nothing_answer_nothing():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    heartbeat_timeout = {"protocol_version": "2.2.0", "error_code": "ERR_003", "error_type": "timeout",
                         "context": {"channel": 3, "elapsed_ms": 1100, "timeout_ms": 1000}}
    step = error(dev, 1.1, heartbeat_timeout)
    assert names(step) == ["error"]
    assert results(dev.deadline(6.0))[0]["outcome"] == "no_answer"


def test_an_error_after_the_window_is_no_answer():
    dev = relay()
    observe(dev, CONFIG_APP, 1.0)
    assert results(error(dev, 6.1, refusal(CONFIG_APP_PAYLOAD))) == []
    assert results(dev.deadline(6.1))[0]["outcome"] == "no_answer"


# ------------------------------------------------------------------ no answer


def test_no_answer_at_the_command_timeout():
    dev = relay()
    state(dev, 0.5, c3=False)
    observe(dev, CONFIG_APP, 1.0)
    assert dev.next_wake() == 6.0  # the observed command's deadline comes before the liveness timeout
    assert dev.deadline(5.9).write.events == ()
    step = dev.deadline(6.0)
    assert list(step.write.events) == [(6.0, "relay_command_result", {"channel": 3, "state": False, "outcome": "no_answer",
                                                          "observed_command": CONFIG_APP.detail(), "after_s": 5.0})]
    assert dev.counters["relay_command_no_answer"] == 1
    assert dev.next_wake() != 6.0
    assert not step.write.transitions and not step.sends


def test_command_timeout_is_the_rules_setting():
    dev = logic(UUID, DeviceRules(command_timeout_s=1.5, gateway_id=GATEWAY), status="online", dialect="fw22",
                      last_seen=0.0)
    observe(dev, CONFIG_APP, 1.0)
    assert dev.next_wake() == 2.5


def test_waiting_commands_are_bounded():
    dev = relay()
    for n in range(MAX_WAITING):
        observe(dev, ObservedCommand(channel=1, state=True, user="config_app"), 1.0 + n / 100)
    step = observe(dev, CONFIG_APP, 2.0)
    assert names(step) == ["relay_command", "relay_command_result"]
    assert results(step)[0]["outcome"] == "no_answer" and results(step)[0]["reason"] == "too many commands waiting"
    assert len(dev.observed.waiting) == MAX_WAITING


# ------------------------------------------------------------------ inspection


def test_snapshot_shows_recent_relay_commands_newest_first():
    dev = relay()
    state(dev, 0.0, c3=False)
    observe(dev, CONFIG_APP, 1.0)
    error(dev, 1.1, refusal(CONFIG_APP_PAYLOAD))
    observe(dev, DISPLAY_TOGGLE, 2.0)
    shown = dev.snapshot(2.0)["relay_commands"]
    assert shown["waiting"] == 1
    assert [(c["channel"], c["outcome"]) for c in shown["recent"]] == [(5, "waiting"), (3, "error")]
    assert shown["recent"][1]["error_code"] == "ERR_002" and shown["recent"][1]["user"] == "config_app"
    for n in range(RECENT + 3):
        observe(dev, CONFIG_APP, 3.0 + n)
    assert len(dev.snapshot(20.0)["relay_commands"]["recent"]) == RECENT
