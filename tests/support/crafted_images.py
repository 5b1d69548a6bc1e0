"""Hostile images written by hand and pushed to the test registry through its HTTP API.

`CraftedRegistry(registry).push(name, layers, config)` uploads raw layer tars
(names kept exactly as written: "../x", "/abs", device nodes, whiteouts...)
and an image config whose runtime part (Volumes, WorkingDir, Cmd, ...) is
whatever the test asks for, then a Docker v2 schema 2 manifest, and returns
the pullable reference. The busybox rootfs of tests/support/test_images.py is
the base layer unless `base=False`, so crafted images run real commands.

A real registry checks every blob it receives against its digest, so lies
cannot be pushed. `tamper_blob` plays the compromised registry instead: it
rewrites a blob in the registry's storage after the push (distribution
serves the stored bytes as they are). Lies the registry cannot see, such as
a config whose diff_ids name other layers, go through `push` directly.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.test_images import PATH_ENV, Entry, busybox_entries

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_MTIME = 1_700_000_000


@dataclass
class Member:
    """One tar member, written as given (no cleaning of its name or link target)."""

    name: str
    kind: str = "file"     # file | dir | symlink | hardlink | chardev | blockdev | fifo
    data: bytes = b""
    target: str = ""       # symlink or hard link target
    mode: int = 0o644
    major: int = 0
    minor: int = 0


_TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
              "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE,
              "blockdev": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


def layer_tar(members: Iterable[Member]) -> bytes:
    """An uncompressed tar of `members` in order (its sha256 is the layer's diff id)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TAR_TYPES[m.kind]
            info.mode = 0o755 if m.kind == "dir" and m.mode == 0o644 else m.mode
            info.mtime = _MTIME
            info.linkname = m.target
            info.devmajor, info.devminor = m.major, m.minor
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _from_entry(e: Entry) -> Member:
    return Member(e.path, e.kind, e.data, e.target, e.mode)


def busybox_layer() -> bytes:
    """The busybox rootfs of the regular test images, as one uncompressed tar."""
    return layer_tar(_from_entry(e) for e in busybox_entries())


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class PushedImage:
    """What `push` uploaded: the reference to pull and the digests involved."""

    ref: str
    manifest_digest: str
    config_digest: str
    layer_digests: list[str] = field(default_factory=list)   # compressed blobs, lowest first
    diff_ids: list[str] = field(default_factory=list)


class CraftedRegistry:
    """Pushes hand-made images to a running test registry (tests.support.registry)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._base: bytes | None = None          # the busybox layer, uncompressed
        self._base_gz: bytes | None = None
        self._blob_repos: dict[str, str] = {}    # digest -> a repository that has it

    def _request(self, method: str, url: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        parts = urlsplit(url if "://" in url else self.registry.url + url)
        conn = http.client.HTTPConnection(parts.netloc, timeout=60)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp

    def put_blob(self, repo: str, data: bytes) -> str:
        """Upload one blob (POST then a monolithic PUT); returns its digest.

        A blob pushed before to another repository is mounted from there instead.
        """
        digest = sha256(data)
        source = self._blob_repos.get(digest)
        if source is not None:
            resp = self._request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}")
            if resp.status == 201:
                return digest
        else:
            resp = self._request("POST", f"/v2/{repo}/blobs/uploads/")
        if resp.status != 202:
            raise RuntimeError(f"blob upload to {repo} refused: HTTP {resp.status}")
        location = resp.getheader("Location") or ""
        sep = "&" if "?" in location else "?"
        resp = self._request("PUT", f"{location}{sep}digest={digest}", data,
                             {"Content-Type": "application/octet-stream"})
        if resp.status != 201:
            raise RuntimeError(f"blob {digest} refused by the registry: HTTP {resp.status}")
        self._blob_repos.setdefault(digest, repo)
        return digest

    def put_manifest(self, repo: str, tag: str, manifest: bytes,
                     media_type: str = DOCKER_MANIFEST) -> str:
        resp = self._request("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                             {"Content-Type": media_type})
        if resp.status != 201:
            raise RuntimeError(f"manifest {repo}:{tag} refused by the registry: HTTP {resp.status}")
        return sha256(manifest)

    def push(self, name: str, layers: Iterable[bytes] = (), config: dict[str, Any] | None = None,
             base: bool = True, diff_ids: list[str] | None = None,
             config_digest: str | None = None) -> PushedImage:
        """Push an image made of the busybox layer (unless not `base`) and `layers` (raw tars).

        `config` is the image's runtime config (Cmd defaults to ["sh"]). `diff_ids`
        replaces the config's true list and `config_digest` the manifest's config
        descriptor digest: both are lies a registry accepts.
        """
        if base and self._base is None:
            self._base = busybox_layer()
            self._base_gz = gzip.compress(self._base, compresslevel=1, mtime=0)
        tars = ([self._base] if base and self._base is not None else []) + list(layers)
        runtime = {"Env": [PATH_ENV], "Cmd": ["sh"]}
        runtime.update(config or {})
        true_diff_ids = [sha256(t) for t in tars]
        image_config = {
            "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": diff_ids if diff_ids is not None else true_diff_ids},
            # The name makes every config (so every image id) distinct between tests.
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"crafted {name}"}
                        for _ in tars],
        }
        config_bytes = json.dumps(image_config, sort_keys=True).encode()
        real_config_digest = self.put_blob(name, config_bytes)
        blobs = [self._base_gz if t is self._base and self._base_gz is not None
                 else gzip.compress(t, compresslevel=1, mtime=0) for t in tars]
        digests = [self.put_blob(name, b) for b in blobs]
        manifest = {
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config_bytes),
                       "digest": config_digest or real_config_digest},
            "layers": [{"mediaType": DOCKER_LAYER_GZIP, "size": len(b), "digest": d}
                       for b, d in zip(blobs, digests, strict=True)],
        }
        manifest_digest = self.put_manifest(name, "latest", json.dumps(manifest).encode())
        return PushedImage(ref=f"{self.registry.host}/{name}:latest",
                           manifest_digest=manifest_digest,
                           config_digest=config_digest or real_config_digest,
                           layer_digests=digests, diff_ids=true_diff_ids)

    def blob_path(self, digest: str) -> Path:
        """Where the registry's filesystem storage keeps `digest`'s bytes."""
        hexpart = digest.split(":", 1)[1]
        return (Path(self.registry.workdir) / "data" / "docker" / "registry" / "v2" / "blobs"
                / "sha256" / hexpart[:2] / hexpart / "data")

    def tamper_blob(self, digest: str, data: bytes) -> None:
        """Make the registry serve `data` for `digest` (a compromised registry)."""
        path = self.blob_path(digest)
        if not path.exists():
            raise FileNotFoundError(f"the registry does not store {digest} at {path}")
        path.write_bytes(data)
