"""Seccomp: Docker's default profile compiled with libseccomp, loaded into real processes.

The filter tests fork a child of the test process, install the compiled BPF
program there and make raw syscalls through ctypes: the kernel's answers show
what the filter lets through. The container tests start real containers with
the launcher and read /proc/self/status from inside.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.containers.process import cleanup, launch
from runtime.containers.security import seccomp_filter
from runtime.containers.security.options import parse_security_options
from runtime.containers.security.seccomp_default import DEFAULT_PROFILE
from runtime.containers.security.seccomp_profile import SeccompProfileError, applicable_rules, parse_profile
from runtime.containers.spec import DEFAULT_CAPABILITIES, ContainerSpec, ProcessSpec, SeccompPolicy, Stdio
from runtime.errors import InvalidArgument
from tests.support.rootfs import PATH_ENV, make_busybox_rootfs

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="raw syscall numbers below are x86_64's")

_libc = ctypes.CDLL(None, use_errno=True)
NR = {"clone": 56, "clone3": 435, "unshare": 272, "mount": 165, "keyctl": 250, "add_key": 248,
      "ptrace": 101, "personality": 135, "socket": 41, "getpid": 39, "setns": 308,
      "chroot": 161, "reboot": 169}
CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS = 0x04000000
SIGCHLD = 17
AF_UNIX, AF_VSOCK, SOCK_STREAM = 1, 40, 1
SYS_ADMIN_CAPS = (*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN")


def syscall(name: str, *args: int) -> int:
    """The raw syscall's result: 0 or more on success, else -errno."""
    result = _libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if result == -1 else result


def filtered(program: seccomp_filter.SeccompProgram | None,
             probes: dict[str, Callable[[], int]]) -> dict[str, int]:
    """Run each probe in a forked child after installing `program`; their results by name."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            if program is not None:
                program.install()
            results = {name: probe() for name, probe in probes.items()}
            os.write(w, json.dumps(results).encode())
        except BaseException:   # noqa: BLE001 - a forked child must never return into pytest
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the probe child failed"
    return json.loads(data)


def default_program(caps: tuple[str, ...] = DEFAULT_CAPABILITIES) -> seccomp_filter.SeccompProgram:
    program = seccomp_filter.program_for(SeccompPolicy(), caps)
    assert program is not None
    return program


def _fork_and_reap() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _exec_true() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv("/bin/true", ["true"])
        finally:
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _socket(family: int) -> int:
    fd = syscall("socket", family, SOCK_STREAM, 0)
    if fd >= 0:
        os.close(fd)
        return 0
    return fd


# The namespaces and kernel interfaces Docker's profile keeps from a default container.
DANGEROUS = {
    "unshare_user": lambda: syscall("unshare", CLONE_NEWUSER),
    "unshare_uts": lambda: syscall("unshare", CLONE_NEWUTS),
    "mount": lambda: syscall("mount", 0, 0, 0, 0, 0),
    "clone_newuser": lambda: syscall("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
    "keyctl": lambda: syscall("keyctl", 0, 0, 0, 0, 0),
    "add_key": lambda: syscall("add_key", 0, 0, 0, 0, 0),
    "setns": lambda: syscall("setns", -1, 0),
    "personality_exec": lambda: syscall("personality", 0x0400000),   # READ_IMPLIES_EXEC
    "socket_vsock": lambda: _socket(AF_VSOCK),
    "reboot": lambda: syscall("reboot", 0, 0, 0, 0),
}
ORDINARY = {
    "getpid": lambda: 0 if syscall("getpid") > 0 else -1,
    "read_file": lambda: 0 if Path("/etc/hostname").read_bytes() is not None else -1,
    "fork": _fork_and_reap,
    "exec": _exec_true,
    "socket_unix": lambda: _socket(AF_UNIX),
    "personality_query": lambda: 0 if syscall("personality", 0xFFFFFFFF) >= 0 else -1,
}


def test_default_profile_refuses_what_docker_refuses():
    results = filtered(default_program(), DANGEROUS)
    assert results == {name: -errno.EPERM for name in DANGEROUS}, results
    # clone3 is refused with ENOSYS, so libc falls back to clone (whose flags the filter can read).
    assert filtered(default_program(), {"clone3": lambda: syscall("clone3", 0, 0)}) == {
        "clone3": -errno.ENOSYS}


def test_without_a_filter_the_same_calls_reach_the_kernel():
    """The probes above must be able to fail: unfiltered, the kernel answers them differently."""
    results = filtered(None, {"unshare_uts": DANGEROUS["unshare_uts"], "mount": DANGEROUS["mount"],
                              "keyctl": DANGEROUS["keyctl"]})
    assert results["unshare_uts"] == 0
    assert results["mount"] != -errno.EPERM and results["keyctl"] != -errno.EPERM, results


def test_default_profile_allows_ordinary_work():
    assert filtered(default_program(), ORDINARY) == {name: (7 if name == "fork" else 0)
                                                     for name in ORDINARY}


def test_syscalls_newer_than_the_profile_get_enosys():
    """As under runc: libc falls back from a new syscall only on ENOSYS (not EPERM)."""
    probes = {str(nr): (lambda nr=nr: syscall_number(nr)) for nr in (452, 460, 1000)}
    probes["kexec_load"] = lambda: syscall_number(246)            # old, not allowed: EPERM
    probes["x32_getpid"] = lambda: syscall_number(0x40000000 | 39)   # x32 ABI, not in the profile
    results = filtered(default_program(), probes)
    assert results == {"452": -errno.ENOSYS, "460": -errno.ENOSYS, "1000": -errno.ENOSYS,
                       "kexec_load": -errno.EPERM, "x32_getpid": results["x32_getpid"]}, results
    assert results["x32_getpid"] != 0, results   # the x32 ABI stays confined too


def syscall_number(nr: int) -> int:
    result = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), 0, 0, 0)
    return -ctypes.get_errno() if result == -1 else result


def test_ptrace_follows_the_kernel_version_rule():
    # From kernel 4.8 ptrace can no longer bypass seccomp, so Docker allows it there.
    results = filtered(default_program(), {"ptrace": lambda: syscall("ptrace", 0x4242, 0, 0, 0)})
    assert results["ptrace"] != -errno.EPERM, results
    profile = parse_profile(DEFAULT_PROFILE)
    assert profile is not None

    def allowed(kernel: tuple[int, ...], caps: frozenset[str]) -> bool:
        return any("ptrace" in rule.names for rule in applicable_rules(profile, caps, "amd64", kernel))

    default_caps = frozenset(DEFAULT_CAPABILITIES)
    assert allowed((4, 8), default_caps) and not allowed((4, 4, 0), default_caps)
    assert allowed((4, 4, 0), default_caps | {"CAP_SYS_PTRACE"})


def test_capabilities_open_their_syscalls():
    """CAP_SYS_ADMIN in the bounding set lifts the namespace and mount rules, as in Docker."""
    results = filtered(default_program(SYS_ADMIN_CAPS),
                       {"unshare_uts": DANGEROUS["unshare_uts"], "keyctl": DANGEROUS["keyctl"],
                        "clone3": lambda: syscall("clone3", 0, 0)})
    assert results["unshare_uts"] == 0
    assert results["keyctl"] == -errno.EPERM            # no capability opens the keyring
    assert results["clone3"] != -errno.ENOSYS           # clone3 reaches the kernel (EINVAL here)


def test_programs_are_cached_per_profile_and_capabilities():
    assert default_program() is default_program()
    assert default_program() is not default_program(SYS_ADMIN_CAPS)


CUSTOM_BLOCKS_MKDIR = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]})


def test_custom_profile_is_compiled_and_applied(tmp_path):
    program = seccomp_filter.program_for(SeccompPolicy(profile=CUSTOM_BLOCKS_MKDIR), DEFAULT_CAPABILITIES)
    target = tmp_path / "made"

    def make() -> int:
        try:
            os.mkdir(target)
            return 0
        except OSError as err:
            return -err.errno

    assert filtered(program, {"mkdir": make, "unshare_uts": DANGEROUS["unshare_uts"]}) == {
        "mkdir": -errno.EACCES, "unshare_uts": 0}


@pytest.mark.parametrize("profile, message", [
    ("{not json", "Decoding seccomp profile failed"),
    ('{"defaultAction": "SCMP_ACT_FOO"}', "unknown action"),
    # Values of the wrong JSON type, unhashable ones included, are refused, not a TypeError (a 500).
    ('{"defaultAction": ["SCMP_ACT_ALLOW"]}', "unknown action"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": {"x": 1}}]}', "unknown action"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",'
     ' "args": [{"index": 0, "value": 1, "op": ["SCMP_CMP_EQ"]}]}]}', "unknown operator"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "read", "names": ["write"], '
     '"action": "SCMP_ACT_ERRNO"}]}', "'name' and 'names'"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], '
     '"archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}', "'architectures' and 'archMap'"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PDP11"]}', "SCMP_ARCH_PDP11"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",'
     ' "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "index"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",'
     ' "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}', "unknown operator"),
    ('{"defaultAction": "SCMP_ACT_NOTIFY"}', "SCMP_ACT_NOTIFY"),
    ('["SCMP_ACT_ALLOW"]', "JSON object"),
])
def test_bad_custom_profile_is_refused(profile, message):
    with pytest.raises(SeccompProfileError, match=message) as info:
        seccomp_filter.program_for(SeccompPolicy(profile=profile), DEFAULT_CAPABILITIES)
    assert isinstance(info.value, InvalidArgument)    # a 400 through the API


def test_a_profile_without_action_or_rules_disables_seccomp():
    assert seccomp_filter.program_for(SeccompPolicy(profile="{}"), DEFAULT_CAPABILITIES) is None


# ---------------------------------------------------------------- security options


@pytest.mark.parametrize("opts, seccomp, nnp", [
    (None, "builtin", False),
    (["seccomp=unconfined"], None, False),
    (["seccomp:unconfined"], None, False),
    (["seccomp=builtin", "no-new-privileges"], "builtin", True),
    (["no-new-privileges=true"], "builtin", True),
    (["no-new-privileges:false"], "builtin", False),
    (["label=disable", "apparmor=unconfined", "disable"], "builtin", False),
    ([f"seccomp={CUSTOM_BLOCKS_MKDIR}"], CUSTOM_BLOCKS_MKDIR, False),
])
def test_security_options_parse(opts, seccomp, nnp):
    parsed = parse_security_options(opts)
    assert (parsed.seccomp_profile, parsed.no_new_privileges) == (seccomp, nnp)


@pytest.mark.parametrize("opt, message", [
    ("bogus=1", 'invalid --security-opt 2: "bogus=1"'),
    ("bogus", 'invalid --security-opt 1: "bogus"'),
    ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ("label=type:svirt_t", "label=type:svirt_t"),
    ("apparmor=docker-default", "docker-default"),
    ('seccomp={"defaultAction": "SCMP_ACT_FOO"}', "unknown action"),
])
def test_security_options_refused_by_name(opt, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        parse_security_options([opt])


def test_privileged_gets_no_filter():
    assert parse_security_options(None).seccomp_policy(DEFAULT_CAPABILITIES, privileged=True) is None


# ---------------------------------------------------------------- in containers


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


@pytest.fixture
def run_status(tmp_path, rootfs):
    """Start a busybox container with the given process fields; /proc/self/status as a dict."""
    specs: list[ContainerSpec] = []

    def run(args: list[str] | None = None, **process_fields) -> tuple[int, dict[str, str], str]:
        cid = uuid.uuid4().hex
        base = tmp_path / cid[:12]
        (base / "upper").mkdir(parents=True)
        (base / "work").mkdir()
        process = ProcessSpec(args=args or ["cat", "/proc/self/status"], env=[PATH_ENV], **process_fields)
        spec = ContainerSpec(id=cid, lower_dirs=[rootfs], upper_dir=base / "upper",
                             work_dir=base / "work", process=process)
        specs.append(spec)
        out_r, out_w = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        try:
            proc = launch(spec, Stdio(stdin, out_w, out_w))
        finally:
            os.close(stdin)
            os.close(out_w)
        with os.fdopen(out_r, "rb") as f:
            text = f.read().decode()
        code = proc.wait()
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        return code, {k: v.strip() for k, v in fields.items()}, text

    yield run
    for spec in specs:
        cleanup(spec)


def test_container_gets_the_filter_and_unconfined_gets_none(run_status):
    _, status, _ = run_status()
    assert (status["Seccomp"], status["NoNewPrivs"]) == ("2", "0")
    _, status, _ = run_status(seccomp=None)
    assert (status["Seccomp"], status["NoNewPrivs"]) == ("0", "0")


def test_filter_loads_late_with_no_new_privileges_and_for_other_users(run_status):
    _, status, _ = run_status(no_new_privileges=True)
    assert (status["Seccomp"], status["NoNewPrivs"]) == ("2", "1")
    # A non-root user: the filter goes in while the process still has CAP_SYS_ADMIN.
    _, status, _ = run_status(user="1000:1000")
    assert (status["Seccomp"], status["Uid"].split()[0]) == ("2", "1000")


def test_unshare_refused_in_a_default_container(run_status):
    code, _, text = run_status(["unshare", "-Urm", "true"])
    assert code != 0, text
    code, _, text = run_status(["unshare", "-Urm", "true"], seccomp=None)
    assert code == 0, text



def _loaded_libseccomp() -> str:
    seccomp_filter.available()      # loads it into this process
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "libseccomp.so" in line}
    assert len(paths) == 1, paths
    return os.path.realpath(paths.pop())


def test_without_libseccomp_a_filter_is_refused_never_skipped():
    """In a mount namespace where libseccomp is an empty file: no filter can be built,
    asking for one is a clear error, and docker info claims no seccomp."""
    check = (
        "from runtime.containers.security import seccomp_filter as f\n"
        "from runtime.containers.spec import SeccompPolicy, DEFAULT_CAPABILITIES\n"
        "assert not f.available() and f.security_options() == []\n"
        "try:\n"
        "    f.program_for(SeccompPolicy(), DEFAULT_CAPABILITIES)\n"
        "except f.SeccompUnavailable as err:\n"
        "    print(err)\n"
    )
    script = 'mount --bind /dev/null "$1" && exec "$2" -c "$3"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", _loaded_libseccomp(),
                             sys.executable, check], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "cannot load libseccomp.so.2" in result.stdout and "seccomp=unconfined" in result.stdout
