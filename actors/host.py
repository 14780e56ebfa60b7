"""One process's actors: started in dependency order, each given what it
needs when it is built; stopped in the reverse order; the messages from the
other process routed to them by type; a watchdog for an actor that died.

actors/core.py and actors/store.py are the two process descriptions: which
actors, in which order, built from what, and where each type of channel
message goes. Two actors that tell each other (MqttIO and the Router, the
DbWriter and the TelemetryBatcher, MqttIO and the Heartbeat) are not wired
by setters after they start: the one built first is given `host.peer(name)`,
a reference to the other that resolves when it is told something, which
happens only once both run.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import pykka

logger = logging.getLogger("autocore.host")


class Peer:
    """An actor of this process by name, for an actor built before it.
    Told before the named actor has started, it raises `pykka.ActorDeadError`
    (as telling a stopped actor does)."""

    def __init__(self, host: "Host", name: str) -> None:
        self._host = host
        self.name = name

    def _ref(self) -> Any:
        ref = self._host.refs.get(self.name)
        if ref is None:
            raise pykka.ActorDeadError(f"{self.name} has not started")
        return ref

    def tell(self, message: Any) -> None:
        self._ref().tell(message)

    def ask(self, message: Any, **kwargs: Any) -> Any:
        return self._ref().ask(message, **kwargs)

    def is_alive(self) -> bool:
        ref = self._host.refs.get(self.name)
        return ref is not None and ref.is_alive()


class Host:
    def __init__(self, process: str) -> None:
        self.process = process
        self.refs: dict[str, Any] = {}  # name -> ActorRef, in start order
        self._routes: dict[type, Callable[[Any], None]] = {}
        # What the other process sends before this one has started all its
        # actors (a command pending at start is claimed and sent at once;
        # the actor it is for may not exist yet): held, and handed on in
        # order by `started()`. Types routed with `at_once` never wait.
        self._held: list[Any] | None = []
        self._held_lock = threading.Lock()
        self._at_once: set[type] = set()

    # -- start -----------------------------------------------------------------

    def add(self, name: str, ref: Any) -> Any:
        """An actor just started (after every actor it was given)."""
        self.refs[name] = ref
        return ref

    def peer(self, name: str) -> Peer:
        return Peer(self, name)

    # -- the other process's messages ------------------------------------------

    def route(self, types: type | tuple[type, ...], to: str | Callable[[Any], None], at_once: bool = False) -> None:
        """Messages of `types` go to the actor named `to`, or to a function
        of the process description (those that are not a plain hand-on).
        Until `started()` they wait, unless `at_once` (what start-up itself
        waits for)."""
        handler = (lambda message, name=to: self.refs[name].tell(message)) if isinstance(to, str) else to
        for t in types if isinstance(types, tuple) else (types,):
            self._routes[t] = handler
            if at_once:
                self._at_once.add(t)

    def started(self) -> None:
        """Every actor runs: hand on what was held, in the order it came
        (the reader thread waits meanwhile, so nothing overtakes it)."""
        with self._held_lock:
            held, self._held = self._held or [], None
            for message in held:
                self._deliver(message)

    def on_message(self, message: Any) -> None:
        """The channel's reader thread hands every message here."""
        if type(message) not in self._at_once:
            with self._held_lock:
                if self._held is not None:
                    self._held.append(message)
                    return
        self._deliver(message)

    def _deliver(self, message: Any) -> None:
        handler = self._routes.get(type(message))
        if handler is None:
            logger.error("%s: no route for %s from the other process; dropped", self.process, type(message).__name__)
            return
        try:
            handler(message)
        except pykka.ActorDeadError:
            pass  # stopping: the actor that owned it is gone

    # -- watch and stop ----------------------------------------------------------

    def dead_actor(self) -> str | None:
        """The name of an actor that died (an unhandled exception stops a
        pykka actor for good), if any."""
        for name, ref in self.refs.items():
            if not ref.is_alive():
                return name
        return None

    def watch(self, *done: threading.Event, interval_s: float = 0.2) -> str | None:
        """Wait until one of `done` is set (None) or an actor dies (its name):
        a dead actor leaves the process up but deaf, so the process
        description stops and exits, and the launcher and runit start the
        gateway again."""
        while not done[0].wait(interval_s):
            if any(event.is_set() for event in done[1:]):
                return None
            dead = self.dead_actor()
            if dead is not None:
                return dead
        return None

    def stop(self, timeout_s: float) -> None:
        """Stop every actor within `timeout_s`: first those the host did not
        start (device actors, there may be thousands: all at once), then the
        host's own in the reverse of their start order, so none is told
        anything by an actor that is still running after it stopped. One
        that does not stop in time dies with the process."""
        until = time.monotonic() + timeout_s
        own = {ref.actor_urn for ref in self.refs.values()}
        futures = []
        for ref in pykka.ActorRegistry.get_all():
            if ref.actor_urn not in own:
                try:
                    futures.append(ref.stop(block=False))
                except Exception:
                    pass
        try:
            pykka.get_all(futures, timeout=max(0.05, until - time.monotonic()))
        except Exception:
            pass
        for name in reversed(list(self.refs)):
            try:
                self.refs[name].stop(block=False).get(timeout=max(0.05, until - time.monotonic()))
            except Exception:
                pass
