"""Docker's container Config/HostConfig: validation, image defaults, and what they mean.

`build_config` turns a create request plus the image into the Config and HostConfig
that inspect shows (the way dockerd merges them); the other functions derive the
launcher's view (ports, limits, capabilities, the process) from those. Mounts are
parsed in `mounts`, container names checked and generated in `names`.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import signal as signal_mod
from typing import Any

from .. import path_scope
from ..errors import InvalidArgument
from ..lazy_re import lazy_compile
from ..linux.cgroup_limits import Limits
from ..models import PortMapping
from . import cpuset, health, sysctls, ulimits
from . import init as container_init
from .mounts import parse_mounts
from .restart_policy import RestartPolicy
from .schema import check_create
from .spec import DEFAULT_CAPABILITIES, BindMount

NETWORK_MODES = ("bridge", "host", "none")
_USER_NETWORK_MODE = re.compile(r"^(container:)?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIN_MEMORY = 6 * 1024 * 1024
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
LOG_DRIVERS = ("json-file", "none")

# Every Linux capability (linux/capability.h up to 6.x).
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# signals --------------------------------------------------------------------
def parse_signal(sig: str | int | None, default: int = signal_mod.SIGTERM) -> int:
    """"KILL", "SIGKILL", "9", 9, "sigkill" → 9. InvalidArgument for anything else."""
    if sig is None or sig == "":
        return int(default)
    if isinstance(sig, int):
        number = sig
    else:
        text = sig.strip().upper()
        if text.isdecimal():
            number = int(text)
        else:
            if not text.startswith("SIG"):
                text = "SIG" + text
            try:
                number = int(getattr(signal_mod.Signals, text))
            except AttributeError:
                if text.startswith("SIGRTMIN+") and text[9:].isdecimal():
                    number = int(signal_mod.SIGRTMIN) + int(text[9:])
                else:
                    raise InvalidArgument(f"Invalid signal: {sig}") from None
    if not 0 < number <= int(signal_mod.SIGRTMAX):
        raise InvalidArgument(f"Invalid signal: {sig}")
    return number


# environment ----------------------------------------------------------------
def merge_image_env(image_env: list[str], request_env: list[str]) -> list[str]:
    """Config.Env as dockerd stores it: the request's entries as given (a bare "NAME"
    included), then each image entry whose name the request does not mention."""
    named = {e.partition("=")[0] for e in request_env}
    return list(request_env) + [e for e in image_env if e.partition("=")[0] not in named]


def merge_env(defaults: list[str], overrides: list[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: overrides replace same-named entries in place,
    new ones are appended, and a bare "NAME" removes NAME."""
    result: list[str | None] = list(defaults)   # None: removed, dropped at the end
    index = {e.partition("=")[0]: i for i, e in enumerate(defaults)}
    for entry in overrides:
        key, eq, _ = entry.partition("=")
        if not eq:
            if key in index:
                result[index.pop(key)] = None
            continue
        if key in index and result[index[key]] is not None:
            result[index[key]] = entry
        else:
            index[key] = len(result)
            result.append(entry)
    return [e for e in result if e is not None]


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


# the create request ---------------------------------------------------------
def build_config(container_id: str, config: dict[str, Any], host_config: dict[str, Any],
                 image_config: dict[str, Any], ncpu: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a create request and merge the image's defaults, as dockerd does.

    `image_config` is the image's runtime config (the "config" object of the image JSON).
    Returns (Config, HostConfig) ready to persist; raises InvalidArgument.
    """
    cfg, hc = check_create(copy.deepcopy(config or {}), copy.deepcopy(host_config or {}))
    img = image_config or {}

    # Entrypoint/Cmd: an explicit Entrypoint drops the image's Cmd as well.
    entrypoint = _as_list(cfg.get("Entrypoint"))
    cmd = _as_list(cfg.get("Cmd")) or []
    if entrypoint:
        if entrypoint == [""]:
            entrypoint = []   # `--entrypoint ""`: no entrypoint at all
    else:
        entrypoint = _as_list(img.get("Entrypoint")) or []
        if not cmd:
            cmd = _as_list(img.get("Cmd")) or []
    if not entrypoint and not cmd:
        raise InvalidArgument("No command specified")
    cfg["Entrypoint"] = entrypoint or None
    cfg["Cmd"] = cmd or None

    health.validate(cfg.get("Healthcheck"))   # the request's own values, before the image's fill in
    cfg["Healthcheck"] = health.merge_image(cfg.get("Healthcheck"), img.get("Healthcheck"))
    if cfg["Healthcheck"] is None:
        del cfg["Healthcheck"]
    cfg["Env"] = merge_image_env(list(img.get("Env") or []), list(cfg.get("Env") or []))
    for key in ("User", "WorkingDir", "StopSignal"):
        if not cfg.get(key) and img.get(key):
            cfg[key] = img[key]
        cfg.setdefault(key, "")
    if cfg["WorkingDir"] and not cfg["WorkingDir"].startswith("/"):
        raise InvalidArgument(f"the working directory '{cfg['WorkingDir']}' is invalid, "
                              "it needs to be an absolute path")
    if cfg["WorkingDir"]:
        # dockerd stores it cleaned
        cfg["WorkingDir"] = path_scope.clean(path_scope.check(cfg["WorkingDir"], "working directory"))
    if cfg["StopSignal"]:
        parse_signal(cfg["StopSignal"])
    labels = dict(img.get("Labels") or {})
    labels.update(cfg.get("Labels") or {})
    cfg["Labels"] = labels
    for key in ("ExposedPorts", "Volumes"):
        merged = dict(img.get(key) or {})
        merged.update(cfg.get(key) or {})
        cfg[key] = merged or None
    for key in ("Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr"):
        cfg[key] = bool(cfg.get(key))
    cfg.setdefault("Domainname", "")

    # HostConfig ------------------------------------------------------------
    mode = hc.get("NetworkMode") or "default"
    if mode == "default":
        mode = "bridge"
    if mode not in NETWORK_MODES and not _USER_NETWORK_MODE.match(mode):
        # Anything else names a user-defined network (or container:NAME); the network
        # manager checks it exists.
        raise InvalidArgument(f"network mode \"{mode}\" is not supported: use bridge, host, none, "
                              f"container:NAME or a network's name")
    hc["NetworkMode"] = mode
    if not cfg.get("Hostname"):
        cfg["Hostname"] = os.uname().nodename if mode == "host" else container_id[:12]

    policy = RestartPolicy.from_host_config(hc)
    hc["RestartPolicy"] = policy.to_json()
    hc["AutoRemove"] = bool(hc.get("AutoRemove"))
    if hc["AutoRemove"] and policy.name != "no":
        raise InvalidArgument("conflicting options: cannot specify both --restart and --rm")

    log_type = (hc.get("LogConfig") or {}).get("Type") or "json-file"
    if log_type not in LOG_DRIVERS:
        raise InvalidArgument(f"logging driver \"{log_type}\" is not supported; only json-file and none are")
    hc["LogConfig"] = {"Type": log_type, "Config": (hc.get("LogConfig") or {}).get("Config") or {}}
    log_rotation(hc)

    parse_mounts(cfg, hc)          # validation only; the engine resolves them at create
    port_mappings(cfg, hc)
    limits(hc, ncpu)
    # As dockerd stores them: a memory limit without a swap limit means twice the memory,
    # and a pids limit of 0 or less is no limit (null).
    if int(hc.get("Memory") or 0) > 0 and not hc.get("MemorySwap"):
        hc["MemorySwap"] = 2 * int(hc["Memory"])
    if hc.get("PidsLimit") is not None and int(hc["PidsLimit"]) <= 0:
        hc["PidsLimit"] = None
    capabilities(hc)
    for entry in hc.get("ExtraHosts") or []:
        parse_extra_host(entry)
    process_options(hc)
    for key in ("Privileged", "ReadonlyRootfs", "PublishAllPorts"):
        hc[key] = bool(hc.get(key))
    hc["Init"] = hc.get("Init")    # null, as dockerd keeps it, unless --init/--init=false
    if not hc.get("ShmSize"):
        hc["ShmSize"] = DEFAULT_SHM_SIZE
    return cfg, hc


# logging --------------------------------------------------------------------
# json-file options dockerd knows; those other than max-size/max-file change nothing here.
_LOG_OPTS = {"max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"}
_SIZE_RE = lazy_compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Docker's RAMInBytes: "10m" → 10 MiB, "512k", "1g", "100" (bytes)."""
    match = _SIZE_RE.match(str(text).strip())
    if not match:
        raise InvalidArgument(f"invalid size: '{text}'")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def keeps_logs(host_config: dict[str, Any]) -> bool:
    """False for `--log-driver none`: output goes to attached clients only."""
    return ((host_config.get("LogConfig") or {}).get("Type") or "json-file") != "none"


def log_rotation(host_config: dict[str, Any]) -> tuple[int, int]:
    """(max size in bytes or 0, max files) from LogConfig.Config; InvalidArgument on bad options.

    As dockerd's json-file driver, max-file without max-size is accepted and changes
    nothing (files rotate only by size). The none driver takes any options (dockerd's does).
    """
    if not keeps_logs(host_config):
        return 0, 1
    opts = (host_config.get("LogConfig") or {}).get("Config") or {}
    for key in opts:
        if key not in _LOG_OPTS:
            raise InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
    max_size = parse_size(opts["max-size"]) if opts.get("max-size") else 0
    max_files = 1
    if opts.get("max-file"):
        if not str(opts["max-file"]).isdecimal() or int(opts["max-file"]) < 1:
            raise InvalidArgument("failed to initialize logging driver: max-file cannot be less than 1")
        max_files = int(opts["max-file"])
    return max_size, max_files if max_size else 1


# ports ----------------------------------------------------------------------
def _split_port(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp") or not port.isdecimal() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"invalid port specification: \"{key}\"")
    return int(port), proto


def port_mappings(config: dict[str, Any], host_config: dict[str, Any]) -> list[PortMapping]:
    """PortBindings (and PublishAllPorts over ExposedPorts) as PortMapping records."""
    result: list[PortMapping] = []
    bound: set[tuple[int, str]] = set()
    for key, bindings in (host_config.get("PortBindings") or {}).items():
        port, proto = _split_port(key)
        bound.add((port, proto))
        for b in bindings or [{}]:
            host_port = str((b or {}).get("HostPort") or "0")
            if not host_port.isdecimal() or int(host_port) > 65535:
                raise InvalidArgument(f"invalid port specification: \"{host_port}\"")
            host_ip = (b or {}).get("HostIp") or "0.0.0.0"
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise InvalidArgument(f"invalid IP address: {host_ip}") from None
            result.append(PortMapping(port, proto, host_ip, int(host_port)))
    if host_config.get("PublishAllPorts"):
        for key in sorted((config.get("ExposedPorts") or {}).keys()):
            port, proto = _split_port(key)
            if (port, proto) not in bound:
                result.append(PortMapping(port, proto, "0.0.0.0", 0))
    return result


# limits and privileges ------------------------------------------------------
def limits(host_config: dict[str, Any], ncpu: int | None = None) -> Limits:
    """Resource limits from HostConfig, validated with Docker's messages."""
    memory = int(host_config.get("Memory") or 0)
    if memory and memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    swap = int(host_config.get("MemorySwap") or 0)
    if swap > 0 and memory and swap < memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage for details")
    reservation = int(host_config.get("MemoryReservation") or 0)
    if memory and reservation and memory < reservation:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation limit, see usage")
    if reservation and reservation < MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    nano = int(host_config.get("NanoCpus") or 0)
    quota = int(host_config.get("CpuQuota") or 0)
    period = int(host_config.get("CpuPeriod") or 0)
    if nano and (quota or period):
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set")
    if quota > 0:
        nano = quota * 1_000_000_000 // (period or 100_000)
    ncpu = ncpu or os.cpu_count() or 1
    if nano < 0 or nano > ncpu * 1_000_000_000:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    cpus, mems = host_config.get("CpusetCpus") or "", host_config.get("CpusetMems") or ""
    cpuset.validate(cpus, mems)
    if (cpus or mems) and not _has_cpuset_controller():
        raise InvalidArgument(f"HostConfig.{'CpusetCpus' if cpus else 'CpusetMems'} is not supported "
                              "on this machine: it has no cpuset cgroup controller")
    pids = host_config.get("PidsLimit")
    pids = int(pids) if pids else 0
    shares = int(host_config.get("CpuShares") or 0)
    if shares < 0:
        raise InvalidArgument(f"invalid CPU shares ({shares}): value must be a positive integer")
    return Limits(memory_bytes=memory or None, memory_swap_bytes=swap if swap else None,
                  nano_cpus=nano or None, cpu_shares=shares or None,
                  pids_limit=pids if pids > 0 else None,
                  memory_reservation_bytes=reservation or None,
                  cpuset_cpus=cpus or None, cpuset_mems=mems or None)


def _has_cpuset_controller() -> bool:
    from ..linux.cgroups import host_layout  # reads mountinfo: only when a cpuset is asked for
    layout = host_layout()
    return layout.uses_v1("cpuset") or layout.uses_v2("cpuset")


def process_options(host_config: dict[str, Any]) -> None:
    """Check the options that shape the container's processes, with dockerd's messages."""
    shm = int(host_config.get("ShmSize") or 0)
    if shm < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    oom = int(host_config.get("OomScoreAdj") or 0)
    if not -1000 <= oom <= 1000:
        raise InvalidArgument(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    ulimits.parse(host_config.get("Ulimits"))
    sysctls.validate(host_config.get("Sysctls"), host_config.get("NetworkMode") or "",
                     host_config.get("IpcMode") or "")
    for group in host_config.get("GroupAdd") or []:
        if not group:
            raise InvalidArgument("invalid GroupAdd: an empty group name")
    if host_config.get("Init"):
        container_init.init_binary()


def _cap_name(cap: str) -> str:
    name = cap.strip().upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in ALL_CAPABILITIES:
        raise InvalidArgument(f"invalid CapAdd: unknown capability: \"{cap}\"")
    return name


def capabilities(host_config: dict[str, Any]) -> tuple[str, ...]:
    """The container's capability set: Docker's defaults, plus CapAdd, minus CapDrop."""
    if host_config.get("Privileged"):
        return ALL_CAPABILITIES
    add = [_cap_name(c) for c in host_config.get("CapAdd") or []]
    drop = [_cap_name(c) for c in host_config.get("CapDrop") or []]
    caps = list(DEFAULT_CAPABILITIES)
    if "ALL" in drop:
        caps = []
    if "ALL" in add:
        caps = list(ALL_CAPABILITIES)
    for c in add:
        if c != "ALL" and c not in caps:
            caps.append(c)
    for c in drop:
        if c != "ALL" and c in caps and c not in add:
            caps.remove(c)
    return tuple(caps)


def parse_extra_host(entry: str) -> tuple[str, str]:
    """"name:ip" or "name=ip" (ip may be "host-gateway"); IPv6 addresses keep their colons."""
    sep = "=" if "=" in entry else ":"
    name, _, ip = entry.partition(sep)
    ip = ip.strip("[]")
    if not name or not ip:
        raise InvalidArgument(f"invalid extra host: {entry}")
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidArgument(f"invalid IP address in add-host: \"{ip}\"") from None
    return name, ip


# the process ----------------------------------------------------------------
def process_args(config: dict[str, Any], host_config: dict[str, Any] | None = None) -> list[str]:
    """Entrypoint followed by Cmd; under `/sbin/docker-init --` with `--init`."""
    args = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    if host_config and host_config.get("Init"):
        return container_init.wrap(args)
    return args


def process_extras(host_config: dict[str, Any]) -> dict[str, Any]:
    """ProcessSpec fields every process of the container shares (its first one and execs)."""
    return {"group_add": tuple(host_config.get("GroupAdd") or ()),
            "rlimits": ulimits.parse(host_config.get("Ulimits")),
            "oom_score_adj": int(host_config.get("OomScoreAdj") or 0)}


def init_mount(host_config: dict[str, Any]) -> BindMount | None:
    """With `--init`, tini bound read-only where Docker puts docker-init."""
    if not host_config.get("Init"):
        return None
    return BindMount(container_init.init_binary(), container_init.INIT_PATH, readonly=True)


def container_extras(host_config: dict[str, Any]) -> dict[str, Any]:
    """ContainerSpec fields from HostConfig beyond mounts, network and limits."""
    extras: dict[str, Any] = {
        "shm_size": int(host_config.get("ShmSize") or DEFAULT_SHM_SIZE),
        "sysctls": sysctls.validate(host_config.get("Sysctls"), host_config.get("NetworkMode") or "",
                                    host_config.get("IpcMode") or "")}
    # Given (even empty, as `--security-opt systempaths=unconfined` sends them), they replace
    # Docker's defaults; absent, the defaults apply.
    if host_config.get("MaskedPaths") is not None:
        extras["masked_paths"] = tuple(host_config["MaskedPaths"])
    if host_config.get("ReadonlyPaths") is not None:
        extras["readonly_paths"] = tuple(host_config["ReadonlyPaths"])
    return extras


def process_env(config: dict[str, Any]) -> list[str]:
    """The environment dockerd gives the first process: Config.Env plus PATH, HOSTNAME, TERM."""
    env = list(config.get("Env") or [])
    keys = {e.partition("=")[0] for e in env}
    extra = []
    if "PATH" not in keys:
        extra.append(f"PATH={DEFAULT_PATH}")
    extra.append(f"HOSTNAME={config.get('Hostname', '')}")
    if config.get("Tty") and "TERM" not in keys:
        extra.append("TERM=xterm")
    return merge_env(extra, env)
