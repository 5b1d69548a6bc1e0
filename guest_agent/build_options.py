"""The query of `POST /build` as the classic builder's options; what it cannot honour is
refused by name (400) rather than dropped."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from runtime.build.builder import BuildOptions
from runtime.errors import InvalidArgument
from runtime.images.reference import parse_reference
from runtime.images.registry_credentials import RegistryCredentials

from .http_request import Request, parse_json

# Query options dockerd's classic builder takes that Dockyard's does not (yet): refused when set.
_REFUSED = {
    "remote": "a remote build context (URL or Git repository)",
    "squash": "--squash",
    "outputs": "--output",
    "cachefrom": "--cache-from",
    "extrahosts": "--add-host",
    "isolation": "--isolation",
    "securityopt": "--security-opt",
    "ulimits": "--ulimit",
}
_RESOURCE_OPTIONS = ("memory", "memswap", "cpushares", "cpusetcpus", "cpusetmems", "cpuperiod",
                     "cpuquota", "shmsize", "cgroupparent")


def _json_map(request: Request, name: str) -> dict[str, Any]:
    raw = request.arg(name)
    if not raw:
        return {}
    value = parse_json(raw, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"invalid {name}: expected a JSON object")
    return value


def _empty(value: str | None) -> bool:
    return value is None or value.strip() in ("", "0", "[]", "{}", "null", "default")


def registry_config(header: str | None) -> dict[str, RegistryCredentials]:
    """X-Registry-Config: base64url JSON {registry host: AuthConfig} for the base images' pulls."""
    if not header or not header.strip():
        return {}
    raw = header.strip()
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as err:
        raise InvalidArgument(f"invalid X-Registry-Config header: {err}") from None
    value = parse_json(decoded or b"{}", "X-Registry-Config header")
    if not isinstance(value, dict):
        raise InvalidArgument("invalid X-Registry-Config header: expected a JSON object")
    found: dict[str, RegistryCredentials] = {}
    for host, auth in value.items():
        if not isinstance(auth, dict):
            raise InvalidArgument(f"invalid X-Registry-Config header: the entry for {host!r} is not an object")
        username, password = str(auth.get("username") or ""), str(auth.get("password") or "")
        if not username and auth.get("auth"):
            try:
                username, _, password = base64.b64decode(str(auth["auth"])).decode().partition(":")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise InvalidArgument(f"invalid X-Registry-Config header: bad auth for {host!r}") from None
        creds = RegistryCredentials(username, password, str(auth.get("identitytoken") or ""),
                                    str(auth.get("registrytoken") or ""))
        if creds.present:
            found[_registry_host(str(host))] = creds
    return found


def _registry_host(key: str) -> str:
    """The host a config key names: "https://index.docker.io/v1/" -> "docker.io"."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def parse_build_options(request: Request) -> tuple[BuildOptions, str, bool]:
    """(options, Dockerfile name, quiet) from the query; InvalidArgument for what we refuse."""
    for name, what in _REFUSED.items():
        if not _empty(request.arg(name)):
            raise InvalidArgument(f"Dockyard's builder does not support {what} ({name})")
    for name in _RESOURCE_OPTIONS:
        if not _empty(request.arg(name)):
            raise InvalidArgument(f"Dockyard's builder does not support resource limits on build "
                                  f"containers ({name})")
    if request.arg("version") not in (None, "", "1"):
        raise InvalidArgument("Dockyard's engine has the classic builder only (version 1), not BuildKit")
    platform = request.arg("platform") or ""
    if platform and not platform.startswith("linux"):
        raise InvalidArgument(f"\"{platform}\": this engine builds linux images only")
    tags = []
    for tag in request.query.get("t", []):
        ref = parse_reference(tag)
        if ref.digest:
            raise InvalidArgument(f"invalid tag {tag!r}: a tag cannot name a digest")
        tags.append(f"{ref.familiar_name}:{ref.tag or 'latest'}")
    build_args = {str(k): (None if v is None else str(v)) for k, v in _json_map(request, "buildargs").items()}
    labels = {str(k): str(v) for k, v in _json_map(request, "labels").items()}
    options = BuildOptions(
        tags=tags, target=request.arg("target") or "", build_args=build_args, labels=labels,
        no_cache=request.bool_arg("nocache"), pull=request.bool_arg("pull"),
        remove=request.bool_arg("rm", True) or request.bool_arg("forcerm"),
        network=request.arg("networkmode") or "default",
        registry_auth=registry_config(request.headers.get("X-Registry-Config")))
    return options, request.arg("dockerfile") or "Dockerfile", request.bool_arg("q")
