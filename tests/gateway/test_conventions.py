"""What every command shares: help with an example, exit codes, settings
errors as one line, `config show`, shell completion."""

from __future__ import annotations

import json

import click
import pytest

from gateway.cli import main


def all_commands(group: click.Group = main, path: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the public API: `main` imports its commands when asked
        cmd = group.get_command(ctx, name)
        if name == "simulate":  # another engineer's command
            continue
        yield path + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, path + (name,))


COMMANDS = [p for p, _ in all_commands()]


def test_the_cli_surface():
    assert set(COMMANDS) >= {
        ("inspect",), ("inspect", "actors"), ("inspect", "devices"), ("inspect", "device"), ("inspect", "commands"),
        ("inspect", "stats"), ("devices",), ("command",), ("command", "send"), ("command", "list"),
        ("command", "cancel"), ("telemetry",), ("db",), ("db", "migrate"), ("db", "prune"), ("config",),
        ("config", "show"), ("run",),
    }


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cli, path):
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout
    assert "gateway " + path[0] in result.stdout.split("Example", 1)[1]


@pytest.mark.parametrize("path", [p for p, c in all_commands() if not isinstance(c, click.Group)], ids=" ".join)
def test_an_unknown_option_is_a_usage_error(cli, path):
    result = cli(*path, "--no-such-option")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_unknown_command_is_a_usage_error(cli):
    assert cli("frobnicate").exit_code == 2
    assert cli("inspect", "everything").exit_code == 2


@pytest.mark.parametrize("args, env, expected", [
    ([], {"AUTOCORE_MQTT_PORT": "abc"}, "error: AUTOCORE_MQTT_PORT (environment): expected int, got 'abc'"),
    (["--mqtt-port", "70000"], {}, "error: AUTOCORE_MQTT_PORT (flag): must be a port number between 1 and 65535, got '70000'"),
    ([], {"AUTOCORE_LOG_FORMAT": "xml"}, "error: AUTOCORE_LOG_FORMAT (environment): must be one of text, json, got 'xml'"),
])
def test_a_bad_setting_anywhere_is_one_line_and_exit_2(cli, args, env, expected):
    for command in (["config", "show"], ["devices"], ["inspect", "stats"]):
        result = cli(*command, *args, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.splitlines() == [expected]
        assert result.stdout == ""


def test_a_bad_setting_in_the_file_names_the_file(cli, tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text('retention_days = -1\n')
    result = cli("config", "show", "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: AUTOCORE_RETENTION_DAYS (file {config}): must be 0 or greater, got -1"]
    config.write_text('mqtt_prot = 1\n')
    result = cli("config", "show", "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {config}: unknown setting 'mqtt_prot'"]


def test_config_show_names_the_source_of_every_value(cli, tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text('AUTOCORE_MQTT_HOST = "broker.local"\nmqtt_port = 1884\nmqtt_password = "s3cret"\n')
    result = cli("config", "show", "--config", str(config), "--mqtt-port", "1885",
                 env={"AUTOCORE_BATCH_ROWS": "500", "AUTOCORE_MQTT_PROT": "1"})
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == f"config file: {config}" and out[1].startswith("database: sqlite ")
    lines = {line.split()[0]: line.split() for line in out[out.index("") + 2:]}
    assert lines["AUTOCORE_MQTT_HOST"][1:] == ["broker.local", "file", str(config)]
    assert lines["AUTOCORE_MQTT_PORT"][1:] == ["1885", "flag"]
    assert lines["AUTOCORE_BATCH_ROWS"][1:] == ["500", "environment"]
    assert lines["AUTOCORE_MQTT_PASSWORD"][1:] == ["***", "file", str(config)]
    assert lines["AUTOCORE_GATEWAY_ID"][1:] == ["autocore-gateway", "default"]
    assert "s3cret" not in result.output
    assert result.stderr.splitlines() == ["warning: AUTOCORE_MQTT_PROT is set but is no setting (ignored)"]
    doc = json.loads(cli("config", "show", "--json", "--config", str(config)).stdout)
    by_name = {s["name"]: s for s in doc["settings"]}
    assert doc["config_file"] == str(config)
    assert by_name["mqtt_port"] == {"name": "mqtt_port", "variable": "AUTOCORE_MQTT_PORT", "flag": "--mqtt-port",
                                    "value": 1884, "default": 1883, "source": "file", "unsafe": False}
    assert by_name["mqtt_password"]["value"] == "***"
    assert by_name["mqtt_username"]["value"] is None


def test_config_show_names_the_backend_and_hides_the_url_password(cli):
    url = "postgresql://gw:s3cret@db.depot:5432/autocore"
    result = cli("config", "show", env={"AUTOCORE_DB_URL": url, "AUTOCORE_DB_PATH": "/data/x.db"})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "database: postgresql postgresql://gw:***@db.depot:5432/autocore"
    assert "s3cret" not in result.output
    doc = json.loads(cli("config", "show", "--json", env={"AUTOCORE_DB_URL": url}).stdout)
    assert doc["backend"] == {"engine": "postgresql", "location": "postgresql://gw:***@db.depot:5432/autocore"}
    assert {s["name"]: s for s in doc["settings"]}["db_url"]["value"] == "postgresql://gw:***@db.depot:5432/autocore"
    bad = cli("config", "show", env={"AUTOCORE_DB_URL": "mysql://db/autocore"})
    assert bad.exit_code == 2
    assert bad.stderr.strip().startswith("error: AUTOCORE_DB_URL (environment): unsupported database URL scheme 'mysql'")


def test_every_setting_flag_works_on_every_command_but_help_stays_short(cli):
    result = cli("devices", "--help")
    assert "--db-path" in result.stdout and "--mqtt-port" not in result.stdout
    assert "Every setting of `gateway run` is also accepted" in result.stdout
    other = cli("devices", "--db-path", str(cli.db_path.parent / "other.db"))
    assert other.exit_code == 1 and "other.db" in other.stderr
    assert "--mqtt-port" in cli("run", "--help").stdout


def complete(cli, words: str, env: dict | None = None) -> list[str]:
    result = cli(env={"_GATEWAY_COMPLETE": "bash_complete", "COMP_WORDS": words,
                      "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)), **(env or {})})
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_shell_completion(filled_db):
    assert "inspect" in complete(filled_db, "gateway ins")
    assert complete(filled_db, "gateway inspect dev") == ["device", "devices"]
    assert complete(filled_db, "gateway devices --status o") == ["online", "offline"]
    # device ids from the database
    assert complete(filled_db, "gateway inspect device re") == ["relay-01"]
    assert complete(filled_db, "gateway telemetry ") == ["display-01", "relay-01"]
    # ids of unfinished commands
    assert complete(filled_db, "gateway command cancel ") == ["1"]


def test_unknown_environment_names_only_misspelt_settings():
    from gateway.commands.config import unknown_environment

    assert unknown_environment({"AUTOCORE_MQTT_PROT": "1", "AUTOCORE_MQTT_PORT": "1", "AUTOCORE__RESOLVED_SETTINGS": "{}",
                                "AUTOCORE_DEMO_PORT": "1", "AUTOCORE_SIM_USERNAME": "x", "AUTOCORE_TEST_ECHO": "1",
                                "HOME": "/root"}) == ["AUTOCORE_MQTT_PROT"]


def test_config_show_flags_a_setting_that_trades_durability_away(cli):
    safe = cli("config", "show", "--json")
    assert not [s for s in json.loads(safe.stdout)["settings"] if s["unsafe"]]
    result = cli("config", "show", env={"AUTOCORE_DB_UNSAFE_ACK_BEFORE_SYNC": "1"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("AUTOCORE_DB_UNSAFE_ACK_BEFORE_SYNC"))
    assert line.split()[1:] == ["True", "UNSAFE", "environment"]
    assert result.stderr.splitlines() == [
        "warning: AUTOCORE_DB_UNSAFE_ACK_BEFORE_SYNC=True trades durability away: a power cut loses messages "
        "the gateway acknowledged"]
    doc = json.loads(cli("config", "show", "--json", env={"AUTOCORE_DB_UNSAFE_ACK_BEFORE_SYNC": "1"}).stdout)
    assert [s["name"] for s in doc["settings"] if s["unsafe"]] == ["db_unsafe_ack_before_sync"]


def test_version_names_the_installed_release(cli):
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"gateway {version('autocore-gateway')}\n"


def test_a_run_directory_that_cannot_be_made_is_one_line_and_exit_2(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("run", env={"AUTOCORE_RUN_DIR": str(blocker / "run")})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: AUTOCORE_RUN_DIR={blocker / 'run'} cannot be created: Not a directory"]
    assert not cli.db_path.exists()  # refused before anything started


def test_a_db_url_that_is_no_url_is_refused_not_taken_for_a_file(cli):
    result = cli("config", "show", env={"AUTOCORE_DB_URL": "garbage"})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: AUTOCORE_DB_URL (environment): must be a URL, sqlite:///FILE or "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (a plain file path goes in AUTOCORE_DB_PATH), got 'garbage'"]


def test_an_error_names_the_bad_value_once(cli):
    result = cli("config", "show", env={"AUTOCORE_DB_URL": "sqlite://host/x"})
    assert result.exit_code == 2
    assert result.stderr.count("sqlite://host/x") == 1, result.stderr


def test_bin_gateway_under_a_python_without_its_packages_says_so_in_one_line():
    import subprocess
    import sys

    from tests.support.gateway import ROOT

    # -S: no site-packages, as a system Python without the venv's packages.
    done = subprocess.run([sys.executable, "-S", str(ROOT / "bin" / "gateway"), "--version"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "lacks the gateway's package" in lines[0], done.stderr


def test_autocore_config_names_the_settings_file_for_every_command(cli, tmp_path):
    """The service's file, set once for a shell session: `inspect` and the
    others then see what the service runs with. A --config flag wins."""
    config = tmp_path / "gateway.toml"
    config.write_text("mqtt_port = 1999\n")
    result = cli("config", "show", "--json", env={"AUTOCORE_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["config_file"] == str(config)
    assert {s["name"]: s for s in doc["settings"]}["mqtt_port"]["value"] == 1999
    assert result.stderr == ""  # AUTOCORE_CONFIG is no misspelt setting
    other = tmp_path / "other.toml"
    other.write_text("mqtt_port = 2001\n")
    flag = json.loads(cli("config", "show", "--json", "--config", str(other),
                          env={"AUTOCORE_CONFIG": str(config)}).stdout)
    assert {s["name"]: s for s in flag["settings"]}["mqtt_port"]["value"] == 2001


def test_config_sample_is_a_commented_toml_of_every_setting_at_its_default(cli, tmp_path):
    import tomllib

    from gateway.settings import SETTING_FIELDS, Settings, load_settings

    result = cli("config", "sample")
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout) == {}  # everything commented: it changes nothing as it is
    for f in SETTING_FIELDS:
        assert f"# {f.name} = " in result.stdout, f.name
    # Uncommented, every line with a default gives exactly the defaults.
    lines = [line[2:] for line in result.stdout.splitlines()
             if line.startswith("# ") and " = " in line and "(no default)" not in line
             and line[2:].split(" = ")[0] in {f.name for f in SETTING_FIELDS}]
    config = tmp_path / "all.toml"
    config.write_text("\n".join(lines) + "\n")
    assert load_settings(str(config), environ={}).settings == Settings()


def test_config_check_passes_where_everything_is_there(cli, broker):
    result = cli("config", "check", env={"AUTOCORE_MQTT_PORT": str(broker.port)})
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert f"ok: broker 127.0.0.1:{broker.port} reachable" in result.stdout.splitlines()
    assert not cli.db_path.exists()  # a dry run: nothing made


def test_config_check_says_each_problem_in_one_line_and_exits_2(cli, tmp_path):
    from tests.support.broker import free_port

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    port = free_port()  # nothing listens there
    result = cli("config", "check", "--json", env={
        "AUTOCORE_MQTT_PORT": str(port), "AUTOCORE_RUN_DIR": str(blocker / "run"),
        "AUTOCORE_DB_PATH": str(blocker / "db" / "autocore.db"),
        "AUTOCORE_MQTT_TLS_CA": str(tmp_path / "missing-ca.pem")})
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert len(problems) == 4, problems
    assert any(p.startswith("the database's directory") and "not a directory" in p for p in problems)
    assert any(p.startswith("the run directory (AUTOCORE_RUN_DIR)") for p in problems)
    assert f"AUTOCORE_MQTT_TLS_CA: {tmp_path / 'missing-ca.pem'} cannot be read" in problems
    assert any(p.startswith(f"the broker at 127.0.0.1:{port} cannot be reached") for p in problems)
