"""`ps`-style process tables for `docker top`: read from /proc, or the host's `ps` with the user's args."""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import time
from pathlib import Path

from ..errors import InvalidArgument

TOP_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


def ps_from_proc(pids: list[int]) -> tuple[list[str], list[list[str]]]:
    """`ps -ef` columns for the given pids, read from /proc (no process spawned)."""
    clk = os.sysconf("SC_CLK_TCK")
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    rows: list[list[str]] = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue   # exited while we looked
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ppid, tty_nr = fields[1], int(fields[4])
        cpu_secs = (int(fields[11]) + int(fields[12])) // clk
        started = boot + int(fields[19]) / clk
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        tty = "?"
        if tty_nr:
            major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
            tty = f"pts/{minor}" if 136 <= major <= 143 else f"tty{minor}"
        cmd = " ".join(a.decode(errors="replace") for a in cmdline.split(b"\0") if a) or f"[{comm}]"
        stime = time.strftime("%H:%M", time.localtime(started))
        cpu = f"{cpu_secs // 3600:02d}:{cpu_secs // 60 % 60:02d}:{cpu_secs % 60:02d}"
        rows.append([user, str(pid), ppid, "0", stime, tty, cpu, cmd])
    return list(TOP_TITLES), rows


def ps_with_args(pids: set[int], ps_args: str) -> tuple[list[str], list[list[str]]]:
    """Like dockerd: run the host's `ps` with the user's arguments, keep the container's rows."""
    try:
        out = subprocess.run(["ps", *shlex.split(ps_args)], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        raise InvalidArgument(f"ps {ps_args}: {err}") from None
    lines = out.splitlines()
    if not lines:
        return [], []
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidArgument("Couldn't find PID field in ps output")
    col = titles.index("PID")
    rows: list[list[str]] = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            rows.append(fields)
    return titles, rows
