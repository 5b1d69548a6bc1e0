"""Content-addressed blob storage: <root>/blobs/sha256/<hex>, written atomically and verified.

Blobs arrive in a temp file under <root>/tmp (same filesystem) and are renamed
into place only after their digest has been checked, so a blob file that
exists is always complete and correct. Temp files left by a crash are removed
when the store opens.

<root>/blobs/sources/<hex>.json lists the repositories a layer blob was pulled from
or pushed to, oldest first (dockerd keeps the same in its "v2 metadata"): a push
mounts the blob from the newest one on the target registry instead of uploading it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from ..atomic_file import write_json_atomic
from ..errors import RegistryError
from .reference import is_sha256_hex

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
MAX_SOURCES = 16                # repositories remembered per blob


def pid_alive(pid: int) -> bool:
    """True if process `pid` exists (its temp files may still be in use)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest; raises RegistryError for anything else."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not is_sha256_hex(hexpart):
        raise RegistryError(f"unsupported or malformed digest {digest!r}")
    return hexpart


class BlobStore:
    """Blobs by digest under `root`; only verified content is ever visible at its final path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.sources_dir = self.root / "blobs" / "sources"
        self._sources_lock = threading.Lock()
        for d in (self.dir, self.tmp_dir, self.sources_dir):
            d.mkdir(parents=True, exist_ok=True)

    def clean_temp(self) -> None:
        """Drop partial downloads left by crashed processes (temp names carry the pid)."""
        for entry in self.tmp_dir.iterdir():
            parts = entry.name.split("-")
            pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
            if pid_alive(pid):
                continue
            log.info("removing stale temp blob %s", entry)
            entry.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        return self.dir / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def read(self, digest: str) -> bytes:
        """The blob's bytes, checked against its digest (use for small blobs: configs, manifests)."""
        data = self.path(digest).read_bytes()
        if sha256_digest(data) != digest:
            raise RegistryError(f"stored blob {digest} is corrupt")
        return data

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store `data`; if `digest` is given it must match. Returns the digest."""
        actual = sha256_digest(data)
        if digest is not None and actual != digest:
            raise RegistryError(f"digest mismatch: expected {digest}, got {actual}")
        final = self.path(actual)
        if not final.exists():
            tmp = self.new_temp()
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
        return actual

    def new_temp(self) -> Path:
        """A fresh, empty temp file next to the blobs (same filesystem, for rename)."""
        fd, name = tempfile.mkstemp(prefix=f"blob-{os.getpid()}-", dir=self.tmp_dir)
        os.close(fd)
        return Path(name)

    def commit(self, tmp: Path, digest: str, verified: bool = False) -> Path:
        """Move a complete temp file into place as `digest` (hashing it unless `verified`)."""
        if not verified:
            actual = file_digest(tmp)
            if actual != digest:
                tmp.unlink(missing_ok=True)
                raise RegistryError(f"digest mismatch: expected {digest}, got {actual}")
        final = self.path(digest)
        os.replace(tmp, final)
        return final

    def delete(self, digest: str) -> None:
        # Where the blob lives stays known (as dockerd's v2 metadata does): the same blob
        # pulled again, or rebuilt from the same layer, can still be mounted.
        self.path(digest).unlink(missing_ok=True)

    # --- where blobs live on registries ------------------------------------------
    def add_source(self, digests: Iterable[str], domain: str, path: str) -> None:
        """Remember that repository `domain`/`path` holds these blobs (as its newest source).

        Best effort: a failed write only costs a later push an upload instead of a mount.
        """
        entry = [domain, path]
        with self._sources_lock:
            for digest in digests:
                known = [s for s in self.sources(digest) if s != (domain, path)]
                rows = [list(s) for s in reversed(known)][-(MAX_SOURCES - 1):] + [entry]
                try:
                    write_json_atomic(self.sources_dir / f"{digest_hex(digest)}.json", rows)
                except OSError as err:
                    log.warning("cannot record where blob %s lives: %s", digest, err)

    def sources(self, digest: str) -> list[tuple[str, str]]:
        """(domain, path) of the repositories known to hold blob `digest`, newest first."""
        try:
            rows = json.loads((self.sources_dir / f"{digest_hex(digest)}.json").read_text())
            return [(str(d), str(p)) for d, p in reversed(rows)]
        except (OSError, ValueError, TypeError):
            return []
