"""The shipped broker configurations and the demo's broker start-up, on a
real Mosquitto: the local config runs as the demo adapts it; the secure
example authenticates, keeps the v1 accounts and the 2.2 boards' accounts on
listeners of their own, confines v1 devices to their own topics by user
name and 2.2 relay boards to theirs by client id, and gives the displays'
account (which cannot be confined) the 2.2 topics only; with the gateway
running, a 2.2 status cannot mark a v1 device with a boot_id offline."""

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

from simulator import demo
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

# The v1 listeners' accounts (autocore.passwd) and the 2.2 boards' (autocore-fw22.passwd).
V1_ACCOUNTS = {"autocore-gateway": "gw-secret", "sim-relay-board-01": "d1-secret", "sim-relay-board-02": "d2-secret"}
FW22_ACCOUNTS = {"fw22.boards": "fw22-secret", "fw22.display": "display-secret"}
ACCOUNTS = {**V1_ACCOUNTS, **FW22_ACCOUNTS}
RELAY = "esp32-0123456789abcdef"  # a relay board: its client id is its uuid
OTHER_RELAY = "esp32-fedcba9876543210"
DISPLAY = "esp32-display-5e2a"  # a display: its client id has a random suffix
V1_DEVICE = "sim-relay-board-01"


@pytest.fixture
def secure_broker(secure_listeners):
    """The plain port of the v1 accounts (the gateway's on this machine)."""
    return secure_listeners["local"]


@pytest.fixture
def fw22_broker(secure_listeners):
    """The 2.2 boards' port."""
    return secure_listeners["fw22"]


@pytest.fixture
def secure_listeners(tmp_path):
    # openssl and mosquitto_passwd come with the machine and with `make test`'s mosquitto.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    passwd, passwd_fw22 = tmp_path / "passwd", tmp_path / "passwd-fw22"
    for path, accounts in ((passwd, V1_ACCOUNTS), (passwd_fw22, FW22_ACCOUNTS)):
        path.touch()
        for user, password in accounts.items():
            subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    local, tls, fw22 = free_port(), free_port(), free_port()
    text = (DEPLOY / "mosquitto-secure.conf.example").read_text()
    for old, new in [("/etc/mosquitto/autocore.passwd", str(passwd)), ("/etc/mosquitto/autocore.acl", str(DEPLOY / "acl")),
                     ("/etc/mosquitto/autocore-fw22.passwd", str(passwd_fw22)),
                     ("/etc/mosquitto/autocore-fw22.acl", str(DEPLOY / "acl-fw22")),
                     ("/etc/mosquitto/certs/ca.crt", str(tmp_path / "cert.pem")),
                     ("/etc/mosquitto/certs/server.crt", str(tmp_path / "cert.pem")),
                     ("/etc/mosquitto/certs/server.key", str(tmp_path / "key.pem")),
                     ("/var/lib/mosquitto/", f"{tmp_path}/"), ("log_dest syslog", f"log_dest file {tmp_path / 'log'}")]:
        assert old in text
        text = text.replace(old, new)
    for pattern, port in [(r"(?m)^listener 8883$", tls), (r"(?m)^listener 1884 127\.0\.0\.1$", local),
                          (r"(?m)^listener 1883$", fw22)]:
        assert re.search(pattern, text), pattern
        text = re.sub(pattern, f"listener {port} 127.0.0.1", text)
    (tmp_path / "secure.conf").write_text(text + f"\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "secure.conf")], stderr=subprocess.PIPE)

    def accepting():
        if proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {proc.stderr.read().decode()}")
        try:
            for port in (local, tls, fw22):
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    pass
            return True
        except OSError:
            return False

    wait_until(accepting, 10, what="the secure broker")
    yield {"local": local, "tls": tls, "fw22": fw22, "ca": tmp_path / "cert.pem"}
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


def may_write(port: int, user: str, topic: str, client_id: str | None = None) -> bool:
    """Whether `user` may publish on `topic`: the v5 PUBACK says 0x87 Not
    authorized if not (and mosquitto then drops the connection, so every
    probe has a connection of its own)."""
    account = Account(port, user, client_id=client_id)
    try:
        return not account.publish(topic).is_failure
    finally:
        account.close()


def reads(port: int, user: str, topic: str, marker: str, client_id: str | None = None,
          gateway_port: int | None = None) -> bool:
    """Whether `user` receives what the gateway publishes on `topic`. The
    gateway (on `gateway_port`, default `port`) then publishes on `marker`,
    which `user` may read; messages from one publisher arrive in order, so
    the marker's arrival settles it."""
    account = Account(port, user, client_id=client_id or f"r-{user}")
    try:
        account.client.subscribe([(topic, 1), (marker, 1)])
        assert account.subscribed.wait(5)
        gateway = Account(gateway_port or port, "autocore-gateway")
        try:
            assert not gateway.publish(topic).is_failure
            assert not gateway.publish(marker).is_failure
        finally:
            gateway.close()
        wait_until(lambda: marker in account.got, 5, what=f"the marker {marker}")
        return topic in account.got
    finally:
        account.close()


def test_the_secure_broker_lets_no_one_in_without_an_account(secure_listeners):
    local, fw22 = secure_listeners["local"], secure_listeners["fw22"]
    for port, user, password in [(local, "sim-relay-board-01", "wrong"), (local, "nobody", "x"),
                                 (fw22, "fw22.boards", "wrong"), (fw22, "nobody", "x")]:
        account = Account(port, user, password)
        assert account.reason.is_failure, (port, user)
        account.close()


def test_each_listener_takes_only_its_own_accounts(secure_listeners):
    """A v1 account never meets the 2.2 listener's client-id patterns (it
    could name any uuid with its client id), and a 2.2 account gets nothing
    of the v1 listeners'."""
    for user in ("autocore-gateway", V1_DEVICE):
        account = Account(secure_listeners["fw22"], user, client_id=RELAY)
        assert account.reason.is_failure, user
        account.close()
    for user in FW22_ACCOUNTS:
        account = Account(secure_listeners["local"], user, client_id=RELAY)
        assert account.reason.is_failure, user
        account.close()


def test_a_v1_device_writes_and_reads_only_its_own_topics(secure_broker):
    port, me = secure_broker, V1_DEVICE
    for level in ("announce", "status", "telemetry", "relay/status", "response"):
        assert may_write(port, me, f"autocore/devices/{me}/{level}"), level
    assert may_write(port, me, f"autocore/discovery/{me}")
    for topic in ("autocore/devices/sim-relay-board-02/telemetry", f"autocore/devices/{me}/command",
                  "autocore/gateway/status", f"autocore/devices/{RELAY}/relays/set", f"autocore/devices/{RELAY}/status"):
        assert not may_write(port, me, topic), topic
    # its client id names nothing: there are no %c patterns on the v1 listeners
    assert not may_write(port, me, "autocore/devices/sim-relay-board-02/status", client_id="sim-relay-board-02")
    marker = f"autocore/devices/{me}/command"
    assert reads(port, me, "autocore/gateway/status", marker)
    assert reads(port, me, "autocore/system/broadcast", marker)
    assert reads(port, me, f"autocore/devices/{me}/relay/command", marker)
    assert not reads(port, me, "autocore/devices/sim-relay-board-02/command", marker)


def test_a_relay_board_writes_and_reads_only_its_own_topics_by_its_client_id(secure_listeners):
    port, gateway_port, user = secure_listeners["fw22"], secure_listeners["local"], "fw22.boards"
    for topic in (f"autocore/devices/{RELAY}/status", f"autocore/devices/{RELAY}/relays/state",
                  f"autocore/devices/{RELAY}/status/operational", f"autocore/devices/{RELAY}/telemetry/data",
                  f"autocore/devices/{RELAY}/diagnostics", f"autocore/devices/{RELAY}/config/ack",
                  f"autocore/errors/{RELAY}/payload", "autocore/telemetry/relays/data"):
        assert may_write(port, user, topic, client_id=RELAY), topic
    for topic in (f"autocore/devices/{OTHER_RELAY}/status", f"autocore/devices/{V1_DEVICE}/status",
                  f"autocore/devices/{OTHER_RELAY}/relays/state", f"autocore/devices/{OTHER_RELAY}/relays/set",
                  f"autocore/devices/{OTHER_RELAY}/relays/heartbeat", f"autocore/devices/{OTHER_RELAY}/commands/reboot",
                  f"autocore/errors/{OTHER_RELAY}/payload", f"autocore/devices/{RELAY}/announce",
                  f"autocore/devices/{RELAY}/telemetry", f"autocore/discovery/{RELAY}", "autocore/gateway/status",
                  f"autocore/devices/{RELAY}/relays/set"):
        assert not may_write(port, user, topic, client_id=RELAY), topic
    marker = f"autocore/devices/{RELAY}/relays/set"
    for topic in (f"autocore/devices/{RELAY}/relays/heartbeat", f"autocore/devices/{RELAY}/commands/reboot"):
        assert reads(port, user, topic, marker, client_id=RELAY, gateway_port=gateway_port), topic
    for topic in (f"autocore/devices/{OTHER_RELAY}/relays/set", f"autocore/devices/{OTHER_RELAY}/relays/heartbeat",
                  "autocore/gateway/status", "autocore/system/broadcast", f"autocore/devices/{V1_DEVICE}/command"):
        assert not reads(port, user, topic, marker, client_id=RELAY, gateway_port=gateway_port), topic


def test_the_display_account_keeps_the_2_2_topics_of_every_board_and_nothing_of_v1(secure_listeners):
    """It cannot be confined by its client id (a random suffix): the broad
    rules the shared account had, said plainly in deploy/acl-fw22."""
    port, gateway_port, user, me = secure_listeners["fw22"], secure_listeners["local"], "fw22.display", f"{DISPLAY}-9f1c"
    for topic in (f"autocore/devices/{DISPLAY}/status", f"autocore/devices/{DISPLAY}/display/touch",
                  f"autocore/devices/{RELAY}/status", f"autocore/devices/{RELAY}/relays/state",
                  f"autocore/devices/{OTHER_RELAY}/relays/set", f"autocore/devices/{OTHER_RELAY}/relays/heartbeat",
                  f"autocore/devices/{OTHER_RELAY}/commands/reboot", "autocore/telemetry/relays/data",
                  f"autocore/errors/{DISPLAY}/payload", f"autocore/devices/{V1_DEVICE}/status"):
        assert may_write(port, user, topic, client_id=me), topic
    for topic in (f"autocore/devices/{RELAY}/announce", f"autocore/devices/{RELAY}/telemetry",
                  f"autocore/discovery/{RELAY}", f"autocore/devices/{V1_DEVICE}/response", "autocore/gateway/status"):
        assert not may_write(port, user, topic, client_id=me), topic
    marker = f"autocore/devices/{OTHER_RELAY}/relays/set"
    assert not reads(port, user, "autocore/gateway/status", marker, client_id=me, gateway_port=gateway_port)
    assert not reads(port, user, "autocore/system/broadcast", marker, client_id=me, gateway_port=gateway_port)
    assert not reads(port, user, f"autocore/devices/{V1_DEVICE}/command", marker, client_id=me,
                     gateway_port=gateway_port)
    assert reads(port, user, f"autocore/devices/{RELAY}/relays/heartbeat", marker, client_id=me,
                 gateway_port=gateway_port)


def test_the_gateway_serves_devices_through_the_secure_broker_over_tls(secure_listeners, tmp_path):
    """Username, password and TLS (AUTOCORE_MQTT_USERNAME, _PASSWORD, _TLS_CA)
    end to end: the gateway logs in over the TLS listener (the certificate is
    for `localhost`), a device with its own account announces on the loopback
    one, and the device is registered."""
    from tests.support.gateway import GatewayProcess

    gw = GatewayProcess(tmp_path / "gw", secure_listeners["tls"], mqtt_host="localhost",
                        mqtt_username="autocore-gateway", mqtt_password=ACCOUNTS["autocore-gateway"],
                        mqtt_tls_ca=secure_listeners["ca"], mqtt_client_id="autocore-gateway")
    gw.start()
    try:
        device = Account(secure_listeners["local"], "sim-relay-board-01")
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


def test_on_the_secure_broker_a_2_2_status_cannot_mark_a_v1_device_offline(secure_listeners, tmp_path):
    """The issue's two halves on the shipped configuration, with the gateway
    running: (a) a relay (shared account, client id = its uuid) cannot even
    publish another uuid's status: the broker refuses it; (b) a 2.2 offline
    status for a v1 device with a boot_id that the broker does let through
    (the display's account cannot be confined) is refused by the gateway:
    the device stays online, `dialect_conflict` is counted and an event
    written; `gateway devices dialect UUID fw22` then lets it through."""
    import json

    from click.testing import CliRunner

    from gateway.cli import main
    from tests.support.gateway import GatewayProcess

    gw = GatewayProcess(tmp_path / "gw", secure_listeners["local"], mqtt_username="autocore-gateway",
                        mqtt_password=ACCOUNTS["autocore-gateway"], mqtt_client_id="autocore-gateway")

    def cli(*args):
        return CliRunner().invoke(main, list(args), prog_name="gateway",
                                  env={"AUTOCORE_DB_PATH": str(gw.db_path), "AUTOCORE_RUN_DIR": str(gw.socket_path.parent)})

    def query(sql, *args):
        conn = sqlite3.connect(f"file:{gw.db_path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def status(uuid):
        rows = query("SELECT status, protocol FROM gateway_devices WHERE uuid = ?", uuid)
        return rows[0] if rows else None

    def events(uuid, event):
        return [json.loads(d) for (d,) in query("SELECT detail FROM device_events WHERE device_uuid = ? AND event = ? "
                                                 "ORDER BY id", uuid, event)]

    offline_22 = json.dumps({"protocol_version": "2.2.0", "uuid": V1_DEVICE, "status": "offline",
                             "reason": "forged"}).encode()
    gw.start()
    try:
        device = Account(secure_listeners["local"], V1_DEVICE, client_id=V1_DEVICE)
        try:
            ack = device.publish_payload(f"autocore/devices/{V1_DEVICE}/announce", json.dumps(
                {"device_type": "relay_board", "firmware_version": "1.0", "boot_id": 17,
                 "status_interval": 60}).encode())  # a timeout of 180 s: it stays online by itself
            assert not ack.is_failure
        finally:
            device.close()
        wait_until(lambda: status(V1_DEVICE) == ("online", "v1"), 10, what="the v1 device online")

        # (a) the relay's own status passes; another uuid's is refused by the broker
        relay = Account(secure_listeners["fw22"], "fw22.boards", client_id=RELAY)
        try:
            assert relay.publish_payload(f"autocore/devices/{V1_DEVICE}/status", offline_22).is_failure
        finally:
            relay.close()
        relay = Account(secure_listeners["fw22"], "fw22.boards", client_id=RELAY)
        try:
            assert not relay.publish_payload(f"autocore/devices/{RELAY}/status", json.dumps(
                {"protocol_version": "2.2.0", "uuid": RELAY, "status": "online", "type": "esp32_relay",
                 "firmware_version": "2.0.0"}).encode()).is_failure
        finally:
            relay.close()
        wait_until(lambda: status(RELAY) == ("online", "fw22"), 10, what="the relay registered")
        assert status(V1_DEVICE) == ("online", "v1") and events(V1_DEVICE, "offline") == []

        # (b) the display's account gets it through the broker; the gateway refuses it
        display = Account(secure_listeners["fw22"], "fw22.display", client_id=f"{DISPLAY}-9f1c")
        try:
            assert not display.publish_payload(f"autocore/devices/{V1_DEVICE}/status", offline_22).is_failure
            conflict = wait_until(lambda: events(V1_DEVICE, "dialect_conflict"), 10, what="the dialect_conflict event")
            assert conflict == [{"kind": "fw22_status", "protocol_version": "2.2.0", "refused": "status offline",
                                 "count": 1, "dialect": "v1", "boot_id": 17}]
            assert status(V1_DEVICE) == ("online", "v1") and events(V1_DEVICE, "offline") == []
            shown = cli("inspect", "device", V1_DEVICE, "--json")
            assert shown.exit_code == 0, shown.output
            seen = json.loads(shown.stdout)["device"]
            assert seen["status"] == "online" and seen["dialect"] == "v1" and seen["dialect_locked"] is True
            assert seen["rejections"]["dialect_conflict"] == 1 and seen["dialect_conflict"] == 1

            # the operator says it is a 2.2 board now: the next one goes through
            told = cli("devices", "dialect", V1_DEVICE, "fw22", "--json")
            assert told.exit_code == 0, told.output
            assert json.loads(told.stdout) == {
                "uuid": V1_DEVICE, "dialect": "fw22", "was": "v1", "dialect_locked": False, "boot_id": 17,
                "registry": True, "gateway": "running", "gateway_knew": True}
            assert status(V1_DEVICE) == ("online", "fw22")
            assert not display.publish_payload(f"autocore/devices/{V1_DEVICE}/status", offline_22).is_failure
            wait_until(lambda: status(V1_DEVICE) == ("offline", "fw22"), 10, what="the device offline")
            assert events(V1_DEVICE, "offline")[0]["reason"] == "forged"
            assert len(events(V1_DEVICE, "dialect_conflict")) == 1
            assert events(V1_DEVICE, "dialect_change") == [{"from": "v1", "to": "fw22", "by": "operator"}]
        finally:
            display.close()
        assert gw.stop() == 0
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
