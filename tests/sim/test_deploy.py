"""The shipped broker configurations and the demo's broker start-up, on a
real Mosquitto: the local config runs as the demo adapts it; the secure
example authenticates and its ACL confines v1 devices to their own topics
and the 2.2 boards' shared account to the 2.2 topics."""

from __future__ import annotations

import getpass
import re
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway import demo
from tests.support.broker import MOSQUITTO, free_port, wait_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            found.setdefault(key, []).append(value.strip())
    return found


@pytest.mark.parametrize("name", ["mosquitto.conf", "mosquitto-secure.conf.example"])
def test_every_shipped_config_lifts_the_queue_limit_and_says_why(name):
    text = (DEPLOY / name).read_text()
    conf = settings(text)
    assert conf["max_queued_messages"] == ["0"]
    assert int(conf["max_queued_bytes"][0]) >= 64 * 1024 * 1024
    comment = text[: text.index("max_queued_messages 0")].rsplit("\n\n", 1)[-1]
    assert "1000" in comment and "FIELD-NOTES" in comment and "silent" in comment.lower()
    assert conf["persistence"] == ["true"]


def test_the_local_config_listens_on_loopback_with_persistence_under_var():
    conf = settings((DEPLOY / "mosquitto.conf").read_text())
    assert conf["listener"] == ["1883 127.0.0.1"]
    assert conf["persistence_location"] == ["var/mosquitto/"]


def test_the_demo_starts_mosquitto_from_the_shipped_config(tmp_path):
    port = free_port()
    proc = demo.start_broker(port, tmp_path)
    try:
        written = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
        conf = settings(written)
        assert conf["listener"] == [f"{port} 127.0.0.1"]
        assert conf["persistence_location"] == [f"{tmp_path / 'mosquitto'}/"]
        assert conf["max_queued_messages"] == ["0"]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        demo.stop_process(proc, "mosquitto")
    assert proc.returncode == 0
    assert (tmp_path / "mosquitto" / "mosquitto.db").exists()  # saved on a clean stop


def test_the_demo_refuses_a_taken_port_clearly(tmp_path, capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(demo.DemoError) as caught:
            demo.start_broker(port, tmp_path)
        assert caught.value.code == demo.EXIT_PORT_TAKEN
        assert f"port {port}" in str(caught.value) and "already taken" in str(caught.value)
        assert demo.main(["--port", str(port)]) == demo.EXIT_PORT_TAKEN
    assert "already taken" in capsys.readouterr().err


# -- the secure example --------------------------------------------------------------------

ACCOUNTS = {"autocore-gateway": "gw-secret", "sim-relay-board-01": "d1-secret", "sim-relay-board-02": "d2-secret",
            "fw22.boards": "fw22-secret"}


@pytest.fixture
def secure_broker(secure_listeners):
    return secure_listeners["plain"]


@pytest.fixture
def secure_listeners(tmp_path):
    # openssl and mosquitto_passwd come with the machine and with `make test`'s mosquitto.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in ACCOUNTS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
    plain, tls = free_port(), free_port()
    text = (DEPLOY / "mosquitto-secure.conf.example").read_text()
    for old, new in [("/etc/mosquitto/autocore.passwd", str(passwd)), ("/etc/mosquitto/autocore.acl", str(DEPLOY / "acl")),
                     ("/etc/mosquitto/certs/ca.crt", str(tmp_path / "cert.pem")),
                     ("/etc/mosquitto/certs/server.crt", str(tmp_path / "cert.pem")),
                     ("/etc/mosquitto/certs/server.key", str(tmp_path / "key.pem")),
                     ("/var/lib/mosquitto/", f"{tmp_path}/"), ("log_dest syslog", f"log_dest file {tmp_path / 'log'}")]:
        assert old in text
        text = text.replace(old, new)
    text = re.sub(r"(?m)^listener 8883$", f"listener {tls} 127.0.0.1", text)
    text = re.sub(r"(?m)^listener 1883$", f"listener {plain} 127.0.0.1", text)
    (tmp_path / "secure.conf").write_text(text + f"\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "secure.conf")], stderr=subprocess.PIPE)

    def accepting():
        if proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {proc.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", plain), timeout=0.2), \
                 socket.create_connection(("127.0.0.1", tls), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(accepting, 10, what="the secure broker")
    yield {"plain": plain, "tls": tls, "ca": tmp_path / "cert.pem"}
    proc.terminate()
    proc.wait(5)


class Account:
    """An MQTT v5 client of one account."""

    def __init__(self, port: int, user: str, password: str | None = None, client_id: str | None = None) -> None:
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.reason = None
        self.acks: dict[int, object] = {}
        self.got: list[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}",
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        self.client.username_pw_set(user, ACCOUNTS.get(user) if password is None else password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.got.append(m.topic)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(5)

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self.reason = reason
        self.connected.set()

    def publish(self, topic: str):
        return self.publish_payload(topic, b'{"probe": 1}')

    def publish_payload(self, topic: str, payload: bytes):
        info = self.client.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in self.acks, 5, what=f"PUBACK for {topic}")
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def may_write(port: int, user: str, topic: str) -> bool:
    """Whether `user` may publish on `topic`: the v5 PUBACK says 0x87 Not
    authorized if not (and mosquitto then drops the connection, so every
    probe has a connection of its own)."""
    account = Account(port, user)
    try:
        return not account.publish(topic).is_failure
    finally:
        account.close()


def reads(port: int, user: str, topic: str, marker: str) -> bool:
    """Whether `user` receives what the gateway publishes on `topic`. The
    gateway then publishes on `marker`, which `user` may read; messages
    from one publisher arrive in order, so the marker's arrival settles it."""
    account = Account(port, user, client_id=f"r-{user}")
    try:
        account.client.subscribe([(topic, 1), (marker, 1)])
        assert account.subscribed.wait(5)
        gateway = Account(port, "autocore-gateway")
        try:
            assert not gateway.publish(topic).is_failure
            assert not gateway.publish(marker).is_failure
        finally:
            gateway.close()
        wait_until(lambda: marker in account.got, 5, what=f"the marker {marker}")
        return topic in account.got
    finally:
        account.close()


def test_the_secure_broker_lets_no_one_in_without_an_account(secure_broker):
    for user, password in [("sim-relay-board-01", "wrong"), ("nobody", "x")]:
        account = Account(secure_broker, user, password)
        assert account.reason.is_failure
        account.close()


def test_a_v1_device_writes_and_reads_only_its_own_topics(secure_broker):
    port, me = secure_broker, "sim-relay-board-01"
    for level in ("announce", "status", "telemetry", "relay/status", "response"):
        assert may_write(port, me, f"autocore/devices/{me}/{level}"), level
    assert may_write(port, me, f"autocore/discovery/{me}")
    for topic in ("autocore/devices/sim-relay-board-02/telemetry", f"autocore/devices/{me}/command",
                  "autocore/gateway/status", "autocore/devices/esp32-0123456789abcdef/relays/set"):
        assert not may_write(port, me, topic), topic
    marker = f"autocore/devices/{me}/command"
    assert reads(port, me, "autocore/gateway/status", marker)
    assert reads(port, me, "autocore/system/broadcast", marker)
    assert reads(port, me, f"autocore/devices/{me}/relay/command", marker)
    assert not reads(port, me, "autocore/devices/sim-relay-board-02/command", marker)


def test_the_shared_fw22_account_gets_the_fw22_topics_and_nothing_of_v1(secure_broker):
    port, board = secure_broker, "fw22.boards"
    for topic in ("autocore/devices/esp32-0123456789abcdef/status",
                  "autocore/devices/esp32-0123456789abcdef/relays/state",
                  "autocore/devices/esp32-0123456789abcdef/status/operational",
                  "autocore/devices/esp32-fedcba9876543210/relays/set",
                  "autocore/devices/esp32-fedcba9876543210/relays/heartbeat",
                  "autocore/devices/esp32-fedcba9876543210/commands/reboot",
                  "autocore/telemetry/relays/data",
                  "autocore/errors/esp32-0123456789abcdef/payload"):
        assert may_write(port, board, topic), topic
    for topic in ("autocore/devices/esp32-0123456789abcdef/announce",
                  "autocore/devices/esp32-0123456789abcdef/telemetry",
                  "autocore/devices/fw22.boards/announce",
                  "autocore/discovery/esp32-0123456789abcdef",
                  "autocore/devices/sim-relay-board-01/response",
                  "autocore/gateway/status"):
        assert not may_write(port, board, topic), topic
    marker = "autocore/devices/esp32-fedcba9876543210/relays/set"
    assert not reads(port, board, "autocore/gateway/status", marker)
    assert not reads(port, board, "autocore/system/broadcast", marker)
    assert not reads(port, board, "autocore/devices/sim-relay-board-01/command", marker)
    assert reads(port, board, "autocore/devices/esp32-0123456789abcdef/relays/heartbeat", marker)


def test_the_gateway_serves_devices_through_the_secure_broker_over_tls(secure_listeners, tmp_path):
    """Username, password and TLS (AUTOCORE_MQTT_USERNAME, _PASSWORD, _TLS_CA)
    end to end: the gateway logs in over the TLS listener (the certificate is
    for `localhost`), a device with its own account announces on the plain
    one, and the device is registered."""
    from tests.support.gateway import GatewayProcess

    gw = GatewayProcess(tmp_path / "gw", secure_listeners["tls"], mqtt_host="localhost",
                        mqtt_username="autocore-gateway", mqtt_password=ACCOUNTS["autocore-gateway"],
                        mqtt_tls_ca=secure_listeners["ca"], mqtt_client_id="autocore-gateway")
    gw.start()
    try:
        device = Account(secure_listeners["plain"], "sim-relay-board-01")
        try:
            ack = device.publish_payload("autocore/devices/sim-relay-board-01/announce",
                                         b'{"device_type": "relay_board", "firmware_version": "1.0", "boot_id": 1}')
            assert not ack.is_failure
        finally:
            device.close()

        def registered():
            conn = sqlite3.connect(f"file:{gw.db_path}?mode=ro", uri=True)
            try:
                return conn.execute("SELECT status FROM gateway_devices WHERE uuid = 'sim-relay-board-01'").fetchall()
            except sqlite3.OperationalError:
                return []
            finally:
                conn.close()

        assert wait_until(registered, 10, what="the device registered through the secure broker") == [("online",)]
        assert gw.stop() == 0
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
