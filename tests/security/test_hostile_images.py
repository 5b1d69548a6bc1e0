"""Hostile images and requests against the native engine, served by a real registry.

Every image here is written by hand (tests/support/crafted_images.py) to
make the engine read or write outside its root: relative and ".." volume
keys, symlinked volume targets, working directories and mount targets that
lead out, layer tars that climb out, write through symlinks, link to host
files, carry devices or whiteouts aimed outside, and registries that lie
about digests. A directory outside the engine's root holds a file with a
random secret; after each case the secret must not appear inside the
container, in any volume or in the container's writable layer, and nothing
in that directory may be created, changed or removed. Bad images must fail
with a clear message; harmless ones must run as dockerd runs them
(compared with the `dockerd` fixture where Docker defines the result).
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.crafted_images import CraftedRegistry, Member, busybox_layer, layer_tar, sha256

UP = "../" * 40     # more than enough ".." to reach "/" from any engine or layer directory
DATA = [Member("data", "dir"), Member("data/image-file.txt", data=b"from the image\n")]


@dataclass
class Outside:
    """A directory outside the engine's root: a secret to keep and a tree to keep as it is."""

    path: Path
    secret: str

    @property
    def rel(self) -> str:
        """The directory's path without its leading "/" (to append to ".." chains)."""
        return str(self.path).lstrip("/")

    @property
    def pattern(self) -> str:
        # Matches the secret but is not the secret, so commands and configs carrying it
        # (stored by the engine) never count as a leak.
        return f"[{self.secret[0]}]{self.secret[1:]}"

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        tree = {}
        for dirpath, dirs, files in os.walk(self.path):
            for name in dirs + files:
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                tree[os.path.relpath(full, self.path)] = (st.st_mode, st.st_size, st.st_nlink)
        return tree


@pytest.fixture(scope="module")
def crafted(registry) -> CraftedRegistry:
    return CraftedRegistry(registry)


@pytest.fixture
def outside(tmp_path: Path, agent):
    """The outside directory; checks after the test that it is exactly as it was."""
    base = tmp_path / "outside"
    base.mkdir()
    secret = "HOSTSECRET" + secrets.token_hex(12)
    (base / "secret.txt").write_text(secret + "\n")
    (base / "dir").mkdir()
    (base / "dir" / "secret2.txt").write_text(secret + "\n")
    assert not str(base).startswith(str(agent.root))
    out = Outside(base, secret)
    before = out.snapshot()
    yield out
    assert out.snapshot() == before, "something outside the engine's root was created or changed"
    assert (base / "secret.txt").read_text() == secret + "\n"


def _image_name(request: pytest.FixtureRequest) -> str:
    """A repository name of the test's own (lowercase words joined by "-")."""
    words = "".join(c if c.isalnum() else " " for c in request.node.name.lower()).split()
    return "hostile/" + "-".join(words).removeprefix("test-")[:80].strip("-")


def _files_with(root: Path, needle: bytes) -> list[str]:
    """Regular files below `root` (no symlink followed) that contain `needle`."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                if os.path.islink(full) or os.path.getsize(full) > 64 << 20:
                    continue
                with open(full, "rb") as f:
                    if needle in f.read():
                        found.append(full)
            except OSError:
                continue
    return found


def _scan_script(outside: Outside, extra: str = "") -> str:
    """Shell run in the container: `extra`, then "LEAKED <file>" for each file holding the secret.

    Kernel file systems are skipped wherever they are mounted (an image may put
    /proc or /dev elsewhere), and only regular files are read (no fifo or device).
    """
    return (f"{extra}\n"
            "prune=$(awk '$3 ~ /^(proc|sysfs|cgroup|cgroup2|devpts|mqueue)$/ "
            "{printf \"-path %s -prune -o \", $2}' /proc/mounts)\n"
            "find / $prune -type f -print 2>/dev/null | while read -r f; do "
            f"grep -q '{outside.pattern}' \"$f\" 2>/dev/null && echo \"LEAKED $f\"; done; "
            "echo scanned")


def run_and_check(agent, outside: Outside, ref: str, script: str = "",
                  args: tuple[str, ...] = ()) -> str:
    """Create and start a container of `ref` that scans itself for the secret.

    Fails if the secret is found inside, in any volume, or in the container's
    writable layer. Returns the container's output (the scan's "scanned" removed).
    """
    created = agent.docker("create", "--network", "none", *args, ref, "sh", "-c",
                           _scan_script(outside, script))
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    try:
        started = agent.docker("start", "-a", cid)
        output = started.stdout + started.stderr
        assert "scanned" in output, output
        assert "LEAKED" not in output and outside.secret not in output, \
            f"the host's secret is visible in the container:\n{output}"
        needle = outside.secret.encode()
        leaks = _files_with(agent.root / "volumes", needle) + \
            _files_with(agent.root / "containers" / cid, needle)
        assert not leaks, f"the host's secret was copied into the engine's root: {leaks}"
        return output.replace("scanned\n", "")
    finally:
        agent.docker("rm", "-fv", cid)


def pull(engine, ref: str):
    return engine.docker("pull", "-q", ref)


# --- volume keys -------------------------------------------------------------------------

def test_image_volume_with_dotdot_key_stays_inside_and_matches_dockerd(
        agent, dockerd, crafted, outside, request):
    """The reported hole: VOLUME ../../../..<dir> filled a volume from the host's <dir>."""
    key = UP + outside.rel
    image = crafted.push(_image_name(request), [layer_tar(DATA)],
                         config={"Volumes": {key: {}, UP + "data": {}}})
    script = f"ls -A /{outside.rel} /data; grep -c ' /{outside.rel} ' /proc/mounts"
    assert pull(agent, image.ref).returncode == 0
    ours = run_and_check(agent, outside, image.ref, script)
    assert pull(dockerd, image.ref).returncode == 0
    theirs = dockerd.docker("run", "--rm", "--network", "none", image.ref, "sh", "-c", script)
    # Both: an empty volume at the cleaned path inside the container, and the
    # "../data" volume filled from the image's own /data.
    assert ours == theirs.stdout + theirs.stderr
    assert "image-file.txt" in ours and ours.strip().endswith("1")


@pytest.mark.parametrize("key_form", ["relative", "absolute-dotdot"])
def test_request_volume_with_dotdot_key_stays_inside(agent, crafted, outside, request, key_form):
    image = crafted.push(_image_name(request))
    key = UP + outside.rel if key_form == "relative" else "/data/" + UP + outside.rel
    body = {"Image": image.ref, "Cmd": ["sh", "-c", _scan_script(outside, f"ls -A /{outside.rel}")],
            "Volumes": {key: {}}, "HostConfig": {"NetworkMode": "none"}}
    assert pull(agent, image.ref).returncode == 0
    status, _, data = agent.request("POST", "/v1.43/containers/create", json.dumps(body).encode(),
                                    {"Content-Type": "application/json"})
    assert status == 201, data
    cid = json.loads(data)["Id"]
    try:
        started = agent.docker("start", "-a", cid)
        assert started.stdout == "scanned\n", started.stdout + started.stderr
        assert not _files_with(agent.root / "volumes", outside.secret.encode())
    finally:
        agent.docker("rm", "-fv", cid)


@pytest.mark.parametrize("key", ["/", ".", "..", "", "/data/../.."])
def test_volume_over_the_root_is_refused(agent, crafted, outside, request, key):
    image = crafted.push(_image_name(request), config={"Volumes": {key: {}}})
    assert pull(agent, image.ref).returncode == 0
    status, _, data = agent.request("POST", "/v1.43/containers/create",
                                    json.dumps({"Image": image.ref}).encode(),
                                    {"Content-Type": "application/json"})
    assert status == 400 and "destination can't be '/'" in json.loads(data)["message"], data


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_symlinked_volume_target_is_resolved_inside(agent, crafted, outside, request, target):
    """VOLUME /vol where the image has /vol -> a path out of the root: the volume lands inside."""
    link = "/../../../../../.." + str(outside.path) if target == "absolute" else UP + outside.rel
    image = crafted.push(_image_name(request), [layer_tar(
        [Member("vol", "symlink", target=link)])], config={"Volumes": {"/vol": {}}})
    assert pull(agent, image.ref).returncode == 0
    output = run_and_check(agent, outside, image.ref,
                           f"ls -A /vol; grep -c ' /{outside.rel} ' /proc/mounts")
    assert output == "1\n"      # an empty volume, mounted at the link's target inside the root


def test_symlinked_volume_is_filled_from_the_image_as_dockerd_does(agent, dockerd, crafted, outside,
                                                                    request):
    image = crafted.push(_image_name(request), [layer_tar(DATA + [
        Member("sub", "dir"), Member("sub/vol", "symlink", target="../../../../data"),
        Member("vol", "symlink", target="/data")])],
        config={"Volumes": {"/vol": {}, "/sub/vol": {}}})
    script = "ls -A /data; grep -c ' /data ' /proc/mounts"
    assert pull(agent, image.ref).returncode == 0
    ours = run_and_check(agent, outside, image.ref, script)
    assert pull(dockerd, image.ref).returncode == 0
    theirs = dockerd.docker("run", "--rm", "--network", "none", image.ref, "sh", "-c", script)
    assert ours == theirs.stdout == "image-file.txt\n2\n"


def test_volume_over_an_image_file_is_refused_as_dockerd_does(agent, dockerd, crafted, outside,
                                                              request):
    image = crafted.push(_image_name(request), [layer_tar(DATA + [
        Member("vol", "symlink", target="/data/image-file.txt")])], config={"Volumes": {"/vol": {}}})
    assert pull(agent, image.ref).returncode == 0
    status, _, data = agent.request("POST", "/v1.43/containers/create",
                                    json.dumps({"Image": image.ref}).encode(),
                                    {"Content-Type": "application/json"})
    assert status == 400, data
    assert pull(dockerd, image.ref).returncode == 0
    theirs = dockerd.docker("create", image.ref)
    assert theirs.returncode != 0
    for message in (json.loads(data)["message"], theirs.stderr):
        assert "cannot mount volume over existing file" in message


@pytest.mark.parametrize("where", ["image-volume", "image-workdir", "bind", "mount", "tmpfs",
                                   "exec-workdir"])
def test_paths_with_a_nul_byte_are_refused(agent, crafted, outside, request, where):
    """No system call takes a NUL byte: a 400 naming the path, not a 500 at create or start."""
    bad = "/data\x00/" + UP + outside.rel
    config = {"image-volume": {"Volumes": {bad: {}}}, "image-workdir": {"WorkingDir": bad}}
    image = crafted.push(_image_name(request), config=config.get(where, {}))
    assert pull(agent, image.ref).returncode == 0
    host_config = {"bind": {"Binds": [f"/tmp:{bad}"]},
                   "mount": {"Mounts": [{"Type": "volume", "Target": bad}]},
                   "tmpfs": {"Tmpfs": {bad: ""}}}.get(where, {})
    body = {"Image": image.ref, "Cmd": ["sleep", "60"], "HostConfig": host_config}
    status, _, data = agent.request("POST", "/v1.43/containers/create", json.dumps(body).encode(),
                                    {"Content-Type": "application/json"})
    if where == "exec-workdir":
        assert status == 201, data
        cid = json.loads(data)["Id"]
        try:
            assert agent.docker("start", cid).returncode == 0
            status, _, data = agent.request(
                "POST", f"/v1.43/containers/{cid}/exec",
                json.dumps({"Cmd": ["true"], "WorkingDir": bad}).encode(),
                {"Content-Type": "application/json"})
        finally:
            agent.docker("rm", "-f", cid)
    assert status == 400, data
    assert "NUL byte" in json.loads(data)["message"]


# --- working directories and mount targets ---------------------------------------------------

def test_working_directory_with_dotdot_and_symlinks_stays_inside(agent, dockerd, crafted, outside,
                                                                 request):
    """WorkingDir through a symlink that leads out, or climbing with "..": made and used inside."""
    image = crafted.push(_image_name(request), [layer_tar(
        [Member("w", "symlink", target=UP + outside.rel)])],
        config={"WorkingDir": "/w/made-by-workdir"})
    assert pull(agent, image.ref).returncode == 0
    assert pull(dockerd, image.ref).returncode == 0
    for args in ((), ("-w", "/../../a/../b"), ("-w", "/" + UP + outside.rel + "/dir")):
        ours = run_and_check(agent, outside, image.ref, "pwd; ls -A", args=args)
        theirs = dockerd.docker("run", "--rm", "--network", "none", *args, image.ref,
                                "sh", "-c", "pwd; ls -A")
        assert ours == theirs.stdout + theirs.stderr, args
        # Stored cleaned, as dockerd stores it.
        created = agent.docker("create", *args, image.ref)
        ref_created = dockerd.docker("create", "--network", "none", *args, image.ref)
        try:
            assert agent.docker("inspect", "-f", "{{.Config.WorkingDir}}", created.stdout.strip()).stdout \
                == dockerd.docker("inspect", "-f", "{{.Config.WorkingDir}}",
                                  ref_created.stdout.strip()).stdout
        finally:
            agent.docker("rm", created.stdout.strip())
            dockerd.docker("rm", ref_created.stdout.strip())


def test_mount_targets_through_symlinks_stay_inside(agent, dockerd, crafted, outside, request,
                                                   tmp_path):
    """-v, --mount and --tmpfs under image symlinks that lead out are mounted where the links
    lead inside the root, and the engine's /etc files replace links out: as under dockerd."""
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    (host_dir / "bound.txt").write_text("bound\n")
    image = crafted.push(_image_name(request), [layer_tar([
        Member("link", "symlink", target="/../../../../.." + str(outside.path)),
        Member("rel", "symlink", target=UP + outside.rel + "/dir"),
        Member("etc/hosts", "symlink", target=UP + outside.rel + "/hosts"),
        Member("etc/hostname", "symlink", target="/../../" + outside.rel + "/hostname"),
    ])])
    assert pull(agent, image.ref).returncode == 0
    script = (f"cat /link/x/bound.txt /rel/y/bound.txt; ls -A /link/t; ls -A /rel/y; "
              f"ls /{outside.rel}; cat /etc/hostname")
    args = ("-v", f"{host_dir}:/link/x:ro", "--mount", f"type=bind,source={host_dir},target=/rel/y",
            "--tmpfs", "/link/t", "--hostname", "crafted")
    output = run_and_check(agent, outside, image.ref, script, args=args)
    # The engine's /etc files replace the image's links, as dockerd's do.
    assert output == "bound\nbound\nbound.txt\ndir\nt\nx\ncrafted\n"
    assert pull(dockerd, image.ref).returncode == 0
    theirs = dockerd.docker("run", "--rm", "--network", "none", *args, image.ref, "sh", "-c", script)
    assert theirs.stdout + theirs.stderr == output
    assert sorted(os.listdir(host_dir)) == ["bound.txt"]


@pytest.mark.parametrize("name", ["dev", "proc", "sys"])
def test_kernel_filesystems_behind_symlinks_stay_inside(agent, crafted, outside, request, name):
    """/dev, /proc or /sys of the image is a symlink out of the root: mounted inside."""
    image = crafted.push(_image_name(request), [layer_tar([
        Member(name, "symlink", target=UP + outside.rel + f"/{name}")])], base=True)
    assert pull(agent, image.ref).returncode == 0
    output = run_and_check(agent, outside, image.ref,
                           "test -c /dev/null && test -r /proc/self/status && test -d /sys/kernel "
                           "&& echo ok")
    assert output == "ok\n"


# --- layer tars ------------------------------------------------------------------------------

def _hostile_layers(outside: Outside) -> dict[str, list[Member]]:
    o = outside
    return {
        "dotdot-file": [Member(UP + o.rel + "/evil.txt", data=b"written\n")],
        "dotdot-dir": [Member(UP + o.rel + "/evil-dir", "dir")],
        "symlink-then-write": [Member("esc", "symlink", target=str(o.path)),
                               Member("esc/evil.txt", data=b"written\n")],
        "relative-symlink-then-write": [Member("a", "dir"),
                                        Member("a/esc", "symlink", target=UP + o.rel),
                                        Member("a/esc/evil.txt", data=b"written\n")],
        "symlink-then-dir": [Member("esc", "symlink", target=str(o.path)),
                             Member("esc/evil-dir", "dir")],
        "hardlink-dotdot": [Member("h", "hardlink", target=UP + o.rel + "/secret.txt")],
        "hardlink-absolute": [Member("h", "hardlink", target=str(o.path / "secret.txt"))],
        "hardlink-through-symlink": [Member("esc", "symlink", target=str(o.path)),
                                     Member("h", "hardlink", target="esc/secret.txt")],
        "hardlink-then-write": [Member("esc", "symlink", target=str(o.path)),
                                Member("h", "hardlink", target="esc/secret.txt"),
                                Member("h", data=b"overwritten\n")],
        "whiteout-dotdot": [Member(UP + o.rel + "/.wh.secret.txt")],
        "whiteout-through-symlink": [Member("esc", "symlink", target=str(o.path)),
                                     Member("esc/.wh.secret.txt")],
        "whiteout-of-dotdot": [Member("a", "dir"), Member("a/.wh..."),
                               Member(f"a/.wh..{'/..' * 2}")],
        "opaque-through-symlink": [Member("esc", "symlink", target=str(o.path)),
                                   Member("esc/.wh..wh..opq")],
    }


REFUSED_LAYERS = ["dotdot-file", "dotdot-dir", "symlink-then-write", "relative-symlink-then-write",
                  "symlink-then-dir", "hardlink-dotdot", "hardlink-absolute",
                  "hardlink-through-symlink", "hardlink-then-write", "whiteout-dotdot",
                  "whiteout-through-symlink", "whiteout-of-dotdot", "opaque-through-symlink"]


@pytest.mark.parametrize("case", REFUSED_LAYERS)
def test_layer_escaping_its_directory_is_refused(agent, crafted, outside, request, case):
    image = crafted.push(_image_name(request), [layer_tar(_hostile_layers(outside)[case])])
    result = pull(agent, image.ref)
    assert result.returncode != 0
    message = result.stderr.lower()
    assert any(word in message for word in ("outside the layer", "symlink", "not in this layer",
                                            "malformed whiteout", "missing directory")), message
    assert agent.docker("image", "inspect", image.ref).returncode != 0
    assert os.stat(outside.path / "secret.txt").st_nlink == 1
    assert agent.alive()


def test_dotdot_member_dockerd_keeps_inside_we_refuse(agent, dockerd, crafted, outside, request):
    """dockerd unpacks a layer chrooted into it, so "../../x" lands at /x of the layer; we
    refuse such a layer outright. Neither writes outside (the `outside` fixture checks)."""
    image = crafted.push(_image_name(request), [layer_tar(_hostile_layers(outside)["dotdot-file"])])
    assert pull(agent, image.ref).returncode != 0
    assert pull(dockerd, image.ref).returncode == 0
    theirs = dockerd.docker("run", "--rm", "--network", "none", image.ref,
                            "cat", f"/{outside.rel}/evil.txt")
    assert theirs.stdout == "written\n", theirs.stderr


def test_absolute_member_names_land_inside_the_layer(agent, dockerd, crafted, outside, request):
    image = crafted.push(_image_name(request), [layer_tar([
        Member("/" + outside.rel + "/evil.txt", data=b"inside\n"),
        Member("/" + outside.rel + "/dir/.wh.secret2.txt")])])
    assert pull(agent, image.ref).returncode == 0
    script = f"cat /{outside.rel}/evil.txt; ls -A /{outside.rel}/dir"
    ours = run_and_check(agent, outside, image.ref, script)
    assert pull(dockerd, image.ref).returncode == 0
    theirs = dockerd.docker("run", "--rm", "--network", "none", image.ref, "sh", "-c", script)
    assert ours == theirs.stdout + theirs.stderr
    assert ours.startswith("inside\n")


def test_device_nodes_are_not_created(agent, crafted, outside, request):
    image = crafted.push(_image_name(request), [layer_tar([
        Member("evil-mem", "chardev", major=1, minor=1, mode=0o666),
        Member("evil-disk", "blockdev", major=8, minor=0, mode=0o666)])])
    assert pull(agent, image.ref).returncode == 0
    output = run_and_check(agent, outside, image.ref,
                           "for f in /evil-mem /evil-disk; do test -e $f && echo $f; done")
    assert output == ""


# --- lying registries -------------------------------------------------------------------------

def test_layer_not_matching_its_digest_is_refused(agent, crafted, outside, request):
    image = crafted.push(_image_name(request), [layer_tar([Member("ok.txt", data=b"ok\n")])])
    evil = gzip.compress(layer_tar([Member("ok.txt", data=b"ok\n"),
                                    Member(UP + outside.rel + "/evil.txt", data=b"x\n")]))
    crafted.tamper_blob(image.layer_digests[-1], evil)
    result = pull(agent, image.ref)
    assert result.returncode != 0
    assert "digest mismatch" in result.stderr or "size mismatch" in result.stderr, result.stderr
    assert agent.docker("image", "inspect", image.ref).returncode != 0


def test_config_not_matching_its_digest_is_refused(agent, crafted, outside, request):
    image = crafted.push(_image_name(request))
    config = json.loads(crafted.blob_path(image.config_digest).read_bytes())
    config["config"]["Volumes"] = {UP + outside.rel: {}}
    crafted.tamper_blob(image.config_digest, json.dumps(config).encode())
    result = pull(agent, image.ref)
    assert result.returncode != 0
    assert "digest mismatch" in result.stderr or "size mismatch" in result.stderr, result.stderr
    assert agent.docker("image", "inspect", image.ref).returncode != 0


@pytest.mark.parametrize("lie", ["other-diff-ids", "fewer-diff-ids", "path-diff-id"])
def test_config_claiming_other_layers_is_refused(agent, crafted, outside, request, lie):
    real = layer_tar([Member("real.txt", data=b"real\n")])
    other = layer_tar([Member("other.txt", data=b"other\n")])
    base = sha256(busybox_layer())
    diff_ids = {"other-diff-ids": [base, sha256(other)], "fewer-diff-ids": [base],
                # A "digest" that is a path: the layer store names directories after them.
                "path-diff-id": ["sha256:" + UP + outside.rel, sha256(real)]}[lie]
    image = crafted.push(_image_name(request), [real], diff_ids=diff_ids)
    result = pull(agent, image.ref)
    assert result.returncode != 0
    assert any(m in result.stderr for m in ("diff id mismatch", "layers but", "malformed digest")), \
        result.stderr
    assert agent.docker("image", "inspect", image.ref).returncode != 0


def test_mount_target_swapped_by_another_container_stays_inside(agent, crafted, outside, request,
                                                                 tmp_path):
    """A running container keeps swapping a directory of a shared volume with a symlink out
    of the root while another container starts with a bind below it: the bind is made
    through an fd resolved in scope, so the mount point is never created on the host."""
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    image = crafted.push(_image_name(request))
    assert pull(agent, image.ref).returncode == 0
    volume = "hostile-swap-" + secrets.token_hex(4)
    swapper = agent.docker(
        "run", "-d", "--network", "none", "-v", f"{volume}:/v", image.ref, "sh", "-c",
        f"while :; do mkdir /v/x; rm -rf /v/x; ln -s /{UP}{outside.rel} /v/x; rm /v/x; done")
    assert swapper.returncode == 0, swapper.stderr
    try:
        for _ in range(40):
            result = agent.docker("run", "--rm", "--network", "none", "-v", f"{volume}:/v",
                                  "-v", f"{host_dir}:/v/x/mnt", image.ref, "true")
            # Starting may fail when /v/x is a file-less moment of the race; it must never
            # create or mount anything outside.
            assert result.returncode in (0, 125, 126, 127, 128), result.stderr
            assert not (outside.path / "mnt").exists()
    finally:
        agent.docker("rm", "-f", swapper.stdout.strip())
        agent.docker("volume", "rm", "-f", volume)
