"""A lossy, slow link at the packet level, for the uplink's tests (issue 14).

This machine's kernel has no netem (README, Known limits). What it has
is enough to build the same: two network namespaces, "far" (where the
fleet broker runs) and "link" between it and this one, joined by veth
pairs, with the link namespace routing between them:

    this namespace --veth-- link namespace --veth-- far namespace (broker)

In the link namespace's forward path, nf_tables drops `loss_percent` of
the packets each way at random (`numgen`, with a counter), and, with
`delay_ms=(low, high)`, iptables' NFQUEUE target holds every packet in the
kernel until tests/support/nfqueue_delay.py (running in the link
namespace) gives its verdict after a random time in that range. So every
TCP connection to the broker sees real single-packet loss and a round
trip of 2 x low .. 2 x high, with TCP's own retransmissions and timers.

Why a namespace in the middle: a packet held on its sender's own host
still counts against that socket's TCP Small Queues (two packets or so),
which throttles the sender to a trickle no real link would impose; a
packet forwarded from a veth has left its socket behind (measured: 60
messages of 3 kB took 6.4 s to a subscriber with the delay on the
broker's own output, 1 s with it on the way in).

Traffic to and from `CLEAR_PORT` passes untouched: the broker's second
listener there is the fleet side's own short path (a test's collector),
so every drop and delay counted is the uplink's. Needs root, `ip`
(iproute2), `nft` (nftables) and, for the delay, `iptables`; `make test`
installs them.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.broker import MOSQUITTO, Broker, wait_until
from tests.support.gateway import ROOT

CLEAR_PORT = 1884  # never an ephemeral port: nothing of the uplink's uses it
QUEUE = 0  # the NFQUEUE number, in the link namespace's own netfilter


def _run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


class LossyNamespace:
    def __init__(self, loss_percent: int = 10, delay_ms: tuple[float, float] | None = None) -> None:
        tag = f"{os.getpid() % 10000}{random.randrange(1000)}"
        self.name, self.link = f"acl{tag}", f"acm{tag}"  # the broker's namespace, the link's
        self.host_if, self.link_in, self.link_out, self.ns_if = f"vh{tag}", f"vl{tag}", f"vm{tag}", f"vf{tag}"
        a, c, b = random.randrange(1, 250), random.randrange(0, 256), random.randrange(0, 32) * 8
        net = f"10.{a}.{c}."
        self.host_ip, self.link_ip_in = net + str(b + 1), net + str(b + 2)
        self.link_ip_out, self.ns_ip = net + str(b + 5), net + str(b + 6)
        self.far_net = f"{net}{b + 4}/30"
        self.loss_percent = loss_percent
        self.delay_ms = delay_ms
        self.delayer: subprocess.Popen | None = None

    def __enter__(self) -> "LossyNamespace":
        _run("ip", "netns", "add", self.name)
        _run("ip", "netns", "add", self.link)
        try:
            self._wire()
            self._filter()
            if self.delay_ms is not None:
                self._delay(*self.delay_ms)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wire(self) -> None:
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.link_in)
        _run("ip", "link", "add", self.link_out, "type", "veth", "peer", "name", self.ns_if)
        _run("ip", "link", "set", self.link_in, "netns", self.link)
        _run("ip", "link", "set", self.link_out, "netns", self.link)
        _run("ip", "link", "set", self.ns_if, "netns", self.name)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        # goes when host_if does
        _run("ip", "route", "add", self.far_net, "via", self.link_ip_in, "dev", self.host_if)
        self.link_exec("ip", "addr", "add", f"{self.link_ip_in}/30", "dev", self.link_in)
        self.link_exec("ip", "addr", "add", f"{self.link_ip_out}/30", "dev", self.link_out)
        for dev in (self.link_in, self.link_out, "lo"):
            self.link_exec("ip", "link", "set", dev, "up")
        self.link_exec("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")  # this namespace's own
        self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self.exec("ip", "link", "set", self.ns_if, "up")
        self.exec("ip", "link", "set", "lo", "up")
        self.exec("ip", "route", "add", "default", "via", self.link_ip_out)

    def _filter(self) -> None:
        self.link_exec("nft", "add", "table", "inet", "lossy")
        self.link_exec("nft", "add chain inet lossy forward { type filter hook forward priority 0; }")
        for side in ("sport", "dport"):
            self.link_exec("nft", f"add rule inet lossy forward tcp {side} {CLEAR_PORT} accept")
        self.link_exec("nft", f"add rule inet lossy forward numgen random mod 100 < {self.loss_percent} counter drop")

    def _delay(self, low: float, high: float) -> None:
        self.delayer = subprocess.Popen(
            ["ip", "netns", "exec", self.link, sys.executable, "-m", "tests.support.nfqueue_delay", str(QUEUE),
             str(low), str(high)],
            cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.delayer.stdout is not None and self.delayer.stderr is not None
        line = self.delayer.stdout.readline()  # bound to the queue before any packet is queued to it
        if line.strip() != "ready":
            raise RuntimeError(f"the packet delayer did not start: {line}{self.delayer.stderr.read()}")
        for side in ("--sport", "--dport"):
            self.link_exec("iptables", "-A", "FORWARD", "-p", "tcp", side, str(CLEAR_PORT), "-j", "ACCEPT")
        self.link_exec("iptables", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE))

    def exec(self, *args: str) -> str:
        """A command in the broker's namespace."""
        return _run("ip", "netns", "exec", self.name, *args)

    def link_exec(self, *args: str) -> str:
        return _run("ip", "netns", "exec", self.link, *args)

    def dropped(self) -> int:
        """Packets dropped so far, both ways."""
        out = self.link_exec("nft", "list", "table", "inet", "lossy")
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))

    def delayed(self) -> int:
        """Packets held by the delay so far, both ways (iptables' counter)."""
        out = self.link_exec("iptables", "-L", "FORWARD", "-v", "-n", "-x")
        return sum(int(line.split()[0]) for line in out.splitlines() if "NFQUEUE" in line)

    def __exit__(self, *exc: object) -> None:
        if self.delayer is not None:
            self.delayer.kill()
            self.delayer.wait()
        for ns in (self.name, self.link):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


class NamespaceBroker(Broker):
    """A Mosquitto inside `ns`, listening on the namespace's address: on its
    port through the lossy link, on CLEAR_PORT past it (the fleet's side)."""

    def __init__(self, directory: Path, ns: LossyNamespace) -> None:
        super().__init__(directory)
        self.ns = ns
        self.host = ns.ns_ip
        self.clear_port = CLEAR_PORT
        self.extra_config = f"listener {self.port} {ns.ns_ip}\n"

    def write_config(self) -> None:
        super().write_config()
        # the base listener on 127.0.0.1 becomes the clear one
        text = self.config_path.read_text().replace(f"listener {self.port} 127.0.0.1",
                                                    f"listener {CLEAR_PORT} {self.ns.ns_ip}", 1)
        self.config_path.write_text(text)

    def start(self) -> "NamespaceBroker":
        self.write_config()
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns.name, MOSQUITTO, "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._reachable, 15, what=f"mosquitto at {self.host}:{self.port} in {self.ns.name}")
        return self

    def _reachable(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
        try:
            with socket.create_connection((self.host, CLEAR_PORT), timeout=0.5):
                return True
        except OSError:
            return False
