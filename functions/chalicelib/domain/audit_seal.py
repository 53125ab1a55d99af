"""Verifying the sealed audit trail: pure logic, no I/O (the SQL is in repositories/audit_seal.py).

A seal (``medical_app.seal_audit_events()``, migration 0005) appends a block to ``medical_app.audit_seal``:

* the events it holds are those whose inserting transaction (``audit_event.inserted_xid``, set by a
  trigger) is visible in the block's MVCC snapshot and was not visible in the previous block's. Event ids
  are drawn at INSERT, not at COMMIT, so ids are not commit order; snapshots are. A transaction still
  running at a seal is invisible to it and is taken by the first seal after it commits.
* each event's hash is ``sha256(canonical form)``: the tag ``audit_event:v1|`` then every column of
  :data:`EVENT_COLUMNS`, as PostgreSQL renders it as text (time zone UTC, DateStyle ISO), encoded by
  :func:`field` (NULL is ``-``, a value is ``<UTF-8 byte length>:<value>``).
* ``digest = sha256(previous digest || canonical block header || event hashes in id order)``; block 1
  chains from 32 zero bytes.

The :class:`Verifier` is fed every event in id order, as its columns' built-in text renderings, and
recomputes every hash and digest itself: nothing the schema owner could define or replace takes part. It
names what it finds: an event whose content changed (altered), an event a block sealed that is gone
(deleted), an event that is not where the seals say it should be (inserted), and a seal table that
disagrees with itself or with an anchor kept outside the database.

Telling a late commit from a forgery: a transaction's id is assigned (by a statement-level trigger) before
it draws its event ids, and ids are drawn in time order. So if a block sealed an event id greater than
``i``, the transaction holding event ``i`` had its id before that seal took its snapshot, and so before the
sealer's own transaction id (``sealer_xid``). An event not sealed by then whose transaction id is not older
than that was inserted afterwards into a range already sealed: a forgery.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

# The sealed columns, in canonical order. A column added to audit_event must be added here and to the
# sealing function (a new version tag), else it is not covered by the seal (verification warns).
EVENT_COLUMNS = (
    "audit_event_id", "occurred_at", "actor", "actor_kind", "action", "resource_type", "resource_id",
    "patient_ids", "request_id", "outcome", "source_ip", "user_agent", "reason", "break_glass", "db_user",
    "inserted_xid",
)
EVENT_TAG = b"audit_event:v1|"
HEADER_TAG = b"audit_seal:v1|"
GENESIS = bytes(32)
HASH_SIZE = 32

ALTERED, DELETED, INSERTED, SEAL = "altered", "deleted", "inserted", "seal"


def field(value: str | None) -> bytes:
    """One field of a canonical form, as ``medical_app.audit_seal_field`` builds it."""
    if value is None:
        return b"-"
    data = value.encode()
    return b"%d:%s" % (len(data), data)


def event_hash(values: Sequence[str | None]) -> bytes:
    """The hash of one event from its :data:`EVENT_COLUMNS` rendered as text: :func:`field` of each, inlined
    (this runs once per event of the trail; ASCII text is as long in UTF-8 bytes as in characters)."""
    canonical = "".join(["-" if v is None else f"{len(v) if v.isascii() else len(v.encode())}:{v}" for v in values])
    return hashlib.sha256(EVENT_TAG + canonical.encode()).digest()


@dataclass(frozen=True)
class Snapshot:
    """A ``pg_snapshot``: transactions below xmin are finished, from xmax on not yet, xip are running."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def visible(self, xid: int) -> bool:
        """Whether a transaction that committed is seen as committed by this snapshot (pg_visible_in_snapshot)."""
        if xid < self.xmin:
            return True
        return xid < self.xmax and xid not in self.xip


@dataclass
class Block:
    """One row of ``medical_app.audit_seal``, with its header columns as PostgreSQL renders them as text."""

    block_no: int
    sealed_at: str
    sealed_by: str
    snapshot_text: str
    sealer_xid: int
    event_count: int
    first_event_id: int
    last_event_id: int
    event_ids: list[int]
    event_hashes: bytes
    prev_digest: bytes
    digest: bytes
    snapshot: Snapshot = dataclass_field(init=False)

    def __post_init__(self) -> None:
        self.snapshot = Snapshot.parse(self.snapshot_text)

    def header(self) -> bytes:
        values = (str(self.block_no), self.sealed_at, self.sealed_by, self.snapshot_text, str(self.sealer_xid),
                  str(self.event_count))
        return HEADER_TAG + b"".join(map(field, values))

    def stored_hash(self, position: int) -> bytes:
        return self.event_hashes[position * HASH_SIZE:(position + 1) * HASH_SIZE]


@dataclass(frozen=True)
class Finding:
    kind: str  # altered | deleted | inserted | seal
    message: str
    event_id: int | None = None
    block_no: int | None = None


@dataclass
class Report:
    events: int = 0
    blocks: int = 0
    pending: int = 0  # committed since the last seal: the next seal takes them
    head_block: int | None = None
    head_digest: bytes | None = None
    findings: list[Finding] = dataclass_field(default_factory=list)  # the first ``keep`` of them
    finding_count: int = 0
    keep: int = 1000
    warnings: list[str] = dataclass_field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.finding_count += 1
        if len(self.findings) < self.keep:
            self.findings.append(finding)

    @property
    def intact(self) -> bool:
        return not self.finding_count

    @property
    def first(self) -> Finding | None:
        """The first finding: the lowest event id named (events are checked in id order), else the first one."""
        named = (f for f in self.findings if f.event_id is not None)
        return next(named, self.findings[0] if self.findings else None)


def parse_anchor(text: str) -> tuple[int, str]:
    """``BLOCK:HEXDIGEST`` (a prefix of at least 16 hex digits), as the sealing function logs them."""
    block, sep, digest = text.partition(":")
    digest = digest.strip().lower()
    if not sep or not block.strip().isdigit() or len(digest) < 16 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"an anchor is BLOCK:HEXDIGEST (at least 16 hex digits), not {text!r}")
    return int(block), digest


class Verifier:
    """Feed every event in ascending id order (:meth:`feed`), then :meth:`finish`."""

    def __init__(self, blocks: Sequence[Block], current: Snapshot, anchors: Iterable[tuple[int, str]] = ()) -> None:
        self.blocks = list(blocks)
        self.current = current
        self.report = Report(blocks=len(self.blocks))
        if self.blocks:
            self.report.head_block = self.blocks[-1].block_no
            self.report.head_digest = self.blocks[-1].digest
        self._check_structure(anchors)
        # Block lookup: first block whose snapshot sees a transaction (bisect on xmax, then skip running ones).
        self._xmaxes = [b.snapshot.xmax for b in self.blocks]
        # The greatest event id sealed by each block or an earlier one.
        self._max_sealed: list[int] = []
        for block in self.blocks:
            self._max_sealed.append(max(block.last_event_id, self._max_sealed[-1] if self._max_sealed else 0))
        self._hashers = [hashlib.sha256(b.prev_digest + b.header()) for b in self.blocks]
        self._event_findings = [0] * len(self.blocks)
        self._last_id = -(2**63)
        # What the seals say, as (event id, block index, position) in event id order, merged with the events.
        self._stored = _Peekable(heapq.merge(*(_sealed_ids(index, block) for index, block in enumerate(self.blocks))))

    # -- the seal table on its own --------------------------------------------------------------------

    def _seal(self, message: str, block_no: int | None = None) -> None:
        self.report.add(Finding(SEAL, message, block_no=block_no))

    def _check_structure(self, anchors: Iterable[tuple[int, str]]) -> None:
        previous: Block | None = None
        for expected_no, block in enumerate(self.blocks, start=1):
            n = block.block_no
            if n != expected_no:
                self._seal(f"seal block {expected_no} is missing (found block {n} in its place)", n)
            prev_digest = previous.digest if previous else GENESIS
            if block.prev_digest != prev_digest:
                self._seal(f"seal block {n} does not chain to the block before it (previous digest differs)", n)
            ids = block.event_ids
            if (len(ids) != block.event_count or len(block.event_hashes) != HASH_SIZE * block.event_count
                    or not ids or ids[0] != block.first_event_id or ids[-1] != block.last_event_id
                    or any(a >= b for a, b in itertools.pairwise(ids))):
                self._seal(f"seal block {n} is malformed (event list, count or bounds disagree)", n)
                ids.sort()
            own = hashlib.sha256(block.prev_digest + block.header() + block.event_hashes).digest()
            if own != block.digest:
                self._seal(f"seal block {n} was altered: its digest does not match its own contents", n)
            earlier = previous.snapshot if previous else None
            if earlier and (block.snapshot.xmin < earlier.xmin or block.snapshot.xmax < earlier.xmax
                            or block.sealer_xid <= previous.sealer_xid):
                self._seal(f"seal block {n} was altered: its snapshot precedes block {previous.block_no}'s", n)
            previous = block
        by_no = {b.block_no: b for b in self.blocks}
        for block_no, digest in anchors:
            block = by_no.get(block_no)
            if block is None:
                self._seal(f"anchored seal block {block_no} is missing", block_no)
            elif not block.digest.hex().startswith(digest):
                self._seal(f"seal block {block_no} differs from its anchor {digest[:16]}…", block_no)

    # -- the events -----------------------------------------------------------------------------------

    def _block_of(self, xid: int) -> int | None:
        """Index of the first block whose snapshot sees transaction ``xid``; None: not sealed yet."""
        index = bisect.bisect_right(self._xmaxes, xid)
        while index < len(self.blocks):
            if self.blocks[index].snapshot.visible(xid):
                return index
            index += 1
        return None

    def _event(self, kind: str, event_id: int, message: str, index: int | None) -> None:
        block_no = self.blocks[index].block_no if index is not None else None
        self.report.add(Finding(kind, message, event_id=event_id, block_no=block_no))
        if index is not None:
            self._event_findings[index] += 1

    def _deleted(self, event_id: int, index: int) -> None:
        self._event(DELETED, event_id, f"event {event_id} was deleted (sealed in block "
                                       f"{self.blocks[index].block_no}, no longer in the trail)", index)

    def feed(self, values: Sequence[str | None]) -> None:
        """One event: its :data:`EVENT_COLUMNS` as text, in ascending id order."""
        event_id, xid = int(values[0]), int(values[-1])
        if event_id <= self._last_id:
            raise ValueError(f"events must come in ascending id order ({event_id} after {self._last_id})")
        self._last_id = event_id
        self.report.events += 1
        stored = self._stored
        while stored.peek is not None and stored.peek[0] < event_id:
            missing, index, _ = stored.next()
            self._deleted(missing, index)
        claims = []
        while stored.peek is not None and stored.peek[0] == event_id:
            claims.append(stored.next())
        digest = event_hash(values)
        home = self._block_of(xid)
        sealed_in = home
        if claims:
            _, index, position = claims[0]
            sealed_in = index
            self._hashers[index].update(digest)
            for _, other, _ in claims[1:]:
                self._seal(f"event {event_id} is sealed twice (blocks {self.blocks[index].block_no} and "
                           f"{self.blocks[other].block_no})", self.blocks[other].block_no)
            if digest != self.blocks[index].stored_hash(position):
                self._event(ALTERED, event_id, f"event {event_id} was altered (its content differs from what block "
                                               f"{self.blocks[index].block_no} sealed)", index)
            elif home != index:
                where = f"block {self.blocks[home].block_no}" if home is not None else "no sealed block"
                self._event(ALTERED, event_id, f"event {event_id} was altered (sealed in block "
                                               f"{self.blocks[index].block_no}, its transaction now places it in "
                                               f"{where})", index)
        elif home is not None:
            self._event(INSERTED, event_id, f"event {event_id} was inserted (its transaction falls in block "
                                            f"{self.blocks[home].block_no}, which did not seal it)", home)
        elif not self.current.visible(xid):
            self._event(INSERTED, event_id, f"event {event_id} was inserted (it names transaction {xid}, which "
                                            "had not committed)", None)
        else:
            self.report.pending += 1
        self._check_order(event_id, xid, sealed_in)

    def _check_order(self, event_id: int, xid: int, sealed_in: int | None) -> None:
        """An event sealed after a block that sealed a greater id must come from a transaction older than that seal."""
        first = bisect.bisect_right(self._max_sealed, event_id)
        if first >= len(self.blocks) or (sealed_in is not None and sealed_in <= first):
            return
        block = self.blocks[first]
        if xid >= block.sealer_xid:
            self._event(INSERTED, event_id, f"event {event_id} was inserted (block {block.block_no} had sealed later "
                                            f"events before its transaction began)", sealed_in)

    def finish(self) -> Report:
        stored = self._stored
        while stored.peek is not None:
            missing, index, _ = stored.next()
            self._deleted(missing, index)
        for index, block in enumerate(self.blocks):
            if self._hashers[index].digest() != block.digest and not self._event_findings[index]:
                self._seal(f"seal block {block.block_no}: its digest does not match the events it holds",
                           block.block_no)
        return self.report


def _sealed_ids(index: int, block: Block) -> Iterator[tuple[int, int, int]]:
    for position, event_id in enumerate(block.event_ids):
        yield event_id, index, position


class _Peekable:
    def __init__(self, iterator: Iterator[tuple[int, int, int]]) -> None:
        self._iterator = iterator
        self.peek = next(self._iterator, None)

    def next(self) -> tuple[int, int, int]:
        item, self.peek = self.peek, next(self._iterator, None)
        return item
