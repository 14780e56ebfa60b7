"""A lossy link at the packet level, for the uplink's tests (issue 14).

This machine's kernel has no netem (README, Known limits), but it has
nf_tables with `numgen`: a network namespace, joined to this one by a veth
pair, drops a share of the packets going in and out of it at random, with
a counter. A broker started in the namespace is reached through that link
only, so every TCP connection to it sees real single-packet loss (and the
retransmission delays that come with it). Needs root, `ip` (iproute2) and
`nft` (nftables; `make test` installs it).
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
from pathlib import Path

from tests.support.broker import MOSQUITTO, Broker, wait_until


def _run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


class LossyNamespace:
    def __init__(self, loss_percent: int = 10) -> None:
        tag = f"{os.getpid() % 10000}{random.randrange(1000)}"
        self.name = f"acl{tag}"
        self.host_if, self.ns_if = f"vh{tag}", f"vn{tag}"
        a, b = random.randrange(1, 250), random.randrange(0, 63) * 4
        self.host_ip, self.ns_ip = f"10.{a}.{b // 256}.{b % 256 + 1}", f"10.{a}.{b // 256}.{b % 256 + 2}"
        self.loss_percent = loss_percent

    def __enter__(self) -> "LossyNamespace":
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self.exec("ip", "link", "set", self.ns_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
            self.exec("nft", "add", "table", "inet", "lossy")
            for chain, hook, side in (("in", "input", "iifname"), ("out", "output", "oifname")):
                self.exec("nft", f"add chain inet lossy {chain} {{ type filter hook {hook} priority 0; }}")
                self.exec("nft", f'add rule inet lossy {chain} {side} != "lo" '
                                 f"numgen random mod 100 < {self.loss_percent} counter drop")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def exec(self, *args: str) -> str:
        return _run("ip", "netns", "exec", self.name, *args)

    def dropped(self) -> int:
        """Packets dropped so far, both ways."""
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", self.exec("nft", "list", "table", "inet", "lossy")))

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


class NamespaceBroker(Broker):
    """A Mosquitto inside `ns`, listening on the namespace's address (and on
    its own loopback, which nothing outside can reach)."""

    def __init__(self, directory: Path, ns: LossyNamespace) -> None:
        super().__init__(directory)
        self.ns = ns
        self.host = ns.ns_ip
        self.extra_config = f"listener {self.port} {ns.ns_ip}\n"

    def write_config(self) -> None:
        super().write_config()
        # the base listener on 127.0.0.1 takes another port: the namespace's own loopback only
        text = self.config_path.read_text().replace(f"listener {self.port} 127.0.0.1",
                                                    f"listener {self.port + 1} 127.0.0.1", 1)
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
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False
