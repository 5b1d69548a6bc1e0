"""Content-addressed image storage: blobs, image records, tags and unpacked layers.

CONTRACT STUB — owned by the image-side work; the engine and the API rely on the
names and signatures below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class RegistryCredentials:
    """Credentials from the client's X-Registry-Auth header (or a config)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""


@dataclass
class Image:
    """One image: its id is the sha256 digest of its config blob."""

    id: str                                   # "sha256:<hex>"
    config: dict[str, Any]                    # full OCI/Docker image config JSON
    repo_tags: list[str] = field(default_factory=list)     # "127.0.0.1:5000/busybox:latest"
    repo_digests: list[str] = field(default_factory=list)  # "repo@sha256:<manifest digest>"
    size: int = 0                             # unpacked size in bytes
    created: str = ""                         # from config["created"]


ProgressCallback = Callable[[dict[str, Any]], None]   # receives Docker JSON progress messages


class ImageStore:
    """Images under <root>/images: blobs/sha256/<hex>, layers/<chain id>/..., repositories.json."""

    def __init__(self, root: Path, insecure_registries: list[str] | None = None) -> None:
        raise NotImplementedError

    def pull(self, reference: str, credentials: RegistryCredentials | None = None,
             progress: ProgressCallback | None = None) -> Image:
        """Pull `reference` (short names → docker.io/library/...), verify, unpack, tag."""
        raise NotImplementedError

    def get(self, ref_or_id: str) -> Image:
        """By tag ("busybox", "busybox:latest", "127.0.0.1:5000/x:y"), digest, full or short id.

        Raises NotFound("No such image: <ref>").
        """
        raise NotImplementedError

    def list(self) -> list[Image]:
        raise NotImplementedError

    def tag(self, ref_or_id: str, repo: str, tag: str = "latest") -> None:
        raise NotImplementedError

    def remove(self, ref_or_id: str, force: bool = False, prune: bool = True,
               in_use_by: Callable[[str], list[str]] = lambda image_id: []) -> list[dict[str, str]]:
        """Untag and/or delete; returns Docker's [{"Untagged": ...}, {"Deleted": ...}].

        Raises Conflict when a container (per `in_use_by(image_id)`) uses the image and not force.
        """
        raise NotImplementedError

    def prune(self, dangling_only: bool = True,
              in_use: set[str] | None = None) -> tuple[list[dict[str, str]], int]:
        """Remove unused images; returns (deleted records, bytes reclaimed)."""
        raise NotImplementedError

    def history(self, ref_or_id: str) -> list[dict[str, Any]]:
        """Docker's image history records, newest first."""
        raise NotImplementedError

    def layer_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked, read-only layer directories, lowest first."""
        raise NotImplementedError
