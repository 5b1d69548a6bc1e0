"""`docker save`: images as one tar, in the layout current Docker writes, which both the
docker-archive readers (manifest.json) and OCI image-layout readers (index.json) load:

* ``blobs/sha256/<hex>`` — each layer as an uncompressed tar (its digest is its diff id),
  each image config byte for byte (its digest is the image id), and one OCI image
  manifest per image;
* ``manifest.json`` — ``[{"Config": "blobs/sha256/..", "RepoTags": [..], "Layers": [..]}]``;
* ``repositories`` — the legacy ``{name: {tag: top layer}}`` map (when any image is named);
* ``index.json`` and ``oci-layout`` — an OCI index with one descriptor per name
  (annotated with the full name and the tag), or per unnamed image.

Which names an argument stands for follows dockerd: "repo:tag" that tag, a bare "repo"
every tag of it, an id (or a unique prefix, or repo@digest) the image without a name.
The tar is generated as it is sent; each layer is decompressed to a temp file just before
its turn (a registry's gzip blob, checked against its diff id), so the archive never sits
whole on disk.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from ..errors import InvalidArgument, NotFound, RegistryError
from .blob_store import file_digest, sha256_digest
from .image_authoring import plain_tar
from .reference import parse_reference
from .store import Image, ImageStore

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
NAME_ANNOTATION = "io.containerd.image.name"
TAG_ANNOTATION = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


@dataclass
class SaveItem:
    """One image to save and the names ("repo:tag", familiar) it is saved under."""

    image: Image
    chains: list[str]
    refs: list[str] = field(default_factory=list)


def _is_name_only(name: str) -> bool:
    return "@" not in name and ":" not in name.rsplit("/", 1)[-1]


def resolve_names(store: ImageStore, names: list[str]) -> list[SaveItem]:
    """The images and names `names` stand for (NotFound as dockerd words it)."""
    items: dict[str, SaveItem] = {}

    def add(image: Image, ref: str | None) -> None:
        item = items.get(image.id)
        if item is None:
            item = items[image.id] = SaveItem(image, store.chain_ids(image))
        if ref and ref not in item.refs:
            item.refs.append(ref)

    if not names:
        raise InvalidArgument("no image names given to save")
    for name in names:
        if name.startswith("sha256:"):   # an image id: saved without a name
            add(store.get(name), None)
            continue
        if _is_name_only(name):
            repo = parse_reference(name).familiar_name
            tagged = [(image, tag) for image in store.list() for tag in image.repo_tags
                      if tag.rsplit(":", 1)[0] == repo]
            for image, tag in sorted(tagged, key=lambda t: t[1]):
                add(image, tag)
            if not tagged:
                add(store.get(name), None)   # an id or a prefix of one
            continue
        image = store.get(name)
        ref = parse_reference(name)
        add(image, None if ref.digest else ref.familiar())
    return list(items.values())


def _member(name: str, size: int, mtime: int = 0, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = mtime
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _file(name: str, data: bytes, mtime: int = 0) -> Iterator[bytes]:
    yield _member(name, len(data), mtime)
    yield data
    yield _padding(len(data))


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def check_layers(store: ImageStore, items: list[SaveItem]) -> None:
    """Every layer has a blob to save (or is rebuilt now): fail before the tar starts."""
    for item in items:
        if not item.chains:
            raise InvalidArgument(f"cannot save image {item.image.id}: it has no layers")
        for chain in item.chains:
            store.layer_blob(chain)


def save_archive(store: ImageStore, items: list[SaveItem]) -> Generator[bytes, None, None]:
    """The archive's bytes, in pieces (see the module docstring for the layout)."""
    yield _member("blobs/", 0, directory=True)
    yield _member("blobs/sha256/", 0, directory=True)
    written: dict[str, int] = {}       # diff id -> size of its uncompressed tar
    manifest_items: list[dict[str, object]] = []
    descriptors: list[dict[str, object]] = []
    repositories: dict[str, dict[str, str]] = {}
    for item in items:
        diff_ids = list((item.image.config.get("rootfs") or {}).get("diff_ids") or [])
        for chain, diff_id in zip(item.chains, diff_ids, strict=True):
            if diff_id not in written:
                written[diff_id] = yield from _layer(store, chain, diff_id)
        config_bytes = store.blobs.read(item.image.id)
        yield from _file(f"blobs/sha256/{item.image.id[7:]}", config_bytes)
        platform = {"architecture": item.image.config.get("architecture", "amd64"),
                    "os": item.image.config.get("os", "linux")}
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": item.image.id, "size": len(config_bytes),
                       "platform": platform},
            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": written[d]} for d in diff_ids],
        }, separators=(",", ":")).encode()
        manifest_digest = sha256_digest(manifest)
        yield from _file(f"blobs/sha256/{manifest_digest[7:]}", manifest)
        descriptor = {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
                      "platform": platform}
        for ref in item.refs:
            parsed = parse_reference(ref)
            tag = parsed.tag or "latest"
            descriptors.append({**descriptor, "annotations": {
                NAME_ANNOTATION: f"{parsed.domain}/{parsed.path}:{tag}", TAG_ANNOTATION: tag}})
            repositories.setdefault(parsed.familiar_name, {})[tag] = diff_ids[-1][7:]
        if not item.refs:
            descriptors.append(descriptor)
        entry: dict[str, object] = {"Config": f"blobs/sha256/{item.image.id[7:]}",
                                    "RepoTags": list(item.refs) or None,
                                    "Layers": [f"blobs/sha256/{d[7:]}" for d in diff_ids]}
        manifest_items.append(entry)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    yield from _file("index.json", json.dumps(index, separators=(",", ":")).encode())
    yield from _file("manifest.json", json.dumps(manifest_items, separators=(",", ":")).encode() + b"\n")
    yield from _file("oci-layout", OCI_LAYOUT)
    if repositories:
        yield from _file("repositories", json.dumps(repositories, separators=(",", ":")).encode() + b"\n")
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _layer(store: ImageStore, chain: str, diff_id: str) -> Generator[bytes, None, int]:
    """One layer's uncompressed tar as a blob member; returns its size."""
    _, _, _, blob = store.layer_blob(chain)
    with plain_tar(store.blobs, blob) as tar_path:
        if file_digest(tar_path) != diff_id:
            raise RegistryError(f"layer {chain} does not match its diff id {diff_id}")
        size = os.path.getsize(tar_path)
        yield _member(f"blobs/sha256/{diff_id[7:]}", size)
        with open(tar_path, "rb") as f:
            sent = 0
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                sent += len(chunk)
                yield chunk
        if sent != size:
            raise NotFound(f"layer {chain} changed while it was being saved")
        yield _padding(size)
    return size

