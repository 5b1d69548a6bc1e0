"""Container isolation, ours against Debian's dockerd, through the same docker CLI.

Each scenario runs one script in a `--network none` container on both engines
and compares what the container sees: capabilities, seccomp and no_new_privs
in /proc/self/status, whether namespaces and mounts are refused, Docker's
masked and read-only paths, and whether a setuid binary still works.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

# One container per scenario: each line of output is "name=value".
PROBE = r"""
field() { awk -v k="$1:" '$1 == k {print $2}' /proc/self/status; }
echo "CapEff=$(field CapEff)"
echo "Seccomp=$(field Seccomp)"
echo "NoNewPrivs=$(field NoNewPrivs)"
unshare -U true 2>/dev/null && echo unshare_user=allowed || echo unshare_user=refused
unshare -Urm true 2>/dev/null && echo unshare_urm=allowed || echo unshare_urm=refused
mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo mount_tmpfs=allowed || echo mount_tmpfs=refused
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do
  if [ -c "$p" ]; then echo "$p=masked"; elif [ -e "$p" ]; then echo "$p=visible"; else echo "$p=absent"; fi
done
echo "/proc/keys_bytes=$(cat /proc/keys 2>/dev/null | wc -c)"
echo "/sys/firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l) entries"
for m in /proc/sys /proc/sysrq-trigger /proc/irq /proc/bus; do
  echo "$m=$(awk -v m="$m" '$2 == m {split($4, o, ","); print o[1]}' /proc/mounts)"
done
"""
# As root in the debian image: a setuid-root copy of id(1), run by nobody through su.
SETUID = "cp /usr/bin/id /tmp/id && chmod u+s /tmp/id && su nobody -s /bin/sh -c /tmp/id"

Docker = Callable[..., subprocess.CompletedProcess]


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images) -> dict[str, Docker]:
    """`docker` runners for both engines, each with busybox and debian pulled."""
    runners = {"dockyard": agent.docker, "dockerd": dockerd.docker}
    for docker in runners.values():
        for name in ("busybox", "debian"):
            _ok(docker("pull", "-q", test_images[name], timeout=300))
    return runners


def _probe(docker: Docker, image: str, *options: str) -> dict[str, str]:
    out = _ok(docker("run", "--rm", "--network", "none", *options, image, "sh", "-c", PROBE))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _both(engines: dict[str, Docker], image: str, *options: str) -> dict[str, str]:
    """The probe on both engines; asserts they agree and returns the shared answer."""
    ours = _probe(engines["dockyard"], image, *options)
    reference = _probe(engines["dockerd"], image, *options)
    assert ours == reference, {k: (ours.get(k), reference.get(k))
                               for k in set(ours) | set(reference) if ours.get(k) != reference.get(k)}
    return ours


def test_default_container_is_confined_as_under_dockerd(engines, test_images):
    seen = _both(engines, test_images["busybox"])
    # The facts both engines agree on, spelled out (a broken reference must not pass).
    assert seen["CapEff"] == "00000000a80425fb"
    assert (seen["Seccomp"], seen["NoNewPrivs"]) == ("2", "0")
    assert seen["unshare_user"] == seen["unshare_urm"] == seen["mount_tmpfs"] == "refused"
    assert seen["/proc/keys"] == "masked" and seen["/proc/keys_bytes"] == "0"
    assert seen["/sys/firmware"] == "0 entries"
    assert seen["/proc/sys"] == seen["/proc/irq"] == "ro"


def test_no_new_privileges_when_asked(engines, test_images):
    seen = _both(engines, test_images["busybox"], "--security-opt", "no-new-privileges")
    assert (seen["Seccomp"], seen["NoNewPrivs"]) == ("2", "1")


def test_seccomp_unconfined(engines, test_images):
    seen = _both(engines, test_images["busybox"], "--security-opt", "seccomp=unconfined")
    assert (seen["Seccomp"], seen["CapEff"]) == ("0", "00000000a80425fb")
    assert seen["mount_tmpfs"] == "refused"      # still no CAP_SYS_ADMIN


def _own_bounding_set() -> int:
    """Every capability the engines can hand out (a machine may withhold some from root)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))


def _reference_refuses_all_caps(result: subprocess.CompletedProcess) -> bool:
    """dockerd's runc asks for every capability the kernel knows and fails when this
    machine's bounding set lacks one (as here, without CAP_SYS_RESOURCE)."""
    return (result.returncode != 0 and "unable to apply caps" in result.stdout + result.stderr
            and _own_bounding_set() != (1 << (int(open("/proc/sys/kernel/cap_last_cap").read()) + 1)) - 1)


def test_privileged(engines, test_images):
    image = test_images["busybox"]
    seen = _probe(engines["dockyard"], image, "--privileged")
    reference = engines["dockerd"]("run", "--rm", "--network", "none", "--privileged", image, "sh", "-c", PROBE)
    if not _reference_refuses_all_caps(reference):
        assert seen == dict(line.split("=", 1) for line in _ok(reference).splitlines() if "=" in line)
    assert seen["Seccomp"] == "0" and int(seen["CapEff"], 16) == _own_bounding_set()
    assert seen["unshare_user"] == seen["mount_tmpfs"] == "allowed"
    assert seen["/proc/keys"] == "visible" and seen["/proc/sys"] != "ro"    # not even a mount


def test_exec_privileged_keeps_the_container_filter(engines, test_images):
    """As runc: `exec --privileged` gets every capability but the container's seccomp filter."""
    script = ("grep -E '^(CapEff|Seccomp):' /proc/self/status; "
              "unshare -U true 2>/dev/null && echo unshare=allowed || echo unshare=refused")
    seen = {}
    for name, docker in engines.items():
        cid = _ok(docker("run", "-d", "--network", "none", test_images["busybox"], "sleep", "300")).strip()
        try:
            seen[name] = docker("exec", "--privileged", cid, "sh", "-c", script)
        finally:
            docker("rm", "-f", cid)
    ours = _ok(seen["dockyard"])
    if not _reference_refuses_all_caps(seen["dockerd"]):
        assert ours == _ok(seen["dockerd"])
    assert f"CapEff:\t{_own_bounding_set():016x}" in ours and "Seccomp:\t2" in ours, ours
    assert "unshare=refused" in ours


def test_cap_add_sys_admin_opens_the_namespace_rules(engines, test_images):
    seen = _both(engines, test_images["busybox"], "--cap-add", "SYS_ADMIN")
    assert seen["Seccomp"] == "2" and seen["mount_tmpfs"] == "allowed"


def test_custom_profile(engines, test_images, tmp_path):
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    for docker in engines.values():
        result = docker("run", "--rm", "--network", "none", "--security-opt", f"seccomp={profile}",
                        test_images["busybox"], "sh", "-c", "grep Seccomp: /proc/self/status; mkdir /x")
        assert result.returncode != 0 and "Operation not permitted" in result.stderr, result
        assert "Seccomp:\t2" in result.stdout, result


def test_exec_gets_the_container_filter(engines, test_images):
    seen = {}
    for name, docker in engines.items():
        cid = _ok(docker("run", "-d", "--network", "none", test_images["busybox"], "sleep", "300")).strip()
        try:
            seen[name] = _ok(docker("exec", cid, "sh", "-c",
                                    "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; "
                                    "unshare -U true 2>/dev/null && echo allowed || echo refused"))
        finally:
            docker("rm", "-f", cid)
    assert seen["dockyard"] == seen["dockerd"]
    assert "Seccomp:\t2" in seen["dockyard"] and "refused" in seen["dockyard"]


def test_unknown_new_syscalls_get_enosys(engines, test_images):
    """Syscalls newer than both profiles (452 fchmodat2, 460, 1000) give ENOSYS, so libc
    falls back; old ones outside the profile (keyctl, unshare) stay EPERM."""
    script = 'for $n (452, 460, 1000, 250, 272) { syscall($n, -1, 0, 0, 0); print "$n=", $!+0, "\\n" }'
    outputs = {name: _ok(docker("run", "--rm", "--network", "none", test_images["debian"],
                                "perl", "-e", script))
               for name, docker in engines.items()}
    assert outputs["dockyard"] == outputs["dockerd"] == "452=38\n460=38\n1000=38\n250=1\n272=1\n", outputs


def test_setuid_works_unless_no_new_privileges(engines, test_images):
    debian = test_images["debian"]
    for options, euid_root in (((), True), (("--security-opt", "no-new-privileges"), False)):
        outputs = {name: _ok(docker("run", "--rm", "--network", "none", *options, debian,
                                    "sh", "-c", SETUID))
                   for name, docker in engines.items()}
        assert ("euid=0(root)" in outputs["dockyard"]) == ("euid=0(root)" in outputs["dockerd"]) \
            == euid_root, outputs
        assert "uid=65534(nobody)" in outputs["dockyard"], outputs


@pytest.mark.parametrize("opt", ["bogus=1", "no-new-privileges=maybe"])
def test_unknown_security_options_refused_by_both(engines, test_images, opt):
    for name, docker in engines.items():
        result = docker("run", "--rm", "--network", "none", "--security-opt", opt,
                        test_images["busybox"], "true")
        assert result.returncode != 0 and f'invalid --security-opt 2: "{opt}"' in result.stderr, (name, result)


@pytest.mark.parametrize("opt", ["label=disable", "apparmor=unconfined"])
def test_label_disable_and_apparmor_unconfined_accepted_by_both(engines, test_images, opt):
    for docker in engines.values():
        _ok(docker("run", "--rm", "--network", "none", "--security-opt", opt, test_images["busybox"], "true"))


def test_options_we_cannot_honour_are_refused_by_name(agent, test_images):
    """dockerd 20.10 on a host without SELinux/AppArmor ignores these; we refuse them
    (current dockerd refuses AppArmor profiles on such hosts too)."""
    for opt in ("label=type:svirt_t", "apparmor=docker-default"):
        result = agent.docker("run", "--rm", "--network", "none", "--security-opt", opt,
                              test_images["busybox"], "true")
        assert result.returncode != 0 and opt.split("=", 1)[1].split(":")[-1] in result.stderr, result


def test_bad_profile_is_a_400_at_create(engines, agent, test_images):
    status, _, body = agent.request("POST", "/containers/create", json.dumps({
        "Image": test_images["busybox"], "HostConfig": {
            "SecurityOpt": ['seccomp={"defaultAction": "SCMP_ACT_FOO"}']}}).encode(),
        {"Content-Type": "application/json"})
    assert status == 400 and "SCMP_ACT_FOO" in json.loads(body)["message"], body


def test_info_reports_seccomp(agent):
    info = json.loads(_ok(agent.docker("info", "--format", "{{json .SecurityOptions}}")))
    assert "name=seccomp,profile=builtin" in info


@pytest.mark.parametrize("options", [("--privileged",), ("--security-opt", "seccomp=unconfined"),
                                     ("--privileged", "--security-opt", "label=disable")])
def test_inspect_security_opt_as_dockerd(engines, test_images, options):
    seen = {}
    for name, docker in engines.items():
        cid = _ok(docker("create", "--network", "none", *options, test_images["busybox"], "true")).strip()
        try:
            seen[name] = _ok(docker("inspect", "--format", "{{json .HostConfig.SecurityOpt}}", cid))
        finally:
            docker("rm", "-f", cid)
    assert seen["dockyard"] == seen["dockerd"], seen
