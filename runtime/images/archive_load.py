"""`docker load`: images from a tar (plain or gzip/bzip2/xz/zstd-compressed) in either
layout `docker save` writes: docker-archive (manifest.json: config and layer paths, tags)
or an OCI image layout (index.json: manifests by digest, names in annotations, nested
indexes resolved to this engine's platform).

Everything the archive says is checked before a layer is registered (configs parse and
are for linux, layer counts match, every file named is there, every name parses), and
each layer is unpacked by the safe unpacker and must give the diff id its config names,
as dockerd checks. If anything fails, the layers and images this load made are removed
again: a refused archive leaves the store as it was. Member names are only looked up,
never extracted to disk by name. Images keep their ids (the config is stored byte for
byte). Messages follow dockerd's: "Loading layer" progress (unless quiet), then
"Loaded image: name:tag" per name, or "Loaded image ID: sha256:..." for unnamed images.
"""

from __future__ import annotations

import json
import logging
import platform
import posixpath
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DockyardError, InvalidArchive, NotFound
from .blob_store import sha256_digest
from .image_authoring import Readable, chain_of, plain_tar
from .pull import PullProgress
from .reference import parse_reference, short_hex
from .store import ImageStore

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
MAX_JSON = 64 << 20          # a config, manifest or index larger than this is not one
_CHUNK = 1 << 20
_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json")
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
_NAME_ANNOTATION = "io.containerd.image.name"
_TAG_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass
class _Entry:
    """One image the archive holds."""

    config_bytes: bytes
    diff_ids: list[str]
    layers: list[str]                 # member names of its layer tars, lowest first
    tags: list[str] = field(default_factory=list)
    parent: str = ""


class _Archive:
    """The (uncompressed) archive on disk, its members by cleaned name."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:")   # noqa: SIM115  # closed by load_archive
            self.members = {_clean(m.name): m for m in self.tar.getmembers()}
        except (tarfile.TarError, EOFError) as err:
            raise InvalidArchive(f"invalid tar archive: {err}") from None

    def has(self, name: str) -> bool:
        return _clean(name) in self.members

    def open(self, name: str) -> Any:
        member = self.members.get(_clean(name))
        try:
            f = self.tar.extractfile(member) if member is not None else None
        except (KeyError, tarfile.TarError):   # a link to a member that is not there
            f = None
        if f is None:
            raise InvalidArchive(f"{name} is missing from the archive")
        return f

    def json(self, name: str) -> tuple[bytes, Any]:
        member = self.members.get(_clean(name))
        if member is not None and member.size > MAX_JSON:
            raise InvalidArchive(f"{name} is too large to be an image's JSON")
        data = self.open(name).read(MAX_JSON + 1)
        try:
            return data, json.loads(data)
        except ValueError as err:
            raise InvalidArchive(f"{name}: invalid JSON: {err}") from None


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _blob_name(digest: Any) -> str:
    if not isinstance(digest, str) or not digest.startswith("sha256:") or "/" in digest:
        raise InvalidArchive(f"unsupported digest {digest!r} in the archive's index")
    return f"blobs/sha256/{digest[7:]}"


def _go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _entries(archive: _Archive) -> list[_Entry]:
    """What the archive holds, read and checked (nothing registered yet)."""
    if archive.has("manifest.json"):
        _, manifest = archive.json("manifest.json")
        if not isinstance(manifest, list):
            raise InvalidArchive("invalid manifest, manifest cannot be null (but can be [])")
        entries = []
        for item in manifest:
            if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
                raise InvalidArchive("invalid manifest.json entry")
            entries.append(_entry(archive, item["Config"], list(item.get("Layers") or []),
                                  list(item.get("RepoTags") or []), str(item.get("Parent") or "")))
        return entries
    if archive.has("index.json"):
        _, index = archive.json("index.json")
        entries = []
        for desc in (index.get("manifests") if isinstance(index, dict) else None) or []:
            entries += _oci_entries(archive, desc, depth=0)
        return entries
    raise InvalidArchive("the archive holds neither manifest.json nor index.json: not an image "
                         "archive of docker save (pre-1.10 archives are not supported)")


def _oci_entries(archive: _Archive, desc: Any, depth: int) -> list[_Entry]:
    if not isinstance(desc, dict) or depth > 4:
        raise InvalidArchive("invalid descriptor in the archive's index")
    media_type = desc.get("mediaType", "")
    if media_type in _INDEX_TYPES:
        _, index = archive.json(_blob_name(desc.get("digest")))
        ours = [d for d in index.get("manifests") or [] if isinstance(d, dict) and
                (d.get("platform") or {}).get("os", "linux") == "linux" and
                (d.get("platform") or {}).get("architecture", _go_arch()) == _go_arch()]
        return [e for d in ours[:1] for e in _oci_entries(archive, d, depth + 1)]
    if media_type not in _MANIFEST_TYPES:
        return []   # attestations and other artefacts are not images
    _, manifest = archive.json(_blob_name(desc.get("digest")))
    annotations = desc.get("annotations") or {}
    name = annotations.get(_NAME_ANNOTATION) or annotations.get(_TAG_ANNOTATION) or ""
    tags = [name] if ":" in name.rsplit("/", 1)[-1] else []
    layers = [_blob_name(layer.get("digest")) for layer in manifest.get("layers") or []]
    return [_entry(archive, _blob_name((manifest.get("config") or {}).get("digest")), layers, tags, "")]


def _entry(archive: _Archive, config_name: str, layers: list[str], tags: list[str], parent: str) -> _Entry:
    raw, config = archive.json(config_name)
    if not isinstance(config, dict):
        raise InvalidArchive(f"{config_name} is not an image config")
    os_name = config.get("os") or "linux"
    if os_name != "linux":
        raise InvalidArchive(f"cannot load {os_name} image on linux")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(layers) != len(diff_ids):
        raise InvalidArchive(f"invalid manifest, layers length mismatch: expected {len(layers)}, "
                             f"got {len(diff_ids)}")
    for layer in layers:
        if not archive.has(layer):
            raise InvalidArchive(f"layer {layer} is missing from the archive")
    familiar = []
    for tag in tags:
        ref = parse_reference(str(tag))
        if ref.digest:
            raise InvalidArchive(f"invalid tag {tag!r}")
        familiar.append(ref.familiar())
    return _Entry(raw, [str(d) for d in diff_ids], layers, familiar, parent)


def load_archive(store: ImageStore, source: Readable, emit: Emit, quiet: bool = False) -> list[str]:
    """Load every image of the archive read from `source`; returns the loaded image ids."""
    spooled = store.blobs.new_temp()
    new_layers: list[str] = []
    new_images: list[str] = []
    try:
        with open(spooled, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
        with plain_tar(store.blobs, spooled) as plain:
            archive = _Archive(plain)
            try:
                entries = _entries(archive)
                return _load(store, archive, entries, PullProgress(None if quiet else emit),
                             emit, new_layers, new_images)
            finally:
                archive.tar.close()
    except BaseException:
        for image_id in new_images:
            try:
                store.remove(image_id, force=True)
            except DockyardError as err:
                log.warning("could not remove %s after a failed load: %s", image_id, err)
        store.discard_layers(new_layers)
        raise
    finally:
        spooled.unlink(missing_ok=True)


def _load(store: ImageStore, archive: _Archive, entries: list[_Entry], progress: PullProgress,
          emit: Emit, new_layers: list[str], new_images: list[str]) -> list[str]:
    loaded: list[str] = []
    lines: list[str] = []
    named_last = False
    for entry in entries:
        chains: list[str] = []
        for i, (member, diff_id) in enumerate(zip(entry.layers, entry.diff_ids, strict=True)):
            parent = chains[-1] if chains else ""
            chain = chain_of(parent, diff_id)
            if not store.layers.has(chain):
                _register(store, archive, member, parent, diff_id, i, progress, new_layers)
            chains.append(chain)
        existed = store.exists(sha256_digest(entry.config_bytes))
        parent = entry.parent if entry.parent and store.exists(entry.parent) else ""
        image = store.create_image({}, chains, [], parent=parent, config_bytes=entry.config_bytes)
        if not existed:
            new_images.append(image.id)
        loaded.append(image.id)
        for tag in entry.tags:
            try:
                previous = store.get(tag).id
            except NotFound:
                previous = image.id
            if previous != image.id:
                lines.append(f"The image {tag} already exists, renaming the old one with ID "
                             f"{previous} to empty string")
            store.tag(image.id, *tag.rsplit(":", 1))
            lines.append(f"Loaded image: {tag}")
        named_last = bool(entry.tags)
    if not named_last:
        lines += [f"Loaded image ID: {image_id}" for image_id in loaded]
    for line in lines:
        emit({"stream": line + "\n"})
    return loaded


def _register(store: ImageStore, archive: _Archive, member: str, parent: str, diff_id: str,
              index: int, progress: PullProgress, new_layers: list[str]) -> None:
    """One layer of the archive into the store; its diff id must be the config's."""
    layer_id = short_hex(diff_id)
    total = archive.members[_clean(member)].size if _clean(member) in archive.members else None
    progress.layer(layer_id, "Loading layer", 0, total)
    tmp = store.blobs.new_temp()
    try:
        with archive.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        record = store.register_layer(tmp, parent)
    except (tarfile.TarError, EOFError) as err:
        raise InvalidArchive(f"layer {member}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    if record.chain_id not in new_layers:
        new_layers.append(record.chain_id)
    if record.diff_id != diff_id:
        raise InvalidArchive(f"invalid diffID for layer {index}: expected {diff_id!r}, "
                             f"got {record.diff_id!r}")
    progress.layer(layer_id, "Loading layer", total or 0, total)
