"""Image references as Docker parses them: "busybox", "user/app:1", "host:5000/x@sha256:...".

A reference names a repository on a registry (the *domain*) plus a tag and/or
a digest. Docker normalises short names onto Docker Hub: "busybox" is
docker.io/library/busybox:latest. Its *familiar* form drops "docker.io/" and
"library/" again ("busybox:latest"); other registries keep their host
("127.0.0.1:5000/busybox:latest"). The image store keys tags by familiar
strings, which map one-to-one onto canonical ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgument
from ..lazy_re import lazy_compile

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

# The grammar of github.com/distribution/reference.
_PATH_COMPONENT = lazy_compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = lazy_compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?\Z")
_TAG = lazy_compile(r"[\w][\w.-]{0,127}\Z")
_DIGEST = lazy_compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}\Z")
_SHA256_HEX = lazy_compile(r"[a-f0-9]{64}\Z")
_MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference."""

    domain: str            # "docker.io", "127.0.0.1:5000"
    path: str              # "library/busybox", "user/app"
    tag: str | None = None
    digest: str | None = None   # "sha256:<hex>" of the manifest

    @property
    def name(self) -> str:
        """Canonical repository name: "docker.io/library/busybox"."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """Repository name as Docker shows it: "busybox", "user/app", "host:5000/x"."""
        if self.domain == DEFAULT_DOMAIN:
            path = self.path
            if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX):]:
                path = path[len(OFFICIAL_REPO_PREFIX):]
            return path
        return self.name

    def familiar(self) -> str:
        """"busybox:latest", "busybox@sha256:...", "host:5000/x:tag"."""
        return self.familiar_name + self._suffix()

    def canonical(self) -> str:
        """"docker.io/library/busybox:latest"."""
        return self.name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    @property
    def object(self) -> str:
        """What the registry's /manifests/<object> endpoint wants: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def _suffix(self) -> str:
        out = ""
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        return self.familiar()


# The messages of distribution/reference (what dockerd answers, with 400).
INVALID_FORMAT = "invalid reference format"


def _invalid() -> InvalidArgument:
    return InvalidArgument(INVALID_FORMAT)


def validate_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed "algo:hex" digest (sha256 checked strictly).

    Messages are go-digest's: a digest that is not "algo:hex" at all is an invalid
    reference; a sha256 of the wrong length or case says so.
    """
    if not _DIGEST.match(digest):
        raise _invalid()
    algo, _, hexpart = digest.partition(":")
    if algo == "sha256" and not _SHA256_HEX.match(hexpart):
        if len(hexpart) != 64:
            raise InvalidArgument("invalid checksum digest length")
        raise InvalidArgument("invalid checksum digest format")
    return digest


def validate_tag(tag: str) -> str:
    """`tag` if it is a valid tag; "invalid tag format" (reference.WithTag's error) if not."""
    if not _TAG.match(tag):
        raise InvalidArgument("invalid tag format")
    return tag


def split_domain(name: str) -> tuple[str, str]:
    """Split a repository name into (domain, path), applying Docker Hub defaults."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def parse_reference(ref: str, default_tag: bool = True) -> Reference:
    """Parse and normalise `ref`; without tag or digest the tag is "latest" (if `default_tag`).

    Raises InvalidArgument with Docker's wording for malformed references.
    """
    if not isinstance(ref, str) or not ref:
        raise _invalid()
    if _SHA256_HEX.match(ref):
        raise InvalidArgument(f"invalid repository name ({ref}), cannot specify 64-byte "
                              "hexadecimal strings")
    # As ParseNormalizedNamed: case is checked on the normalised name before the grammar,
    # so "Bad:Ref!!" is reported for its upper case, not its tag.
    remote = split_domain(ref)[1].split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidArgument(f"{INVALID_FORMAT}: repository name ({remote}) must be lowercase")
    remainder, at, digest = ref.partition("@")
    if at:
        validate_digest(digest)
    else:
        digest = ""
    tag = ""
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.match(tag):
            raise _invalid()
    if not remainder:
        raise _invalid()
    domain, path = split_domain(remainder)
    if domain != DEFAULT_DOMAIN and not _DOMAIN.match(domain):
        raise _invalid()
    if not all(_PATH_COMPONENT.match(component) for component in path.split("/")):
        raise _invalid()
    if len(domain) + 1 + len(path) > _MAX_NAME_LENGTH:
        raise InvalidArgument(f"repository name must not be more than {_MAX_NAME_LENGTH} characters")
    if not tag and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag or None, digest or None)


def parse_repository(name: str) -> Reference:
    """Parse a repository name without tag or digest ("busybox", "host:5000/app")."""
    ref = parse_reference(name, default_tag=False)
    if ref.tag or ref.digest:
        raise _invalid()
    return ref


def is_sha256_hex(value: str) -> bool:
    return bool(_SHA256_HEX.match(value))


def short_hex(digest: str) -> str:
    """Docker's 12-character short form of an id or digest."""
    return digest.split(":", 1)[-1][:12]
