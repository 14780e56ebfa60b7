"""Each command state has one owner (protocol/lifecycle.py): the store
writes core's transitions into the states the device logic owns, and
refuses one into a state the client or the store itself owns."""

import time

from actors.db_writer import DbWriter
from actors.messages import CommandTransition, DeviceWrite, TransitionRefused, WriteBatch
from protocol.lifecycle import OWNER, CommandStatus, Owner, owned_by
from storage import commands as command_repo
from storage.db import close_database, open_database
from storage.migrations import migrate
from tests.support.recorder import Recorder


class Settings:
    db_path = ""

    @property
    def database(self):
        return self.db_path


def test_every_state_has_one_owner():
    assert set(OWNER) == set(CommandStatus)
    assert {s for s, o in OWNER.items() if o is Owner.STORE} == {CommandStatus.QUEUED}
    assert {s for s, o in OWNER.items() if o is Owner.CLIENT} == {CommandStatus.PENDING, CommandStatus.CANCEL_REQUESTED}
    assert not owned_by("nonsense", Owner.DEVICE)


def test_core_may_not_move_a_command_into_a_state_it_does_not_own(tmp_path):
    settings = Settings()
    settings.db_path = str(tmp_path / "autocore.db")
    open_database(settings.db_path)
    migrate()
    try:
        cid = command_repo.insert_command("dev-1", "ping", {}, now=time.time(), ttl_s=60)
        channel = Recorder()
        writer = DbWriter(settings, channel)
        wrong = DeviceWrite("dev-1", time.time(), transitions=(CommandTransition(cid, CommandStatus.QUEUED),
                                                                CommandTransition(cid, CommandStatus.CANCEL_REQUESTED)))
        writer.handle(WriteBatch((), (wrong,), ()))
        assert command_repo.get_command(cid).status == "pending"
        refused = [m for m in channel.told if isinstance(m, TransitionRefused)]
        assert [(r.wanted, r.actual) for r in refused] == [("queued", "pending"), ("cancel_requested", "pending")]
        # the store's own claim takes it up; then core's "sent" is written
        command_repo.claim([cid], time.time())
        writer.handle(WriteBatch((), (DeviceWrite("dev-1", time.time(), transitions=(
            CommandTransition(cid, CommandStatus.SENT, attempts=1),)),), ()))
        assert command_repo.get_command(cid).status == "sent"
    finally:
        close_database()
