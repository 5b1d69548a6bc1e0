"""An OCI distribution (Docker registry v2) client on http.client: manifests, blobs, auth.

* Auth: anonymous, Basic, and Bearer tokens (follows `Www-Authenticate`,
  fetches a token from the realm with service and scope, caches it per
  registry/scope/credentials until it expires).
* Manifests: asks for Docker v2 and OCI manifests and indexes in one Accept
  header; from an index it picks the host platform (linux/amd64 here).
* Transport: plain HTTP for localhost, 127.0.0.0/8, ::1 and registries listed
  in `insecure_registries`; HTTPS (verified) otherwise. `dial_map` lets the
  integrator reach a registry at another address (e.g. "127.0.0.1:5000" as
  "10.0.2.2:5000" inside a VM): names, tags, Host headers and auth scopes stay
  the user's, only the TCP connection goes elsewhere. It applies to token
  realms and redirects too. Without an explicit map, setting
  DOCKYARD_HOST_LOOPBACK=10.0.2.2 sends every loopback registry
  to that address (same port): what the guest needs.
* Blobs stream to a file while being hashed; a broken connection resumes with
  a Range request; the digest is checked before the caller may use the file.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import ipaddress
import json
import logging
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from ..errors import RegistryAuthError, RegistryError, RegistryNotFound, ResourceError
from ..host_loopback import HOST_LOOPBACK_ENV as LOOPBACK_GATEWAY_ENV
from .reference import Reference
from .registry_credentials import RegistryCredentials as Credentials

if TYPE_CHECKING:
    import ssl

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

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
USER_AGENT = "dockyard/0.1"
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 16 << 20
MAX_REDIRECTS = 5
DOWNLOAD_ATTEMPTS = 5
_CHUNK = 256 << 10

DialMap = Mapping[str, str] | Callable[[str], str]
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


class _Transport(RegistryError):
    """A network failure (retryable for blob downloads)."""


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms for the machine we run on."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return "linux", arch


def is_insecure_host(host: str, insecure_registries: list[str] | tuple[str, ...] = ()) -> bool:
    """True for loopback registries and those the user listed as insecure."""
    hostname = _split_hostport(host)[0]
    if hostname == "localhost" or host in insecure_registries or hostname in insecure_registries:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def loopback_dial_map(gateway: str) -> Callable[[str], str]:
    """A dial map sending loopback registries ("127.0.0.1:5000", "localhost:5000") to `gateway`.

    Inside the VM the user's "127.0.0.1:5000" is the host's loopback, which
    QEMU's user network exposes as 10.0.2.2: `loopback_dial_map("10.0.2.2")`
    keeps each port and swaps the host.
    """
    def dial(netloc: str) -> str:
        host, port = _split_hostport(netloc)
        if is_insecure_host(host) and host != gateway:   # loopback names only
            return f"{gateway}:{port}" if port else gateway
        return netloc
    return dial


def dial_map_from_env() -> Callable[[str], str] | None:
    """`loopback_dial_map($DOCKYARD_HOST_LOOPBACK)` when that variable is set."""
    gateway = os.environ.get(LOOPBACK_GATEWAY_ENV, "").strip()
    return loopback_dial_map(gateway) if gateway else None


def _split_hostport(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = netloc.rpartition(":")
    if sep and port.isdecimal() and ":" not in host:
        return host, int(port)
    return netloc, None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in re.finditer(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))', rest)}
    return scheme.lower(), params


def _registry_errors(body: bytes) -> str:
    """Docker's "code: message" text from a registry error body."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{str(e.get('code', '')).lower().replace('_', ' ')}: {e.get('message', '')}"
                         for e in errors) or body[:200].decode(errors="replace")
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a dialled address while verifying the certificate of the registry's own name."""

    def __init__(self, host: str, port: int | None, tls_name: str, context: ssl.SSLContext,
                 **kwargs: Any) -> None:
        super().__init__(host, port, context=context, **kwargs)
        self._tls_name = tls_name
        self._tls_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._tls_name)


class RegistryClient:
    """Talks to registries for pulls; safe to share between threads."""

    def __init__(self, insecure_registries: list[str] | None = None,
                 dial_map: DialMap | None = None, timeout: float = 60.0,
                 platform_: tuple[str, str] | None = None) -> None:
        self.insecure_registries = list(insecure_registries or [])
        self.dial_map = dial_map
        self.timeout = timeout
        self.platform = platform_ or host_platform()
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        # Made on the first HTTPS request: loading the CA bundle costs ~0.4 s in a TCG guest,
        # and plain-HTTP (loopback, insecure) registries never need it.
        self._ssl_context: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()

    @property
    def _ssl(self) -> ssl.SSLContext:
        context = self._ssl_context
        if context is None:
            with self._ssl_lock:
                if self._ssl_context is None:
                    import ssl
                    self._ssl_context = ssl.create_default_context()
                context = self._ssl_context
        return context

    # --- addresses -----------------------------------------------------------
    def endpoint(self, domain: str) -> str:
        """The registry API base URL for `domain` (Docker Hub's API lives elsewhere)."""
        netloc = DOCKER_HUB_ENDPOINT if domain == DOCKER_HUB_DOMAIN else domain
        scheme = "http" if is_insecure_host(netloc, self.insecure_registries) else "https"
        return f"{scheme}://{netloc}"

    def _dial(self, netloc: str) -> str:
        if self.dial_map is None:
            return netloc
        if callable(self.dial_map):
            return self.dial_map(netloc) or netloc
        return self.dial_map.get(netloc, netloc)

    # --- HTTP ------------------------------------------------------------------
    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        dial_host, dial_port = _split_hostport(self._dial(parts.netloc))
        name_host, _ = _split_hostport(parts.netloc)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = _HTTPSConnection(
                dial_host, dial_port, name_host, timeout=self.timeout, context=self._ssl)
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(dial_host, dial_port, timeout=self.timeout)
        else:
            raise RegistryError(f"unsupported URL scheme in {url!r}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request(method, path, body=body,
                         headers={"Host": parts.netloc, "User-Agent": USER_AGENT, **headers})
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise _Transport(f"cannot reach registry {parts.netloc}: {err}") from None

    def _follow(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        origin = urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            conn, resp = self._send(method, url, headers, body)
            location = resp.getheader("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                return conn, resp
            resp.read()
            conn.close()
            url = urljoin(url, location)
            if urlsplit(url).netloc != origin:
                # Blob redirects go to storage/CDN hosts: never send our registry credentials there.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise RegistryError(f"too many redirects fetching {url}")

    def _request(self, method: str, url: str, ref: Reference, creds: Credentials,
                 headers: dict[str, str] | None = None
                 ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send with cached auth; on 401 authenticate from the challenge and retry once."""
        scope = f"repository:{ref.path}:pull"
        domain = ref.domain
        challenge_scheme = ""
        for attempt in range(2):
            h = dict(headers or {})
            auth = self._cached_auth(domain, scope, creds)
            if auth:
                h["Authorization"] = auth
            conn, resp = self._follow(method, url, h)
            if resp.status != 401:
                return conn, resp
            challenge = resp.getheader("Www-Authenticate", "")
            resp.read()
            conn.close()
            if attempt == 1:
                break
            challenge_scheme = self._authenticate(domain, scope, creds, challenge, ref)
        if challenge_scheme == "basic" and creds.present:
            raise RegistryAuthError(f"unauthorized: incorrect username or password for {domain}")
        raise RegistryNotFound(f"pull access denied for {ref.familiar_name}, repository does not "
                               "exist or may require 'docker login': denied: requested access to "
                               "the resource is denied")

    # --- auth ------------------------------------------------------------------
    def _cached_auth(self, domain: str, scope: str, creds: Credentials) -> str | None:
        with self._lock:
            for key in ((domain, scope, creds.key()), (domain, "*", creds.key())):
                hit = self._tokens.get(key)
                if hit and hit[1] > time.monotonic():
                    return hit[0]
        return None

    def _remember(self, key: tuple[str, str, str], value: str, lifetime: float) -> None:
        with self._lock:
            self._tokens[key] = (value, time.monotonic() + lifetime)

    def _authenticate(self, domain: str, scope: str, creds: Credentials, challenge: str,
                      ref: Reference) -> str:
        scheme, params = _parse_challenge(challenge)
        denied = RegistryNotFound(f"pull access denied for {ref.familiar_name}, repository does "
                                  "not exist or may require 'docker login'")
        if scheme == "basic":
            if not creds.username:
                raise denied
            value = "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            self._remember((domain, "*", creds.key()), value, 24 * 3600)
            return scheme
        if scheme != "bearer":
            raise RegistryError(f"registry {domain} asks for unsupported auth {challenge!r}")
        if creds.registry_token:
            self._remember((domain, scope, creds.key()), "Bearer " + creds.registry_token, 3600)
            return scheme
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {domain} sent a Bearer challenge without a realm")
        token_scope = params.get("scope") or scope
        query = {"service": params.get("service", "")} if params.get("service") else {}
        if creds.identity_token:
            # OAuth2 refresh-token grant, as the docker CLI does after `docker login`.
            body = urlencode({"grant_type": "refresh_token", "client_id": "dockyard",
                              "refresh_token": creds.identity_token, "scope": token_scope,
                              **query}).encode()
            conn, resp = self._follow("POST", realm,
                                      {"Content-Type": "application/x-www-form-urlencoded"}, body)
        else:
            query["scope"] = token_scope
            headers = {}
            if creds.username:
                headers["Authorization"] = "Basic " + base64.b64encode(
                    f"{creds.username}:{creds.password}".encode()).decode()
            sep = "&" if "?" in realm else "?"
            conn, resp = self._follow("GET", realm + sep + urlencode(query), headers)
        try:
            data = resp.read(1 << 20)
        finally:
            conn.close()
        if resp.status in (401, 403):
            if creds.present:
                raise RegistryAuthError(f"unauthorized: authentication to {domain} failed: "
                                        f"{data[:200].decode(errors='replace').strip()}")
            raise denied
        if resp.status != 200:
            raise RegistryError(f"token server {realm} answered HTTP {resp.status}")
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"token server {realm} returned no token")
        lifetime = max(int(doc.get("expires_in") or 60) - 10, 10)
        self._remember((domain, scope, creds.key()), "Bearer " + token, lifetime)
        return scheme

    # --- manifests ---------------------------------------------------------------
    def _get_manifest(self, ref: Reference, obj: str, creds: Credentials
                      ) -> tuple[bytes, str, str]:
        url = f"{self.endpoint(ref.domain)}/v2/{ref.path}/manifests/{obj}"
        conn, resp = self._request("GET", url, ref, creds, {"Accept": ACCEPT})
        try:
            body = resp.read(MAX_MANIFEST_BYTES + 1)
        except (OSError, http.client.HTTPException) as err:
            raise _Transport(f"reading manifest {ref.familiar()}: {err}") from None
        finally:
            conn.close()
        if resp.status == 404:
            errors = _registry_errors(body)
            if "name unknown" in errors:
                raise RegistryNotFound(f"repository {ref.familiar_name} not found: {errors}")
            raise RegistryNotFound(f"manifest for {ref.familiar()} not found: {errors or 'manifest unknown'}")
        if resp.status == 403:
            raise RegistryNotFound(f"pull access denied for {ref.familiar_name}: {_registry_errors(body)}")
        if resp.status == 429:
            raise RegistryError(f"toomanyrequests: {_registry_errors(body)}")
        if resp.status != 200:
            raise RegistryError(f"registry {ref.domain} answered HTTP {resp.status} for manifest "
                                f"{ref.familiar()}: {_registry_errors(body)}")
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
                                   f"{_registry_errors(body)}")
        raise RegistryError(f"registry {ref.domain} answered HTTP {status} for blob {digest}: "
                            f"{_registry_errors(body)}")

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
        url = f"{self.endpoint(ref.domain)}/v2/{ref.path}/blobs/{desc.digest}"
        total: int | None = desc.size or None
        hasher = hashlib.sha256()
        have = 0
        failures = 0
        while True:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                conn, resp = self._request("GET", url, ref, creds, headers)
            except _Transport as err:
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


__all__ = ["RegistryClient", "ResolvedImage", "Descriptor", "Credentials", "host_platform",
           "is_insecure_host", "loopback_dial_map", "dial_map_from_env", "ACCEPT"]
