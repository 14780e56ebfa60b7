"""Several gateway instances on one broker and one PostgreSQL (issue 13),
end to end: three `bin/gateway run` subprocesses in one share group, a real
Mosquitto, one database of the session's throw-away cluster.

The three instances are started once for the module and shared by its
tests (the first even spread of the buckets over them takes about twenty
rounds: an instance above its fair share gives back 8 a round), in this
order:

* Inspection: each instance's leases and `gateway inspect cluster`.
* Ownership: kill the owner of a device; another instance owns it within
  a lease (and a round), and a silent device is still found offline within
  its timeout plus that; a command inserted while the owner is down is
  delivered by the new owner; no command is delivered twice.
* QoS 1 telemetry with seq from many devices while instances are killed
  with kill -9 and started again: every message the broker took is stored
  exactly once; commands sent meanwhile are delivered again only by a new
  owner of their device's bucket.

Across the whole run no bucket (and so no device) has two owners at once:
the database logs every change of the lease table (tests/integration/
lease_log.py, a test-only trigger) and both kill tests check the whole log.

Sizes are small here (the module takes 35-45 s on 2 cores); the issue's
full size is 30k messages from 100 devices with 10 kills, which
`AUTOCORE_INSTANCES_FULL=1` runs (about a minute: 108 commands meanwhile,
1 delivered again after a take-over).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from protocol.buckets import bucket_of
from tests.integration import lease_log
from tests.integration.devices import TestDevice, retained
from tests.integration.helpers import FAST_SETTINGS, PgDb, Stream, inspect
from tests.support.broker import Broker, wait_until
from tests.support.gateway import ROOT, GatewayProcess

FULL = bool(os.environ.get("AUTOCORE_INSTANCES_FULL"))
DEVICES = 100 if FULL else 12
PER_DEVICE = 300 if FULL else 150
KILLS = 10 if FULL else 3
LEASE_S = 3.0
BUCKETS = 256
DEVICE_TIMEOUT_S = 4
NAMES = ("i1", "i2", "i3")


class Cluster:
    def __init__(self, broker, base, pg_url: str) -> None:
        self.broker = broker
        self.base = base
        self.pg_url = pg_url
        self.gws: dict[str, GatewayProcess] = {}
        self.problems: list[str] = []
        self.kills: list[tuple[str, float]] = []  # (instance, when it was gone)

    def start(self, name: str, wait: bool = True) -> GatewayProcess:
        gw = self.gws.get(name)
        if gw is None:
            gw = GatewayProcess(self.base / name, self.broker.port, **{
                **FAST_SETTINGS, "db_url": self.pg_url, "share_group": "depot", "instance_id": name,
                "mqtt_client_id": "gw", "lease_s": LEASE_S, "device_timeout_s": DEVICE_TIMEOUT_S})
            self.gws[name] = gw
        self._look(name)  # start() forgets the lines of the run before
        gw.start(wait_ready=wait, timeout=60)
        return gw

    def kill(self, name: str) -> float:
        """kill -9; returns when it was sent, and notes when every process
        of the instance was gone (a round it began before may still have
        changed the lease table in between)."""
        at = time.time()
        self.gws[name].kill()
        self.kills.append((name, time.time()))
        return at

    def ensure_running(self) -> None:
        for name in NAMES:
            gw = self.gws[name]
            if gw.proc is None or gw.proc.poll() is not None:
                self.start(name)

    def _look(self, name: str) -> None:
        gw = self.gws[name]
        if any("Traceback" in line for line in gw.lines):
            self.problems.append(f"{name} logged a traceback:\n" + "\n".join(gw.lines[-60:]))
            gw.lines = []

    def close(self) -> list[str]:
        for name, gw in self.gws.items():
            if gw.proc is not None and gw.proc.poll() is None:
                try:
                    gw.stop(15)
                except AssertionError as exc:
                    self.problems.append(str(exc))
            self._look(name)
        return self.problems


@pytest.fixture(scope="module")
def shared(tmp_path_factory, pg_cluster):
    """The module's broker, database (with the lease log) and three
    running instances."""
    base = tmp_path_factory.mktemp("instances")
    broker = Broker(base / "broker").start()
    url = pg_cluster.create_database()
    lease_log.install(url)
    cluster = Cluster(broker, base, url)
    for name in NAMES:  # at once: their start-ups overlap
        cluster.start(name, wait=False)
    for name in NAMES:
        cluster.gws[name].wait_for_line("ready:", 60)
    yield cluster
    problems = cluster.close()
    broker.stop()
    pg_cluster.drop_database(url)
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def broker(shared):
    """The module's broker (the `devices` fixture connects to it)."""
    return shared.broker


@pytest.fixture
def cluster(shared):
    """The three instances, running (a test that failed may have left one
    killed); a traceback any of them logged fails the test."""
    shared.ensure_running()
    yield shared
    for name in NAMES:
        shared._look(name)
    problems, shared.problems = shared.problems, []
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def pg(shared):
    d = PgDb(shared.pg_url)
    yield d
    d.close()


def owner_of(pg: PgDb, uuid: str) -> str | None:
    return pg.one("SELECT owner FROM gateway_leases WHERE bucket = ? AND expires_at > ?",
                  bucket_of(uuid, BUCKETS), time.time())


def every_bucket_owned(pg: PgDb, instances: int) -> bool:
    rows = pg.rows("SELECT owner, COUNT(*) FROM gateway_leases WHERE owner IS NOT NULL AND expires_at > ? "
                   "GROUP BY owner", time.time())
    return sum(n for _, n in rows) == BUCKETS and len(rows) == instances


def balanced(pg: PgDb, instances: int) -> bool:
    """Every bucket owned and none above its fair share, so none changes
    hands any more (above it, an instance gives back at most 8 buckets a
    round: this takes a while after a start)."""
    counts = sorted(n for _, n in pg.rows("SELECT owner, COUNT(*) FROM gateway_leases WHERE owner IS NOT NULL "
                                          "AND expires_at > ? GROUP BY owner", time.time()))
    fair = -(-BUCKETS // instances)  # nobody above its fair share gives anything back
    return sum(counts) == BUCKETS and len(counts) == instances and counts[-1] <= fair


def assert_one_owner_at_a_time(pg: PgDb, killed: list[tuple[str, float]]) -> list[lease_log.Take]:
    """The whole lease log so far: no overlapping ownership; and each bucket
    a killed instance held at its kill was taken again after its lease ran
    out (so the check had take-overs to judge)."""
    def missing_takes(changes: list) -> dict[str, tuple[float, set[int]]]:
        taken = lease_log.takes(changes)
        out = {}
        for name, at in killed:
            held = lease_log.held_at(changes, name, at)
            again = {t.bucket for t in taken if t.bucket in held and t.at > at and t.previous == name}
            if held - again:
                out[name] = (at, held - again)
        return out

    # The last kill's buckets are taken once its lease runs out (and a
    # round): wait for that, with a deadline, before judging the log.
    try:
        wait_until(lambda: not missing_takes(lease_log.read(pg.conn)), 3 * LEASE_S + 5,
                   what="every bucket of a killed instance taken again")
    except AssertionError:
        pass  # judged below, with the log's lines
    changes = lease_log.read(pg.conn)
    assert lease_log.overlaps(changes) == []
    taken = lease_log.takes(changes)
    judged = 0
    for name, at in killed:
        judged += len(lease_log.held_at(changes, name, at))
    for name, (at, missing) in missing_takes(changes).items():
        raise AssertionError(f"buckets {sorted(missing)} of {name}, gone at {at:.3f}, never taken again:\n"
                             + "\n".join(str(c) for c in changes if c.bucket in missing and c.at > at - 4 * LEASE_S))
    assert judged > 0, "no killed instance held a bucket"
    return taken


# -- the epoch log's check itself (no gateway) --------------------------------


def _changes(*rows: tuple) -> list[lease_log.Change]:
    return [lease_log.Change(i, *row) for i, row in enumerate(rows, 1)]


def test_the_lease_log_check_finds_two_owners_at_once():
    ok = _changes((7, None, 0, 0.0, 100.0), (7, "a", 1, 110.0, 100.0), (7, "a", 1, 111.0, 101.0),
                  (7, "b", 2, 113.0, 111.5), (7, None, 2, 0.0, 112.0), (7, "a", 3, 116.0, 112.5))
    assert lease_log.overlaps(ok) == []
    assert [(t.owner, t.previous, t.previous_until) for t in lease_log.takes(ok)] == [
        ("a", None, None), ("b", "a", 111.0), ("a", None, None)]
    assert lease_log.held_at(ok, "a", 101.5) == {7} and lease_log.held_at(ok, "a", 111.2) == set()
    early = _changes((7, "a", 1, 110.0, 100.0), (7, "b", 2, 113.0, 109.0))
    assert "1.000 s early" in lease_log.overlaps(early)[0]
    assert "without a take" in lease_log.overlaps(_changes((7, "a", 1, 110.0, 100.0), (7, "b", 1, 113.0, 111.0)))[0]
    assert "went back" in lease_log.overlaps(_changes((7, "a", 2, 110.0, 100.0), (7, "b", 1, 113.0, 111.0)))[0]
    assert "jumped" in lease_log.overlaps(_changes((7, None, 0, 0.0, 100.0), (7, "b", 2, 113.0, 111.0)))[0]
    # other buckets do not mix in
    assert lease_log.overlaps(_changes((7, "a", 1, 110.0, 100.0), (8, "b", 1, 113.0, 101.0))) == []


# -- three instances ------------------------------------------------------------


def test_inspection_shows_each_instances_leases_and_the_cluster(cluster, pg):
    # balanced, so that no bucket is between a give-back and its next owner's take while we look
    wait_until(lambda: balanced(pg, 3), 60, what="the buckets shared evenly by three instances")
    stats = inspect(cluster.gws["i1"].socket_path, "stats")["stats"]["instance"]
    assert stats["instance_id"] == "i1" and stats["share_group"] == "depot"
    held = stats["leases"]["held"]
    assert 0 < held < BUCKETS and stats["leases"]["lost"] >= 0 and stats["leases"]["lease_s"] == LEASE_S
    assert 0 < stats["leases"]["expires_in_s"] <= LEASE_S
    env = {"PATH": "/usr/bin:/bin", "AUTOCORE_DB_URL": cluster.pg_url}
    out = subprocess.run([sys.executable, str(ROOT / "bin" / "gateway"), "inspect", "cluster", "--json"],
                         cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    instances = {i["instance_id"]: i for i in json.loads(out.stdout)["instances"]}
    assert set(instances) == set(NAMES)
    assert sum(i["buckets"] for i in instances.values()) == BUCKETS
    text = subprocess.run([sys.executable, str(ROOT / "bin" / "gateway"), "inspect", "cluster"], cwd=str(ROOT),
                          env=env, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and all(n in text.stdout for n in NAMES), text.stderr


def test_a_cleanly_stopped_instances_buckets_are_taken_at_the_others_next_round(cluster, pg):
    """A clean stop gives its buckets and its heartbeat back: the others'
    fair share grows at once, so they take every bucket at their next
    round (a third of a lease), not a lease later."""
    wait_until(lambda: balanced(pg, 3), 60, what="the buckets shared evenly by three instances")
    name = NAMES[0]
    held = {b for (b,) in pg.rows("SELECT bucket FROM gateway_leases WHERE owner = ? AND expires_at > ?",
                                  name, time.time())}
    assert held
    cluster.gws[name].stop(15)
    stopped_at = time.time()
    wait_until(lambda: every_bucket_owned(pg, 2), LEASE_S * 3, what=f"{name}'s buckets taken by the others")
    took = time.time() - stopped_at
    print(f"{len(held)} buckets of a cleanly stopped instance taken after {took:.2f} s (lease {LEASE_S} s)")
    assert took <= LEASE_S / 3 + 1.0, took  # a round, and slack
    out = subprocess.run([sys.executable, str(ROOT / "bin" / "gateway"), "inspect", "cluster"], cwd=str(ROOT),
                         env={"PATH": "/usr/bin:/bin", "AUTOCORE_DB_URL": cluster.pg_url}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [line for line in out.stdout.splitlines() if line.startswith(name) and "stopped" in line], out.stdout


def test_a_dead_owners_devices_are_taken_over(cluster, pg, devices):
    # balanced: no bucket changes hands but for the kill below
    wait_until(lambda: balanced(pg, 3), 60, what="the buckets shared evenly by three instances")
    # a silent device (it announces, then says nothing) and a talking one, same owner
    silent = devices("silent-1")
    owner = wait_until(lambda: owner_of(pg, silent.uuid), 10, what="an owner of the silent device")
    # a device of the same bucket that keeps talking (its telemetry goes to any instance)
    talker = devices(next(f"talk-{i}" for i in range(100000)
                          if bucket_of(f"talk-{i}", BUCKETS) == bucket_of(silent.uuid, BUCKETS)))
    talker.announce(boot_id=1, status_interval=1.0)
    stop = threading.Event()

    def talk() -> None:
        seq = 0
        while not stop.wait(0.3):  # pacing the device, not waiting for the gateway
            seq += 1
            talker.telemetry(seq=seq, boot_id=1, wait=False)

    threading.Thread(target=talk, daemon=True).start()
    wait_until(lambda: pg.one("SELECT status FROM gateway_devices WHERE uuid = ?", talker.uuid) == "online", 10,
               what="the talking device online")
    # a command for the talking device is delivered once, by its owner
    first = pg.insert_command(talker.uuid, timeout=30.0)
    [cmd] = talker.wait_commands(1, timeout=10)
    talker.respond(cmd["command_id"], success=True)
    pg.wait_command(first, "succeeded", 10)

    silent.announce(boot_id=1, status_interval=1.0)  # timeout DEVICE_TIMEOUT_S
    wait_until(lambda: pg.one("SELECT status FROM gateway_devices WHERE uuid = ?", silent.uuid) == "online", 10,
               what="the silent device online")
    # kill its owner just after it was last heard of
    assert owner_of(pg, talker.uuid) == owner
    held = {b for (b,) in pg.rows("SELECT bucket FROM gateway_leases WHERE owner = ? AND expires_at > ?",
                                  owner, time.time())}
    killed_at = cluster.kill(owner)
    # a command for the talker while its owner is dead
    second = pg.insert_command(talker.uuid, timeout=30.0)
    new_owner = wait_until(lambda: (o := owner_of(pg, silent.uuid)) not in (None, owner) and o, LEASE_S * 3,
                           what="another instance owning the silent device")
    took_over = time.time() - killed_at
    print(f"take-over of a kill -9'ed owner's device after {took_over:.2f} s (lease {LEASE_S} s)")
    assert new_owner in NAMES and new_owner != owner
    assert took_over <= LEASE_S + 1.0, took_over  # one lease (the others look when it runs out), and slack
    # and every bucket it held, by the two others between them (each its heirs)
    wait_until(lambda: len(pg.rows("SELECT bucket FROM gateway_leases WHERE owner <> ? AND expires_at > ? "
                                   f"AND bucket IN ({','.join(map(str, held))})", owner, time.time())) == len(held),
               LEASE_S * 3, what=f"all {len(held)} buckets of {owner} taken over")
    all_taken = time.time() - killed_at
    takers = {o for (o,) in pg.rows("SELECT owner FROM gateway_leases WHERE owner IS NOT NULL AND expires_at > ? "
                                    f"AND bucket IN ({','.join(map(str, held))})", killed_at)}
    print(f"take-over of all {len(held)} buckets after {all_taken:.2f} s, by {sorted(takers)}")
    assert all_taken <= LEASE_S + 1.0, all_taken
    assert takers == set(NAMES) - {owner}, takers
    # the dead instance's Will is on its own status topic; the devices' topic stays online
    wait_until(lambda: json.loads(retained(cluster.broker.port, f"autocore/gateway/{owner}/status") or b"{}")
               .get("status") == "offline", 10, what="the killed instance's Last Will")
    assert json.loads(retained(cluster.broker.port, "autocore/gateway/status") or b"{}").get("status") == "online"
    # offline within its timeout plus a lease (the new owner judges it from the database's last_seen)
    wait_until(lambda: pg.one("SELECT status FROM gateway_devices WHERE uuid = ?", silent.uuid) == "offline",
               DEVICE_TIMEOUT_S + LEASE_S + 3.0, what="the silent device offline after the take-over")
    cmds = talker.wait_commands(2, timeout=LEASE_S * 3 + 5)
    assert cmds[1]["command_id"] == str(second)
    talker.respond(cmds[1]["command_id"], success=True)
    pg.wait_command(second, "succeeded", 10)
    # the dead instance comes back; nothing is delivered twice
    cluster.start(owner)
    third = pg.insert_command(talker.uuid, timeout=30.0)
    wanted = 3
    cmds = talker.wait_commands(wanted, timeout=10)
    talker.respond(cmds[-1]["command_id"], success=True)
    pg.wait_command(third, "succeeded", 10)
    ids = [c["command_id"] for c in talker.commands]
    stop.set()
    assert len(ids) == len(set(ids)) == wanted, ids
    assert_one_owner_at_a_time(pg, cluster.kills[-1:])


class AnsweringDevice(TestDevice):
    """Answers every command at once (success), and notes when each came."""

    __test__ = False

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.deliveries: list[tuple[str, float]] = []  # (command id, received at)

    def _on_message(self, client, userdata, message) -> None:
        super()._on_message(client, userdata, message)
        if message.topic == self.topic("command"):
            command_id = json.loads(message.payload)["command_id"]
            self.deliveries.append((command_id, time.time()))
            client.publish(self.topic("response"), json.dumps(
                {"command_id": command_id, "success": True, "result": None, "error_message": None,
                 "execution_time": 0.01}), qos=1)


def test_telemetry_is_stored_exactly_once_while_instances_are_killed(cluster, pg, broker):
    wait_until(lambda: every_bucket_owned(pg, 3), 30, what="the buckets shared by three instances")
    # devices that talk all along, get commands while the kills go on, and answer each at once
    answering = [AnsweringDevice(broker.port, f"cdev-{i}").connect() for i in range(4)]
    pg_commands = PgDb(cluster.pg_url)  # its own connection: it is used from a thread
    commands: list[int] = []
    stop_talking, stop_commanding = threading.Event(), threading.Event()
    # The streams come in KILLS + 1 parts, each paced over about 1.5 s; a part
    # starts once the kill and restart before it are done: telemetry flows
    # into every kill, however long restarts take on a loaded machine.
    part = -(-PER_DEVICE // (KILLS + 1))
    gates = [threading.Event() for _ in range(KILLS)]

    def talk() -> None:
        for dev in answering:
            dev.announce(boot_id=1, status_interval=1.0)
        for seq in itertools.count(1):
            if stop_talking.wait(0.3):  # pacing the devices, not waiting for the gateway
                return
            for dev in answering:
                dev.telemetry(seq=seq, boot_id=1, wait=False)

    def command_all_along() -> None:
        for i in itertools.count():
            if stop_commanding.wait(0.2):  # pacing the Config App
                return
            commands.append(pg_commands.insert_command(answering[i % len(answering)].uuid, timeout=30.0))

    talker = threading.Thread(target=talk, daemon=True)
    commander = threading.Thread(target=command_all_along, daemon=True)
    try:
        talker.start()
        streams = [Stream(broker.port, f"tdev-{i}", PER_DEVICE, pause_every=5, pause_s=1.5 * 5 / part,
                          gates=gates, gate_every=part).start() for i in range(DEVICES)]
        commander.start()
        rng = random.Random(13)
        kills_before = len(cluster.kills)
        try:
            for k in range(KILLS):
                victim = rng.choice(NAMES)
                wait_until(lambda: sum(s.written for s in streams) > k * part * DEVICES, 10, what="telemetry flowing")
                cluster.kill(victim)
                cluster.start(victim)  # its session (and its share) comes back with it
                gates[k].set()
            for s in streams:
                s.wait(120)
        finally:
            stop_commanding.set()
            commander.join(10)
        total = DEVICES * PER_DEVICE
        counted = lambda: pg.one("SELECT COUNT(*) FROM telemetry WHERE device_uuid LIKE ?", "tdev-%")  # noqa: E731
        wait_until(lambda: counted() >= total, 90, what=f"{total} messages stored",
                   progress=lambda: f"{counted()} stored")
        assert counted() == total
        print(f"{total} messages from {DEVICES} devices, {KILLS} kill -9 and restarts: stored exactly once")
        assert pg.rows("SELECT device_uuid, seq FROM telemetry WHERE device_uuid LIKE ? "
                       "GROUP BY device_uuid, seq HAVING COUNT(*) > 1", "tdev-%") == []
        per_device = dict(pg.rows("SELECT device_uuid, COUNT(DISTINCT seq) FROM telemetry "
                                  "WHERE device_uuid LIKE ? GROUP BY device_uuid", "tdev-%"))
        assert per_device == {f"tdev-{i}": PER_DEVICE for i in range(DEVICES)}

        # every command done (the devices still talk); one delivered again only
        # after its device's bucket changed hands
        unfinished = lambda: pg.rows("SELECT id, status FROM commands WHERE device_uuid LIKE ? "  # noqa: E731
                                     "AND status <> 'succeeded'", "cdev-%")
        wait_until(lambda: not unfinished(), LEASE_S * 3 + 10, what="every command succeeded",
                   progress=lambda: command_trouble(cluster, pg, answering, unfinished()))
        taken = assert_one_owner_at_a_time(pg, cluster.kills[kills_before:])
        again = []
        for dev in answering:
            times: dict[str, list[float]] = {}
            for command_id, at in dev.deliveries:
                times.setdefault(command_id, []).append(at)
            takes_of_bucket = [t.at for t in taken if t.bucket == bucket_of(dev.uuid, BUCKETS)]
            for command_id, ats in times.items():
                if len(ats) > 1:
                    again.append(command_id)
                    # 0.5 s: from the first owner's send to the device's receipt, on a loaded machine
                    assert any(ats[0] - 0.5 < at < ats[-1] for at in takes_of_bucket), \
                        f"command {command_id} delivered to {dev.uuid} at {ats} with no new owner in between"
        delivered = {c for dev in answering for c, _ in dev.deliveries}
        assert delivered == {str(c) for c in commands}
        print(f"{len(commands)} commands during the kills, each delivered; {len(again)} again after a take-over")
    finally:
        stop_talking.set()
        stop_commanding.set()
        for gate in gates:
            gate.set()
        pg_commands.close()
        for dev in answering:
            dev.disconnect()


def command_trouble(cluster: Cluster, pg: PgDb, answering: list[AnsweringDevice], rows: list) -> str:
    """What a failure needs: the unfinished commands, their deliveries, each
    instance's counters of commands it did not act for, the kills."""
    out = [str(rows)]
    for command_id, _ in rows:
        row = pg.rows("SELECT device_uuid, status, attempts, created_at, sent_at FROM commands WHERE id = ?",
                      command_id)[0]
        got = [at for dev in answering for c, at in dev.deliveries if c == str(command_id)]
        out.append(f"command {command_id}: {tuple(row)}, delivered at {got}, bucket "
                   f"{bucket_of(row[0], BUCKETS)} owned by {owner_of(pg, row[0])}")
    for name, gw in cluster.gws.items():
        try:
            stats = inspect(gw.socket_path, "stats")["stats"]
            out.append(f"{name}: devices {stats['devices'].get('counters')}, feed {stats['commands']}, "
                       f"instance {stats.get('instance')}")
            out += [line for line in gw.lines if "DEBUG" in line]
            for dev in answering:
                try:
                    reply = inspect(gw.socket_path, "device", uuid=dev.uuid).get("device") or {}
                except Exception as exc:  # noqa: BLE001 - no such device there
                    reply = {"status": str(exc)}
                out.append(f"  {dev.uuid}: {reply.get('status')}, commands {reply.get('commands')}")
        except Exception as exc:  # noqa: BLE001 - a diagnosis, not the test
            out.append(f"{name}: {exc}")
    out.append(f"kills: {cluster.kills}")
    return "\n".join(out)
