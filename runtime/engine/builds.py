"""The builds service: `docker build` (the classic builder) and `docker builder prune`.

`runtime.build.builder` does the Dockerfile work; this module is its engine side
(`BuildBackend`): base images pulled through the images service, RUN steps run as real
containers of this engine (created, attached, started, waited for, always removed with
their anonymous volumes unless `--rm=false`), layers made from a container's or a
staging overlay's upper directory with `write_layer_tar` + `register_layer`, the final
image made with `create_image`. Scratch space lives under ``<root>/build``, the layer
cache under ``<root>/build-cache``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .. import path_scope
from ..build.build_cache import BuildCache
from ..build.builder import BaseImage, Builder, BuildOptions, Emit, RunRequest, config_id
from ..errors import Conflict, DockyardError, NotFound
from ..images.layer_store import chain_ids as chain_ids_of
from ..images.layer_tar import write_layer_tar
from ..images.reference import parse_reference
from ..images.registry_credentials import RegistryCredentials
from .containers import ContainerService
from .images import ImageService

log = logging.getLogger(__name__)

# What a container's runtime makes in its root (Docker keeps these in its "init layer",
# below the container's writable one): none of it belongs in a RUN step's layer.
_INIT_PATHS = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab", ".dockerenv",
               "dev/console", "dev/pts", "dev/shm", "dev", "proc", "sys")


class BuildService:
    """Builds images from a context tar; thread-safe (each build has its own scratch space).

    `_temp_lock` guards `_temp_users`: how many RUN steps in flight use each temporary
    image (the state a RUN container is created from), so concurrent builds sharing one
    drop it only after the last of them. `_active_lock` guards `_active` (builds running)
    and `_pruning`: a prune and a build never overlap (a prune would take layers a
    running build has made but not yet put in an image).
    """

    def __init__(self, root: Path, images: ImageService, containers: ContainerService) -> None:
        self.scratch_root = Path(root) / "build"
        self.cache = BuildCache(Path(root) / "build-cache")
        self.images = images
        self.containers = containers
        self._temp_lock = threading.Lock()
        self._temp_users: dict[str, int] = {}
        self._active_lock = threading.Lock()
        self._active = 0
        self._pruning = False
        shutil.rmtree(self.scratch_root, ignore_errors=True)   # a crashed build's leftovers

    def build(self, context: BinaryIO, dockerfile_name: str, options: BuildOptions, emit: Emit) -> str:
        """Build from the context tar; the image id. Messages go to `emit` as they come."""
        with self._active_lock:
            if self._pruning:
                raise Conflict("the build cache is being pruned: build again once it is over")
            self._active += 1
        try:
            return self._build(context, dockerfile_name, options, emit)
        finally:
            with self._active_lock:
                self._active -= 1

    def _build(self, context: BinaryIO, dockerfile_name: str, options: BuildOptions, emit: Emit) -> str:
        from ..build.build_context import extract_context
        from ..build.dockerfile import parse_dockerfile
        work = self.scratch_root / f"ctx-{secrets.token_hex(8)}"
        work.mkdir(parents=True)
        try:
            ctx_dir = work / "context"
            ctx_dir.mkdir()
            text, matcher = extract_context(context, ctx_dir, dockerfile_name or "Dockerfile")
            dockerfile = parse_dockerfile(text)
            backend = _Backend(self, work / "steps", options.registry_auth)
            return Builder(backend, self.cache, ctx_dir, matcher, dockerfile, options, emit).build()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def prune(self) -> tuple[list[str], int]:
        """Drop the layer cache and the layers only it kept; (cache keys, bytes reclaimed).

        Only layers some cache entry names are candidates, so a layer a pull or load is
        registering meanwhile (in no image yet, in no cache entry) is never taken.
        """
        with self._active_lock:
            if self._active:
                raise Conflict("a build is running: prune the build cache once it is over")
            self._pruning = True
        try:
            keys = self.cache.keys()
            cached = self.cache.chain_ids_in_use()
            for key in keys:
                self.cache.remove(key)
            return keys, self._remove_unused(cached)
        finally:
            with self._active_lock:
                self._pruning = False

    def _remove_unused(self, candidates: set[str]) -> int:
        store = self.images.store
        in_images = {c for image in store.list() for c in self._chains(image.config)}
        reclaimed = 0
        for chain in candidates - in_images:
            if not store.layers.has(chain):
                continue
            layer = store.layers.get(chain)
            store.layers.remove(chain)
            reclaimed += layer.size
            if layer.blob_digest and not store.layers.blob_users(layer.blob_digest):
                store.blobs.delete(layer.blob_digest)
        return reclaimed

    @staticmethod
    def _chains(config: dict[str, Any]) -> list[str]:
        return chain_ids_of(list((config.get("rootfs") or {}).get("diff_ids") or []))

    # -- temporary images for RUN containers ----------------------------------------------
    def hold_temp(self, config: dict[str, Any], chains: list[str]) -> str:
        with self._temp_lock:
            image = self.images.create_image(config, chains)
            self._temp_users[image.id] = self._temp_users.get(image.id, 0) + 1
            return image.id

    def release_temp(self, image_id: str) -> None:
        with self._temp_lock:
            left = self._temp_users.get(image_id, 1) - 1
            if left > 0:
                self._temp_users[image_id] = left
                return
            self._temp_users.pop(image_id, None)
            self.images.discard_untagged(image_id)


class _Backend:
    """BuildBackend for one build."""

    def __init__(self, service: BuildService, scratch_root: Path,
                 registry_auth: dict[str, RegistryCredentials]) -> None:
        self.service = service
        self.registry_auth = registry_auth
        self.scratch_root = scratch_root
        self.store = service.images.store
        self._diff_ids: dict[str, str] = {}

    def base_image(self, ref: str, pull: bool, emit: Emit) -> BaseImage:
        if pull or not self.store.exists(ref):
            creds = self.registry_auth.get(parse_reference(ref).domain)
            self.service.images.pull(ref, creds, lambda message: emit(dict(message)))
        image = self.service.images.get(ref)
        diff_ids = list((image.config.get("rootfs") or {}).get("diff_ids") or [])
        return BaseImage(image.id, image.config, chain_ids_of(diff_ids))

    def layer_dirs(self, chain_ids: list[str]) -> list[Path]:
        return [self.store.layers.diff_dir(c) for c in chain_ids]

    def diff_ids(self, chain_ids: list[str]) -> list[str]:
        for chain in chain_ids:
            if chain not in self._diff_ids:   # a layer's record never changes: read it once
                self._diff_ids[chain] = self.store.layers.get(chain).diff_id
        return [self._diff_ids[c] for c in chain_ids]

    def layers_exist(self, chain_ids: list[str]) -> bool:
        return all(self.store.layers.has(c) for c in chain_ids)

    def commit_dir(self, diff_dir: Path, parent_chain: str) -> str | None:
        """A layer of the directory's contents on top of `parent_chain`; None when it is empty."""
        if not os.listdir(diff_dir):
            return None
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        tar_path = self.scratch_root / f"layer-{secrets.token_hex(8)}.tar"
        try:
            with open(tar_path, "wb") as out:
                write_layer_tar(diff_dir, out)
            return self.service.images.register_layer(tar_path, parent_chain).chain_id
        finally:
            tar_path.unlink(missing_ok=True)

    def run(self, request: RunRequest) -> tuple[int, str | None]:
        containers = self.service.containers
        temp = self.service.hold_temp(request.config, request.chain_ids)
        keep_temp = False
        try:
            config = dict(request.run_config, Image=temp)
            c = containers.create(None, config, {"NetworkMode": request.network or "default"})
            request.on_created(c.id)
            try:
                return self._run_container(c.id, request)
            finally:
                if request.remove:
                    _quietly(lambda: containers.remove(c.id, force=True, remove_volumes=True),
                             f"removing build container {c.id[:12]}")
                else:
                    keep_temp = True
        finally:
            if not keep_temp:
                self.service.release_temp(temp)

    def _run_container(self, cid: str, request: RunRequest) -> tuple[int, str | None]:
        containers = self.service.containers
        session = containers.attach(cid, False, True, True)
        try:
            waiter = containers.wait(cid, "next-exit")
            containers.start(cid)
            for _stream, data in session.output():
                request.on_output(data)
            code, _error = waiter.result()
        finally:
            session.close()
        if code != 0:
            return code, None
        upper = containers.ctx.store.dir(cid) / "diff"
        _drop_init_entries(upper, self.layer_dirs(request.chain_ids))
        parent = request.chain_ids[-1] if request.chain_ids else ""
        return 0, self.commit_dir(upper, parent)

    def finish(self, config: dict[str, Any], chain_ids: list[str], tags: list[str]) -> str:
        try:
            # A rebuild from the cache makes the image there is: nothing to write if its names hold.
            existing = self.service.images.get(config_id(config, self.diff_ids(chain_ids)))
            if all(tag in existing.repo_tags for tag in tags):
                return existing.id
        except NotFound:
            pass
        return self.service.images.create_image(config, chain_ids, tags).id

    def tag(self, image_id: str, tags: list[str]) -> None:
        for tag in tags:
            ref = parse_reference(tag)
            self.service.images.tag(image_id, ref.familiar_name, ref.tag or "latest")


def _quietly(action: Callable[[], None], what: str) -> None:
    try:
        action()
    except DockyardError as err:
        log.warning("%s: %s", what, err)


def _in_lower(lowers: list[Path], rel: str) -> os.stat_result | None:
    """The entry at `rel` in the topmost layer that has it (no symlink followed), or None."""
    parent, _, name = rel.rpartition("/")
    for layer in reversed(lowers):
        try:
            root = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fd = path_scope.open_beneath(root, parent.split("/") if parent else [])
            try:
                return os.lstat(name, dir_fd=fd)
            finally:
                os.close(fd)
        except OSError:
            continue
        finally:
            os.close(root)
    return None


def _drop_init_entries(upper: Path, lowers: list[Path]) -> None:
    """Remove from a RUN container's upper dir the mount points its runtime made there
    (empty files and directories the image lacks) and parents copied up only for them."""
    touched: set[str] = set()
    for rel in _INIT_PATHS:
        path = upper / rel
        try:
            st = os.lstat(path)
        except OSError:
            continue
        empty = (stat.S_ISREG(st.st_mode) and st.st_size == 0) or \
                (stat.S_ISDIR(st.st_mode) and not os.listdir(path))
        if not empty or _in_lower(lowers, rel) is not None:
            continue
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(path)
        else:
            os.unlink(path)
        if "/" in rel:
            touched.add(rel.rpartition("/")[0])
    for rel in sorted(touched, reverse=True):
        path = upper / rel
        try:
            st = os.lstat(path)
        except OSError:
            continue
        below = _in_lower(lowers, rel)
        if (stat.S_ISDIR(st.st_mode) and not os.listdir(path) and below is not None
                and (st.st_mode, st.st_uid, st.st_gid) == (below.st_mode, below.st_uid, below.st_gid)
                and not _opaque(path)):
            os.rmdir(path)


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False
