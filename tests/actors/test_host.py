"""actors/host.py: a process's actors started in order, stopped in the
reverse order (the ones it did not start first), channel messages routed by
type, a late-bound peer, the watchdog. Real pykka actors; no sleeps."""

import threading
from dataclasses import dataclass

import pykka
import pytest

from actors.host import Host

STOPPED: list[str] = []


class Named(pykka.ThreadingActor):
    def __init__(self, name, peer=None):
        super().__init__()
        self.name, self.peer, self.got = name, peer, []

    def on_receive(self, message):
        if message == "boom":
            raise RuntimeError("boom")
        if message == "got":
            return list(self.got)
        self.got.append(message)
        if self.peer is not None and message == "pass on":
            self.peer.tell("passed")

    def on_stop(self):
        STOPPED.append(self.name)


@dataclass(frozen=True)
class Ping:
    n: int


@pytest.fixture
def host():
    STOPPED.clear()
    h = Host("test")
    yield h
    pykka.ActorRegistry.stop_all()


def test_actors_stop_in_reverse_order_after_the_ones_the_host_did_not_start(host):
    first = host.add("first", Named.start("first", host.peer("second")))
    host.add("second", Named.start("second"))
    Named.start("child")
    first.ask("pass on")  # the peer resolves now that both run
    assert host.refs["second"].ask("got") == ["passed"]
    host.stop(5.0)
    assert STOPPED == ["child", "second", "first"]


def test_a_peer_told_before_its_actor_starts_is_dead(host):
    peer = host.peer("later")
    assert not peer.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        peer.tell("x")


def test_messages_are_routed_by_type_to_an_actor_or_a_function(host):
    host.add("a", Named.start("a"))
    seen = []
    host.route(Ping, "a")
    host.route((int, str), seen.append)
    host.started()
    host.on_message(Ping(1))
    host.on_message(7)
    host.on_message(b"no route")  # logged and dropped
    assert host.refs["a"].ask("got") == [Ping(1)] and seen == [7]


def test_what_comes_before_start_waits_and_keeps_its_order(host):
    """A message for an actor not started yet (a command the store claimed
    at start, before core built its supervisor) is held, not lost and not
    a KeyError on the reader thread; what start-up waits for passes at once."""
    seen = []
    host.route(Ping, "late")
    host.route(int, seen.append)
    host.route(str, seen.append, at_once=True)
    host.on_message(Ping(1))
    host.on_message(7)
    host.on_message("ready")
    assert seen == ["ready"]
    host.add("late", Named.start("late"))
    host.on_message(Ping(2))
    assert seen == ["ready"]
    host.started()
    assert host.refs["late"].ask("got") == [Ping(1), Ping(2)] and seen == ["ready", 7]
    host.on_message(8)
    assert seen == ["ready", 7, 8]


def test_the_watchdog_names_a_dead_actor_or_returns_when_done(host):
    host.add("ok", Named.start("ok"))
    done = threading.Event()
    done.set()
    assert host.watch(done) is None
    dying = host.add("dying", Named.start("dying"))
    dying.tell("boom")
    assert host.watch(threading.Event(), interval_s=0.01) == "dying"
