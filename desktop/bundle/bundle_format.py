"""The bundle file: a plain tar whose first member is a JSON manifest.

Layout (version 1):
  manifest.json    {"format": "dockyard-bundle", "version": 1, "project": ..., "images": [...],
                    "networks": [...], "volumes": [...], "containers": [...]}
  images.tar       the engine's `GET /images/get` stream (docker save) for every image used
  volumes/N.tar    one named volume's files, entries under a top directory `volume`
  checksums.json   {member name: "sha256:..."} of every member above but the manifest

The manifest comes first so a reader can refuse a foreign file after one header.
Members are streamed in without staging copies: the header is written with a
placeholder size and rewritten once the member's length is known (the output is
a regular file, written to a temporary name and renamed into place at the end).
The reader checks every checksum before a load changes anything, so a damaged
file is refused whole rather than half loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from runtime.errors import InvalidArgument

FORMAT = "dockyard-bundle"
VERSION = 1
MANIFEST = "manifest.json"
CHECKSUMS = "checksums.json"
IMAGES_MEMBER = "images.tar"
VOLUME_TOP = "volume"
BLOCK = 512


def volume_member(index: int) -> str:
    return f"volumes/{index}.tar"


class BundleWriter:
    """Writes a bundle to a temporary file beside `path`; `commit()` renames it into place."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent or ".")
        self.tmp = Path(tmp)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.checksums: dict[str, str] = {}

    def _header(self, name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, int(time.time())
        # GNU format keeps the header one block for any size (base-256 above 8 GiB),
        # so the placeholder can be overwritten in place.
        return info.tobuf(format=tarfile.GNU_FORMAT)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add_stream(name, [data])

    def add_stream(self, name: str, chunks: Iterable[bytes]) -> int:
        """Append member `name` holding the concatenated chunks; returns its size."""
        member = self.member_file(name)
        for chunk in chunks:
            member.write(chunk)
        member.close()
        return member.size

    def member_file(self, name: str) -> _MemberFile:
        """A write-only file object whose bytes become member `name` when closed."""
        return _MemberFile(self, name)

    def commit(self) -> None:
        self.add_bytes(CHECKSUMS, json.dumps(self.checksums, indent=1, sort_keys=True).encode())
        self.file.write(b"\0" * (2 * BLOCK))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


class _MemberFile:
    """File-like sink for tarfile's stream writer: appends to an open member of a BundleWriter."""

    def __init__(self, writer: BundleWriter, name: str) -> None:
        self.writer, self.name = writer, name
        self.file = writer.file
        self.start = self.file.tell()
        self.file.write(writer._header(name, 0))
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def close(self) -> None:
        if self.name != MANIFEST:
            self.writer.checksums[self.name] = f"sha256:{self.digest.hexdigest()}"
        self.file.write(b"\0" * (-self.size % BLOCK))
        end = self.file.tell()
        self.file.seek(self.start)
        self.file.write(self.writer._header(self.name, self.size))
        self.file.seek(end)


def _refuse(path: Path, why: str) -> InvalidArgument:
    return InvalidArgument(f"{path} is not a Dockyard bundle: {why}")


class BundleReader:
    """An opened bundle with its manifest checked; members are read as streams."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.tar = tarfile.open(self.path, "r:")  # noqa: SIM115 - open for the reader's life; close() closes it
        except FileNotFoundError:
            raise InvalidArgument(f"no such file: {self.path}") from None
        except (tarfile.TarError, OSError) as err:
            raise _refuse(self.path, f"not a tar file ({err})") from None
        try:
            self.manifest = self._read_manifest()
            # Reading every header finds a truncated or corrupt file before anything is created.
            self.members = {m.name: m for m in self.tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as err:
            self.tar.close()
            raise _refuse(self.path, f"corrupt tar ({err})") from None
        except InvalidArgument:
            self.tar.close()
            raise
        self._check_members()

    def _read_manifest(self) -> dict[str, Any]:
        first = self.tar.next()
        if first is None or first.name != MANIFEST or not first.isfile():
            raise _refuse(self.path, f"its first member is not {MANIFEST}")
        stream = self.tar.extractfile(first)
        assert stream is not None
        try:
            manifest = json.loads(stream.read())
        except (ValueError, UnicodeDecodeError) as err:
            raise _refuse(self.path, f"{MANIFEST} is not JSON ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _refuse(self.path, f"{MANIFEST} does not say format {FORMAT!r}")
        if manifest.get("version") != VERSION:
            raise InvalidArgument(f"{self.path} is a bundle of version {manifest.get('version')!r}; "
                                  f"this Dockyard reads version {VERSION}")
        for key, kind in (("images", list), ("networks", list), ("volumes", list), ("containers", list)):
            if not isinstance(manifest.get(key), kind):
                raise _refuse(self.path, f"{MANIFEST} has no {key} list")
        return manifest

    def _check_members(self) -> None:
        try:
            wanted = [IMAGES_MEMBER] if self.manifest["images"] else []
            wanted += [v["member"] for v in self.manifest["volumes"] if v.get("member")]
            for name in [*wanted, CHECKSUMS]:
                member = self.members.get(name)
                if member is None or not member.isfile():
                    raise _refuse(self.path, f"member {name} is missing")
            checksums = json.loads(self.open_member(CHECKSUMS).read())
            for name in self.members:
                if name in (MANIFEST, CHECKSUMS):
                    continue
                digest = hashlib.sha256()
                stream = self.open_member(name)
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
                if checksums.get(name) != f"sha256:{digest.hexdigest()}":
                    raise _refuse(self.path, f"member {name} is damaged (its checksum does not match)")
        except (ValueError, AttributeError, TypeError, KeyError, tarfile.TarError, OSError) as err:
            self.tar.close()
            raise _refuse(self.path, f"corrupt ({type(err).__name__}: {err})") from None
        except InvalidArgument:
            self.tar.close()
            raise

    def open_member(self, name: str) -> IO[bytes]:
        stream = self.tar.extractfile(self.members[name])
        assert stream is not None
        return stream

    def close(self) -> None:
        self.tar.close()
