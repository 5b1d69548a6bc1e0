"""Resolve Docker's `--user` string against the container's own /etc/passwd and /etc/group.

Follows Docker (runc's GetExecUser): "" is root; a name must exist in passwd;
a numeric uid may have no entry; "uid:gid" and "name:group" set the primary
group; without an explicit group the user's supplementary groups come from
/etc/group. Runs in the forked child after pivot_root, so it takes no locks
and only reads files.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class UserLookupError(Exception):
    """The user or group named in the spec does not exist in the container."""


@dataclass
class ExecUser:
    """The identity a container process runs as."""

    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)   # supplementary gids
    home: str = "/"
    name: str = ""


def _read_entries(path: str) -> list[list[str]]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return []
    entries = []
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line.split(":"))
    return entries


def _as_id(text: str) -> int | None:
    return int(text) if text.isdecimal() else None


def resolve_user(spec: str, passwd_path: str = "/etc/passwd",
                 group_path: str = "/etc/group") -> ExecUser:
    """Turn "name", "uid", "uid:gid", "name:group" (or "") into uid/gid/groups/home."""
    user_part, has_group, group_part = spec.partition(":")
    result = ExecUser()
    passwd = _read_entries(passwd_path)

    if user_part == "":
        user_part = "0"
    wanted_uid = _as_id(user_part)
    match = None
    for entry in passwd:
        if len(entry) < 7:
            entry = entry + [""] * (7 - len(entry))
        uid, gid = _as_id(entry[2]), _as_id(entry[3])
        if uid is None or gid is None:
            continue
        if entry[0] == user_part or (wanted_uid is not None and uid == wanted_uid):
            match = (entry[0], uid, gid, entry[5] or "/")
            break
    if match is not None:
        result.name, result.uid, result.gid, result.home = match
    elif wanted_uid is not None:
        result.uid = wanted_uid
    else:
        raise UserLookupError(f"unable to find user {user_part}: no matching entries in passwd file")

    groups = _read_entries(group_path)
    if has_group and group_part:
        wanted_gid = _as_id(group_part)
        for entry in groups:
            if len(entry) >= 3 and (entry[0] == group_part or
                                    (wanted_gid is not None and _as_id(entry[2]) == wanted_gid)):
                gid = _as_id(entry[2])
                if gid is not None:
                    result.gid = gid
                    break
        else:
            if wanted_gid is None:
                raise UserLookupError(
                    f"unable to find group {group_part}: no matching entries in group file")
            result.gid = wanted_gid
        result.groups = [result.gid]
    elif result.name:
        for entry in groups:
            if len(entry) >= 4 and result.name in entry[3].split(","):
                gid = _as_id(entry[2])
                if gid is not None and gid not in result.groups:
                    result.groups.append(gid)
    return result


def resolve_groups(names: tuple[str, ...] | list[str], group_path: str = "/etc/group") -> list[int]:
    """`--group-add`: numbers as given, names looked up in the container's /etc/group."""
    if not names:
        return []
    by_name = {e[0]: gid for e in _read_entries(group_path)
               if len(e) >= 3 and (gid := _as_id(e[2])) is not None}
    gids: list[int] = []
    for name in names:
        gid = _as_id(name)
        if gid is None:
            gid = by_name.get(name)
        if gid is None:
            raise UserLookupError(f"Unable to find group {name}: no matching entries in group file")
        if gid not in gids:
            gids.append(gid)
    return gids
