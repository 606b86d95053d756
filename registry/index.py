"""The registry index: which models this node holds, their files, signatures and attestations.

    index = Index(home.db_path)
    index.add_model(row, files); index.get("sha256:ab12…"); index.resolve("ab12")

SQLite in WAL mode (a node and CLI commands may use the same database at once); one connection
guarded by a lock, so an `Index` is safe to share between threads.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import BadModelError, NotFoundError, RegistryError

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, manifest TEXT NOT NULL,
    signature BLOB NOT NULL, signer TEXT NOT NULL, created TEXT NOT NULL,
    added TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')));
CREATE TABLE IF NOT EXISTS files (
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, path TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (model_id, path));
CREATE INDEX IF NOT EXISTS files_by_sha ON files(sha256);
CREATE TABLE IF NOT EXISTS attestations (
    model_id TEXT NOT NULL, digest TEXT NOT NULL, bundle TEXT NOT NULL, signer TEXT NOT NULL,
    added TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), PRIMARY KEY (model_id, digest));
CREATE TABLE IF NOT EXISTS consents (
    plan_id TEXT NOT NULL, model_id TEXT NOT NULL, digest TEXT NOT NULL, bundle TEXT NOT NULL,
    signer TEXT NOT NULL, added TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (plan_id, model_id, digest));
"""
BUSY_TIMEOUT_S = 30.0  # a second process (node + CLI) may hold the write lock briefly
MIN_PREFIX = 4
MAX_LISTED_MATCHES = 5  # an ambiguous prefix error names this many of the matches


def id_prefix(id_or_prefix: str) -> str:
    """`sha256:<hex>`, `<hex>` or a prefix of either → `sha256:<hex prefix>`; BadModelError unless
    it has at least MIN_PREFIX hex digits and nothing else."""
    text = id_or_prefix.strip().lower()
    hexpart = text.removeprefix("sha256:")
    if len(hexpart) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in hexpart):
        raise BadModelError(f"{id_or_prefix!r} is not a model id: give the full id (sha256:<64 hex digits>) "
                            f"or at least {MIN_PREFIX} of its hex digits")
    return "sha256:" + hexpart


def pick_one(id_or_prefix: str, ids: Iterable[str], where: str) -> str:
    """The one id among `ids` that starts with the prefix: NotFoundError when none does (saying
    `where` was searched), BadModelError listing the matches when several do."""
    prefix = id_prefix(id_or_prefix)
    hits = sorted({i for i in ids if i.startswith(prefix)})
    if not hits:
        raise NotFoundError(f"no model {id_or_prefix} {where}")
    if len(hits) > 1:
        shown = ", ".join(hits[:MAX_LISTED_MATCHES]) + (", ..." if len(hits) > MAX_LISTED_MATCHES else "")
        raise BadModelError(f"model id prefix {id_or_prefix} is ambiguous ({len(hits)} matches: {shown}); "
                            "give more digits")
    return hits[0]


@dataclass(frozen=True)
class ModelRow:
    id: str
    kind: str
    name: str
    manifest: str  # mergenet.json text
    signature: bytes  # model.sig bytes
    signer: str
    created: str
    added: str = ""


@contextmanager
def _init_lock(db_path: Path) -> Iterator[None]:
    with open(db_path.with_name(db_path.name + ".init-lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class Index:
    def __init__(self, db_path: Path):
        self.path = Path(db_path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                       isolation_level=None)
            # Switching a new database to WAL takes an exclusive lock that SQLite's busy timeout
            # does not wait for: two processes opening a fresh home at once would see "database is
            # locked". An OS lock beside the database makes them take turns for this step.
            with _init_lock(self.path):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the registry database {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise RegistryError(f"registry database {self.path}: {exc}") from None

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise RegistryError(f"registry database {self.path}: {exc}") from None

    def add_model(self, row: ModelRow, files: Mapping[str, tuple[str, int]]) -> bool:
        """Insert or replace a model and its file list; True when it was new."""
        with self._tx() as db:
            new = db.execute("SELECT 1 FROM models WHERE id=?", (row.id,)).fetchone() is None
            db.execute("INSERT OR REPLACE INTO models (id, kind, name, manifest, signature, signer, created) "
                       "VALUES (?,?,?,?,?,?,?)",
                       (row.id, row.kind, row.name, row.manifest, row.signature, row.signer, row.created))
            db.execute("DELETE FROM files WHERE model_id=?", (row.id,))
            db.executemany("INSERT INTO files (model_id, path, sha256, size) VALUES (?,?,?,?)",
                           [(row.id, p, sha, size) for p, (sha, size) in sorted(files.items())])
        return new

    def get(self, model_id: str) -> ModelRow | None:
        rows = self._query("SELECT id, kind, name, manifest, signature, signer, created, added FROM models WHERE id=?",
                           (model_id,))
        return ModelRow(*rows[0][:4], bytes(rows[0][4]), *rows[0][5:]) if rows else None

    def list(self, kind: str | None = None) -> list[ModelRow]:
        sql = "SELECT id, kind, name, manifest, signature, signer, created, added FROM models"
        rows = self._query(sql + (" WHERE kind=?" if kind else "") + " ORDER BY added, rowid", (kind,) if kind else ())
        return [ModelRow(*r[:4], bytes(r[4]), *r[5:]) for r in rows]

    def files(self, model_id: str) -> dict[str, tuple[str, int]]:
        rows = self._query("SELECT path, sha256, size FROM files WHERE model_id=? ORDER BY path", (model_id,))
        return {p: (sha, size) for p, sha, size in rows}

    def models_with_blob(self, sha256: str) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT model_id FROM files WHERE sha256=?", (sha256,))]

    def matching(self, id_or_prefix: str) -> list[str]:
        """Ids of held models that start with the prefix (see `id_prefix`)."""
        prefix = id_prefix(id_or_prefix)
        return [r[0] for r in self._query("SELECT id FROM models WHERE id LIKE ? ORDER BY id", (prefix + "%",))]

    def resolve(self, id_or_prefix: str) -> str:
        """A full model id from `sha256:<hex>`, `<hex>` or a unique prefix (≥ 4 hex digits)."""
        return pick_one(id_or_prefix, self.matching(id_or_prefix), "in this registry; see `mergenet ls`")

    def add_attestation(self, model_id: str, bundle: Mapping[str, Any], signer: str) -> bool:
        """Store an (already verified) attestation bundle; False when it was already there."""
        text = json.dumps(bundle, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO attestations (model_id, digest, bundle, signer) VALUES (?,?,?,?)",
                             (model_id, digest, text, signer))
            return cur.rowcount > 0

    def attestations(self, model_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT bundle FROM attestations WHERE model_id=? ORDER BY added, digest", (model_id,))
        return [json.loads(r[0]) for r in rows]

    def add_consent(self, plan_id: str, model_id: str, bundle: Mapping[str, Any], signer: str) -> bool:
        text = json.dumps(bundle, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO consents (plan_id, model_id, digest, bundle, signer) "
                             "VALUES (?,?,?,?,?)", (plan_id, model_id, digest, text, signer))
            return cur.rowcount > 0

    def consents(self, plan_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT bundle FROM consents WHERE plan_id=? ORDER BY added, digest", (plan_id,))
        return [json.loads(r[0]) for r in rows]
