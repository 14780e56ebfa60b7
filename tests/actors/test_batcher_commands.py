"""The batcher hands a write holding a command to the writer at once: the
command goes out only once that write is durable, so it must not also wait
for the batch's age (AUTOCORE_BATCH_MAX_AGE_MS) or the small-batch interval."""

from actors.batcher import TelemetryBatcher
from actors.messages import DeviceWrite, WriteBatch, WriterDone
from gateway.settings import Settings
from protocol.values import Publication
from tests.support.recorder import Recorder

COMMAND = Publication("autocore/devices/d1/command", b"{}", 1)
AVAILABILITY = Publication("autocore/devices/d1/availability", b"online", 1, True)


def batcher(**settings):
    writer = Recorder()
    b = TelemetryBatcher(Settings(batch_max_age_ms=10_000, batch_min_interval_ms=10_000, **settings), writer,
                         Recorder(), Recorder())
    b.handle(DeviceWrite("d0", 0.5, last_seen=0.5))  # an idle writer's first batch goes at once:
    b.handle(WriterDone(0))  # from now on the small-batch interval holds the next
    writer.told.clear()
    return b, writer


def batches(writer) -> list[WriteBatch]:
    return [m for m in writer.told if isinstance(m, WriteBatch)]


def test_a_write_with_a_command_goes_to_the_writer_at_once():
    b, writer = batcher()
    b.handle(DeviceWrite("d1", 1.0, last_seen=1.0))
    assert batches(writer) == []  # a plain write waits for the batch's age
    b.handle(DeviceWrite("d1", 1.1, publish=((7, COMMAND),)))
    assert len(batches(writer)) == 1 and len(batches(writer)[0].writes) == 2


def test_while_the_writer_is_busy_it_goes_with_the_next_batch_as_soon_as_the_writer_is_done():
    b, writer = batcher()
    b.handle(DeviceWrite("d1", 1.0, publish=((7, COMMAND),)))
    b.handle(DeviceWrite("d1", 1.1, publish=((8, COMMAND),)))
    assert len(batches(writer)) == 1
    b.handle(WriterDone(0))
    assert len(batches(writer)) == 2


def test_an_availability_alone_is_not_urgent():
    b, writer = batcher()
    b.handle(DeviceWrite("d1", 1.0, status="online", publish=((None, AVAILABILITY),)))
    assert batches(writer) == []
