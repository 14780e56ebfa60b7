"""The gateway's settings: one immutable object, loaded once at start-up.

Every setting has a default, an optional key in a TOML file (`--config`), an
environment variable `AUTOCORE_<NAME>` and a flag `--<name>`; flags beat the
environment, which beats the file, which beats the default. A bad value stops
start-up with one line naming the setting and what is wrong (`SettingsError`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

ENV_PREFIX = "AUTOCORE_"


class SettingsError(ValueError):
    """A setting has a bad value; the message names it and says why."""


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be 0 or greater"


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else "must be a port number between 1 and 65535"


def _port_or_off(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be 0 (off) or a port number between 1 and 65535"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}"

    return check


def _prefix(v: str) -> str | None:
    if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
        return "must be a non-empty topic prefix without '+', '#' or a leading or trailing '/'"
    return None


def _share_group(v: str) -> str | None:
    if any(c in v for c in "/+#"):
        return "must be a share group name without '/', '+' or '#' (empty: a single instance)"
    return None


def _instance_id(v: str) -> str | None:
    if not v or any(c in v for c in "/+#") or any(c.isspace() for c in v):
        return "must be a non-empty name without '/', '+', '#' or spaces"
    return None


def _uplink_url(v: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        u = urlsplit(v)
        u.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        return "must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    return None


def _vehicle_id(v: str) -> str | None:
    if not v or any(c in v for c in "/+#\0"):
        return "must be a non-empty topic level without '/', '+' or '#'"
    return None


def _uplink_prefix(v: str) -> str | None:
    if v.startswith("$"):
        return "must not start with '$'"
    return _prefix(v)


def _db_url(v: str) -> str | None:
    from storage.url import parse_location

    if "://" not in v:
        # A plain word here would silently become a SQLite file of that name.
        return ("must be a URL, sqlite:///FILE or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
                "(a plain file path goes in AUTOCORE_DB_PATH)")
    try:
        parse_location(v)
    except ValueError as exc:
        return str(exc)
    return None


def parse_periods(text: str) -> dict[str, float]:
    """`esp32_relay=30,display=5` → {"esp32_relay": 30.0, "display": 5.0}."""
    periods: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected TYPE=SECONDS, got {part!r}")
        seconds = float(value)
        if seconds <= 0:
            raise ValueError(f"period of {name.strip()!r} must be greater than 0")
        periods[name.strip()] = seconds
    return periods


def _periods_check(v: str) -> str | None:
    try:
        parse_periods(v)
    except ValueError as exc:
        return str(exc)
    return None


def parse_dbc_files(text: str) -> list[tuple[str | None, str]]:
    """`ecu.dbc,can_gateway=/etc/body.dbc` -> [(None, "ecu.dbc"), ("can_gateway",
    "/etc/body.dbc")]: a file for every device, or `DEVICE_TYPE=FILE` for the
    devices of one type."""
    files: list[tuple[str | None, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        device_type, sep, path = part.partition("=")
        if not sep:
            device_type, path = "", part
        device_type, path = device_type.strip(), path.strip()
        if sep and not device_type:
            raise ValueError(f"each entry must be FILE or DEVICE_TYPE=FILE, and {part!r} has no type before '='")
        if not path:
            raise ValueError(f"each entry must be FILE or DEVICE_TYPE=FILE, and {part!r} has no file")
        files.append((device_type or None, path))
    return files


def _dbc_check(v: str) -> str | None:
    try:
        parse_dbc_files(v)
    except ValueError as exc:
        return str(exc)
    return None


def setting(default: Any, help: str, check: Callable[[Any], str | None] | None = None, secret: bool = False,
            unsafe: Callable[[Any], bool] | None = None) -> Any:
    """`unsafe`: whether a value trades a promise away (`config show`
    flags it)."""
    return field(default=default, metadata={"help": help, "check": check, "secret": secret, "unsafe": unsafe})


def unsafe_settings(settings: Any) -> list[str]:
    """Names of the settings whose value trades durability away."""
    return [f.name for f in fields(settings)
            if f.metadata.get("unsafe") is not None and f.metadata["unsafe"](getattr(settings, f.name))]


@dataclass(frozen=True)
class Settings:
    # MQTT connection
    mqtt_host: str = setting("127.0.0.1", "broker host")
    mqtt_port: int = setting(1883, "broker port", _port)
    mqtt_username: str | None = setting(None, "broker user name")
    mqtt_password: str | None = setting(None, "broker password", secret=True)
    mqtt_tls_ca: str | None = setting(None, "CA certificate file; setting it turns TLS on")
    mqtt_tls_cert: str | None = setting(None, "client certificate file (TLS)")
    mqtt_tls_key: str | None = setting(None, "client key file (TLS)")
    mqtt_client_id: str = setting("autocore-gateway", "MQTT client id of the persistent session")
    mqtt_session_expiry_s: int = setting(86400, "how long the broker keeps the gateway's session while it is away", _positive)
    mqtt_receive_maximum: int = setting(65535, "Receive Maximum: QoS 1/2 messages the broker may have in flight to us", _positive)
    mqtt_keepalive_s: int = setting(30, "MQTT keep-alive interval", _positive)
    mqtt_max_outgoing: int = setting(60000, "outgoing messages paho may hold before publishing is refused (<= 65535)", _positive)
    gateway_id: str = setting("autocore-gateway", "the gateway's id in payloads it sends")
    topic_prefix: str = setting("autocore", "topic prefix of the v1 protocol", _prefix)

    # Several instances (issue 13)
    instance_id: str = setting(socket.gethostname() or "gateway", "this instance's id among several (default: the host name)",
                               _instance_id)
    share_group: str = setting(
        "", "MQTT shared subscription group of several instances on one broker and one PostgreSQL (empty: one instance)",
        _share_group)
    lease_s: float = setting(10.0, "lease period of a device bucket (several instances): a dead instance's devices "
                                   "are taken over within it", _positive)
    lease_buckets: int = setting(256, "ownership buckets the devices are spread over (several instances; the same "
                                      "on every instance)", _positive)

    # Files
    db_url: str | None = setting(
        None, "database URL: sqlite:///FILE or postgresql://USER[:PASSWORD]@HOST:PORT/DB (wins over db_path)",
        _db_url)
    db_path: str = setting("var/autocore.db", "SQLite database file shared with the Config App (unless db_url)")
    db_synchronous: str = setting(
        "NORMAL", "SQLite synchronous pragma: NORMAL (commits are made durable by one fsync of the log for many "
                  "of them, see db_sync_ms) or FULL (an fsync inside every commit); both survive a power cut",
        _one_of("NORMAL", "FULL"))
    db_sync_ms: int = setting(
        60, "group commit: acknowledgements wait for one fsync of the write-ahead log, made at most this often "
            "(0: as soon as anything waits); a command to publish is synced at once", _non_negative)
    db_sync_max_mb: float = setting(
        16.0, "group commit: the next fsync comes early once the store has written this much since the last",
        _positive)
    db_unsafe_ack_before_sync: bool = setting(
        False, "UNSAFE on a power cut: acknowledge messages once committed, before they are synced to disk "
               "(survives a crashed process, loses the last acknowledged messages when the power goes)",
        unsafe=bool)
    db_busy_timeout_ms: int = setting(5000, "how long a write waits for another connection's lock", _positive)
    db_checkpoint_ms: int = setting(1000, "how often the write-ahead log is copied into the database", _positive)
    db_wal_max_mb: float = setting(64.0, "the write-ahead log is truncated once it grows past this", _positive)
    run_dir: str = setting("var/run", "directory of the control socket gateway.sock")
    config_app_register: bool = setting(
        True, "a device the Config App's devices table lacks gets a row there (where that table exists)")

    # Metrics
    metrics_port: int = setting(0, "port of the Prometheus metrics endpoint (0: off)", _port_or_off)
    metrics_host: str = setting("127.0.0.1", "address the metrics endpoint listens on (loopback by default)")

    # Logging
    log_level: str = setting("INFO", "log level", _one_of("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = setting("text", "log line format", _one_of("text", "json"))

    # Storage batching and bounds
    batch_rows: int = setting(2000, "telemetry rows per transaction at most", _positive)
    batch_max_age_ms: int = setting(50, "oldest buffered row waits at most this long before a flush", _positive)
    batch_min_interval_ms: int = setting(
        50, "an idle writer gets a batch smaller than batch_small_rows at most this often: a tiny commit "
            "writes almost as many pages as a big one (0: at once)", _non_negative)
    batch_small_rows: int = setting(
        64, "an idle writer gets a batch of at least this many rows at once, a smaller one waits for "
            "batch_min_interval_ms", _positive)
    max_unacked: int = setting(50000, "received QoS 1 messages not yet committed before reading pauses", _positive)

    # Protocol rules
    device_timeout_s: float = setting(15.0, "minimum silence before a device is offline", _positive)
    clock_skew_s: float = setting(300.0, "device times this far after received_at are replaced", _non_negative)
    max_payload: int = setting(65536, "largest accepted payload in bytes", _positive)
    device_rate: float = setting(200.0, "messages per second per device (token bucket rate)", _positive)
    device_burst: float = setting(10000.0, "token bucket size per device", _positive)
    heartbeat_s: float = setting(30.0, "seconds between gateway status publications", _positive)
    command_poll_ms: int = setting(100, "how often the commands table is checked for changes", _positive)
    command_ttl_s: float = setting(300.0, "default lifetime of a pending command", _positive)
    command_timeout_s: float = setting(5.0, "default time to wait for a command's response", _positive)
    command_max_attempts: int = setting(3, "default number of sends of a command", _positive)
    command_window: int = setting(1, "commands out and unanswered per device at once", _positive)
    max_device_actors: int = setting(10000, "device actors kept in memory; least recently seen offline ones stop first", _positive)
    fw22_periods: str = setting(
        "esp32_relay=30,display=5,esp32_display=5",
        "status period per firmware 2.2 device type (TYPE=SECONDS,...)",
        _periods_check,
    )
    fw22_heartbeat_ms: int = setting(250, "interval of the heartbeats that hold a 2.2 relay on", _positive)

    # CAN decoding (issue 15)
    can_keep_raw: bool = setting(
        True, "a decoded CAN frame keeps its can_raw row beside its signal rows (a frame nothing decodes always does)")
    can_dbc: str = setting(
        "", "DBC files whose signals decode CAN frames: FILE or DEVICE_TYPE=FILE, comma separated; "
            "a signal also in the Config App's can_signals takes the DBC's definition", _dbc_check)
    can_poll_ms: int = setting(
        1000, "how often CAN definitions are checked for changes (can_signals, DBC files)", _positive)
    store_gc_gen0: int = setting(
        20000, "the store process's first garbage collector threshold: allocations between two young "
               "collections (0: Python's default, 700). A batch's rows live until its commit; with the "
               "default every batch sets off several collections that walk them", _non_negative)

    # Retention
    retention_days: float = setting(30.0, "telemetry older than this is pruned (0 keeps everything)", _non_negative)
    db_max_mb: float = setting(0.0, "oldest telemetry is pruned while the database is larger (0: no limit)", _non_negative)
    retention_interval_s: float = setting(60.0, "seconds between two retention runs", _positive)
    db_reserve_mb: float = setting(
        64.0, "free space kept on the database's file system: below it the oldest telemetry is pruned so that "
              "the database stops growing, leaving room for the Config App (0: off)", _non_negative)

    # Fleet uplink (issue 14; PROTOCOL.md, "Fleet uplink")
    uplink_url: str | None = setting(
        None, "the fleet broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS); unset: no uplink", _uplink_url)
    uplink_username: str | None = setting(None, "fleet broker user name")
    uplink_password: str | None = setting(None, "fleet broker password", secret=True)
    uplink_tls_ca: str | None = setting(None, "CA certificate of the fleet broker (mqtts; default: the system's)")
    uplink_tls_cert: str | None = setting(None, "client certificate for the fleet broker")
    uplink_tls_key: str | None = setting(None, "client certificate key for the fleet broker")
    uplink_prefix: str = setting("fleet", "topic prefix on the fleet broker", _uplink_prefix)
    vehicle_id: str | None = setting(None, "this vehicle's id on the fleet broker (default: the gateway id)",
                                     _vehicle_id)
    uplink_rate: float = setting(2000.0, "backlog rows a second sent to the fleet broker (0: no limit)",
                                 _non_negative)
    uplink_bytes_rate: float = setting(0.0, "backlog bytes a second sent to the fleet broker (0: no limit)",
                                       _non_negative)
    uplink_batch_rows: int = setting(500, "rows per uplink message at most", _positive)
    uplink_window: int = setting(
        64, "uplink messages awaiting the fleet broker's PUBACK at most (and never more than its Receive Maximum)",
        _positive)
    uplink_poll_ms: int = setting(100, "how often the uplink looks for newly committed rows", _positive)
    uplink_keepalive_s: int = setting(30, "MQTT keep-alive towards the fleet broker", _positive)
    uplink_session_expiry_s: int = setting(
        7 * 86400, "how long the fleet broker keeps the uplink's session (commands queued) while it is away",
        _positive)
    uplink_reconnect_max_s: float = setting(60.0, "longest pause between two connection attempts", _positive)
    uplink_command_ttl_s: float = setting(
        3600.0, "expiry of a fleet command that names no ttl_s (it may wait for the link and the device)", _positive)

    @property
    def uplink_vehicle(self) -> str:
        return self.vehicle_id or self.gateway_id

    @property
    def fw22_period_map(self) -> dict[str, float]:
        return parse_periods(self.fw22_periods)

    @property
    def database(self) -> str:
        """Where the database is, as storage/ takes it: the URL if given,
        else the SQLite file."""
        return self.db_url or self.db_path

    @property
    def database_shown(self) -> str:
        """The database for messages: the URL without its password, or the file."""
        from storage.url import redact

        return redact(self.database)

    @property
    def can_dbc_files(self) -> list[tuple[str | None, str]]:
        return parse_dbc_files(self.can_dbc)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, "gateway.sock")


SETTING_FIELDS: tuple[dataclasses.Field, ...] = dataclasses.fields(Settings)
_BY_NAME = {f.name: f for f in SETTING_FIELDS}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, str) else f.type.__name__
    for candidate in (int, float, bool, str):
        if t.startswith(candidate.__name__):
            return candidate
    return str


def _convert(name: str, raw: Any, source: str) -> Any:
    f = _BY_NAME[name]
    typ = _base_type(f)
    label = f"{env_name(name)} ({source})"
    if raw is None or (isinstance(raw, str) and raw == "" and "None" in str(f.type)):
        return None
    try:
        if typ is bool:
            if isinstance(raw, bool):
                value: Any = raw
            elif str(raw).lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError
        elif typ is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw)
        elif typ is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        else:
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError
            value = str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{label}: expected {typ.__name__}, got {raw!r}") from None
    if name == "log_level":
        value = value.upper()
    if name == "db_synchronous":
        value = value.upper()
    check = f.metadata.get("check")
    if check is not None and value is not None:
        problem = check(value)
        if problem:
            # (a check that names the value already is not repeated)
            raise SettingsError(f"{label}: {problem}" + ("" if "got " in problem else f", got {raw!r}"))
    return value


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: Mapping[str, str]  # setting name -> default | file | environment | flag


def load_settings(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Defaults < TOML file < environment < flags; raise SettingsError on a bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {f.name: "default" for f in SETTING_FIELDS}

    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"--config: cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"--config: {config_file} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            name = key.lower().removeprefix("autocore_")
            if name not in _BY_NAME:
                raise SettingsError(f"{config_file}: unknown setting {key!r}")
            values[name] = _convert(name, raw, f"file {config_file}")
            sources[name] = "file"

    for f in SETTING_FIELDS:
        raw = environ.get(env_name(f.name))
        if raw is not None:
            values[f.name] = _convert(f.name, raw, "environment")
            sources[f.name] = "environment"

    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        if name not in _BY_NAME:
            raise SettingsError(f"{flag_name(name)}: unknown setting")
        values[name] = _convert(name, raw, "flag")
        sources[name] = "flag"

    settings = Settings(**values)
    if settings.mqtt_max_outgoing > 65535:
        raise SettingsError(f"{env_name('mqtt_max_outgoing')}: must be at most 65535 (paho's limit)")
    if settings.mqtt_receive_maximum > 65535:
        raise SettingsError(f"{env_name('mqtt_receive_maximum')}: must be at most 65535 (MQTT's limit)")
    return LoadedSettings(settings=settings, sources=sources)


def describe(loaded: LoadedSettings) -> list[tuple[str, str, str]]:
    """(variable, value, source) for every setting, secrets masked."""
    rows = []
    for f in SETTING_FIELDS:
        value = getattr(loaded.settings, f.name)
        shown = "***" if f.metadata.get("secret") and value else ("" if value is None else str(value))
        if f.name == "db_url" and value:
            from storage.url import redact

            shown = redact(value)
        rows.append((env_name(f.name), shown, loaded.sources[f.name]))
    return rows
