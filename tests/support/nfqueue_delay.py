"""Delay every packet of a network namespace in the kernel: netem's
`delay` where netem is missing (README, Known limits).

iptables' NFQUEUE target hands each packet to a netlink queue, where the
kernel holds it until a program gives its verdict; this program, run
inside the namespace (`ip netns exec NS python -m tests.support.nfqueue_delay
QUEUE MIN_MS MAX_MS`), gives each packet ACCEPT after a random delay in
[MIN_MS, MAX_MS]. The packets themselves never leave the kernel (only
their metadata is copied out), and each direction keeps its order: a packet
is released no earlier than the one before it from the same interface, as
on a link whose latency wanders. It prints `ready` once bound, and on SIGTERM
(or when its stdin closes) one JSON line: packets delayed, the delays' mean.

The protocol is nfnetlink_queue (linux/netfilter/nfnetlink_queue.h),
spoken here over a raw netlink socket so that nothing needs compiling.
"""

from __future__ import annotations

import errno
import heapq
import json
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_IFINDEX_INDEV = 1, 2, 5
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
AF_UNSPEC = 0

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big-endian, packed by hand)
_ATTR = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg: int, queue: int, attrs: bytes, flags: int, seq: int) -> bytes:
    body = _NFGEN.pack(AF_UNSPEC, 0, socket.htons(queue)) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body


class Delayer:
    def __init__(self, queue: int, min_ms: float, max_ms: float, seed: int = 14) -> None:
        self.queue = queue
        self.min_s, self.max_s = min_ms / 1000.0, max_ms / 1000.0
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.held: list[tuple[float, int]] = []  # (release at, packet id)
        self.last_release: dict[int, float] = {}  # per interface in: order kept in each direction
        self.delayed = 0
        self.delay_sum = 0.0
        self.overruns = 0

    def _config(self, attrs: bytes) -> None:
        self.seq += 1
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, attrs, NLM_F_REQUEST | NLM_F_ACK, self.seq))
        data = self.sock.recv(65536)
        length, kind = _NLMSG.unpack_from(data)[:2]
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, _NLMSG.size)
            if error:
                raise OSError(-error, f"nfnetlink_queue config refused: {error}")

    def bind(self) -> "Delayer":
        self._config(_attr(NFQA_CFG_CMD, struct.pack("=BxH", NFQNL_CFG_CMD_BIND, 0)))
        # metadata only: the verdict needs the packet's id, not its bytes
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META)))
        self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", 8192)))
        return self

    def _take(self, data: bytes, now: float) -> None:
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind = _NLMSG.unpack_from(data, offset)[:2]
            if length < _NLMSG.size:
                return
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                self._hold(data[offset + _NLMSG.size + _NFGEN.size:offset + length], now)
            offset += (length + 3) & ~3

    def _hold(self, attrs: bytes, now: float) -> None:
        packet_id, indev, offset = None, 0, 0
        while offset + _ATTR.size <= len(attrs):
            size, kind = _ATTR.unpack_from(attrs, offset)
            if size < _ATTR.size:
                break
            if kind & 0x7FFF == NFQA_PACKET_HDR:
                (packet_id,) = struct.unpack_from(">I", attrs, offset + _ATTR.size)
            elif kind & 0x7FFF == NFQA_IFINDEX_INDEV:
                (indev,) = struct.unpack_from(">I", attrs, offset + _ATTR.size)
            offset += (size + 3) & ~3
        if packet_id is None:
            return
        release = max(now + self.rng.uniform(self.min_s, self.max_s), self.last_release.get(indev, 0.0))
        self.last_release[indev] = release
        heapq.heappush(self.held, (release, packet_id))
        self.delayed += 1
        self.delay_sum += release - now

    def _release_due(self, now: float) -> None:
        while self.held and self.held[0][0] <= now:
            _, packet_id = heapq.heappop(self.held)
            self.seq += 1
            attrs = _attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id))
            self.sock.send(_message(NFQNL_MSG_VERDICT, self.queue, attrs, NLM_F_REQUEST, self.seq))

    def run(self, stop: list[bool]) -> None:
        while not stop[0]:
            now = time.monotonic()
            self._release_due(now)
            wait = min(0.05, max(0.0, self.held[0][0] - now)) if self.held else 0.05
            readable, _, _ = select.select([self.sock, sys.stdin], [], [], wait)
            if sys.stdin in readable and not sys.stdin.readline():
                return
            if self.sock in readable:
                try:
                    data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    self.overruns += 1  # the kernel could not tell us of some packets: it dropped them
                    continue
                self._take(data, time.monotonic())

    def figures(self) -> dict:
        return {"delayed": self.delayed, "overruns": self.overruns, "mean_delay_ms": round(1000.0 * self.delay_sum / self.delayed, 1)
                if self.delayed else None}


def main(argv: list[str]) -> int:
    queue, min_ms, max_ms = int(argv[0]), float(argv[1]), float(argv[2])
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    delayer = Delayer(queue, min_ms, max_ms).bind()
    print("ready", flush=True)
    try:
        delayer.run(stop)
    finally:
        print(json.dumps(delayer.figures()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
