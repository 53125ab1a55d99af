"""The container's service graph, built on first use and reused across invocations."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from chalicelib.config import database_dsn, forget_database_credentials
from chalicelib.domain.services import Services, build_services

if TYPE_CHECKING:
    from chalicelib.db import Database


@lru_cache(maxsize=1)
def database() -> Database:
    # Imported here: psycopg2 (libpq, OpenSSL) loads with the container's first connection, not at import.
    from chalicelib.db import Database
    from chalicelib.repositories.errors import translate

    return Database(database_dsn, translate_error=translate, on_password_refused=forget_database_credentials)


@lru_cache(maxsize=1)
def services() -> Services:
    return build_services(database())
