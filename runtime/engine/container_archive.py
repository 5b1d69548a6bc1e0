"""`docker cp` (the /containers/{id}/archive endpoints) and the filesystem views they share.

A running container is read and written through a private copy of its own
mount namespace (its root with its volumes, binds and /etc files; its /proc,
/sys, /dev and tmpfs mounts taken off, as dockerd's cp never sees them); a
created or exited one through a temporary overlay of its layers and upper dir
with the same mounts, in the private namespace of a short-lived helper
(`containers.container_fs_view`). What is done inside the view is
`containers.archive` (stat, tar out) and `containers.archive_extract` (tar in).

Locking: the container's lock is held only to read its state. While a tar is
extracted into a stopped container, `live.copying` makes a start refuse
(overlayfs does not allow two mounts on one upper dir), and a copy waits for a
start in progress.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

from .. import path_scope
from ..containers import archive, archive_extract
from ..containers.archive_extract import Readable
from ..containers.container_fs_view import ContainerRoot, ViewMount, mounted_root, running_root
from ..containers.user import UserLookupError, resolve_user
from ..errors import Conflict, InvalidArgument, NotFound, RuntimeFailure
from .container_context import ContainerContext
from .live import Live

log = logging.getLogger(__name__)

START_WAIT = 30.0   # seconds a copy waits for a start in progress
_ETC_FILES = ("hostname", "hosts", "resolv.conf")   # what networks.etc_files writes in the container dir


def open_view(ctx: ContainerContext, live: Live, writable: bool = False,
              with_mounts: bool = True) -> ContainerRoot:
    """The container's root as `docker cp` sees it (see the module docstring).

    `with_mounts` False (export): the container's own files only, never its
    volumes, binds or the engine's /etc files.
    """
    with live.lock:
        # A start in progress has no pid yet but is mounting the upper dir: let it finish.
        live.changed.wait_for(lambda: not live.starting, START_WAIT)
        if live.removed or live.removing:
            raise NotFound(f"No such container: {live.c.id}")
        c = live.c
        pid = c.state.pid if c.state.running else 0
        mounts = [ViewMount(m["Source"], m["Destination"], not m.get("RW", True))
                  for m in c.mounts if m.get("Type") in ("volume", "bind") and m.get("Source")]
        image_id, cid = c.image_id, c.id
    if pid:
        targets = [m.target for m in mounts] + [f"/etc/{name}" for name in _ETC_FILES] if with_mounts else []
        try:
            root: ContainerRoot | None = running_root(pid, _resolved(pid, targets))
        except RuntimeFailure:
            root = None
        with live.lock:
            still = live.c.state.running and live.c.state.pid == pid
        if still and root is not None:
            return root
        if root is not None:
            root.close()
        if still:
            raise RuntimeFailure(f"cannot open the filesystem of container {cid}")
        # It stopped meanwhile (the pid may be another's now): its layers are the view.
    try:
        image = ctx.images.get(image_id)
    except NotFound:
        raise Conflict(f"image {image_id} of container {cid} was removed") from None
    cdir = ctx.store.dir(cid)
    if not with_mounts:
        mounts = []
    else:
        # The engine's /etc files of the last run come first, as when it runs (containers.rootfs).
        mounts = [ViewMount(str(cdir / name), f"/etc/{name}") for name in _ETC_FILES
                  if (cdir / name).is_file()] + mounts
    return mounted_root(ctx.images.layer_dirs(image), cdir / "diff", cdir / "work",
                        cdir / "archive-mnt", mounts, writable)


def _resolved(pid: int, targets: list[str]) -> list[str]:
    """Where the mount targets are in the running container (links followed in scope, as the
    mounts were made), for `running_root` to keep."""
    try:
        root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []   # gone already: the caller finds it stopped and uses its layers
    try:
        return ["/" + "/".join(path_scope.resolve_in_root(root_fd, t)) for t in targets]
    finally:
        os.close(root_fd)


class ClosingStream:
    """Chunks of a tar, and what to release (the view) when they end, are closed, or the
    stream is dropped unread (a client gone before the first chunk): a plain generator would
    never run its `finally` then, and the view's helper would wait forever."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]) -> None:
        self._chunks = chunks
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> ClosingStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
            release()

    def __del__(self) -> None:
        self.close()


class ContainerArchiver:
    """HEAD, GET and PUT of /containers/{id}/archive."""

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx

    def stat(self, ref: str, path: str) -> archive.PathStat:
        live = self._ctx.registry.lookup(ref)
        _check_path(path)
        with open_view(self._ctx, live) as root, archive.Source(root.fd, path, live.c.name) as source:
            return source.stat

    def get(self, ref: str, path: str) -> tuple[archive.PathStat, Iterator[bytes]]:
        """The stat of `path` and its tar, streamed; the view stays open until the stream ends."""
        live = self._ctx.registry.lookup(ref)
        _check_path(path)
        root = open_view(self._ctx, live)
        try:
            source = archive.Source(root.fd, path, live.c.name)
        except BaseException:
            root.close()
            raise
        try:
            owners = archive.OwnerNames(root.fd)
        except BaseException:
            source.close()
            root.close()
            raise

        def release() -> None:
            source.close()
            root.close()

        chunks = archive.tar_stream(source.parent_fd, source.name, source.arcname, owners)
        return source.stat, ClosingStream(chunks, release)

    def put(self, ref: str, path: str, body: Readable, no_overwrite_dir_non_dir: bool = False,
            copy_uid_gid: bool = False) -> None:
        """Extract the tar `body` at directory `path` (links followed in scope)."""
        ctx = self._ctx
        live = ctx.registry.lookup(ref)
        _check_path(path)
        with live.lock:
            live.changed.wait_for(lambda: not live.starting, START_WAIT)
            stopped = not live.c.state.running
            if stopped:
                live.copying += 1   # a start meanwhile is refused (container_run)
        try:
            self._extract(live, path, body, no_overwrite_dir_non_dir, copy_uid_gid)
        finally:
            if stopped:
                with live.lock:
                    live.copying -= 1
        ctx.events.container(live.c, "extract-to-dir")

    def _extract(self, live: Live, path: str, body: Readable, no_overwrite_dir_non_dir: bool,
                 copy_uid_gid: bool) -> None:
        with open_view(self._ctx, live, writable=True) as root:
            c = live.c
            dest = archive_extract.resolve_destination(root.fd, path, c.name)
            _check_writable(c.mounts, bool(c.host_config.get("ReadonlyRootfs")), dest)
            chown_to = _container_user(root.fd, c.config.get("User") or "") if copy_uid_gid else None
            archive_extract.Extractor(root.fd, dest, no_overwrite_dir_non_dir, chown_to).extract(body)


def _check_path(path: str) -> None:
    if not path:
        raise InvalidArgument("Path cannot be empty")
    path_scope.check(path, "path")


def _check_writable(mounts: list[dict[str, object]], readonly_rootfs: bool, dest: str) -> None:
    """As dockerd: a read-only volume or (outside any volume) a read-only root refuses the copy."""
    best: dict[str, object] | None = None
    for m in mounts:
        target = str(m.get("Destination") or "")
        inside = dest == target or dest.startswith(target.rstrip("/") + "/")
        longer = best is None or len(target) > len(str(best.get("Destination") or ""))
        if m.get("Type") in ("volume", "bind", "tmpfs") and inside and longer:
            best = m
    if best is not None:
        if not best.get("RW", True):
            raise InvalidArgument("mounted volume is marked read-only")
        return
    if readonly_rootfs:
        raise InvalidArgument("container rootfs is marked read-only")


def _container_user(root_fd: int, user: str) -> tuple[int, int] | None:
    """copyUIDGID: the container's Config.User as uid/gid from its own /etc/passwd and /etc/group."""
    if not user:
        return None   # dockerd keeps the archive's owners when the container runs as root
    fds = []
    try:
        paths = []
        for name in ("/etc/passwd", "/etc/group"):
            try:
                fd = path_scope.open_in_root(root_fd, name)
            except OSError:
                paths.append("/nonexistent")
                continue
            fds.append(fd)
            paths.append(path_scope.fd_path(fd))
        try:
            found = resolve_user(user, paths[0], paths[1])
        except UserLookupError as err:
            raise InvalidArgument(str(err)) from None
        return found.uid, found.gid
    finally:
        for fd in fds:
            os.close(fd)
