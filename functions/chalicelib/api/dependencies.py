"""The container's service graph, built on first use and reused across invocations."""

from __future__ import annotations

from functools import lru_cache

from chalicelib.config import database_dsn
from chalicelib.db import Database
from chalicelib.domain.services import Services, build_services
from chalicelib.repositories.errors import translate


@lru_cache(maxsize=1)
def database() -> Database:
    return Database(database_dsn, translate_error=translate)


@lru_cache(maxsize=1)
def services() -> Services:
    return build_services(database())
