"""An OCI distribution (Docker registry v2) client for pulls: manifests, platform choice, blobs.

* Manifests: asks for Docker v2 and OCI manifests and indexes in one Accept
  header; from an index it picks the host platform (linux/amd64 here).
* Blobs stream to a file while being hashed; a broken connection resumes with
  a Range request; the digest is checked before the caller may use the file.
* HTTP, TLS, dial maps and authentication are the `RegistrySession`'s
  (registry_session.py); the dial-map helpers and `is_insecure_host` are
  re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import RegistryError, RegistryNotFound, ResourceError
from .reference import Reference
from .registry_credentials import RegistryCredentials as Credentials
from .registry_session import (
    DialMap,
    RegistrySession,
    TransportError,
    dial_map_from_env,
    is_insecure_host,
    loopback_dial_map,
    registry_errors,
)

log = logging.getLogger(__name__)

MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_TYPES = (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST)
INDEX_TYPES = (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX)
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)

MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 16 << 20
DOWNLOAD_ATTEMPTS = 5
_CHUNK = 256 << 10

BlobProgress = Callable[[int, int | None], None]


@dataclass
class Descriptor:
    """An OCI content descriptor (config or layer)."""

    media_type: str
    digest: str
    size: int
    urls: list[str] = field(default_factory=list)


@dataclass
class ResolvedImage:
    """The result of resolving a reference to one platform's image manifest."""

    reference: Reference
    digest: str                 # digest the reference resolved to (the index's, if any)
    manifest_digest: str        # the platform image manifest's digest
    manifest_bytes: bytes
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms for the machine we run on."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return "linux", arch


class RegistryClient:
    """Talks to registries for pulls; safe to share between threads."""

    def __init__(self, insecure_registries: list[str] | None = None,
                 dial_map: DialMap | None = None, timeout: float = 60.0,
                 platform_: tuple[str, str] | None = None,
                 session: RegistrySession | None = None) -> None:
        self.session = session or RegistrySession(insecure_registries, dial_map, timeout)
        self.platform = platform_ or host_platform()

    def endpoint(self, domain: str) -> str:
        """The registry API base URL for `domain` (Docker Hub's API lives elsewhere)."""
        return self.session.endpoint(domain)

    # --- manifests ---------------------------------------------------------------
    def _get_manifest(self, ref: Reference, obj: str, creds: Credentials
                      ) -> tuple[bytes, str, str]:
        url = f"{self.session.endpoint(ref.domain)}/v2/{ref.path}/manifests/{obj}"
        conn, resp = self.session.request("GET", url, ref, creds, {"Accept": ACCEPT})
        try:
            body = resp.read(MAX_MANIFEST_BYTES + 1)
        except (OSError, http.client.HTTPException) as err:
            raise TransportError(f"reading manifest {ref.familiar()}: {err}") from None
        finally:
            conn.close()
        if resp.status == 404:
            errors = registry_errors(body)
            if "name unknown" in errors:
                raise RegistryNotFound(f"repository {ref.familiar_name} not found: {errors}")
            raise RegistryNotFound(f"manifest for {ref.familiar()} not found: {errors or 'manifest unknown'}")
        if resp.status == 403:
            raise RegistryNotFound(f"pull access denied for {ref.familiar_name}: {registry_errors(body)}")
        if resp.status == 429:
            raise RegistryError(f"toomanyrequests: {registry_errors(body)}")
        if resp.status != 200:
            raise RegistryError(f"registry {ref.domain} answered HTTP {resp.status} for manifest "
                                f"{ref.familiar()}: {registry_errors(body)}")
        if len(body) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"manifest for {ref.familiar()} is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if obj.startswith("sha256:") and digest != obj:
            raise RegistryError(f"manifest digest mismatch for {ref.familiar_name}@{obj}: got {digest}")
        media_type = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        return body, digest, media_type

    def resolve(self, ref: Reference, credentials: Any = None) -> ResolvedImage:
        """Fetch the manifest for `ref`, following an index to this platform's manifest."""
        creds = Credentials.from_any(credentials)
        body, digest, media_type = self._get_manifest(ref, ref.object, creds)
        doc = _load_manifest(body, ref)
        media_type = doc.get("mediaType") or media_type
        top_digest = digest
        if media_type in INDEX_TYPES or "manifests" in doc:
            child = self._pick_platform(doc, ref)
            body, digest, media_type = self._get_manifest(ref, child, creds)
            doc = _load_manifest(body, ref)
            media_type = doc.get("mediaType") or media_type
        if media_type in MEDIA_DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise RegistryError(f"{ref.familiar()}: Docker image manifest schema 1 is not supported")
        if "config" not in doc or "layers" not in doc:
            raise RegistryError(f"{ref.familiar()}: unsupported manifest type {media_type!r}")
        try:
            config = _descriptor(doc["config"])
            layers = [_descriptor(layer) for layer in doc["layers"]]
        except (KeyError, TypeError, ValueError) as err:
            raise RegistryError(f"{ref.familiar()}: malformed manifest: {err}") from None
        return ResolvedImage(reference=ref, digest=top_digest, manifest_digest=digest,
                             manifest_bytes=body, media_type=media_type, config=config,
                             layers=layers)

    def _pick_platform(self, index: dict[str, Any], ref: Reference) -> str:
        want_os, want_arch = self.platform
        candidates: list[tuple[int, str]] = []
        for entry in index.get("manifests") or []:
            plat = entry.get("platform") or {}
            if plat.get("os") == want_os and plat.get("architecture") == want_arch:
                variant = plat.get("variant", "")
                # Prefer the plain or v8 variant for arm64, any for the others.
                candidates.append((0 if variant in ("", "v8") else 1, entry["digest"]))
        if not candidates:
            raise RegistryNotFound(f"no matching manifest for {want_os}/{want_arch} in the "
                                   f"manifest list entries of {ref.familiar()}")
        return sorted(candidates)[0][1]

    # --- blobs -------------------------------------------------------------------
    def fetch_blob(self, ref: Reference, desc: Descriptor, credentials: Any = None,
                   limit: int = MAX_CONFIG_BYTES) -> bytes:
        """A small blob (an image config), verified; resumes like download_blob."""
        if desc.size > limit:
            raise RegistryError(f"blob {desc.digest} is too large ({desc.size} bytes)")
        buf = io.BytesIO()
        self._download_into(ref, desc, buf, Credentials.from_any(credentials), None, limit)
        return buf.getvalue()

    @staticmethod
    def _check_blob_status(status: int, body: bytes, ref: Reference, digest: str) -> None:
        if status in (200, 206):
            return
        if status == 404:
            raise RegistryNotFound(f"blob {digest} of {ref.familiar_name} not found: "
                                   f"{registry_errors(body)}")
        raise RegistryError(f"registry {ref.domain} answered HTTP {status} for blob {digest}: "
                            f"{registry_errors(body)}")

    def download_blob(self, ref: Reference, desc: Descriptor, dest: Path,
                      credentials: Any = None, on_progress: BlobProgress | None = None) -> None:
        """Stream blob `desc` into `dest` (truncated first), resuming after broken connections.

        Raises RegistryError on a digest or size mismatch; `dest` then holds
        unverified data and must be discarded by the caller.
        """
        try:
            with open(dest, "wb") as out:
                self._download_into(ref, desc, out, Credentials.from_any(credentials), on_progress)
                out.flush()
        except OSError as err:   # our disk, not the network: a full disk is not retried
            raise ResourceError.from_os_error(err, "write", dest) from err

    def _download_into(self, ref: Reference, desc: Descriptor, out: BinaryIO, creds: Credentials,
                       on_progress: BlobProgress | None, limit: int | None = None) -> None:
        url = f"{self.session.endpoint(ref.domain)}/v2/{ref.path}/blobs/{desc.digest}"
        total: int | None = desc.size or None
        hasher = hashlib.sha256()
        have = 0
        failures = 0
        while True:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                conn, resp = self.session.request("GET", url, ref, creds, headers)
            except TransportError as err:
                failures += 1
                if failures >= DOWNLOAD_ATTEMPTS:
                    raise RegistryError(f"downloading {desc.digest} failed: {err}") from None
                self._backoff(failures, desc, err)
                continue
            try:
                if resp.status not in (200, 206):
                    body = resp.read(4096)
                    self._check_blob_status(resp.status, body, ref, desc.digest)
                if have and resp.status == 200:
                    # The server ignored our Range: start again from byte 0.
                    out.seek(0)
                    out.truncate()
                    hasher = hashlib.sha256()
                    have = 0
                length = resp.getheader("Content-Length")
                expected_end = have + int(length) if length and length.isdecimal() else None
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as err:   # not a transport error: no retry, no resume
                        raise ResourceError.from_os_error(err, "write", getattr(out, "name", None)) from err
                    hasher.update(chunk)
                    have += len(chunk)
                    if limit is not None and have > limit:
                        raise RegistryError(f"blob {desc.digest} is larger than {limit} bytes")
                    if on_progress is not None:
                        on_progress(have, total)
                # http.client returns b"" rather than raising when a Content-Length
                # body is cut short, so the length is checked here.
                if expected_end is not None and have < expected_end:
                    raise ConnectionError(f"connection closed after {have} of {expected_end} bytes")
            except (OSError, http.client.HTTPException) as err:
                failures += 1
                if failures >= DOWNLOAD_ATTEMPTS:
                    raise RegistryError(f"downloading {desc.digest} failed after {failures} "
                                        f"attempts: {err}") from None
                self._backoff(failures, desc, err)
                continue
            finally:
                conn.close()
            break
        actual = "sha256:" + hasher.hexdigest()
        if actual != desc.digest:
            raise RegistryError(f"digest mismatch for blob {desc.digest} of {ref.familiar_name}: "
                                f"got {actual}")
        if desc.size and have != desc.size:
            raise RegistryError(f"size mismatch for blob {desc.digest}: {have} != {desc.size}")

    @staticmethod
    def _backoff(failures: int, desc: Descriptor, err: Exception) -> None:
        log.warning("download of %s interrupted (%s); resuming (attempt %d)", desc.digest, err,
                    failures + 1)
        # Back off a little on repeated failures; the first resume is immediate.
        time.sleep(min(0.2 * (failures - 1), 2.0))


def _load_manifest(body: bytes, ref: Reference) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise RegistryError(f"{ref.familiar()}: manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{ref.familiar()}: manifest is not a JSON object")
    return doc


def _descriptor(raw: dict[str, Any]) -> Descriptor:
    digest = raw["digest"]
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise ValueError(f"unsupported digest {digest!r}")
    return Descriptor(media_type=raw.get("mediaType", ""), digest=digest, size=int(raw.get("size", 0)),
                      urls=list(raw.get("urls") or []))


__all__ = ["RegistryClient", "RegistrySession", "ResolvedImage", "Descriptor", "Credentials", "DialMap",
           "host_platform", "is_insecure_host", "loopback_dial_map", "dial_map_from_env", "ACCEPT"]
