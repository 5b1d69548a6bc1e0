"""The pull path: fetch what an image lacks into the blob and layer stores, with progress.

`ImageStore.pull` resolves the reference and records and tags the result under
the store's lock; between the two, `Puller.download` fetches the config and the
missing layers (up to PULL_PARALLELISM at once, one lock per layer so two pulls
sharing a layer unpack it once) and `PullProgress` turns what happens into
Docker's JSON progress messages, serialised across the worker threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import RegistryError, ResourceError, describe_os_error
from .index import ImageRecord
from .layer_store import chain_ids
from .reference import Reference, short_hex

if TYPE_CHECKING:
    from .blob_store import BlobStore
    from .layer_store import LayerStore
    from .registry_client import Descriptor, RegistryClient, ResolvedImage

log = logging.getLogger(__name__)

PULL_PARALLELISM = 3              # Docker's default max-concurrent-downloads
PROGRESS_STEP = 512 << 10         # emit a progress message at most every 512 KiB

ProgressCallback = Callable[[dict[str, Any]], None]   # receives Docker JSON progress messages


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


def _progress_bar(current: int, total: int | None) -> str:
    if not total:
        return f"{_human(current)}"
    width = 50
    filled = min(width, int(width * current / total))
    bar = "=" * max(filled - 1, 0) + (">" if filled < width else "=") + " " * (width - filled)
    return f"[{bar}] {_human(current)}/{_human(total)}"


class PullProgress:
    """Serialises progress messages from the pull's worker threads."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        if self.callback is None:
            return
        with self.lock:
            try:
                self.callback(message)
            except Exception:   # a client going away must not break the pull
                log.debug("progress callback failed", exc_info=True)
                self.callback = None

    def layer(self, layer_id: str, status: str, current: int | None = None,
              total: int | None = None) -> None:
        msg: dict[str, Any] = {"status": status, "id": layer_id}
        if current is not None:
            msg["progressDetail"] = {"current": current, "total": total} if total else {"current": current}
            msg["progress"] = _progress_bar(current, total)
        else:
            msg["progressDetail"] = {}
        self(msg)

    def started(self, ref: Reference) -> None:
        self({"status": f"Pulling from {ref.path}", "id": ref.tag or ref.digest})

    def finished(self, ref: Reference, digest: str, up_to_date: bool) -> None:
        self({"status": f"Digest: {digest}"})
        if up_to_date:
            self({"status": f"Status: Image is up to date for {ref.familiar()}"})
        else:
            self({"status": f"Status: Downloaded newer image for {ref.familiar()}"})


class Puller:
    """Downloads one resolved image's missing content; one per pull, cheap to make."""

    def __init__(self, blobs: BlobStore, layers: LayerStore, client: RegistryClient) -> None:
        self.blobs = blobs
        self.layers = layers
        self.client = client

    def download(self, resolved: ResolvedImage, credentials: Any, emit: PullProgress) -> ImageRecord:
        """Fetch the config and every layer the layer store lacks; the record to index."""
        ref = resolved.reference
        image_id = resolved.config.digest
        config_bytes = None
        if self.blobs.has(image_id):
            try:
                config_bytes = self.blobs.read(image_id)
            except RegistryError:
                log.warning("stored config %s is corrupt; fetching it again", image_id)
                self.blobs.delete(image_id)
        if config_bytes is None:
            config_bytes = self.client.fetch_blob(ref, resolved.config, credentials)
            self.blobs.put(config_bytes, image_id)
        self.blobs.put(resolved.manifest_bytes, resolved.manifest_digest)
        try:
            config = json.loads(config_bytes)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError):
            raise RegistryError(f"{ref.familiar()}: image config has no rootfs.diff_ids") from None
        if len(diff_ids) != len(resolved.layers):
            raise RegistryError(f"{ref.familiar()}: manifest has {len(resolved.layers)} layers but "
                                f"the config lists {len(diff_ids)}")
        chains = chain_ids(diff_ids)
        todo = []
        for i, (desc, chain) in enumerate(zip(resolved.layers, chains, strict=True)):
            if self.layers.has(chain):
                emit.layer(short_hex(desc.digest), "Already exists")
            else:
                emit.layer(short_hex(desc.digest), "Pulling fs layer")
                todo.append(i)

        def fetch(i: int) -> None:
            desc, chain = resolved.layers[i], chains[i]
            self._fetch_layer(ref, desc, chain, diff_ids[i], chains[i - 1] if i else "",
                              credentials, emit)

        if len(todo) == 1:
            fetch(todo[0])
        elif todo:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=min(PULL_PARALLELISM, len(todo)),
                                    thread_name_prefix="pull") as pool:
                for future in [pool.submit(fetch, i) for i in todo]:
                    future.result()
        size = sum(self.layers.get(c).size for c in chains)
        return ImageRecord(id=image_id, chain_ids=chains, size=size, config=config,
                           manifest_digest=resolved.manifest_digest, pulled_at=time.time())

    def _fetch_layer(self, ref: Reference, desc: Descriptor, chain: str, diff_id: str, parent: str,
                     credentials: Any, emit: PullProgress) -> None:
        layer_id = short_hex(desc.digest)
        with self.layers.locked(chain):
            if self.layers.has(chain):   # another pull finished it while we waited
                emit.layer(layer_id, "Already exists")
                return
            tmp = self.blobs.new_temp()
            try:
                last = [0]

                def downloaded(current: int, total: int | None) -> None:
                    if current - last[0] >= PROGRESS_STEP or (total and current >= total):
                        last[0] = current
                        emit.layer(layer_id, "Downloading", current, total)

                self.client.download_blob(ref, desc, tmp, credentials, downloaded)
                emit.layer(layer_id, "Verifying Checksum")
                emit.layer(layer_id, "Download complete")
                last[0] = 0

                def extracted(position: int) -> None:
                    if position - last[0] >= PROGRESS_STEP:
                        last[0] = position
                        emit.layer(layer_id, "Extracting", position, desc.size or None)

                # The verified blob is kept (push and save serve it as it came).
                had_blob = self.blobs.has(desc.digest)
                size = tmp.stat().st_size
                blob = self.blobs.commit(tmp, desc.digest, verified=True)
                try:
                    self.layers.create(chain, diff_id, parent, blob, extracted,
                                       (desc.digest, size, desc.media_type))
                except BaseException as err:
                    if not had_blob and not self.layers.blob_users(desc.digest):
                        self.blobs.delete(desc.digest)
                    if isinstance(err, OSError):   # the unpacked tree was removed by create()
                        raise ResourceError(f"failed to register layer: {describe_os_error(err)}",
                                            err.errno) from err
                    raise
                emit.layer(layer_id, "Pull complete")
            finally:
                tmp.unlink(missing_ok=True)
