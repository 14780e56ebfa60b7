"""GatewayActor's snapshot reads the mailbox depth where pykka's inbox
offers it, and says "unknown" where it does not (pykka promises only
put/get/empty)."""

import queue

from actors.base import GatewayActor


class Probe(GatewayActor):
    name = "Probe"

    def handle(self, message):
        return message


class BareInbox:
    """An inbox with nothing beyond pykka's documented protocol."""

    def __init__(self):
        self._q = queue.SimpleQueue()

    def put(self, envelope, /):
        self._q.put(envelope)

    def get(self):
        return self._q.get()

    def empty(self):
        return self._q.empty()


def test_the_depth_of_a_threading_inbox_is_counted():
    probe = Probe()  # not started: what is told waits in its inbox
    for n in range(3):
        probe.actor_ref.tell(n)
    assert probe.snapshot()["mailbox"] == 3


def test_an_inbox_without_a_size_is_reported_unknown():
    probe = Probe()
    probe.actor_inbox = BareInbox()
    probe.actor_inbox.put("waiting")
    snap = probe.snapshot()
    assert snap["mailbox"] is None
    assert snap["name"] == "Probe" and snap["handled"] == 0
