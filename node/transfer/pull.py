"""Pull a model from the network: verified manifest, resumable blob streams, atomic placement.

    result = pull_from_network(model_id, home, out_dir, holders=["127.0.0.1:7471", ...],
                               peers=table, trusted_only=False, progress=cb)

1. Ask holders for the manifest until one verifies (signature, id) — liars are marked bad.
2. Stream every file the signed statement lists into the store's kept `.incomplete` file,
   resuming from its size (also after the puller restarts). A holder that dies is left for the
   next one; a holder whose bytes do not hash to the signed digest is marked bad and the
   partial file discarded (commit refuses it). Each stream is held to the file's size signed in
   the manifest; the ad's own sizes are unsigned and only drive progress.
3. Register the blobs in the local registry (which re-verifies signature and digests), so this
   node holds and advertises the model; then copy them into a hidden staging folder next to
   `out_dir` and rename it into place, so the folder is visible only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from node.errors import NodeInputError, PeerError
from node.network.client import CALL_TIMEOUT_S, connect, registry_stub, rpc_error
from node.network.peers import PeerTable
from node.process import metrics
from node.transfer.fetch import STALL_TIMEOUT_S, BlobFetcher
from protos import mergenet_pb2 as pb
from registry.attestations import AttestationTally
from registry.errors import RegistryError, VerificationError
from registry.ids import ModelId
from registry.local import LocalRegistry
from registry.services import convert
from registry.services.ads import VerifiedAd, verify_ad
from registry.store import BlobStore

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
SIGNATURE_NAME = "model.sig"
COPY_BUFFER = 8 << 20
MAX_AD_ATTESTATIONS = 64  # attestations taken from one ad; each is verified before it counts


@dataclass(frozen=True)
class PullResult:
    model_id: str
    path: Path
    sources: tuple[str, ...]  # holders that delivered bytes ("local" for the local store)
    bytes_fetched: int


def fetch_verified_ad(model_id: str, holders: Sequence[str], peers: PeerTable) -> tuple[VerifiedAd, str]:
    """The first manifest among `holders` that verifies and has the requested id."""
    errors = []
    for addr in peers.order(list(holders)):
        try:
            with connect(addr) as ch:
                msg = registry_stub(ch).GetManifest(pb.GetManifestRequest(model_id=model_id), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            errors.append(f"{addr}: {exc.code().name}")
            continue
        try:
            ad = verify_ad(convert.ad_from_pb(msg))
        except Exception as exc:  # a forged or garbled ad, whatever breaks, only rejects this holder
            log.debug("holder %s served a manifest for %s that does not verify: %r", addr, model_id, exc)
            peers.mark_bad(addr, f"bad manifest: {type(exc).__name__}: {exc}"[:300])
            errors.append(f"{addr}: bad manifest")
            continue
        if ad.model_id != model_id:
            peers.mark_bad(addr, f"answered {ad.model_id} when asked for {model_id}")
            errors.append(f"{addr}: wrong model")
            continue
        return ad, addr
    tried = "; ".join(errors) or "no holders known"
    raise PeerError(f"no holder served a verifiable manifest for {model_id} ({tried})")


def find_holders(node_addr: str, model_id: str) -> list[str]:
    """Ask the local node (DHT + peers) who holds a model; PeerError when no node answers."""
    with connect(node_addr) as ch:
        try:
            reply = registry_stub(ch).FindHolders(pb.FindHoldersRequest(model_id=model_id), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise rpc_error(exc, node_addr) from None
    return list(reply.holders)


@metrics.pulling
def pull(model_id: str, home: Path, out_dir: Path | None, sources: Sequence[str] = (), node_addr: str | None = None,
         trusted_only: bool = False, progress: ProgressFn | None = None, peers: PeerTable | None = None,
         require_attestations: int = 0) -> PullResult:
    """Materialize a model: from the local store when held whole, else from `sources` or the
    holders `node_addr` knows; `out_dir` defaults to ./<model name>. `require_attestations`: that
    many PASS attestations from trusted keys (`mergenet trust`), else VerificationError (exit 3)."""
    registry = LocalRegistry(home)
    try:
        held = _resolve_local(registry, model_id)
        if held is not None and registry.missing_files(held):  # blobs removed by `store check --repair`
            model_id, held = held, None
        if held is not None:
            record = registry.get(held)
            check_trust(registry, record.signer, held, trusted_only)
            check_attestations(registry.attestation_tally(held), held, require_attestations)
            dest = out_dir or default_out_dir(record.manifest.name)
            _refuse_existing(dest)
            registry.materialize(held, dest, progress=progress)
            return PullResult(held, dest, ("local",), 0)
        if not ModelId.valid(model_id):
            raise NodeInputError(f"{model_id!r} is not held locally; pulling from the network needs the full id "
                                 "(sha256:<64 hex digits>, see `mergenet ls --remote`)")
        holders = list(sources) or find_holders(node_addr or "", model_id)
        if not holders:
            raise PeerError(f"no node in the network is known to hold {model_id}; pass --from HOST:PORT of a holder")
        return pull_from_network(registry, model_id, out_dir, holders, peers=peers, trusted_only=trusted_only,
                                 progress=progress, require_attestations=require_attestations)
    finally:
        registry.close()


def _resolve_local(registry: LocalRegistry, model_id: str) -> str | None:
    try:
        return registry.resolve(model_id)
    except RegistryError:
        return None


def default_out_dir(model_name: str) -> Path:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_name).strip(".-") or "model"
    return Path.cwd() / name


def _refuse_existing(out_dir: Path) -> None:
    if out_dir.exists():
        raise NodeInputError(f"output folder {out_dir} already exists; choose another -o or remove it")


def pull_from_network(registry: LocalRegistry, model_id: str, out_dir: Path | None, holders: Sequence[str],
                      peers: PeerTable | None = None, trusted_only: bool = False,
                      progress: ProgressFn | None = None, stall_timeout_s: float = STALL_TIMEOUT_S,
                      max_blob_bytes: int | None = None, min_free_bytes: int | None = None,
                      require_attestations: int = 0) -> PullResult:
    """Fetch, verify and place a model from `holders`; see the module docstring (the byte limits
    default to node.transfer.fetch's MAX_BLOB_BYTES / MIN_FREE_BYTES or their env overrides)."""
    peers = peers or PeerTable()
    if out_dir is not None:
        _refuse_existing(out_dir)
    ad, first = fetch_verified_ad(model_id, holders, peers)
    check_trust(registry, ad.key_id, model_id, trusted_only)
    carried = _ad_attestations(ad)
    check_attestations(registry.attestation_tally(model_id, carried), model_id, require_attestations)
    out_dir = out_dir or default_out_dir(ad.manifest.name)
    _refuse_existing(out_dir)
    store = registry.store
    store.put_bytes(ad.ad.manifest)  # verified with the ad already
    staging = Staging(store, ad, out_dir)
    try:
        fetcher = BlobFetcher(store, [first, *[h for h in holders if h != first]], peers, progress,
                              stall_timeout_s, on_blob=staging.place, max_blob_bytes=max_blob_bytes,
                              min_free_bytes=min_free_bytes)
        fetcher.fetch_all({digest: ad.size_of(rel) for rel, digest in ad.resources.items()},
                          signed_sizes={digest: ad.manifest.sizes[rel] for rel, digest in ad.resources.items()
                                        if rel in ad.manifest.sizes})
        # The registry re-verifies the signature and every blob before indexing: from now on
        # this node holds the model and advertises it. Only then does the folder appear.
        registry.ingest_from_store(ad.ad.signature, list(ad.resources))
        for bundle in carried:  # kept with the model, so `show` and later pulls count them
            try:
                registry.add_attestation(model_id, bundle)
            except RegistryError:
                continue
        staging.commit()
    except BaseException:
        staging.abort()
        raise
    log.info("pulled %s from %s: %d bytes fetched into %s", model_id, ", ".join(fetcher.sources) or "the store",
             fetcher.fetched, out_dir, extra={"model_id": model_id})
    return PullResult(model_id, out_dir, tuple(fetcher.sources), fetcher.fetched)


def _ad_attestations(ad: VerifiedAd) -> list[dict]:
    """The attestation bundles a holder sent with its ad (unverified here: the tally checks each)."""
    out = []
    for raw in ad.ad.attestations[:MAX_AD_ATTESTATIONS]:
        try:
            bundle = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(bundle, dict):
            out.append(bundle)
    return out


def check_attestations(tally: AttestationTally, model_id: str, required: int) -> None:
    """VerificationError (exit 3) unless `required` trusted keys attested the model PASS."""
    if len(tally.trusted) >= required:
        return
    raise VerificationError(
        f"{model_id} has {len(tally.trusted)} PASS attestation(s) from keys you trust ({tally.others} from "
        f"others, {len(tally.failed)} FAIL); --require-attestations needs {required}: trust its verifiers "
        "with `mergenet trust add KEY` if you know them")


def check_trust(registry: LocalRegistry, key_id: str, model_id: str, trusted_only: bool) -> None:
    """With --trusted-only, refuse models whose signer is neither this home's key nor trusted."""
    if trusted_only and not registry.is_trusted(key_id):
        raise VerificationError(f"{model_id} is signed by key {key_id[:16]}…, which is not in your trust list; "
                                f"run `mergenet trust add {key_id[:16]}` if you trust it")


def copy_blob(src: Path, dest: Path) -> None:
    """An independent, writable copy: copy_file_range shares extents where the filesystem can
    (btrfs, xfs reflinks) and copies inside the kernel elsewhere; plain copy as a fallback."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        left = os.fstat(fin.fileno()).st_size
        try:
            while left > 0:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), left)
                if n == 0:
                    break
                left -= n
        except OSError:  # e.g. across filesystems on old kernels
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            shutil.copyfileobj(fin, fout, COPY_BUFFER)
            left = 0
    if left:
        raise OSError(f"short copy of {src} to {dest}")


class Staging:
    """The hidden folder a pull fills next to `out_dir`; `commit` renames it into place (atomic).

    `place(digest)` copies a verified blob in as soon as it is in the store (called from the
    fetch workers, so copying overlaps with streaming the other blobs).
    """

    def __init__(self, store: BlobStore, ad: VerifiedAd, out_dir: Path) -> None:
        self.store = store
        self.ad = ad
        self.out_dir = out_dir
        self.path = out_dir.parent / f".{out_dir.name}.pulling-{os.getpid()}-{int(time.time())}"
        self._placed: set[str] = set()
        self._lock = threading.Lock()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._sweep_abandoned()
        self.path.mkdir()

    def _sweep_abandoned(self) -> None:
        """Remove staging folders of earlier pulls into the same folder whose process is gone."""
        for old in self.out_dir.parent.glob(f".{self.out_dir.name}.pulling-*"):
            pid = old.name.rsplit(".pulling-", 1)[1].split("-")[0]
            try:
                os.kill(int(pid), 0)
            except (ValueError, ProcessLookupError):
                shutil.rmtree(old, ignore_errors=True)
            except PermissionError:  # someone else's live process
                continue

    def place(self, digest: str) -> None:
        for rel, d in self.ad.resources.items():
            if d != digest:
                continue
            with self._lock:
                if rel in self._placed:
                    continue
                self._placed.add(rel)
            dest = self.path / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy_blob(self.store.path(digest), dest)

    def commit(self) -> None:
        for digest in set(self.ad.resources.values()):
            self.place(digest)  # blobs that were in the store before this pull
        (self.path / SIGNATURE_NAME).write_bytes(self.ad.ad.signature)
        os.rename(self.path, self.out_dir)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
