"""--volumes-from through the real docker CLI, compared with Debian's dockerd on the same host."""

from __future__ import annotations

import pytest

from tests.support.side_by_side import Engines


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images) -> Engines:
    return Engines(agent, dockerd, test_images["busybox"])


def run(engines: Engines, *args: str) -> tuple[str, ...]:
    return ("run", "--rm", "--network", "none", *args[:-1], engines.image, "sh", "-c", args[-1])


@pytest.fixture
def lender(engines, tmp_path):
    """A created container on both engines with a named volume, a read-only bind,
    an anonymous volume and a tmpfs (which --volumes-from does not lend)."""
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    (host_dir / "f").write_text("from the host\n")
    for engine in (engines.ours, engines.reference):
        made = engine.docker("create", "--name", "vf-lender", "--network", "none", "-v", "vf-data:/data",
                             "-v", f"{host_dir}:/hostdir:ro", "-v", "/anon", "--tmpfs", "/scratch",
                             engines.image, "true")
        assert made.returncode == 0, made.stderr
    yield host_dir
    engines.cleanup("vf-lender")
    for engine in (engines.ours, engines.reference):
        engine.docker("volume", "rm", "vf-data")


MOUNTS = "grep -E ' /(data|hostdir|anon|scratch) ' /proc/self/mountinfo | cut -d' ' -f5,6 | sort"


def test_volumes_from_lends_volumes_and_binds_at_the_same_targets(engines, lender):
    outcome = engines.compare(*run(engines, "--volumes-from", "vf-lender",
                                   f"{MOUNTS}; echo kept > /data/note; cat /hostdir/f"))
    assert outcome.out.splitlines() == ["/anon rw,relatime", "/data rw,relatime", "/hostdir ro,relatime",
                                        "from the host"]
    # The named volume is the lender's own: a second container reads what the first wrote.
    assert engines.compare(*run(engines, "-v", "vf-data:/v", "cat /v/note")).out == "kept\n"


def test_volumes_from_modes(engines, lender):
    read_only = engines.compare(*run(engines, "--volumes-from", "vf-lender:ro", f"{MOUNTS}; touch /data/x"))
    assert read_only.out.splitlines()[:2] == ["/anon ro,relatime", "/data ro,relatime"]
    # "rw" keeps a read-only bind read-only, as dockerd does.
    read_write = engines.compare(*run(engines, "--volumes-from", "vf-lender:rw", MOUNTS))
    assert "/hostdir ro,relatime" in read_write.out.splitlines()
    # The container's own bind wins over a lent mount at the same target.
    own = engines.compare(*run(engines, "--volumes-from", "vf-lender", "-v", f"{lender}:/data", "cat /data/f"))
    assert own.out == "from the host\n"


def test_volumes_from_errors_are_dockerds(engines, lender):
    missing = engines.compare(*run(engines, "--volumes-from", "vf-nobody", "true"))
    assert (missing.code, missing.error) == (125, "No such container: vf-nobody")
    bad_mode = engines.compare(*run(engines, "--volumes-from", "vf-lender:xx", "true"))
    assert (bad_mode.code, bad_mode.error) == (125, "invalid mode: xx")
