"""protocol/dialects.py: what differs between the dialects, pure."""

from protocol import dialects
from protocol.values import Availability, DeviceFacts, Dialect, Encoding, Kind, Message

PERIODS = {"esp32_relay": 30.0, "display": 5.0}


def test_report_period_of_a_2_2_board_is_its_types_and_of_a_v1_device_what_it_announced():
    assert dialects.report_period(Dialect.FW22, "display", None, PERIODS, 12.0) == 5.0
    assert dialects.report_period(Dialect.FW22, "unknown", 99.0, PERIODS, 12.0) == 12.0
    assert dialects.report_period(Dialect.V1, "display", 20.0, PERIODS, 12.0) == 20.0
    assert dialects.report_period(Dialect.V1, None, None, PERIODS, 12.0) == dialects.V1_DEFAULT_PERIOD_S


def test_only_a_v1_device_with_a_boot_id_locks_its_dialect_against_2_2_messages():
    assert dialects.locks_dialect(Dialect.V1, 0)
    assert not dialects.locks_dialect(Dialect.V1, None)
    assert not dialects.locks_dialect(Dialect.FW22, 3)
    assert dialects.refused_when_locked(Dialect.FW22) and not dialects.refused_when_locked(Dialect.V1)


def test_the_boot_id_that_locks_comes_from_a_v1_message_only():
    def msg(dialect, **kw):
        return Message("u", dialect, Kind.STATUS, **kw)

    assert dialects.locking_boot_id(msg(Dialect.V1, boot_id=4)) == 4
    assert dialects.locking_boot_id(msg(Dialect.V1, facts=DeviceFacts(boot_id=5))) == 5
    assert dialects.locking_boot_id(msg(Dialect.V1, availability=Availability(True, boot_id=6))) == 6
    assert dialects.locking_boot_id(msg(Dialect.V1)) is None
    assert dialects.locking_boot_id(msg(Dialect.FW22, boot_id=4)) is None


def test_stored_texts_become_enums_and_unknown_ones_the_gateways_own():
    assert dialects.parse_dialect("fw22") is Dialect.FW22
    assert dialects.parse_dialect(None) is Dialect.V1 and dialects.parse_dialect("v9") is Dialect.V1
    assert dialects.parse_encoding("msgpack") is Encoding.MSGPACK and dialects.parse_encoding("") is Encoding.JSON
