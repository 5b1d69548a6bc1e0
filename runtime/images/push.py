"""The push path: an image's layer blobs, config and manifest to a registry, with progress.

`push_image(store, name, tag, credentials, progress)` pushes one tag of a repository
(or, with no tag, every tag the repository has here, in name order) and streams
dockerd's progress messages:

    The push refers to repository [127.0.0.1:5000/app]
    <layer>: Preparing                       one per layer, top layer first
    <layer>: Layer already exists            the registry has the blob (HEAD)
    <layer>: Mounted from <repo>             linked from another repository there
    <layer>: Pushing [==>   ] 1MB/2MB         uploaded in chunks ...
    <layer>: Pushed
    <tag>: digest: sha256:... size: N        then an aux {"Tag", "Digest", "Size"}

Layer ids in the messages are short diff ids, as dockerd prints them. A blob is
mounted rather than uploaded when the blob store knows another repository on the
same registry holds it (it was pulled from or pushed there: `BlobStore.sources`),
preferring, as dockerd does, the one sharing most of the target's path, then the
newest. The manifest comes from `ImageStore.manifest_for`
(the layer blobs from `ImageStore.layer_blob`); after a push the image records the
new `repo@digest`, as dockerd does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, RegistryAuthError, RegistryError
from .layer_store import chain_ids
from .pull import PROGRESS_STEP, ProgressCallback, PullProgress
from .reference import Reference, parse_reference, parse_repository, short_hex
from .registry_credentials import RegistryCredentials
from .registry_session import TransportError
from .registry_upload import RegistryUploader

if TYPE_CHECKING:
    from .store import Image, ImageStore

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3      # a layer upload broken by the network starts again this often


@dataclass
class PushedTag:
    """One tag the registry now holds."""

    tag: str
    digest: str      # "sha256:..." of the manifest
    size: int        # manifest bytes


def tags_to_push(store: ImageStore, repo: Reference, tag: str | None) -> list[tuple[str, Image]]:
    """(tag, image) pairs for `repo` (`tag` alone, or all its tags); NotFound as dockerd words it."""
    if tag:
        try:
            return [(tag, store.get(repo.with_tag(tag).familiar()))]
        except NotFound:
            if not _repo_tags(store, repo):
                raise NotFound(f"An image does not exist locally with the tag: "
                               f"{repo.familiar_name}") from None
            raise NotFound(f"tag does not exist: {repo.with_tag(tag).familiar()}") from None
    found = _repo_tags(store, repo)
    if not found:
        raise NotFound(f"An image does not exist locally with the tag: {repo.familiar_name}")
    return sorted(found)


def _repo_tags(store: ImageStore, repo: Reference) -> list[tuple[str, Image]]:
    out = []
    for image in store.list():
        for name in image.repo_tags:
            ref = parse_reference(name)
            if ref.familiar_name == repo.familiar_name and ref.tag:
                out.append((ref.tag, image))
    return out


def push_image(store: ImageStore, name: str, tag: str | None,
               credentials: RegistryCredentials | None = None,
               progress: ProgressCallback | None = None) -> list[PushedTag]:
    """Push `name:tag` (every tag of `name` when `tag` is empty); see the module docstring."""
    repo = parse_repository(name)
    emit = PullProgress(progress)
    emit({"status": f"The push refers to repository [{repo.name}]"})
    pairs = tags_to_push(store, repo, tag)
    pusher = _Pusher(store, RegistryUploader(store.client.session), repo,
                     RegistryCredentials.from_any(credentials), emit)
    return [pusher.push(t, image) for t, image in pairs]


class _Pusher:
    """Pushes images to one repository; one per push request."""

    def __init__(self, store: ImageStore, uploader: RegistryUploader, repo: Reference,
                 creds: RegistryCredentials, emit: PullProgress) -> None:
        self.store = store
        self.uploader = uploader
        self.repo = repo
        self.creds = creds
        self.emit = emit
        self.done: set[str] = set()    # blob digests known to be in the repository now

    def push(self, tag: str, image: Image) -> PushedTag:
        diff_ids = list(image.config.get("rootfs", {}).get("diff_ids") or [])
        chains = chain_ids(diff_ids)
        for diff_id in reversed(diff_ids):
            self.emit.layer(short_hex(diff_id), "Preparing")
        for chain, diff_id in zip(chains, diff_ids, strict=True):
            self._push_layer(chain, short_hex(diff_id))
        config = self.store.blobs.read(image.id)
        if image.id not in self.done and not self.uploader.blob_exists(self.repo, image.id, self.creds):
            path = self.store.blobs.path(image.id)
            self.uploader.upload_blob(self.repo, path, image.id, len(config), self.creds)
        self.done.add(image.id)
        manifest = self.store.manifest_for(image)
        media_type = _media_type(manifest)
        digest = self.uploader.put_manifest(self.repo, tag, manifest, media_type, self.creds)
        self.store.record_repo_digest(image.id, f"{self.repo.familiar_name}@{digest}")
        self.emit({"status": f"{tag}: digest: {digest} size: {len(manifest)}"})
        self.emit({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": len(manifest)}})
        return PushedTag(tag, digest, len(manifest))

    def _push_layer(self, chain: str, layer_id: str) -> None:
        digest, size, _media_type, path = self.store.layer_blob(chain)
        status = self._upload_layer(digest, size, path, layer_id)
        self.done.add(digest)
        self.store.blobs.add_source([digest], self.repo.domain, self.repo.path)
        self.emit.layer(layer_id, status)

    def _upload_layer(self, digest: str, size: int, path: Path, layer_id: str) -> str:
        """Make sure the repository holds the blob; the final status to show."""
        if digest in self.done or self.uploader.blob_exists(self.repo, digest, self.creds):
            return "Layer already exists"
        location = None
        sources = self._mount_sources(digest)
        if sources:
            # One candidate, as a failed mount answers with an upload session we then use.
            try:
                location = self.uploader.mount_blob(self.repo, digest, sources[0], self.creds)
            except RegistryAuthError as err:
                # No pull access to the source: upload instead, as dockerd does.
                log.info("cannot mount %s from %s (%s); uploading it", digest, sources[0].path, err)
            else:
                if location is None:
                    return f"Mounted from {sources[0].path}"
        last = [0]

        def sent(current: int, total: int) -> None:
            if current - last[0] >= PROGRESS_STEP or current >= total:
                last[0] = current
                self.emit.layer(layer_id, "Pushing", current, total)

        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                self.uploader.upload_blob(self.repo, path, digest, size, self.creds, location, sent)
                break
            except TransportError as err:
                if attempt == UPLOAD_ATTEMPTS:
                    raise RegistryError(f"pushing layer {layer_id} failed: {err}") from None
                log.warning("upload of %s interrupted (%s); starting again", digest, err)
                location, last[0] = None, 0
        return "Pushed"

    def _mount_sources(self, digest: str) -> list[Reference]:
        """Other repositories on the target registry known to hold blob `digest`: those sharing
        the most leading path components with the target first, then the newest (dockerd's order)."""
        target = self.repo.path.split("/")
        candidates = [Reference(domain, path) for domain, path in self.store.blobs.sources(digest)
                      if domain == self.repo.domain and path != self.repo.path]
        return sorted(candidates, key=lambda ref: -_common_prefix(ref.path.split("/"), target))


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _media_type(manifest: bytes) -> str:
    try:
        doc: Any = json.loads(manifest)
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    except ValueError:
        media_type = None
    if not isinstance(media_type, str) or not media_type:
        raise RegistryError("the image's manifest names no media type")
    return media_type
