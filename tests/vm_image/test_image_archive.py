"""The travelling guest image without a VM: export, digests, manifest checks, atomic install, URLs.

Real files throughout: a small image directory shaped like the cache's, real
xz tars, a real HTTP server, and a real process killed in the middle of an
install.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument, NotFound, RuntimeFailure
from vmimage import image_archive
from vmimage.image_archive import (
    ARCHIVE_FILES,
    IMPORTED_RECORD,
    DigestMismatch,
    export_image,
    file_sha256,
    import_image,
    imported_record,
    install_archive,
    parse_digest,
)

REPO = Path(__file__).resolve().parents[2]
RECIPE = "0123456789abcdef"


def make_image_dir(root: Path, recipe_hash: str = RECIPE) -> Path:
    """An image directory as vmimage.guest_image leaves it: three files and image.json."""
    image = root / recipe_hash
    image.mkdir(parents=True)
    (image / "vmlinuz").write_bytes(os.urandom(300_000))
    (image / "initrd.img").write_bytes(b"initrd" * 5000)
    # A root filesystem is mostly never-written blocks: 8 MiB of zeros between data.
    with open(image / "rootfs.img", "wb") as f:
        f.write(b"superblock" * 100)
        f.seek(8 << 20)
        f.write(os.urandom(4096))
    (image / "image.json").write_text(json.dumps({
        "kernel": str(image / "vmlinuz"), "initrd": str(image / "initrd.img"),
        "rootfs": str(image / "rootfs.img"), "cmdline": "console=ttyS0 quiet",
        "recipe_hash": recipe_hash, "kernel_package": "linux-image-test=1",
        "parts": {"image": recipe_hash, "rootfs": "feedfacefeedface"}}))
    return image


@pytest.fixture
def exported(tmp_path) -> tuple[Path, Path, str]:
    source = make_image_dir(tmp_path / "built")
    archive = tmp_path / "guest.tar.xz"
    digest = export_image(source, archive)
    return source, archive, digest


def installed_dirs(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_export_prints_the_files_own_digest_and_a_manifest_of_every_file(exported):
    source, archive, digest = exported
    assert digest == hashlib.sha256(archive.read_bytes()).hexdigest()
    with tarfile.open(archive, "r:xz") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(names[0]))
    assert names == ["manifest.json", *ARCHIVE_FILES]
    assert manifest["recipe_hash"] == RECIPE and manifest["cmdline"] == "console=ttyS0 quiet"
    for name in ARCHIVE_FILES:
        assert manifest["files"][name] == {"sha256": file_sha256(source / name),
                                           "size": (source / name).stat().st_size}


def test_import_installs_an_identical_image_and_records_it(exported, tmp_path):
    source, archive, digest = exported
    cache = tmp_path / "cache"
    installed = install_archive(archive, cache, "sha256:" + digest.upper())
    assert installed.directory == cache / RECIPE and not installed.already_present
    for name in ARCHIVE_FILES:
        assert (cache / RECIPE / name).read_bytes() == (source / name).read_bytes()
    info = json.loads((cache / RECIPE / "image.json").read_text())
    # Paths name where the image now is, not where it was built.
    assert info["rootfs"] == str(cache / RECIPE / "rootfs.img")
    assert info["imported"]["sha256"] == digest
    assert imported_record(cache)["recipe_hash"] == RECIPE
    # The zeros came back as holes, as the build left them.
    rootfs = (cache / RECIPE / "rootfs.img").stat()
    assert rootfs.st_blocks * 512 < rootfs.st_size // 4
    assert installed_dirs(cache) == sorted([RECIPE, IMPORTED_RECORD])


def test_importing_again_keeps_the_image_already_there(exported, tmp_path):
    _, archive, digest = exported
    cache = tmp_path / "cache"
    install_archive(archive, cache, digest)
    inode = (cache / RECIPE / "rootfs.img").stat().st_ino
    again = install_archive(archive, cache, digest)
    assert again.already_present
    assert (cache / RECIPE / "rootfs.img").stat().st_ino == inode
    assert installed_dirs(cache) == sorted([RECIPE, IMPORTED_RECORD])


def test_a_wrong_digest_is_refused_in_one_line_naming_both(exported, tmp_path):
    _, archive, digest = exported
    wrong = "ab" * 32
    with pytest.raises(DigestMismatch) as caught:
        install_archive(archive, tmp_path / "cache", wrong)
    message = caught.value.message
    assert "\n" not in message and wrong in message and digest in message
    assert installed_dirs(tmp_path / "cache") == []


@pytest.mark.parametrize("text", ["abc", "sha512:" + "a" * 64, "z" * 64, ""])
def test_a_digest_that_is_not_sha256_is_refused(text):
    with pytest.raises(InvalidArgument):
        parse_digest(text)


def rewrite(archive: Path, out: Path, change) -> str:
    """Copy the archive's members through change(name, data) -> [(name, data)]; return the new digest."""
    with tarfile.open(archive, "r:xz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(out, "w:xz", preset=0) as tar:
        for name, data in members:
            for new_name, new_data in change(name, data):
                entry = tarfile.TarInfo(new_name)
                entry.size = len(new_data)
                tar.addfile(entry, io.BytesIO(new_data))
    return file_sha256(out)


def test_a_file_that_differs_from_its_manifest_is_refused_and_nothing_is_installed(exported, tmp_path):
    _, archive, _ = exported
    forged = tmp_path / "forged.tar.xz"
    # The outer digest is the forger's own, so only the manifest can catch it.
    digest = rewrite(archive, forged, lambda name, data: [(name, b"X" + data[1:] if name == "initrd.img" else data)])
    cache = tmp_path / "cache"
    with pytest.raises(DigestMismatch, match="initrd.img: sha256 mismatch"):
        install_archive(forged, cache, digest)
    assert installed_dirs(cache) == []


@pytest.mark.parametrize("change", [
    lambda name, data: [] if name == "rootfs.img" else [(name, data)],
    lambda name, data: [(name, data)] + ([("../escaped", b"x")] if name == "vmlinuz" else []),
    lambda name, data: [(name, data)] + ([("vmlinuz", data)] if name == "vmlinuz" else []),
    lambda name, data: [] if name == "manifest.json" else [(name, data)],
    lambda name, data: [(name, b"{not json" if name == "manifest.json" else data)],
], ids=["missing-file", "unexpected-member", "duplicate", "no-manifest", "bad-manifest"])
def test_malformed_archives_are_refused(exported, tmp_path, change):
    _, archive, _ = exported
    bad = tmp_path / "bad.tar.xz"
    digest = rewrite(archive, bad, change)
    cache = tmp_path / "cache" / "images"
    with pytest.raises(InvalidArgument):
        install_archive(bad, cache, digest)
    assert installed_dirs(cache) == []
    assert not (tmp_path / "cache" / "escaped").exists()


def test_a_truncated_download_is_refused_even_with_its_own_digest(exported, tmp_path):
    _, archive, _ = exported
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(InvalidArgument, match="not a readable guest image"):
        install_archive(cut, tmp_path / "cache", file_sha256(cut))
    assert installed_dirs(tmp_path / "cache") == []


CRASHING_IMPORT = """
import os, signal, sys
from pathlib import Path
from vmimage import image_archive
real = image_archive._write_sparse
def write_then_die(source, target, size):
    digest = real(source, target, size)
    if target.name == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)
    return digest
image_archive._write_sparse = write_then_die
image_archive.install_archive(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[4])
"""


def test_an_install_killed_midway_leaves_nothing_installed_and_the_next_one_cleans_up(exported, tmp_path):
    _, archive, digest = exported
    cache = tmp_path / "cache"
    # A real process, SIGKILLed right after it wrote the kernel into its staging folder.
    proc = subprocess.run([sys.executable, "-c", CRASHING_IMPORT, str(archive), str(cache), "initrd.img", digest],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p for p in cache.iterdir()]
    assert [p.name.startswith(image_archive.STAGING_PREFIX) for p in leftovers] == [True]
    assert (leftovers[0] / "vmlinuz").exists()
    assert imported_record(cache) is None
    old = 1_000_000_000
    os.utime(leftovers[0], (old, old))
    install_archive(archive, cache, digest)
    assert installed_dirs(cache) == sorted([RECIPE, IMPORTED_RECORD])


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(exported):
    _, archive, _ = exported
    handler = lambda *a, **kw: _Files(*a, directory=str(archive.parent), **kw)  # noqa: E731 - a one-line factory
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_import_from_a_url_streams_checks_and_installs(exported, http_server, tmp_path):
    _, archive, digest = exported
    cache = tmp_path / "cache"
    with pytest.raises(DigestMismatch):
        import_image(f"{http_server}/{archive.name}", "cd" * 32, cache)
    assert installed_dirs(cache) == []  # the downloaded file went with the refusal
    installed = import_image(f"{http_server}/{archive.name}", digest, cache)
    assert installed.recipe_hash == RECIPE
    assert imported_record(cache)["source"] == f"{http_server}/{archive.name}"
    assert installed_dirs(cache) == sorted([RECIPE, IMPORTED_RECORD])
    with pytest.raises(RuntimeFailure, match="HTTP 404"):
        import_image(f"{http_server}/nothing.tar.xz", digest, cache)
    with pytest.raises(NotFound):
        import_image(str(tmp_path / "nothing.tar.xz"), digest, cache)
