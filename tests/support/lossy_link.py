"""A slow link that keeps dropping, in user space: a TCP proxy that holds
each chunk a random delay before passing it on and cuts every connection
through it at random moments (the loss a cellular link shows to TCP: a
stall, then a reset). It cannot lose single packets, only delay chunks
and break connections; tests/support/netns.py is the packet-level link
(delay and loss in the kernel), which never breaks a connection itself."""

from __future__ import annotations

import random
import socket
import threading

from tests.support.broker import free_port


class LossyLink:
    def __init__(self, target_port: int, delay_s: tuple[float, float] = (0.01, 0.06),
                 cut_every_s: tuple[float, float] = (0.4, 1.5), seed: int = 14) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.delay_s, self.cut_every_s = delay_s, cut_every_s
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.live: list[socket.socket] = []
        self.cuts = 0
        self.cutting = threading.Event()
        self.cutting.set()

    def start(self) -> "LossyLink":
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(16)
        self.server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._cutter, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self.halt.is_set():
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.live += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    delay = self.rng.uniform(*self.delay_s)
                self.halt.wait(delay)  # the link's latency for this chunk
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def _cutter(self) -> None:
        while True:
            with self.lock:
                pause = self.rng.uniform(*self.cut_every_s)
            if self.halt.wait(pause):
                return
            if not self.cutting.is_set():
                continue
            with self.lock:
                victims, self.live = self.live, []
            if victims:
                self.cuts += 1
            for s in victims:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        self.halt.set()
        self.server.close()
        with self.lock:
            victims, self.live = self.live, []
        for s in victims:
            try:
                s.close()
            except OSError:
                pass
