"""A guest image as one file that travels: export, digest checks, and an atomic install into the cache.

This is how hosts that cannot build the guest (macOS, Windows, a Linux without
apt) get one, so everything here is portable: the standard library only, no
Linux-only call.

The file is an xz-compressed tar (Python's lzma reads it on every OS; xz's
fastest preset packs a ~510 MB image to ~100 MB, ~30 % smaller than gzip).
Its first member is `manifest.json`:

    {"format": "dockyard-guest-image", "version": 1, "recipe_hash": ..., "cmdline": ...,
     "kernel_package": ..., "parts": {...},
     "files": {"vmlinuz": {"sha256": ..., "size": ...}, "initrd.img": ..., "rootfs.img": ...}}

followed by exactly those three files. Importing checks the whole file's
SHA-256 against the digest the user pinned before reading anything inside it,
then every file against the manifest while unpacking into a hidden staging
directory of the cache, which is renamed to `<recipe_hash>` only when all of
it is there: a crash midway leaves no image directory behind, only a
`.import-*` leftover the next import removes. `imported.json` in the cache
names the image imported last.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from runtime.atomic_file import read_json, write_json_atomic
from runtime.errors import InvalidArgument, NotFound, RuntimeFailure

log = logging.getLogger(__name__)

FORMAT = "dockyard-guest-image"
VERSION = 1
MANIFEST = "manifest.json"
ARCHIVE_FILES = ("vmlinuz", "initrd.img", "rootfs.img")
IMPORTED_RECORD = "imported.json"
STAGING_PREFIX = ".import-"
# Leftovers of an import that died are removed by the next one once this old.
STALE_STAGING_S = 3600
XZ_PRESET: Final = 0
CHUNK = 1 << 20
MANIFEST_MAX = 1 << 20
RECIPE_HASH = re.compile(r"[0-9a-f]{16}")
SHA256 = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


class DigestMismatch(InvalidArgument):
    """A file's SHA-256 is not the one expected; the message names both."""


@dataclass(frozen=True)
class InstalledImage:
    """An image directory of the cache that came from an archive."""

    directory: Path
    recipe_hash: str
    sha256: str
    already_present: bool


def parse_digest(text: str) -> str:
    """`sha256:HEX` or `HEX` (64 hex digits) as lower-case HEX; anything else is refused."""
    match = SHA256.fullmatch(text.strip())
    if not match:
        raise InvalidArgument(f"--sha256 wants 64 hex digits (optionally after 'sha256:'), not {text!r}")
    return match.group(1).lower()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(what: str, expected: str, actual: str) -> None:
    """Raise DigestMismatch (one line, both digests) unless they are equal."""
    if expected != actual:
        raise DigestMismatch(f"{what}: sha256 mismatch: expected {expected}, got {actual}")


# ---- export -------------------------------------------------------------------------------

def build_manifest(image_dir: Path) -> dict[str, Any]:
    """The manifest of a cache image directory (its image.json plus every file's digest)."""
    info = read_json(image_dir / "image.json", None)
    if not isinstance(info, dict) or not RECIPE_HASH.fullmatch(str(info.get("recipe_hash", ""))):
        raise NotFound(f"{image_dir} holds no built guest image (no valid image.json)")
    files = {}
    for name in ARCHIVE_FILES:
        path = image_dir / name
        if not path.is_file():
            raise NotFound(f"{image_dir} has no {name}")
        files[name] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return {"format": FORMAT, "version": VERSION, "recipe_hash": info["recipe_hash"],
            "cmdline": info.get("cmdline", ""), "kernel_package": info.get("kernel_package", ""),
            "parts": info.get("parts", {}), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files}


def export_image(image_dir: Path, out: Path) -> str:
    """Write the image in `image_dir` to `out` (atomically) and return the file's SHA-256."""
    manifest = build_manifest(image_dir)
    out = out.resolve()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:xz", preset=XZ_PRESET) as tar:
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            entry = tarfile.TarInfo(MANIFEST)
            entry.size, entry.mode, entry.mtime = len(body), 0o644, int(time.time())
            tar.addfile(entry, io.BytesIO(body))
            for name in ARCHIVE_FILES:
                path = image_dir / name
                entry = tarfile.TarInfo(name)
                entry.size, entry.mode = manifest["files"][name]["size"], 0o644
                entry.mtime = int(path.stat().st_mtime)
                with open(path, "rb") as f:
                    tar.addfile(entry, f)
        os.chmod(tmp, 0o644)
        digest = file_sha256(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("exported guest image %s to %s (%.1f MB)", manifest["recipe_hash"], out, out.stat().st_size / 1e6)
    return digest


# ---- import -------------------------------------------------------------------------------

def _check_manifest(manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidArgument("not a Dockyard guest image: its manifest.json is missing or of another format")
    if manifest.get("version") != VERSION:
        raise InvalidArgument(f"guest image format version {manifest.get('version')!r} is not supported "
                              f"(this Dockyard reads version {VERSION})")
    if not RECIPE_HASH.fullmatch(str(manifest.get("recipe_hash", ""))):
        raise InvalidArgument("guest image manifest has no valid recipe_hash")
    files = manifest.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(ARCHIVE_FILES):
        raise InvalidArgument(f"guest image manifest must list exactly {', '.join(ARCHIVE_FILES)}")
    for name, entry in files.items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int)
                or not SHA256.fullmatch(str(entry.get("sha256", "")))):
            raise InvalidArgument(f"guest image manifest: bad entry for {name}")
    return manifest


def _write_sparse(source: IO[bytes], target: Path, size: int) -> str:
    """Copy `size` bytes to `target`, leaving runs of zeros as holes; return their SHA-256.

    The root filesystem image is mostly unallocated ext4 blocks: holes keep it
    as small on disk as the build left it.
    """
    digest = hashlib.sha256()
    zeros = bytes(CHUNK)
    copied = 0
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            copied += len(chunk)
            if chunk == zeros[:len(chunk)]:
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
        out.truncate(copied)
        out.flush()
        os.fsync(out.fileno())
    if copied != size:
        raise InvalidArgument(f"guest image: {target.name} holds {copied} bytes, its manifest says {size}")
    return digest.hexdigest()


def _unpack(archive: Path, staging: Path) -> dict[str, Any]:
    """Unpack and check every member into `staging`; return the manifest."""
    manifest: dict[str, Any] | None = None
    seen: set[str] = set()
    try:
        with tarfile.open(archive, mode="r|xz") as tar:
            for member in tar:
                if manifest is None:
                    if member.name != MANIFEST or not member.isreg() or member.size > MANIFEST_MAX:
                        raise InvalidArgument("not a Dockyard guest image: it does not start with manifest.json")
                    stream = tar.extractfile(member)
                    assert stream is not None  # a regular member always has a stream
                    try:
                        manifest = _check_manifest(json.loads(stream.read()))
                    except ValueError as err:
                        raise InvalidArgument(f"guest image manifest is not JSON: {err}") from None
                    continue
                if member.name not in ARCHIVE_FILES or member.name in seen or not member.isreg():
                    raise InvalidArgument(f"guest image holds an unexpected member {member.name!r}")
                seen.add(member.name)
                expected = manifest["files"][member.name]
                stream = tar.extractfile(member)
                assert stream is not None
                actual = _write_sparse(stream, staging / member.name, expected["size"])
                check_digest(member.name, expected["sha256"].split(":")[-1].lower(), actual)
    except (tarfile.TarError, EOFError, lzma.LZMAError) as err:
        # A truncated or corrupt file; a full disk (OSError) is not the archive's fault.
        raise InvalidArgument(f"{archive.name} is not a readable guest image archive: {err}") from None
    if manifest is None:
        raise InvalidArgument("not a Dockyard guest image: the archive is empty")
    missing = set(ARCHIVE_FILES) - seen
    if missing:
        raise InvalidArgument(f"guest image is missing {', '.join(sorted(missing))}")
    return manifest


def _remove_stale_staging(cache_dir: Path) -> None:
    for leftover in cache_dir.glob(f"{STAGING_PREFIX}*"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def install_archive(archive: Path, cache_dir: Path, expected_sha256: str, source: str = "") -> InstalledImage:
    """Check `archive` against the pinned digest, unpack it and rename it into the cache."""
    expected = parse_digest(expected_sha256)
    check_digest(source or str(archive), expected, file_sha256(archive))
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(cache_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=cache_dir))
    try:
        manifest = _unpack(archive, staging)
        recipe_hash = manifest["recipe_hash"]
        final = cache_dir / recipe_hash
        description = {
            "kernel": str(final / "vmlinuz"), "initrd": str(final / "initrd.img"),
            "rootfs": str(final / "rootfs.img"), "cmdline": manifest["cmdline"],
            "recipe_hash": recipe_hash, "kernel_package": manifest["kernel_package"],
            "parts": manifest.get("parts", {}),
            "imported": {"sha256": expected, "source": source or str(archive),
                         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        }
        write_json_atomic(staging / "image.json", description)
        os.chmod(staging, 0o755)
        already = (final / "image.json").exists()
        if not already:
            try:
                staging.rename(final)
            except OSError:
                # A build or another import of the same recipe got there first.
                if not (final / "image.json").exists():
                    raise
                already = True
        if already:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_json_atomic(cache_dir / IMPORTED_RECORD, {"recipe_hash": recipe_hash, "sha256": expected,
                                                    "source": source or str(archive)})
    log.info("guest image %s installed in %s", recipe_hash, final)
    return InstalledImage(final, recipe_hash, expected, already)


def imported_record(cache_dir: Path) -> dict[str, str] | None:
    """What `imported.json` says about the last import, if its image is still in the cache."""
    record = read_json(cache_dir / IMPORTED_RECORD, None)
    if not isinstance(record, dict) or not RECIPE_HASH.fullmatch(str(record.get("recipe_hash", ""))):
        return None
    if not (cache_dir / record["recipe_hash"] / "image.json").is_file():
        return None
    return {key: str(value) for key, value in record.items()}


# ---- URLs ---------------------------------------------------------------------------------

def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def download(url: str, directory: Path, timeout: float = 60.0) -> Path:
    """Stream `url` into a temporary file in `directory` (the caller removes it)."""
    import urllib.error
    import urllib.request

    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".download-", dir=directory)
    path = Path(name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "dockyard"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            shutil.copyfileobj(response, out, CHUNK)
    except urllib.error.HTTPError as err:
        path.unlink(missing_ok=True)
        raise RuntimeFailure(f"downloading {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        path.unlink(missing_ok=True)
        raise RuntimeFailure(f"downloading {url} failed: {getattr(err, 'reason', err)}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def import_image(source: str, expected_sha256: str, cache_dir: Path) -> InstalledImage:
    """Install the archive at path or http(s) URL `source` after checking its digest."""
    expected = parse_digest(expected_sha256)
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise NotFound(f"no guest image file at {source}")
        return install_archive(path, cache_dir, expected, source=str(path.resolve()))
    fetched = download(source, cache_dir)
    try:
        return install_archive(fetched, cache_dir, expected, source=source)
    finally:
        fetched.unlink(missing_ok=True)
