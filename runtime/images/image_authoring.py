"""Making images here rather than pulling them: layers from tars, images from configs,
and the distributable blobs and manifests push and save hand out.

These functions work on the store's parts (BlobStore, LayerStore, ImageIndex);
`ImageStore` calls them under its lock and is the API the engine uses.

A registered layer is unpacked with layer_unpack (every member treated as
hostile, exactly as pulls do), into a temp directory renamed into place, its
record written last; its gzip blob goes into the blob store first, so a record
never names a blob that is missing. Everything is content-addressed, so doing
the same thing twice finds the first result and does nothing.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

from ..errors import InvalidArchive, InvalidArgument, NotFound, RegistryError
from .blob_store import BlobStore, file_digest
from .index import ImageIndex, ImageRecord
from .layer_store import LayerRecord, LayerStore, chain_ids
from .layer_tar import write_layer_tar
from .layer_unpack import UnsafeLayerError

GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PLAIN_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
# OCI layer types as they appear in a Docker schema2 manifest.
_SCHEMA2_LAYER_TYPE = {
    "application/vnd.oci.image.layer.v1.tar+gzip": GZIP_LAYER,
    "application/vnd.oci.image.layer.v1.tar": PLAIN_LAYER,
}
GZIP_LEVEL = 1   # fastest: 0.6 s vs 2.5 s at level 6 for a 53 MB tar, 13 % larger (every commit and build step pays it)
_CHUNK = 1 << 20


class Readable(Protocol):
    """What imports and loads read a client's tar from: a file, or the HTTP request body."""

    def read(self, size: int = -1, /) -> bytes: ...


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


@contextlib.contextmanager
def plain_tar(blobs: BlobStore, tar_path: Path) -> Iterator[Path]:
    """`tar_path` itself if it is an uncompressed tar, else a temp copy decompressed
    (gzip, bzip2, xz or zstd), removed when the block ends."""
    with open(tar_path, "rb") as f:
        head = f.read(6)
    opener: Any = None
    if head.startswith(b"\x1f\x8b"):
        opener = gzip.open
    elif head.startswith(b"BZh"):
        opener = bz2.open
    elif head.startswith(b"\xfd7zXZ\x00"):
        opener = lzma.open
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        opener = _zstd_open
    if opener is None:
        yield tar_path
        return
    tmp = blobs.new_temp()
    try:
        try:
            with opener(tar_path, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, subprocess.CalledProcessError) as err:
            if isinstance(err, OSError) and err.errno is not None:
                raise   # our disk, not the client's data
            raise InvalidArchive(f"archive data is corrupt: {err}") from None
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _zstd_open(path: Path, _mode: str) -> Iterator[IO[bytes]]:
    if shutil.which("zstd") is None:
        raise InvalidArchive("archive is zstd-compressed and the zstd tool is not installed")
    with open(path, "rb") as raw:
        proc = subprocess.Popen(["zstd", "-dc"], stdin=raw, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            proc.stdout.close()
            if proc.wait() != 0:
                raise subprocess.CalledProcessError(proc.returncode, "zstd -dc")


def gzip_blob(blobs: BlobStore, plain: Path) -> tuple[str, int, str]:
    """Compress the tar at `plain` into the blob store; (digest, size, media type).

    No file name and a zero mtime in the gzip header: the same tar always gives the
    same blob, so the same layer has one digest wherever it is made.
    """
    tmp = blobs.new_temp()
    try:
        with open(tmp, "wb") as out, open(plain, "rb") as src:
            hashing = _HashingWriter(out)
            with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=GZIP_LEVEL,
                               mtime=0, filename="") as gz:
                shutil.copyfileobj(src, gz, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        digest = "sha256:" + hashing.hash.hexdigest()
        blobs.commit(tmp, digest, verified=True)
        return digest, hashing.size, GZIP_LAYER
    finally:
        tmp.unlink(missing_ok=True)


def chain_of(parent_chain: str, diff_id: str) -> str:
    return chain_ids([parent_chain, diff_id])[1] if parent_chain else diff_id


def register_layer(blobs: BlobStore, layers: LayerStore, tar_path: Path,
                   parent_chain: str) -> LayerRecord:
    """See ImageStore.register_layer."""
    if parent_chain and not layers.has(parent_chain):
        raise NotFound(f"parent layer {parent_chain} is not in the store")
    with plain_tar(blobs, tar_path) as plain:
        diff_id = file_digest(plain)
        chain = chain_of(parent_chain, diff_id)
        with layers.locked(chain):
            if layers.has(chain):
                record = layers.get(chain)
                if not (record.blob_digest and blobs.has(record.blob_digest)):
                    record = layers.set_blob(chain, *gzip_blob(blobs, plain))
                return record
            blob = gzip_blob(blobs, plain)
            try:
                return layers.create(chain, diff_id, parent_chain, plain, None, blob)
            except BaseException as err:
                if len(layers.blob_users(blob[0])) == 0:
                    blobs.delete(blob[0])
                if isinstance(err, UnsafeLayerError):
                    raise InvalidArchive(str(err)) from None
                raise


def canonical_json(obj: Any) -> bytes:
    """The config bytes an image id is the digest of: compact, keys sorted (as Go sorts maps)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def create_image(blobs: BlobStore, layers: LayerStore, index: ImageIndex,
                 config: dict[str, Any], chains: list[str], parent: str = "",
                 config_bytes: bytes | None = None) -> str:
    """Store the config (rootfs filled in from `chains`) and the image record; its id.

    `config_bytes`: a config to keep byte for byte instead (docker load keeps image ids);
    its rootfs.diff_ids must be the chain's.
    """
    records = []
    for chain in chains:
        if not layers.has(chain):
            raise NotFound(f"layer {chain} is not in the store")
        records.append(layers.get(chain))
    diff_ids = [r.diff_id for r in records]
    if chain_ids(diff_ids) != list(chains):
        raise InvalidArgument("the layers given do not stack: each must be the child of the one before")
    if config_bytes is None:
        config = dict(config)
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        data = canonical_json(config)
    else:
        data = config_bytes
        if (json.loads(data).get("rootfs") or {}).get("diff_ids") != diff_ids:
            raise InvalidArgument("the image config's rootfs.diff_ids are not its layers")
    image_id = blobs.put(data)
    if image_id not in index.images:
        if parent and parent not in index.images:
            raise NotFound(f"No such image: {parent}")
        index.put(ImageRecord(id=image_id, chain_ids=list(chains), size=sum(r.size for r in records),
                              config=json.loads(data), parent=parent))
    return image_id


def discard_layers(blobs: BlobStore, layers: LayerStore, index: ImageIndex, chains: list[str]) -> None:
    """Remove the layers in `chains` that no image uses (what a failed load registered)."""
    used = {c for r in index.images.values() for c in r.chain_ids}
    for chain in reversed(chains):
        if chain in used or not layers.has(chain):
            continue
        record = layers.get(chain)
        layers.remove(chain)
        if record.blob_digest and not layers.blob_users(record.blob_digest):
            blobs.delete(record.blob_digest)


def layer_blob(blobs: BlobStore, layers: LayerStore, chain: str) -> tuple[str, int, str, Path]:
    """See ImageStore.layer_blob."""
    record = layers.get(chain)
    if record.blob_digest and blobs.has(record.blob_digest):
        return record.blob_digest, record.blob_size, record.media_type, blobs.path(record.blob_digest)
    with layers.locked(chain):
        record = layers.get(chain)
        if not (record.blob_digest and blobs.has(record.blob_digest)):
            tmp = blobs.new_temp()
            try:
                with open(tmp, "wb") as out:
                    write_layer_tar(layers.diff_dir(chain), out)
                rebuilt = file_digest(tmp)
                if rebuilt != record.diff_id:
                    raise RegistryError(
                        f"layer {chain} has no stored blob and its files no longer give its diff id "
                        f"{record.diff_id} (got {rebuilt}); pull the image again")
                record = layers.set_blob(chain, *gzip_blob(blobs, tmp))
            finally:
                tmp.unlink(missing_ok=True)
    return record.blob_digest, record.blob_size, record.media_type, blobs.path(record.blob_digest)


def manifest_for(blobs: BlobStore, layers: LayerStore, record: ImageRecord) -> bytes:
    """A Docker schema2 manifest of the image's config and layer blobs, indented as dockerd does."""
    layer_descs = []
    for chain in record.chain_ids:
        digest, size, media_type, _ = layer_blob(blobs, layers, chain)
        layer_descs.append({"mediaType": _SCHEMA2_LAYER_TYPE.get(media_type, media_type),
                            "size": size, "digest": digest})
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": blobs.path(record.id).stat().st_size,
                   "digest": record.id},
        "layers": layer_descs,
    }
    return json.dumps(manifest, indent=3).encode()
