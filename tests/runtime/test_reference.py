"""Image reference parsing and familiar names (pure functions, no registry needed)."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidArgument
from runtime.images.reference import parse_reference, parse_repository

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, canonical, familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("user/team/app:v1", "docker.io/user/team/app:v1", "user/team/app:v1"),
    ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest"),
    ("localhost/app:dev", "localhost/app:dev", "localhost/app:dev"),
    ("ghcr.io/org/app:1.0-rc.1", "ghcr.io/org/app:1.0-rc.1", "ghcr.io/org/app:1.0-rc.1"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
    (f"host:5000/a/b:t@{DIGEST}", f"host:5000/a/b:t@{DIGEST}", f"host:5000/a/b:t@{DIGEST}"),
    ("my_app.x-y__z", "docker.io/library/my_app.x-y__z:latest", "my_app.x-y__z:latest"),
])
def test_normalisation(text: str, canonical: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert ref.canonical() == canonical
    assert ref.familiar() == familiar
    assert str(parse_reference(ref.familiar())) == familiar   # familiar form round-trips


def test_parts() -> None:
    ref = parse_reference(f"127.0.0.1:5000/team/app:v2@{DIGEST}")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("127.0.0.1:5000", "team/app", "v2", DIGEST)
    assert ref.object == DIGEST     # a digest wins over the tag when fetching
    assert parse_reference("busybox").object == "latest"
    assert parse_reference(f"busybox@{DIGEST}").tag is None


# distribution/reference's messages, as dockerd answers them.
@pytest.mark.parametrize("bad, words", [
    ("", "invalid reference format"),
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("Bad:Ref!!", "invalid reference format: repository name (library/Bad) must be lowercase"),
    ("busybox:", "invalid reference format"),
    ("busybox:bad/tag", "invalid reference format"),
    ("busybox@sha256:1234", "invalid reference format"),
    ("busybox@sha256:" + "A" * 64, "invalid checksum digest format"),
    ("busybox@sha256:" + "a" * 40, "invalid checksum digest length"),
    ("busybox@md5", "invalid reference format"),
    ("0123456789" * 6 + "abcd", "64-byte hexadecimal"),
    ("-leading/dash", "invalid reference format"),
    ("bad..dots", "invalid reference format"),
    ("x//y", "invalid reference format"),
    ("white space", "invalid reference format"),
])
def test_invalid(bad: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_reference(bad)
    assert words in str(err.value)


def test_repository_only() -> None:
    assert parse_repository("127.0.0.1:5000/x").familiar() == "127.0.0.1:5000/x"
    with pytest.raises(InvalidArgument):
        parse_repository("busybox:latest")
