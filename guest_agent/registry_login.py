"""`POST /auth` (docker login): check credentials against a registry's /v2/ endpoint.

The check follows the registry's challenge: no auth needed, HTTP Basic, or a
Bearer token realm asked with Basic credentials (as `docker login` does it).
"""

from __future__ import annotations

import base64
import http.client
import logging
import ssl
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from runtime.errors import InvalidArgument, RegistryAuthError, RegistryError
from runtime.images.registry_session import is_insecure_host

log = logging.getLogger(__name__)

DOCKER_HUB_ALIASES = ("", "docker.io", "index.docker.io", "registry-1.docker.io")
TIMEOUT = 30.0


@dataclass
class LoginRequest:
    """The body of POST /auth."""

    username: str
    password: str
    server: str          # "127.0.0.1:5000", "https://index.docker.io/v1/", ...


def registry_host(server: str) -> str:
    """host[:port] of the registry named by `serveraddress`."""
    server = server.strip()
    if "://" in server:
        server = urlsplit(server).netloc
    server = server.split("/", 1)[0]
    return "registry-1.docker.io" if server in DOCKER_HUB_ALIASES else server


def _get(scheme: str, host: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    if scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, timeout=TIMEOUT, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = part.strip().partition("=")
        if eq:
            params[key.strip().lower()] = value.strip().strip('"')
    return scheme.lower(), params


def check_login(request: LoginRequest, insecure_registries: list[str] | None = None) -> None:
    """Return when the registry accepts the credentials; RegistryAuthError when it refuses."""
    if not request.username:
        raise InvalidArgument("login needs a username")
    host = registry_host(request.server)
    scheme = "http" if is_insecure_host(host, insecure_registries or []) else "https"
    basic = "Basic " + base64.b64encode(f"{request.username}:{request.password}".encode()).decode()
    try:
        status, headers = _get(scheme, host, "/v2/", {})
        if status == 200:
            return  # an open registry accepts anyone
        if status != 401:
            raise RegistryError(f"login to {host} failed: /v2/ answered {status}")
        kind, params = _challenge(headers.get("www-authenticate", ""))
        if kind == "basic":
            status, _ = _get(scheme, host, "/v2/", {"Authorization": basic})
        elif kind == "bearer" and params.get("realm"):
            realm = urlsplit(params["realm"])
            query = urlencode({"service": params.get("service", ""), "account": request.username})
            path = (realm.path or "/") + "?" + (realm.query + "&" if realm.query else "") + query
            status, _ = _get(realm.scheme or "https", realm.netloc, path, {"Authorization": basic})
        else:
            raise RegistryError(f"login to {host} failed: unsupported challenge {kind!r}")
    except OSError as err:
        raise RegistryError(f"login to {host} failed: {err}") from None
    if status in (401, 403):
        raise RegistryAuthError(f"login attempt to {scheme}://{host}/v2/ failed with status: "
                                f"{status} Unauthorized")
    if status != 200:
        raise RegistryError(f"login to {host} failed: status {status}")


def parse_login_body(body: object) -> LoginRequest:
    """The AuthConfig of POST /auth; every field is a string, as in Go's struct."""
    from .request_body import BodyFields, top_level_object
    fields = BodyFields(top_level_object(body, "registry.AuthConfig"), "AuthConfig")
    for key in ("auth", "email", "identitytoken", "registrytoken"):
        fields.string(key)
    return LoginRequest(username=fields.string("username"), password=fields.string("password"),
                        server=fields.string("serveraddress"))


def login_response() -> dict[str, str]:
    return {"Status": "Login Succeeded", "IdentityToken": ""}


__all__ = ["LoginRequest", "check_login", "parse_login_body", "login_response", "registry_host"]
