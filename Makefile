# AutoCore Gateway. `make run` starts a local broker, the gateway and a small
# simulated fleet; `make test` installs what it needs and runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench bench-storage bench-config-app system-deps run-deps venv bytecode clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Mosquitto (broker for tests and `make run`), runit (supervision tests),
# PostgreSQL (the tests and bench-storage start throw-away clusters of it
# with initdb; the Debian package's own cluster is not used), nftables and
# iptables (the uplink's lossy-link test drops packets in a network namespace
# with nft and delays them with iptables' NFQUEUE: this kernel has no netem),
# fuse3 (the power-cut tests mount a file system that drops unsynced writes).
system-deps:
	@if [ ! -x /usr/sbin/mosquitto ] || ! command -v runsv >/dev/null 2>&1 || ! command -v mosquitto_pub >/dev/null 2>&1 \
		|| ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1 \
		|| ! command -v ip >/dev/null 2>&1 || ! command -v iptables >/dev/null 2>&1 \
		|| ! command -v fusermount3 >/dev/null 2>&1; then \
		echo "installing mosquitto, mosquitto-clients, runit, postgresql, nftables, iptables, iproute2 and fuse3 with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients runit postgresql nftables iptables iproute2 fuse3 >/dev/null; \
	fi

# Bytecode of the project's modules, written ahead: where PYTHONDONTWRITEBYTECODE
# is set (it is on the development machine) nothing writes it on import, and
# every process the suite and the benchmark start (about 350 gateways of three
# processes each) compiles every module again: a gateway started in 1.0 s
# without it, 0.6 s with it (measured). compileall writes only what is stale.
bytecode: $(STAMP)
	@$(PY) -m compileall -q -j 0 actors protocol storage gateway simulator bench tests >/dev/null

# The type check first (protocol/, storage/, actors/: setup.cfg [mypy]), then the suite.
test: system-deps $(STAMP) bytecode
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

# What the demo needs: Mosquitto alone (the tests' PostgreSQL, runit,
# netfilter and FUSE are not installed for it).
run-deps:
	@if [ ! -x /usr/sbin/mosquitto ]; then \
		echo "installing mosquitto with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	fi

run: run-deps $(STAMP) bytecode
	$(PY) -m simulator.demo

# The storage insert path (rows/s, SQLite and a throw-away PostgreSQL) and the
# protocol path (decode -> validate -> rows).
bench-storage: system-deps $(STAMP)
	$(PY) -m bench.storage
	$(PY) -m bench.protocol_bench

# The Config App's telemetry reads on a telemetry_data of 10 million rows.
bench-config-app: $(STAMP)
	$(PY) -m bench.config_app_queries $(if $(ROWS),--rows $(ROWS),)

bench: system-deps $(STAMP) bytecode
	$(PY) -m bench.run $(if $(QUICK),--quick,) $(if $(REPEAT),--repeat $(REPEAT),)

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .hypothesis .mypy_cache
