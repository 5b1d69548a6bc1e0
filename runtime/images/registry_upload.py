"""The upload side of the distribution API, for pushes: blob checks, mounts, uploads, manifests.

* `blob_exists`: HEAD on the blob; a registry that has it need not be sent it again.
* `mount_blob`: `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>` asks the
  registry to link a blob it holds in another repository (201); a registry that
  cannot answers 202 with a fresh upload session, which `upload_blob` then uses.
* `upload_blob`: `POST .../blobs/uploads/` opens a session (202 + Location), PATCH
  sends the blob in `UPLOAD_CHUNK` pieces (each with its Content-Range, each answer
  naming the next Location), and `PUT <location>&digest=` closes it (201). Debian's
  registry (distribution 2.8) does not take a monolithic `POST ?digest=`.
* `put_manifest`: PUT the manifest with its own media type; the registry's
  Docker-Content-Digest must be the sha256 of the bytes sent.

Every request goes through the shared `RegistrySession` (auth challenges, TLS,
dialling) with the "pull,push" scope.
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode, urljoin

from ..errors import RegistryAuthError, RegistryError, RegistryNotFound, ResourceError
from .reference import Reference
from .registry_credentials import RegistryCredentials as Credentials
from .registry_session import RegistrySession, TransportError, registry_errors

UPLOAD_CHUNK = 8 << 20           # bytes per PATCH
PUSH_ACTIONS = "pull,push"

UploadProgress = Callable[[int, int], None]   # (bytes sent, total)


class RegistryUploader:
    """Sends blobs and manifests to registries; safe to share between threads."""

    def __init__(self, session: RegistrySession, chunk_size: int = UPLOAD_CHUNK) -> None:
        self.session = session
        self.chunk_size = chunk_size

    def _repo_url(self, ref: Reference, rest: str) -> str:
        return f"{self.session.endpoint(ref.domain)}/v2/{ref.path}/{rest}"

    def _call(self, method: str, url: str, ref: Reference, creds: Credentials,
              headers: dict[str, str] | None = None, body: bytes | None = None,
              extra_scopes: tuple[str, ...] = ()) -> tuple[int, dict[str, str], bytes]:
        """One request; (status, headers with lower-case names, body)."""
        conn, resp = self.session.request(method, url, ref, creds, headers, body,
                                          actions=PUSH_ACTIONS, extra_scopes=extra_scopes)
        try:
            data = b"" if method == "HEAD" else resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as err:
            raise TransportError(f"reading the answer of {ref.domain}: {err}") from None
        finally:
            conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    @staticmethod
    def _refused(ref: Reference, status: int, body: bytes, doing: str) -> RegistryError:
        detail = registry_errors(body) if body.strip() else f"HTTP {status}"
        if status in (401, 403):
            return RegistryAuthError(detail if ":" in detail else f"denied: {detail}")
        if status == 404:
            return RegistryNotFound(f"{doing} in {ref.familiar_name}: {detail}")
        return RegistryError(f"{doing} in {ref.familiar_name} failed: {detail}")

    # --- blobs -----------------------------------------------------------------------------
    def blob_exists(self, ref: Reference, digest: str, creds: Credentials) -> bool:
        """Whether the repository already holds blob `digest`."""
        status, _, body = self._call("HEAD", self._repo_url(ref, f"blobs/{digest}"), ref, creds)
        if status in (200, 307):
            return True
        if status == 404:
            return False
        raise self._refused(ref, status, body, f"checking blob {digest}")

    def mount_blob(self, ref: Reference, digest: str, source: Reference, creds: Credentials
                   ) -> str | None:
        """Link `digest` from repository `source` (same registry); None when mounted, else the
        upload session the registry opened instead (to pass to `upload_blob`)."""
        query = urlencode({"mount": digest, "from": source.path})
        url = self._repo_url(ref, "blobs/uploads/") + "?" + query
        status, headers, body = self._call("POST", url, ref, creds,
                                           {"Content-Length": "0"}, b"",
                                           extra_scopes=(f"repository:{source.path}:pull",))
        if status == 201:
            return None
        if status == 202 and headers.get("location"):
            return urljoin(url, headers["location"])
        raise self._refused(ref, status, body, f"mounting blob {digest}")

    def start_upload(self, ref: Reference, creds: Credentials) -> str:
        """Open an upload session; its Location URL."""
        url = self._repo_url(ref, "blobs/uploads/")
        status, headers, body = self._call("POST", url, ref, creds, {"Content-Length": "0"}, b"")
        if status != 202 or not headers.get("location"):
            raise self._refused(ref, status, body, "starting an upload")
        return urljoin(url, headers["location"])

    def upload_blob(self, ref: Reference, path: Path, digest: str, size: int, creds: Credentials,
                    location: str | None = None, on_progress: UploadProgress | None = None) -> None:
        """Send the file at `path` as blob `digest` in chunks and commit it.

        The bytes are hashed as they are sent: a blob that changed on disk is refused
        here rather than committed under a wrong digest.
        """
        url = location or self.start_upload(ref, creds)
        hasher = hashlib.sha256()
        sent = 0
        try:
            with open(path, "rb") as blob:
                while True:
                    chunk = _read_chunk(blob, self.chunk_size)
                    if not chunk:
                        break
                    hasher.update(chunk)
                    url = self._patch(ref, url, chunk, sent, creds)
                    sent += len(chunk)
                    if on_progress is not None:
                        on_progress(sent, size)
        except OSError as err:   # our disk, not the network
            raise ResourceError.from_os_error(err, "read", path) from err
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest or sent != size:
            raise RegistryError(f"layer blob {digest} changed on disk (read {sent} bytes, {actual})")
        sep = "&" if "?" in url else "?"
        status, _, body = self._call("PUT", url + sep + urlencode({"digest": digest}), ref, creds,
                                     {"Content-Length": "0"}, b"")
        if status != 201:
            raise self._refused(ref, status, body, f"committing blob {digest}")

    def _patch(self, ref: Reference, url: str, chunk: bytes, offset: int, creds: Credentials) -> str:
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                   "Content-Length": str(len(chunk))}
        status, answer, body = self._call("PATCH", url, ref, creds, headers, chunk)
        if status != 202:
            raise self._refused(ref, status, body, "uploading a blob chunk")
        return urljoin(url, answer["location"]) if answer.get("location") else url

    # --- manifests -------------------------------------------------------------------------
    def put_manifest(self, ref: Reference, tag: str, manifest: bytes, media_type: str,
                     creds: Credentials) -> str:
        """PUT `manifest` as `tag`; its digest (checked against the registry's)."""
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        status, headers, body = self._call("PUT", self._repo_url(ref, f"manifests/{tag}"), ref,
                                           creds, {"Content-Type": media_type}, manifest)
        if status != 201:
            raise self._refused(ref, status, body, f"pushing manifest {tag}")
        answered = headers.get("docker-content-digest")
        if answered and answered != digest:
            raise RegistryError(f"registry {ref.domain} stored manifest {tag} as {answered}, "
                                f"not {digest}")
        return digest


def _read_chunk(f: BinaryIO, size: int) -> bytes:
    parts = []
    want = size
    while want:
        data = f.read(want)
        if not data:
            break
        parts.append(data)
        want -= len(data)
    return b"".join(parts)
