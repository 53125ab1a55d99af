"""A binary COPY from one PostgreSQL database straight into another, piped without a file.

The source side runs ``COPY (<query>) TO STDOUT (FORMAT binary)`` in a thread writing into an OS pipe;
the target side's ``COPY <table> FROM STDIN (FORMAT binary)`` reads the other end. This is the fastest
way to move rows between two databases with psycopg2 (no parsing, no client-side rows), and what the
refresh uses to load empty landing tables (see ``refresh.replicate``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

_PIPE_BUFFER = 1 << 20


def pipe_copy(source_conn: Any, source_query: str, target_conn: Any, target: str) -> int:
    """Copy the rows of ``source_query`` (run on ``source_conn``) into ``target`` (a table, optionally
    with a column list) on ``target_conn``; returns the rows written. Neither connection is committed.

    Binary COPY needs the same column types on both sides: the query casts to the target's types.
    Both strings are the caller's own SQL (identifiers from the catalogue), never user input."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=_PIPE_BUFFER)
    writer = os.fdopen(write_fd, "wb", buffering=_PIPE_BUFFER)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with source_conn.cursor() as cur:
                cur.copy_expert(f"COPY ({source_query}) TO STDOUT (FORMAT binary)", writer)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    thread = threading.Thread(target=produce, name="copy-out", daemon=True)
    thread.start()
    try:
        with target_conn.cursor() as cur:
            cur.copy_expert(f"COPY {target} FROM STDIN (FORMAT binary)", reader, size=_PIPE_BUFFER)
            rows = cur.rowcount
    except BaseException:
        reader.close()  # a failed COPY FROM leaves the producer with a broken pipe, not a hang
        thread.join()
        if errors:
            raise errors[0] from None
        raise
    reader.close()
    thread.join()
    if errors:
        raise errors[0]
    return rows
