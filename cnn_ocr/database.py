"""Where a shared store lives: a SQLite file path (the embedded default) or a PostgreSQL URL.

`postgresql://` and `postgres://` URLs are driven by psycopg 3 (`postgresql+psycopg://`), the one PostgreSQL
driver the project installs; SQLAlchemy's default for a bare `postgresql://` would be psycopg2.
"""

from __future__ import annotations

from pathlib import Path

_PG_PREFIXES = ("postgresql://", "postgres://")


def is_url(target: str | Path) -> bool:
    """True for a database URL (`scheme://...`), False for a file path."""
    return isinstance(target, str) and "://" in target


def sqlalchemy_url(target: str | Path) -> str:
    """A SQLAlchemy URL for a file path (SQLite) or a database URL (PostgreSQL gets the psycopg 3 driver)."""
    if not is_url(target):
        return f"sqlite:///{Path(target)}"
    text = str(target)
    for prefix in _PG_PREFIXES:
        if text.startswith(prefix):
            return "postgresql+psycopg://" + text.removeprefix(prefix)
    return text


def redact(target: str | Path) -> str:
    """The path, or the URL without its password (safe to log and show)."""
    if not is_url(target):
        return str(target)
    scheme, _, rest = str(target).partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return str(target)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
