"""Unpacked layers, one per chain id, shared read-only by every image and container.

Layout under the store root:

* ``layers/<chain-id hex>/`` — the layer's overlay "diff" directory;
* ``layers/l/<SHORT>`` — a 26-character symlink to ``../<chain-id hex>``
  (as in Docker's overlay2), so the launcher can ``chdir(<root>/layers)`` and
  pass ``lowerdir=l/A:l/B:...``: the mount option string is limited to one
  page, and short relative paths fit ~4x more layers than absolute ones;
* ``layerdb/<chain-id hex>.json`` — the record (diff id, parent, size, and the
  digest of the layer's distributable blob in the blob store); it is
  written last and is the commit marker: a directory without it is debris
  from a crash and is deleted when the store opens;
* ``locks/<chain-id hex>.lock`` — flock() per layer, so concurrent pulls (threads
  or processes) unpack a layer once.

A layer is unpacked into ``layers/.tmp-*``, its diff id checked, then renamed
into place.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic_file import write_json_atomic
from ..errors import RegistryError
from .blob_store import digest_hex, pid_alive

log = logging.getLogger(__name__)

SHORT_LINK_DIR = "l"
SHORT_ID_LENGTH = 26
_TMP_PREFIX = ".tmp-"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def short_id(chain_id: str) -> str:
    """A stable 26-character name for the layer's short link."""
    return base64.b32encode(hashlib.sha256(chain_id.encode()).digest()).decode()[:SHORT_ID_LENGTH]


@dataclass
class LayerRecord:
    """One unpacked layer."""

    chain_id: str
    diff_id: str
    parent: str          # chain id of the layer below, "" for a base layer
    size: int            # bytes of file content
    short_id: str
    # The distributable blob (push, save): the compressed or plain tar as a registry
    # serves it, in the blob store; empty for a layer pulled before blobs were kept.
    blob_digest: str = ""
    blob_size: int = 0
    media_type: str = ""


class LayerStore:
    """Unpacked layer directories keyed by chain id (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.layers_dir = self.root / "layers"
        self.db_dir = self.root / "layerdb"
        self.locks_dir = self.root / "locks"
        self.links_dir = self.layers_dir / SHORT_LINK_DIR
        for d in (self.layers_dir, self.db_dir, self.locks_dir, self.links_dir):
            d.mkdir(parents=True, exist_ok=True)

    def recover(self) -> None:
        """Remove temp dirs and uncommitted layers left by a crash (call at start).

        Temp names carry the creating pid, and a layer being committed is
        locked, so a second store on the same root never removes work in progress.
        """
        for entry in self.layers_dir.iterdir():
            if entry.name == SHORT_LINK_DIR:
                continue
            if entry.name.startswith(_TMP_PREFIX):
                if not pid_alive(_tmp_pid(entry.name)):
                    log.info("removing unfinished layer directory %s", entry)
                    _rmtree(entry)
            elif not (self.db_dir / f"{entry.name}.json").exists():
                with self._try_lock(entry.name) as got:
                    if got and not (self.db_dir / f"{entry.name}.json").exists():
                        log.info("removing uncommitted layer directory %s", entry)
                        _rmtree(entry)
        for record in self.db_dir.glob("*.json"):
            if not (self.layers_dir / record.stem).is_dir():
                record.unlink(missing_ok=True)
        for link in self.links_dir.iterdir():
            if not link.exists():
                link.unlink(missing_ok=True)

    # --- queries -------------------------------------------------------------
    def has(self, chain_id: str) -> bool:
        return (self.db_dir / f"{digest_hex(chain_id)}.json").exists()

    def get(self, chain_id: str) -> LayerRecord:
        path = self.db_dir / f"{digest_hex(chain_id)}.json"
        try:
            return LayerRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise RegistryError(f"layer {chain_id} is not in the store") from None

    def all_chain_ids(self) -> set[str]:
        return {"sha256:" + p.stem for p in self.db_dir.glob("*.json")}

    def diff_dir(self, chain_id: str) -> Path:
        return self.layers_dir / digest_hex(chain_id)

    def short_link(self, chain_id: str) -> str:
        """"l/<SHORT>", relative to `layers_dir`; (re)creates the symlink if it is missing."""
        sid = short_id(chain_id)
        link = self.links_dir / sid
        if not os.path.lexists(link):
            tmp = self.links_dir / f"{_TMP_PREFIX}{os.getpid()}-{sid}-{threading.get_ident()}"
            tmp.unlink(missing_ok=True)
            os.symlink(f"../{digest_hex(chain_id)}", tmp)
            os.replace(tmp, link)
        return f"{SHORT_LINK_DIR}/{sid}"

    # --- changes -------------------------------------------------------------
    @contextlib.contextmanager
    def _try_lock(self, hexid: str) -> Iterator[bool]:
        with open(self.locks_dir / f"{hexid}.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def locked(self, chain_id: str) -> Iterator[None]:
        """Exclusive per-layer lock (flock: works across threads and processes)."""
        with open(self.locks_dir / f"{digest_hex(chain_id)}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def create(self, chain_id: str, diff_id: str, parent: str, blob: Path,
               on_progress: Callable[[int], None] | None = None,
               distributable: tuple[str, int, str] = ("", 0, "")) -> LayerRecord:
        """Unpack `blob` as layer `chain_id`; the caller holds `locked(chain_id)`.

        `distributable` is the (digest, size, media type) of the layer's blob already in
        the blob store, recorded with the layer.
        """
        if self.has(chain_id):
            return self.get(chain_id)
        hexid = digest_hex(chain_id)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-{hexid[:12]}-",
                                    dir=self.layers_dir))
        try:
            os.chmod(tmp, 0o755)
            from .layer_unpack import unpack_layer  # tarfile & co.: only needed by pulls
            result = unpack_layer(blob, tmp, on_progress)
            if result.diff_id != diff_id:
                raise RegistryError(f"layer diff id mismatch: expected {diff_id}, got {result.diff_id}")
            final = self.layers_dir / hexid
            if final.exists():   # debris of an uncommitted earlier attempt
                _rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            _rmtree(tmp)
            raise
        blob_digest, blob_size, media_type = distributable
        record = LayerRecord(chain_id=chain_id, diff_id=diff_id, parent=parent,
                             size=result.size, short_id=short_id(chain_id),
                             blob_digest=blob_digest, blob_size=blob_size, media_type=media_type)
        self.short_link(chain_id)
        write_json_atomic(self.db_dir / f"{hexid}.json", asdict(record))
        return record

    def set_blob(self, chain_id: str, digest: str, size: int, media_type: str) -> LayerRecord:
        """Record the layer's distributable blob; the caller holds `locked(chain_id)`."""
        record = self.get(chain_id)
        record.blob_digest, record.blob_size, record.media_type = digest, size, media_type
        write_json_atomic(self.db_dir / f"{digest_hex(chain_id)}.json", asdict(record))
        return record

    def blob_users(self, digest: str) -> list[str]:
        """Chain ids of the layers whose distributable blob is `digest`."""
        users = []
        for path in self.db_dir.glob("*.json"):
            try:
                if json.loads(path.read_text()).get("blob_digest") == digest:
                    users.append("sha256:" + path.stem)
            except (OSError, ValueError):
                continue
        return users

    def remove(self, chain_id: str) -> None:
        """Delete a layer: the record first (so a crash leaves debris, not a trusted half layer)."""
        hexid = digest_hex(chain_id)
        with self.locked(chain_id):
            (self.db_dir / f"{hexid}.json").unlink(missing_ok=True)
            (self.links_dir / short_id(chain_id)).unlink(missing_ok=True)
            target = self.layers_dir / hexid
            if target.exists():
                doomed = self.layers_dir / f"{_TMP_PREFIX}{os.getpid()}-rm-{hexid[:12]}"
                os.rename(target, doomed)
                _rmtree(doomed)


def _tmp_pid(name: str) -> int:
    """The pid in a temp name "<prefix><pid>-...", or 0 if there is none."""
    digits = name.split("-")[1] if name.count("-") >= 2 else ""
    return int(digits) if digits.isdigit() else 0


def _rmtree(path: Path) -> None:
    # Layers contain read-only directories; we are root, so plain rmtree works.
    shutil.rmtree(path, ignore_errors=True)
