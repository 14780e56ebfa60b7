"""Where the database is: a SQLite file or a PostgreSQL server.

A location is either a peewee `playhouse.db_url` style URL
(`sqlite:///var/autocore.db`, `postgresql://user@host:5432/autocore`) or a
plain file path, which means SQLite (`AUTOCORE_DB_PATH`). Parsing is pure:
nothing here imports a driver, so a bad URL is refused before anything
connects, and the CLI can show the backend without opening it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# URL schemes and the engine each means. `psycopg3` is playhouse.db_url's
# name for the driver this project uses on PostgreSQL.
_SCHEMES = {"sqlite": SQLITE, "postgresql": POSTGRESQL, "postgres": POSTGRESQL, "psycopg3": POSTGRESQL}

USAGE = "use sqlite:///FILE or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"


@dataclass(frozen=True)
class DatabaseTarget:
    engine: str  # SQLITE or POSTGRESQL
    path: str | None = None  # the SQLite file (or ":memory:")
    database: str | None = None  # the PostgreSQL database name
    params: Mapping[str, Any] = field(default_factory=dict)  # PostgreSQL connection parameters
    display: str = ""  # the location without its password, for logs and `gateway config show`

    @property
    def file(self) -> str:
        """The SQLite file; ValueError for a PostgreSQL target."""
        if self.path is None:
            raise ValueError(f"{self.display} is not a SQLite file")
        return self.path


def parse_location(location: str) -> DatabaseTarget:
    """The target of a URL or a plain SQLite path; ValueError (a message a
    person can act on) for anything else."""
    if not isinstance(location, str) or not location.strip():
        raise ValueError(f"no database given; {USAGE}")
    if "://" not in location:
        return DatabaseTarget(SQLITE, path=location, display=location)
    parts = urlsplit(location)
    engine = _SCHEMES.get(parts.scheme.lower())
    if engine is None:
        raise ValueError(f"unsupported database URL scheme {parts.scheme!r}; {USAGE}")
    if engine == SQLITE:
        # playhouse.db_url: sqlite:///relative/path, sqlite:////absolute/path
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        if parts.netloc:
            raise ValueError(f"a sqlite URL has no host (sqlite:///FILE), got {location!r}")
        return DatabaseTarget(SQLITE, path=path or ":memory:", display=f"sqlite:///{path}")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError(f"the PostgreSQL URL names no database; {USAGE}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the PostgreSQL URL has a bad port; {USAGE}") from None
    params: dict[str, Any] = {}
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    if parts.hostname:
        params["host"] = parts.hostname
    if port:
        params["port"] = port
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        params[key] = value  # libpq keywords (sslmode, connect_timeout, host=/socket/dir, ...)
    return DatabaseTarget(POSTGRESQL, database=name, params=params, display=redact(location))


def redact(location: str) -> str:
    """The location with any password replaced by ***."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    if not parts.password:
        return location
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
