"""Entry point of the two gateway processes (started by the launcher)."""

from __future__ import annotations

import json
import os
import sys

from actors.logs import setup_logging
from gateway.launcher import SETTINGS_ENV
from gateway.settings import Settings


def main(argv: list[str]) -> int:
    role, fd = argv[1], int(argv[2])
    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    setup_logging(settings.log_level, settings.log_format, role)
    if role == "core":
        from actors.core import run_core

        return run_core(settings, fd)
    if role == "store":
        from actors.store import run_store

        return run_store(settings, fd)
    print(f"unknown role {role!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
