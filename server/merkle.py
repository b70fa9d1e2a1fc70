"""The Merkle tree over the audit events (RFC 9162), answered from the database.

Leaf ``i`` is the event with ``seq = i + 1``; its leaf data is the event's stored
canonical bytes. Hashes of perfect, aligned subtrees of :data:`BLOCK` leaves and more are
kept in ``merkle_node`` (node ``(level, idx)`` covers leaves ``[idx * 2**level, (idx + 1)
* 2**level)``), so a root or a proof costs O(log n) reads: stored nodes for the large
pieces and one range of at most :data:`BLOCK` events for the rest. The nodes are derived
data, written by :func:`extend` from events that never change, so two processes
extending at once write the same rows and an insert that finds its row already there
is skipped, not an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from core import merkle as rfc9162
from core import schemas
from core.errors import Invalid
from core.merkle import leaf_hash, node_hash, split_point
from server.db import Database
from server.models import MerkleNode

__all__ = [
    "BLOCK",
    "BLOCK_LEVEL",
    "consistency",
    "consistency_proof",
    "extend",
    "extend_database",
    "inclusion",
    "inclusion_proof",
    "missing_nodes",
    "root",
    "size",
    "store",
    "subtree",
]

BLOCK_LEVEL = 8
BLOCK = 1 << BLOCK_LEVEL
# How many blocks' events one batch reads (and so how many canonical texts it holds).
_BATCH_BLOCKS = 16
# How many stored nodes one batch of the upper levels reads.
_BATCH_NODES = 4096

# The events are only read here, by sequence number: a read-only view of the two columns
# the tree needs (rows are written by server.audit alone, see tests/test_architecture.py).
_events = sa.table("audit_event", sa.column("seq"), sa.column("canonical"))
_nodes = MerkleNode.__table__

Node = tuple[int, int, bytes]  # (level, idx, hash)


def size(session: Session) -> int:
    """How many leaves the tree has: the events this transaction sees.

    Not the head row: a writing transaction moves that only as it commits, and the
    events it appended belong in the tree it signs. Appends are serialised, so what any
    transaction sees is always a prefix of the chain.
    """
    top = session.execute(sa.select(sa.func.max(_events.c.seq))).scalar_one()
    return top or 0


def _leaf_hashes(session: Session, start: int, end: int) -> list[bytes]:
    """Leaf hashes of leaves ``[start, end)`` (events ``start + 1 .. end``), one query."""
    rows = session.execute(
        sa.select(_events.c.canonical)
        .where(_events.c.seq > start, _events.c.seq <= end)
        .order_by(_events.c.seq)
    ).all()
    if len(rows) != end - start:
        raise Invalid(f"the audit trail does not hold events {start + 1} to {end}")
    return [leaf_hash(bytes(data)) for (data,) in rows]


def _stored_count(session: Session, level: int) -> int:
    """How many nodes of ``level`` are stored (they are always a prefix: 0, 1, 2 ...)."""
    top = session.execute(sa.select(sa.func.max(_nodes.c.idx)).where(_nodes.c.level == level))
    found = top.scalar_one()
    return 0 if found is None else found + 1


def _missing_blocks(session: Session, leaves: int, budget: int) -> list[Node]:
    """Level-8 nodes not stored yet, hashed from their events (at most ``budget``)."""
    first = _stored_count(session, BLOCK_LEVEL)
    last = min(leaves // BLOCK, first + budget)
    made: list[Node] = []
    for batch in range(first, last, _BATCH_BLOCKS):
        upto = min(batch + _BATCH_BLOCKS, last)
        hashes = _leaf_hashes(session, batch * BLOCK, upto * BLOCK)
        for block in range(batch, upto):
            offset = (block - batch) * BLOCK
            made.append((BLOCK_LEVEL, block, _perfect_root(hashes[offset : offset + BLOCK])))
    return made


def _perfect_root(hashes: list[bytes]) -> bytes:
    level = hashes
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _missing_parents(session: Session, leaves: int, level: int, fresh: list[Node]) -> list[Node]:
    """Nodes of ``level`` whose two children are known (stored or just made) but that are not."""
    first = _stored_count(session, level)
    last = leaves >> level
    if first >= last:
        return []
    children = {idx: value for lvl, idx, value in fresh if lvl == level - 1}
    made: list[Node] = []
    for batch in range(first, last, _BATCH_NODES // 2):
        upto = min(batch + _BATCH_NODES // 2, last)
        wanted = range(2 * batch, 2 * upto)
        known = {idx: children[idx] for idx in wanted if idx in children}
        if len(known) < len(wanted):
            rows = session.execute(
                sa.select(_nodes.c.idx, _nodes.c.hash).where(
                    _nodes.c.level == level - 1,
                    _nodes.c.idx >= 2 * batch,
                    _nodes.c.idx < 2 * upto,
                )
            )
            known.update((idx, bytes(value)) for idx, value in rows)
        for idx in range(batch, upto):
            left, right = known.get(2 * idx), known.get(2 * idx + 1)
            if left is None or right is None:
                return made  # the children are not there yet: a later pass makes it
            made.append((level, idx, node_hash(left, right)))
    return made


def missing_nodes(session: Session, *, blocks: int = 4 * _BATCH_BLOCKS) -> list[Node]:
    """Up to ``blocks`` new level-8 nodes and every upper node they (or stored ones) complete."""
    leaves = size(session)
    made = _missing_blocks(session, leaves, blocks)
    level = BLOCK_LEVEL + 1
    while leaves >> level:
        made += _missing_parents(session, leaves, level, made)
        level += 1
    return made


def store(session: Session, nodes: Iterable[Node]) -> None:
    """Insert nodes, skipping any another process stored first."""
    rows = [{"level": level, "idx": idx, "hash": value} for level, idx, value in nodes]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_nodes).on_conflict_do_nothing(index_elements=["level", "idx"])
    for offset in range(0, len(rows), _BATCH_NODES):
        session.execute(statement, rows[offset : offset + _BATCH_NODES])


def extend(session: Session) -> int:
    """Store every missing node of the tree in the caller's transaction; return how many."""
    total = 0
    while made := missing_nodes(session):
        store(session, made)
        total += len(made)
    return total


def extend_database(db: Database) -> int:
    """Store every missing node, hashing outside the write lock; return how many.

    Each batch is hashed in a reading transaction and inserted in a short writing one,
    so audit appends wait at most for one batch's insert, and memory stays bounded
    however long the trail is.
    """
    total = 0
    while True:
        with db.reading() as session:
            made = missing_nodes(session)
        if not made:
            return total
        with db.writing() as session:
            store(session, made)
        total += len(made)


def subtree(session: Session) -> Callable[[int, int], bytes]:
    """The ``subtree(start, end)`` callback of :mod:`core.merkle`, over this session.

    Perfect aligned subtrees of :data:`BLOCK` leaves or more come from stored nodes;
    smaller ranges are hashed from one block of events, read once. A node not stored
    yet is computed from its halves, so the answer is right before :func:`extend` ran,
    only slower. Answers are cached for the callback's lifetime (one root or proof).
    """
    cache: dict[tuple[int, int], bytes] = {}
    blocks: dict[int, list[list[bytes]]] = {}

    def stored(level: int, idx: int) -> bytes | None:
        value = session.execute(
            sa.select(_nodes.c.hash).where(_nodes.c.level == level, _nodes.c.idx == idx)
        ).scalar_one_or_none()
        return None if value is None else bytes(value)

    def levels_of(block: int, end: int) -> list[list[bytes]]:
        """Every complete node inside one block, level by level, from leaves up to ``end``."""
        first = block * BLOCK
        levels = blocks.get(block)
        if levels is None or first + len(levels[0]) < end:
            leaves = _leaf_hashes(session, first, end)
            levels = [leaves]
            while len(levels[-1]) > 1:
                below = levels[-1]
                levels.append(
                    [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
                )
            blocks[block] = levels
        return levels

    def small(start: int, end: int) -> bytes:
        width = end - start
        if width & (width - 1) == 0 and start % width == 0:  # a perfect subtree
            block = start // BLOCK
            level = width.bit_length() - 1
            return levels_of(block, end)[level][(start - block * BLOCK) >> level]
        k = split_point(width)
        return node_hash(hash_of(start, start + k), hash_of(start + k, end))

    def hash_of(start: int, end: int) -> bytes:
        key = (start, end)
        if key in cache:
            return cache[key]
        width = end - start
        value = None
        if width >= BLOCK and width & (width - 1) == 0 and start % width == 0:
            level = width.bit_length() - 1
            value = stored(level, start >> level)
        if value is None:
            if width <= BLOCK:
                value = small(start, end)
            else:
                k = split_point(width)
                value = node_hash(hash_of(start, start + k), hash_of(start + k, end))
        cache[key] = value
        return value

    return hash_of


def _check_size(session: Session, tree_size: int) -> None:
    head = size(session)
    if not 0 <= tree_size <= head:
        raise Invalid(f"the audit trail holds {head} events; there is no tree of {tree_size}")


def root(session: Session, tree_size: int) -> bytes:
    """MTH of the first ``tree_size`` events."""
    _check_size(session, tree_size)
    return rfc9162.tree_root(tree_size, subtree(session))


def inclusion_proof(session: Session, index: int, tree_size: int) -> list[bytes]:
    """The audit path of leaf ``index`` (event ``index + 1``) in the tree of ``tree_size``."""
    _check_size(session, tree_size)
    if not 0 <= index < tree_size:
        raise Invalid(f"event {index + 1} is not in the tree of the first {tree_size} events")
    return rfc9162.inclusion_proof(index, tree_size, subtree(session))


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of ``old_size`` events is a prefix of the one of ``new_size``."""
    _check_size(session, new_size)
    if not 0 <= old_size <= new_size:
        raise Invalid(f"a tree of {new_size} events cannot extend one of {old_size}")
    return rfc9162.consistency_proof(old_size, new_size, subtree(session))


def inclusion(session: Session, *, seq: int, tree_size: int) -> schemas.InclusionProof:
    """The wire form of event ``seq``'s inclusion proof in the tree of ``tree_size`` events."""
    if not 1 <= seq <= tree_size:
        raise Invalid(f"event {seq} is not in the tree of the first {tree_size} events")
    proof = inclusion_proof(session, seq - 1, tree_size)
    [leaf] = _leaf_hashes(session, seq - 1, seq)
    return schemas.InclusionProof(
        seq=seq,
        leaf_index=seq - 1,
        tree_size=tree_size,
        leaf_hash=leaf.hex(),
        proof=[step.hex() for step in proof],
    )


def consistency(session: Session, *, old_size: int, new_size: int) -> schemas.ConsistencyProof:
    """The wire form of the consistency proof from ``old_size`` events to ``new_size``."""
    proof = consistency_proof(session, old_size, new_size)
    return schemas.ConsistencyProof(
        old_size=old_size, new_size=new_size, proof=[step.hex() for step in proof]
    )
