"""Content-addressed image storage: blobs, image records, tags and unpacked layers.

Layout under the store's root (see blob_store, layer_store, index):

* ``blobs/sha256/<hex>`` — configs and manifests, verified, written atomically;
* ``imagedb/<id hex>.json`` and ``repositories.json`` — image records and names;
* ``layers/<chain id hex>/`` — unpacked diff dirs, one per chain id, shared
  read-only by all images and containers; ``layers/l/<SHORT>`` short links;
* ``layerdb/``, ``locks/``, ``tmp/`` — layer records, per-layer locks, downloads.

Layer blobs are kept as pulled (push and save serve them); layers made here keep a
gzip blob (image_authoring.py: register_layer, create_image, layer_blob, manifest_for).

Overlay mounts: `layer_dirs(image)` gives absolute diff dirs, lowest first.
`short_layer_links(image)` gives the same layers as paths *relative to*
``<root>/layers`` ("l/<26 chars>"), lowest first; the launcher should
``chdir(store.layers_root)`` and pass ``lowerdir=`` those paths joined with
":" in *reverse* order (overlay lists the top layer first), which keeps the
one-page mount option string far from its limit.

`dial_map` (dict or callable) maps a registry host as the user names it to
the address to connect to, e.g. {"127.0.0.1:5000": "10.0.2.2:5000"} inside a VM;
image names, tags and auth stay the user's. Without one, the environment
variable DOCKYARD_HOST_LOOPBACK (e.g. "10.0.2.2") maps every
loopback registry to that address, keeping the port.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, InvalidArgument, NotFound
from ..timestamps import unix_seconds
from .blob_store import BlobStore
from .index import ImageIndex
from .layer_store import LayerRecord, LayerStore
from .pull import ProgressCallback, Puller, PullProgress
from .reference import Reference, is_sha256_hex, parse_reference, short_hex
from .registry_credentials import RegistryCredentials

if TYPE_CHECKING:
    # Imported on the first pull (http.client, ssl, ...): not needed to start the engine.
    from .registry_client import DialMap, RegistryClient

log = logging.getLogger(__name__)


@dataclass
class Image:
    """One image: its id is the sha256 digest of its config blob."""

    id: str                                   # "sha256:<hex>"
    config: dict[str, Any]                    # full OCI/Docker image config JSON
    repo_tags: list[str] = field(default_factory=list)     # "127.0.0.1:5000/busybox:latest"
    repo_digests: list[str] = field(default_factory=list)  # "repo@sha256:<manifest digest>"
    size: int = 0                             # unpacked size in bytes
    created: str = ""                         # from config["created"]
    parent: str = ""                          # the image this one was made from (commit, build)


class ImageStore:
    """Images under one root; see the module docstring for the layout and overlay helpers."""

    def __init__(self, root: Path, insecure_registries: list[str] | None = None,
                 dial_map: DialMap | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root)
        self.layers = LayerStore(self.root)
        self.index = ImageIndex(self.root)
        self._insecure_registries = insecure_registries
        self._dial_map = dial_map
        self._client: RegistryClient | None = None
        self._client_lock = threading.Lock()
        self._lock = threading.RLock()
        self.blobs.clean_temp()
        self.layers.recover()
        self.index.load(self._load_config)
        for record in list(self.index.images.values()):
            if not all(self.layers.has(c) for c in record.chain_ids):
                log.warning("image %s lost a layer; dropping its record", record.id)
                self.index.delete(record.id)

    @property
    def client(self) -> RegistryClient:
        """The registry client, made on first use (pulls only)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    from .registry_client import RegistryClient, dial_map_from_env
                    dial_map = self._dial_map if self._dial_map is not None else dial_map_from_env()
                    self._client = RegistryClient(self._insecure_registries, dial_map=dial_map)
                client = self._client
        return client

    @client.setter
    def client(self, value: RegistryClient) -> None:
        self._client = value

    @property
    def layers_root(self) -> Path:
        """The directory `short_layer_links` paths are relative to."""
        return self.layers.layers_dir

    def _load_config(self, image_id: str) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self.blobs.read(image_id))
        return config

    # --- pull ------------------------------------------------------------------
    def pull(self, reference: str, credentials: RegistryCredentials | None = None,
             progress: ProgressCallback | None = None) -> Image:
        """Pull `reference` (short names → docker.io/library/...), verify, unpack, tag."""
        ref = parse_reference(reference)
        emit = PullProgress(progress)
        emit.started(ref)
        resolved = self.client.resolve(ref, credentials)
        image_id = resolved.config.digest
        with self._lock:
            record = self.index.images.get(image_id)
            complete = record is not None and all(self.layers.has(c) for c in record.chain_ids)
            name = self._name_key(ref)
            previously = self.index.refs.get(name)
        if not complete:
            record = Puller(self.blobs, self.layers, self.client).download(resolved, credentials, emit)
            # Where the blobs live, for a push's mounts (not on an up-to-date pull: dockerd's rule).
            self.blobs.add_source((d.digest for d in resolved.layers), ref.domain, ref.path)
        assert record is not None
        with self._lock:
            if image_id not in self.index.images:
                self.index.put(record)
            before = dict(self.index.refs)
            if ref.tag:
                self.index.refs[name] = image_id
            self.index.refs[f"{ref.familiar_name}@{resolved.digest}"] = image_id
            try:
                self.index.save_refs()
            except OSError:
                # Names on disk and in memory must agree: a failed pull tags nothing.
                self.index.refs = before
                raise
            image = self._image(image_id)
        emit.finished(ref, resolved.digest, up_to_date=previously == image_id)
        return image

    # --- authoring (commit, build, import, load) and distribution (push, save) ---------
    # image_authoring is imported on first use (tarfile, gzip, lzma: not needed to start).
    def register_layer(self, tar_path: Path, parent_chain: str) -> LayerRecord:
        """Unpack a layer tar (safely, as pulls do) on parent_chain ("" for none), keep a gzip blob for
        push/save; idempotent (same content and parent: same chain id). InvalidArchive if bad."""
        from . import image_authoring
        return image_authoring.register_layer(self.blobs, self.layers, Path(tar_path), parent_chain)

    def create_image(self, config: dict[str, Any], chain_ids: builtins.list[str],
                     tags: builtins.list[str] = [], parent: str = "",   # noqa: B006  # the interface's signature; never mutated
                     config_bytes: bytes | None = None) -> Image:
        """Store a new image from a full config (rootfs.diff_ids filled in from chain_ids; the id is the
        sha256 of the canonical JSON), tags ("name:tag") moved to it. `parent`: the local image it was
        made from (commit, build); `config_bytes`: a config kept byte for byte instead (load)."""
        targets = [parse_reference(t) for t in tags]
        if any(t.digest for t in targets):
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {tags}")
        from . import image_authoring
        with self._lock:
            image_id = image_authoring.create_image(self.blobs, self.layers, self.index, config,
                                                    chain_ids, parent, config_bytes)
            for target in targets:
                self.index.refs[target.familiar()] = image_id
            if targets:
                self.index.save_refs()
            return self._image(image_id)

    def discard_layers(self, chain_ids: builtins.list[str]) -> None:
        """Remove those of `chain_ids` no image uses (layers a failed load registered)."""
        from . import image_authoring
        with self._lock:
            image_authoring.discard_layers(self.blobs, self.layers, self.index, chain_ids)

    def layer_blob(self, chain_id: str) -> tuple[str, int, str, Path]:
        """(digest, size, media_type, path) of the layer's blob; one missing is made from the diff dir,
        checked against the diff id (RegistryError if the rebuilt tar does not match)."""
        from . import image_authoring
        return image_authoring.layer_blob(self.blobs, self.layers, chain_id)

    def manifest_for(self, image: Image) -> bytes:
        """Docker schema2 manifest of the image's config and layer blobs (for push and save)."""
        with self._lock:
            record = self.index.images.get(image.id)
            if record is None:
                raise NotFound(f"No such image: {image.id}")
        from . import image_authoring
        return image_authoring.manifest_for(self.blobs, self.layers, record)

    # --- lookup ------------------------------------------------------------------
    @staticmethod
    def _name_key(ref: Reference) -> str:
        """The familiar ref a Reference is stored under (digest wins over tag, like Docker)."""
        if ref.digest:
            return f"{ref.familiar_name}@{ref.digest}"
        return ref.familiar()

    def _resolve_id(self, ref_or_id: str) -> str:
        """The image id `ref_or_id` names; raises NotFound."""
        text = ref_or_id.strip() if isinstance(ref_or_id, str) else ""
        missing = NotFound(f"No such image: {ref_or_id}")
        if not text:
            raise missing
        with self._lock:
            if text.startswith("sha256:"):
                hexpart = text[7:]
                if is_sha256_hex(hexpart):
                    if text in self.index.images:
                        return text
                    raise missing
                return self._by_prefix(hexpart, missing)
            if is_sha256_hex(text):
                if "sha256:" + text in self.index.images:
                    return "sha256:" + text
                raise missing
            # A malformed reference is the client's mistake (400), not a missing image:
            # no id prefix is malformed, so nothing findable is refused here.
            ref = parse_reference(text)
            found = self.index.refs.get(self._name_key(ref))
            if found is None and ref.digest:
                # repo@digest also matches the image whose platform manifest has that digest.
                for record in self.index.images.values():
                    if record.manifest_digest == ref.digest and any(
                            r.startswith(ref.familiar_name + "@") or
                            r.startswith(ref.familiar_name + ":")
                            for r in self.index.refs_of(record.id)):
                        found = record.id
                        break
            if found is not None:
                return found
            return self._by_prefix(text, missing)

    def _by_prefix(self, hex_prefix: str, missing: NotFound) -> str:
        if not hex_prefix or any(c not in "0123456789abcdef" for c in hex_prefix):
            raise missing
        matches = self.index.ids_with_prefix(hex_prefix)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotFound(f"No such image: {hex_prefix} (ambiguous: it matches {len(matches)} images)")
        raise missing

    def _image(self, image_id: str) -> Image:
        record = self.index.images[image_id]
        refs = self.index.refs_of(image_id)
        return Image(id=image_id, config=record.config,
                     repo_tags=[r for r in refs if "@" not in r],
                     repo_digests=[r for r in refs if "@" in r],
                     size=record.size, created=str(record.config.get("created", "")),
                     parent=record.parent)

    def get(self, ref_or_id: str) -> Image:
        """By tag ("busybox", "busybox:latest", "127.0.0.1:5000/x:y"), digest, full or short id.

        Raises NotFound("No such image: <ref>").
        """
        with self._lock:
            return self._image(self._resolve_id(ref_or_id))

    def exists(self, ref_or_id: str) -> bool:
        """Whether `ref_or_id` names an image here; a malformed reference names none."""
        try:
            self._resolve_id(ref_or_id)
            return True
        except (NotFound, InvalidArgument):
            return False

    # Signatures below this method spell `builtins.list`: in the class body, `list` is this method.
    def list(self) -> list[Image]:
        """All images, newest first."""
        with self._lock:
            images = [self._image(i) for i in self.index.images]
        return sorted(images, key=lambda im: unix_seconds(im.created), reverse=True)

    def tag(self, ref_or_id: str, repo: str, tag: str = "latest") -> None:
        """Give an image another name, `repo:tag` (moving the tag if it named another image)."""
        tag = tag or "latest"
        target = parse_reference(f"{repo}:{tag}")
        if target.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {repo}:{tag}")
        with self._lock:
            image_id = self._resolve_id(ref_or_id)
            self.index.refs[target.familiar()] = image_id
            self.index.save_refs()

    def record_repo_digest(self, image_id: str, repo_digest: str) -> None:
        """Name the image `repo@sha256:...` (the manifest a push stored), as dockerd does."""
        ref = parse_reference(repo_digest)
        if not ref.digest:
            raise InvalidArgument(f"not a digest reference: {repo_digest}")
        with self._lock:
            if image_id not in self.index.images:
                raise NotFound(f"No such image: {image_id}")
            self.index.refs[self._name_key(ref)] = image_id
            self.index.save_refs()

    # --- removal ---------------------------------------------------------------------
    def remove(self, ref_or_id: str, force: bool = False, prune: bool = True,
               in_use_by: Callable[[str], builtins.list[str]] = lambda image_id: [],
               is_running: Callable[[str], bool] | None = None) -> builtins.list[dict[str, str]]:
        """Untag and/or delete; returns Docker's [{"Untagged": ...}, {"Deleted": ...}].

        Follows dockerd: removing one of several names only untags; removing
        the last name deletes the image; removing by id an image with several
        names needs `force`. Raises Conflict when a container (per
        `in_use_by(image_id)`) uses the image and not force; a running
        container (per the optional `is_running(container_id)`) blocks even
        a forced delete by id. `prune` is accepted for API compatibility
        (pulled images have no parent images to prune).
        """
        with self._lock:
            image_id = self._resolve_id(ref_or_id)
            short = short_hex(image_id)
            users = list(in_use_by(image_id))
            running = [c for c in users if is_running is not None and is_running(c)]
            stopped = [c for c in users if c not in running]
            refs = self.index.refs_of(image_id)
            records: list[dict[str, str]] = []
            removed_last_ref = False
            children = any(r.parent == image_id for r in self.index.images.values())
            if children and _is_id_prefix(image_id, ref_or_id):   # before any untag, as dockerd
                raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - "
                               "image has dependent child images")

            if not _is_id_prefix(image_id, ref_or_id):
                ref = parse_reference(ref_or_id)
                key = self._name_key(ref)
                if key not in refs:   # found through the platform-manifest digest
                    key = next((r for r in refs if r.startswith(ref.familiar_name + "@")), key)
                if not force and _single_reference(refs) and users:
                    raise Conflict(f'conflict: unable to remove repository reference "{ref_or_id}" '
                                   f"(must force) - container {short_hex(users[0])} is using its "
                                   f"referenced image {short}")
                self.index.refs.pop(key, None)
                records.append({"Untagged": key})
                if "@" not in key:
                    repo = key.rsplit(":", 1)[0]
                    remaining = self.index.refs_of(image_id)
                    if not any(r.rsplit(":", 1)[0] == repo for r in remaining if "@" not in r):
                        for r in remaining:
                            if "@" in r and r.split("@", 1)[0] == repo:
                                self.index.refs.pop(r)
                                records.append({"Untagged": r})
                self.index.save_refs()
                if self.index.refs_of(image_id):
                    return records
                removed_last_ref = True
            elif _single_reference(refs):
                if running or (stopped and not force):
                    raise self._delete_conflict(short, running, stopped)
                for r in refs:
                    self.index.refs.pop(r, None)
                    records.append({"Untagged": r})
                self.index.save_refs()

            remaining = self.index.refs_of(image_id)
            if remaining:
                if not force:
                    raise Conflict(f"conflict: unable to delete {short} (must be forced) - image "
                                   "is referenced in multiple repositories")
                for r in remaining:
                    self.index.refs.pop(r, None)
                    records.append({"Untagged": r})
                self.index.save_refs()
            if running or (stopped and not force):
                if removed_last_ref:
                    return records   # untagged; the image stays (dangling) for its containers
                raise self._delete_conflict(short, running, stopped)
            if children:
                return records   # untagged; the image stays for the images made from it
            records += self._delete_image(image_id, keep_layers=bool(users))[0]
            return records

    @staticmethod
    def _delete_conflict(short: str, running: builtins.list[str], stopped: builtins.list[str]) -> Conflict:
        if running:
            return Conflict(f"conflict: unable to delete {short} (cannot be forced) - image is "
                            f"being used by running container {short_hex(running[0])}")
        return Conflict(f"conflict: unable to delete {short} (must be forced) - image is being "
                        f"used by stopped container {short_hex(stopped[0])}")

    def _delete_image(self, image_id: str, keep_layers: bool = False
                      ) -> tuple[builtins.list[dict[str, str]], int]:
        """Drop the record and layers no other image uses; caller holds the lock."""
        record = self.index.images[image_id]
        self.index.delete(image_id)
        self.blobs.delete(image_id)
        if record.manifest_digest:
            self.blobs.delete(record.manifest_digest)
        records = [{"Deleted": image_id}]
        reclaimed = 0
        if keep_layers:
            return records, reclaimed
        still_used = {c for r in self.index.images.values() for c in r.chain_ids}
        for chain in reversed(record.chain_ids):
            if chain in still_used or not self.layers.has(chain):
                continue
            layer = self.layers.get(chain)
            reclaimed += layer.size
            self.layers.remove(chain)
            if layer.blob_digest and not self.layers.blob_users(layer.blob_digest):
                self.blobs.delete(layer.blob_digest)
            records.append({"Deleted": chain})
        return records, reclaimed

    def prune(self, dangling_only: bool = True,
              in_use: set[str] | None = None) -> tuple[builtins.list[dict[str, str]], int]:
        """Remove unused images; returns (deleted records, bytes reclaimed).

        `dangling_only`: only images without tags; otherwise every image not in `in_use`.
        """
        in_use = in_use or set()
        records: list[dict[str, str]] = []
        reclaimed = 0
        with self._lock:
            parents = {r.parent for r in self.index.images.values()}
            for image_id in list(self.index.images):
                if image_id in in_use or image_id in parents:
                    continue
                refs = self.index.refs_of(image_id)
                if dangling_only and any("@" not in r for r in refs):
                    continue
                for r in refs:
                    self.index.refs.pop(r, None)
                    records.append({"Untagged": r})
                if refs:
                    self.index.save_refs()
                deleted, freed = self._delete_image(image_id)
                records += deleted
                reclaimed += freed
        return records, reclaimed

    # --- inspection --------------------------------------------------------------------
    def history(self, ref_or_id: str) -> builtins.list[dict[str, Any]]:
        """Docker's image history records, newest first; rows of parent images (commit,
        build) carry those images' ids and tags."""
        from .image_history import history_rows
        with self._lock:
            return history_rows(self.index, self.layers, self._resolve_id(ref_or_id))

    def layer_dirs(self, image: Image) -> builtins.list[Path]:
        """The image's unpacked, read-only layer directories, lowest first."""
        with self._lock:
            record = self.index.images.get(image.id)
            if record is None:
                raise NotFound(f"No such image: {image.id}")
            return [self.layers.diff_dir(c) for c in record.chain_ids]

    def chain_ids(self, image: Image) -> builtins.list[str]:
        """The image's layers by chain id, lowest first."""
        with self._lock:
            record = self.index.images.get(image.id)
            if record is None:
                raise NotFound(f"No such image: {image.id}")
            return list(record.chain_ids)

    def short_layer_links(self, image: Image) -> builtins.list[str]:
        """Layer paths relative to `layers_root` ("l/<26 chars>"), lowest first.

        For overlay: chdir(layers_root), lowerdir=":".join(reversed(links)).
        """
        with self._lock:
            record = self.index.images.get(image.id)
            if record is None:
                raise NotFound(f"No such image: {image.id}")
            return [self.layers.short_link(c) for c in record.chain_ids]


def _is_id_prefix(image_id: str, text: str) -> bool:
    """dockerd's isImageIDPrefix: the user named the image by (a prefix of) its id."""
    return image_id.startswith(text) or image_id[7:].startswith(text)


def _single_reference(refs: list[str]) -> bool:
    """dockerd's isSingleReference: at most one tag, and every name in one repository."""
    if len(refs) <= 1:
        return len(refs) == 1
    single = None
    digest_repos = set()
    for r in refs:
        if "@" in r:
            digest_repos.add(r.split("@", 1)[0])
        elif single is None:
            single = r
        else:
            return False
    single_repo = (single.rsplit(":", 1)[0] if single is not None else refs[0].split("@", 1)[0])
    return len(digest_repos) == 1 and single_repo in digest_repos
