"""Test images built on this machine and pushed to a test registry.

`push_test_images(registry, cache_dir)` returns references such as
``{"busybox": "127.0.0.1:PORT/busybox:latest", ...}``:

* ``busybox``: /bin/busybox from Debian's busybox-static with its applets as
  symlinks in /bin, /etc/passwd (root, app 1000, nobody 65534), /etc/group,
  /tmp (1777), /root, /home/app; Cmd ["sh"].
* ``layered``: busybox plus two layers exercising overlay semantics
  (see LAYERED_* below): a file deleted by a whiteout, an opaque directory,
  a file replaced in an upper layer.
* ``debian``: `mmdebstrap --variant=minbase bookworm` (one multi-MB gzip
  layer, pushed as a Docker v2 schema 2 manifest); Cmd ["bash"].
* ``multiarch``: an OCI index with linux/arm64 (a marker file only) and
  linux/amd64 (the busybox image) manifests.

Images are written as OCI layouts (by hand: deterministic tars, gzip with a
zero mtime) into `cache_dir`, keyed by a hash of their recipe, so the slow
debian build happens once per machine; pushing the cached layouts with
`skopeo copy` takes a few seconds. Builds are guarded by a file lock and
published by rename, so concurrent test sessions share one cache safely.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RECIPE_VERSION = "4"
DEBIAN_RECIPE = "mmdebstrap --variant=minbase bookworm; no device nodes; gzip 6; v2s2 push"
FIXED_MTIME = 1_700_000_000
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

# What the layered image's upper layers do (tests check these on disk and in containers).
LAYERED_KEPT = "data/keep.txt"              # created in layer 2, still there
LAYERED_DELETED = "data/gone.txt"           # created in layer 2, whiteout in layer 3
LAYERED_OPAQUE_DIR = "opaque"               # filled in layer 2, made opaque in layer 3
LAYERED_OPAQUE_OLD = "opaque/old.txt"       # hidden by the opaque marker
LAYERED_OPAQUE_NEW = "opaque/new.txt"       # added next to the opaque marker
LAYERED_CHANGED = "data/changed.txt"        # "v1\n" in layer 2, "v2\n" in layer 3
LAYERED_DELETED_MOTD = "etc/motd"           # created in layer 2, whiteout in layer 3


@dataclass
class Entry:
    """One tar member of a layer we build."""

    path: str                 # relative, no leading "/"
    kind: str = "file"        # file | dir | symlink | hardlink
    data: bytes = b""
    target: str = ""          # symlink / hardlink target
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def _tar_layer(entries: Iterable[Entry]) -> bytes:
    """Deterministic uncompressed tar of `entries`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.mtime = FIXED_MTIME
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.uname = info.gname = ""
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                info.mode = 0o777
                tar.addfile(info)
            elif e.kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OciLayoutWriter:
    """Writes blobs, image manifests and an index.json into an OCI layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self.index: list[dict] = []

    def blob(self, data: bytes) -> str:
        digest = _sha(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return digest

    def blob_file(self, path: Path) -> tuple[str, int]:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        shutil.move(str(path), self.root / "blobs" / "sha256" / digest[7:])
        return digest, os.path.getsize(self.root / "blobs" / "sha256" / digest[7:])

    def image(self, layers: list[tuple[str, int, str]], cmd: list[str],
              history: list[str], arch: str = "amd64") -> dict:
        """Write config + manifest for (gz digest, gz size, diff id) layers; return a descriptor."""
        config = {
            "created": "2023-11-14T22:13:20Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": cmd, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, _, diff in layers]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": h,
                         "comment": "dockyard test image"} for h in history],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.blob(config_bytes),
                       "size": len(config_bytes)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d, "size": s}
                       for d, s, _ in layers],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        return {"mediaType": OCI_MANIFEST, "digest": self.blob(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": {"architecture": arch, "os": "linux"}}

    def layer(self, entries: Iterable[Entry]) -> tuple[str, int, str]:
        raw = _tar_layer(entries)
        gz = _gzip(raw)
        return self.blob(gz), len(gz), _sha(raw)

    def add_ref(self, descriptor: dict, tag: str) -> None:
        entry = dict(descriptor)
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.index.append(entry)

    def finish(self) -> None:
        (self.root / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index}))


# --- recipes -----------------------------------------------------------------

def busybox_entries() -> list[Entry]:
    """The busybox rootfs as tar entries."""
    binary = Path("/bin/busybox").read_bytes()
    applets = subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    entries = [Entry("bin", "dir", mode=0o755), Entry("bin/busybox", data=binary, mode=0o755)]
    entries += [Entry(f"bin/{a}", "symlink", target="busybox")
                for a in sorted(set(applets)) if a != "busybox"]
    entries += [
        Entry("etc", "dir", mode=0o755),
        Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"
                                 b"app:x:1000:1000:app:/home/app:/bin/sh\n"
                                 b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        Entry("etc/group", data=b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"),
        Entry("tmp", "dir", mode=0o1777),
        Entry("root", "dir", mode=0o700),
        Entry("home", "dir", mode=0o755),
        Entry("home/app", "dir", mode=0o755, uid=1000, gid=1000),
        Entry("usr", "dir", mode=0o755),
        Entry("usr/bin", "dir", mode=0o755),
        Entry("var", "dir", mode=0o755),
        Entry("proc", "dir", mode=0o555),
        Entry("sys", "dir", mode=0o555),
        Entry("dev", "dir", mode=0o755),
    ]
    return entries


def layered_upper_entries() -> tuple[list[Entry], list[Entry]]:
    """Layers 2 and 3 of the layered image."""
    layer2 = [
        Entry("data", "dir", mode=0o755),
        Entry(LAYERED_KEPT, data=b"kept\n"),
        Entry(LAYERED_DELETED, data=b"to be deleted\n"),
        Entry(LAYERED_CHANGED, data=b"v1\n"),
        Entry(LAYERED_OPAQUE_DIR, "dir", mode=0o755),
        Entry(LAYERED_OPAQUE_OLD, data=b"old\n"),
        Entry("etc/motd", data=b"hello from layer 2\n"),
    ]
    layer3 = [
        Entry("data", "dir", mode=0o755),
        Entry("data/.wh.gone.txt"),
        Entry(LAYERED_CHANGED, data=b"v2\n"),
        Entry(LAYERED_OPAQUE_DIR, "dir", mode=0o755),
        Entry(f"{LAYERED_OPAQUE_DIR}/.wh..wh..opq"),
        Entry(LAYERED_OPAQUE_NEW, data=b"new\n"),
        Entry("etc", "dir", mode=0o755),
        Entry("etc/.wh.motd"),
    ]
    return layer2, layer3


def _build_small_images(out: Path) -> None:
    """busybox, layered and multiarch in one layout (tags name the image)."""
    w = OciLayoutWriter(out)
    base = w.layer(busybox_entries())
    busybox = w.image([base], ["sh"], ["ADD busybox-static rootfs /"])
    w.add_ref(busybox, "busybox")
    layer2, layer3 = layered_upper_entries()
    layered = w.image([base, w.layer(layer2), w.layer(layer3)], ["sh"],
                      ["ADD busybox-static rootfs /", "RUN add data, opaque, motd",
                       "RUN rm data/gone.txt etc/motd; replace opaque/"])
    w.add_ref(layered, "layered")
    arm = w.image([w.layer([Entry("ARM64_ONLY", data=b"arm64\n")])], ["sh"],
                  ["ADD arm64 marker /"], arch="arm64")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm, busybox]}
    index_bytes = json.dumps(index, sort_keys=True).encode()
    w.add_ref({"mediaType": OCI_INDEX, "digest": w.blob(index_bytes),
               "size": len(index_bytes)}, "multiarch")
    w.finish()


def _apt_sources() -> list[str]:
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    return [str(deb822)] if deb822.exists() else []


def _build_debian(out: Path) -> None:
    """mmdebstrap minbase bookworm, re-tarred without device nodes (Docker's images have none)."""
    w = OciLayoutWriter(out)
    raw_tar = out / "rootfs.tar"
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(raw_tar),
                    *_apt_sources()], check=True)
    gz_path = out / "layer.tar.gz"
    diff = hashlib.sha256()

    class HashingWriter(io.RawIOBase):
        def __init__(self, inner: gzip.GzipFile) -> None:
            self.inner = inner

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]  # tarfile writes only bytes
            diff.update(b)
            return self.inner.write(b)

    with (open(gz_path, "wb") as raw_out,
          gzip.GzipFile(fileobj=raw_out, mode="wb", compresslevel=6, mtime=0) as gz,
          tarfile.open(raw_tar) as src,
          tarfile.open(fileobj=HashingWriter(gz), mode="w|", format=tarfile.PAX_FORMAT) as dst):
        for member in src:
            if member.ischr() or member.isblk():
                continue
            member.name = member.name.removeprefix("./")
            if not member.name or member.name == ".":
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    raw_tar.unlink()
    digest, size = w.blob_file(gz_path)
    desc = w.image([(digest, size, "sha256:" + diff.hexdigest())], ["bash"],
                   ["mmdebstrap --variant=minbase bookworm"])
    w.add_ref(desc, "bookworm")
    w.finish()


def _recipe_hash(name: str) -> str:
    h = hashlib.sha256(f"{name}:{RECIPE_VERSION}".encode())
    if name == "small":
        # Cheap to rebuild: any change to this module or to busybox makes a new layout.
        h.update(Path(__file__).read_bytes())
        h.update(Path("/bin/busybox").read_bytes())
    else:
        # The debian build is slow: only its own recipe is part of the key.
        h.update(DEBIAN_RECIPE.encode())
    return h.hexdigest()[:16]


def _cached_layout(cache_dir: Path, name: str, build: Callable[[Path], None]) -> Path:
    """The layout for recipe `name`, built once (under a lock) and published by rename."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"oci-{name}-{_recipe_hash(name)}"
    if (final / "index.json").exists():
        return final
    with open(cache_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "index.json").exists():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache_dir))
        try:
            log.info("building test image layout %s in %s", name, tmp)
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _skopeo_push(layout: Path, tag: str, dest: str, registry, extra: list[str]) -> None:
    cmd = ["skopeo", "copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false", *extra]
    if getattr(registry, "username", ""):
        cmd += ["--dest-creds", f"{registry.username}:{registry.password}"]
    cmd += [f"oci:{layout}:{tag}", f"docker://{dest}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"skopeo push of {dest} failed: {result.stderr.strip()}")


def build_layouts(cache_dir: Path, with_debian: bool = True) -> dict[str, Path]:
    """Build (or reuse) the cached OCI layouts: {"small": path, "debian": path}."""
    layouts = {"small": _cached_layout(Path(cache_dir), "small", _build_small_images)}
    if with_debian:
        layouts["debian"] = _cached_layout(Path(cache_dir), "debian", _build_debian)
    return layouts


def push_test_images(registry, cache_dir: Path,
                     names: Iterable[str] | None = None) -> dict[str, str]:
    """Push the test images to `registry` and return their references.

    `names` limits which images are pushed (default: all); credentials come
    from `registry.username`/`registry.password` when the registry has auth.
    """
    wanted = set(names) if names is not None else {"busybox", "layered", "debian", "multiarch"}
    layouts = build_layouts(Path(cache_dir), with_debian="debian" in wanted)
    host = registry.host
    refs: dict[str, str] = {}
    for name in ("busybox", "layered"):
        if name in wanted:
            refs[name] = f"{host}/{name}:latest"
            _skopeo_push(layouts["small"], name, refs[name], registry, [])
    if "multiarch" in wanted:
        refs["multiarch"] = f"{host}/multiarch:latest"
        _skopeo_push(layouts["small"], "multiarch", refs["multiarch"], registry, ["--all"])
    if "debian" in wanted:
        refs["debian"] = f"{host}/debian:bookworm"
        _skopeo_push(layouts["debian"], "bookworm", refs["debian"], registry,
                     ["--format", "v2s2"])
    return refs
