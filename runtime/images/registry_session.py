"""The HTTP side of talking to a registry: connections, TLS, dialling, authentication.

Shared by everything that speaks the distribution API (pulls and pushes):
`RegistrySession.request` sends one request with cached credentials and, on a
401, answers the `Www-Authenticate` challenge and retries once.

* Auth: anonymous, Basic, and Bearer tokens (follows `Www-Authenticate`,
  fetches a token from the realm with service and scope, caches it per
  registry/scope/credentials until it expires).
* Transport: plain HTTP for localhost, 127.0.0.0/8, ::1 and registries listed
  in `insecure_registries`; HTTPS (verified) otherwise. `dial_map` lets the
  integrator reach a registry at another address (e.g. "127.0.0.1:5000" as
  "10.0.2.2:5000" inside a VM): names, tags, Host headers and auth scopes stay
  the user's, only the TCP connection goes elsewhere. It applies to token
  realms and redirects too. Without an explicit map, setting
  DOCKYARD_HOST_LOOPBACK=10.0.2.2 sends every loopback registry
  to that address (same port): what the guest needs.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit

from ..errors import RegistryAuthError, RegistryError, RegistryNotFound
from ..host_loopback import HOST_LOOPBACK_ENV as LOOPBACK_GATEWAY_ENV
from .reference import Reference
from .registry_credentials import RegistryCredentials as Credentials

if TYPE_CHECKING:
    import ssl

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
USER_AGENT = "dockyard/0.1"
MAX_REDIRECTS = 5

DialMap = Mapping[str, str] | Callable[[str], str]


class TransportError(RegistryError):
    """A network failure (retryable for blob downloads)."""


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


def registry_errors(body: bytes) -> str:
    """Docker's "code: message" text from a registry error body."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{str(e.get('code', '')).lower().replace('_', ' ')}: {e.get('message', '')}"
                         for e in errors) or body[:200].decode(errors="replace")
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()


class RegistrySession:
    """Connections and credentials for registries; safe to share between threads."""

    def __init__(self, insecure_registries: list[str] | None = None,
                 dial_map: DialMap | None = None, timeout: float = 60.0) -> None:
        self.insecure_registries = list(insecure_registries or [])
        self.dial_map = dial_map
        self.timeout = timeout
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
            raise TransportError(f"cannot reach registry {parts.netloc}: {err}") from None

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

    def request(self, method: str, url: str, ref: Reference, creds: Credentials,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                actions: str = "pull", extra_scopes: tuple[str, ...] = ()
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send with cached auth; on 401 authenticate from the challenge and retry once.

        `actions` is the token scope's action list ("pull", or "pull,push" for a push);
        `extra_scopes` adds whole scopes ("repository:other:pull" for a cross-repository
        mount). A refusal is worded for what was asked: "pull access denied ..." for a
        pull, "unauthorized: ..." (or Docker's "no basic auth credentials") for a push.
        The caller reads the response and closes the connection.
        """
        scopes = (f"repository:{ref.path}:{actions}", *extra_scopes)
        scope = " ".join(scopes)
        domain = ref.domain
        pushing = "push" in actions.split(",")
        challenge_scheme = ""
        refusal = b""
        for attempt in range(2):
            h = dict(headers or {})
            auth = self._cached_auth(domain, scope, creds)
            if auth:
                h["Authorization"] = auth
            conn, resp = self._follow(method, url, h, body)
            if resp.status != 401:
                return conn, resp
            challenge = resp.getheader("Www-Authenticate", "")
            refusal = resp.read(1 << 16)
            conn.close()
            if attempt == 1:
                break
            challenge_scheme = self._authenticate(domain, scopes, creds, challenge, ref, pushing)
        if pushing:   # the registry's own words, as dockerd reports a refused push
            raise RegistryAuthError(registry_errors(refusal) if refusal.strip()
                                    else "unauthorized: authentication required")
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

    def _authenticate(self, domain: str, scopes: tuple[str, ...], creds: Credentials,
                      challenge: str, ref: Reference, pushing: bool) -> str:
        scheme, params = _parse_challenge(challenge)
        scope = " ".join(scopes)
        if pushing:
            denied: RegistryError = RegistryAuthError("unauthorized: authentication required")
        else:
            denied = RegistryNotFound(f"pull access denied for {ref.familiar_name}, repository "
                                      "does not exist or may require 'docker login'")
        if scheme == "basic":
            if not creds.username:
                # dockerd's words when a registry wants Basic auth and the client sent none.
                raise RegistryAuthError("no basic auth credentials") if pushing else denied
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
        # The challenge may name several scopes (space-separated); ask for ours as well.
        token_scopes = list(dict.fromkeys([*(params.get("scope") or "").split(), *scopes]))
        service = [("service", params["service"])] if params.get("service") else []
        if creds.identity_token:
            # OAuth2 refresh-token grant, as the docker CLI does after `docker login`.
            body = urlencode([("grant_type", "refresh_token"), ("client_id", "dockyard"),
                              ("refresh_token", creds.identity_token),
                              ("scope", " ".join(token_scopes)), *service]).encode()
            conn, resp = self._follow("POST", realm,
                                      {"Content-Type": "application/x-www-form-urlencoded"}, body)
        else:
            # One scope parameter per scope, as Docker's token clients send them.
            query = [*service, *(("scope", s) for s in token_scopes)]
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
            if creds.present or pushing:
                raise RegistryAuthError(f"unauthorized: {_token_refusal(data)}")
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


def _token_refusal(body: bytes) -> str:
    """Why a token server refused: its "details" or registry-style errors, else its text."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("details"), str) and doc["details"]:
            return str(doc["details"])
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message") or errors[0].get("code") or "")
    return body[:200].decode(errors="replace").strip() or "authentication required"
