"""`--sysctl`: only the namespaced kernel settings Docker allows, written in the container's namespaces.

The docker CLI's list (opts.ValidateSysctl): the IPC ones (`kernel.msg*`,
`kernel.sem`, `kernel.shm*`, `fs.mqueue.*`) and `net.*`. Like runc, `net.*`
is refused when the container shares the host's network namespace, and the
IPC ones when it shares the host's IPC namespace: there they would change the
machine, not the container.
"""

from __future__ import annotations

import os

from ..errors import InvalidArgument

_IPC_NAMES = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                        "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})
_IPC_PREFIX = "fs.mqueue."
_NET_PREFIX = "net."


def validate(sysctls: dict[str, str] | None, network_mode: str, ipc_mode: str) -> dict[str, str]:
    """The settings to apply; InvalidArgument for one Docker does not allow."""
    result: dict[str, str] = {}
    for key, value in (sysctls or {}).items():
        is_ipc = key in _IPC_NAMES or key.startswith(_IPC_PREFIX)
        is_net = key.startswith(_NET_PREFIX)
        if not (is_ipc or is_net) or "/" in key or ".." in key:
            raise InvalidArgument(f"sysctl '{key}={value}' is not allowed")
        if is_net and network_mode == "host":
            raise InvalidArgument(f'sysctl "{key}" not allowed in host network namespace')
        if is_ipc and ipc_mode == "host":
            raise InvalidArgument(f'sysctl "{key}" not allowed in host ipc namespace')
        result[key] = value
    return result


def apply(sysctls: dict[str, str]) -> None:
    """Write each setting through /proc/sys (child side, already in the container's namespaces).

    /proc/sys/net and the IPC entries show the namespaces of the process that
    opens them, so the engine's /proc serves before the container's is mounted.
    """
    for key, value in sysctls.items():
        fd = os.open("/proc/sys/" + key.replace(".", "/"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
