"""Which host paths a container may bind-mount through the VM: only those under a shared folder.

In the VM, a bind mount's source is a path in the guest. A host folder shared
with the machine is mounted at the same path there, so a source under a share
means the host folder; any other path (`-v /etc:/x`) would silently mount the
guest's own file instead. Docker Desktop refuses those with "Mounts denied";
so does this policy, with Docker Desktop's wording and Dockyard's way to share
a folder. Named volumes, tmpfs and the engine's own socket are not host paths
and always pass.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from typing import Any

# Known to the engine rather than shared from the host (Docker Desktop lets
# this one through as well): mounting the engine's socket into a container.
ENGINE_PATHS = ("/var/run/docker.sock", "/run/docker.sock")


class MountsPolicy:
    """The shared folders of one machine, and the check of a container create request against them."""

    def __init__(self, shared_folders: Iterable[str]) -> None:
        self.shares = tuple(posixpath.normpath(p) for p in shared_folders if p.startswith("/"))

    def allows(self, path: str) -> bool:
        """Whether `path` (a bind source in the guest) is a shared host folder or under one."""
        clean = posixpath.normpath(path)
        if clean.startswith("//"):   # normpath keeps a leading "//"; it is "/" here
            clean = "/" + clean.lstrip("/")
        if clean in ENGINE_PATHS:
            return True
        return any(clean == share or clean.startswith(share.rstrip("/") + "/") for share in self.shares)

    def check_create_body(self, body: bytes) -> str | None:
        """The refusal message for a create request body, or None when it may go on.

        A body that is not JSON is left to the engine, which refuses it by name.
        """
        try:
            denied = self.denied_paths(json.loads(body or b"{}"))
        except ValueError:
            return None
        return mounts_denied_message(denied) if denied else None

    def denied_paths(self, create_body: Any) -> list[str]:
        """The host paths of a `POST /containers/create` body that are not shared, in order."""
        host_config = create_body.get("HostConfig") if isinstance(create_body, dict) else None
        if not isinstance(host_config, dict):
            return []
        denied: list[str] = []
        for source in bind_sources(host_config):
            if not self.allows(source) and source not in denied:
                denied.append(source)
        return denied


def bind_sources(host_config: dict[str, Any]) -> list[str]:
    """The host paths of HostConfig.Binds (`-v`, compose) and HostConfig.Mounts of type bind (`--mount`).

    A Binds entry whose source is not absolute is a named volume. Malformed
    entries are left to the engine, which refuses them by name.
    """
    sources: list[str] = []
    for bind in host_config.get("Binds") or []:
        if isinstance(bind, str):
            source = bind.split(":", 1)[0]
            if source.startswith("/"):
                sources.append(source)
    for mount in host_config.get("Mounts") or []:
        if isinstance(mount, dict) and str(mount.get("Type", "")).lower() == "bind":
            mount_source = mount.get("Source")
            if isinstance(mount_source, str) and mount_source.startswith("/"):
                sources.append(mount_source)
    return sources


def mounts_denied_message(paths: list[str]) -> str:
    """Docker Desktop's "Mounts denied" text, with how to share a folder with a Dockyard machine."""
    if len(paths) == 1:
        what = f"The path {paths[0]} is not shared from the host and is not known to Docker."
    else:
        what = f"The paths {' and '.join(paths)} are not shared from the host and are not known to Docker."
    return ("Mounts denied: \n" + what + "\n"
            "You can configure shared paths with `dockyard machine init --mount PATH` or the shared_folders "
            "setting (settings.toml, DOCKYARD_SHARED_FOLDERS), then restart the machine.\n")
