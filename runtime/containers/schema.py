"""The container create request as Docker types it: Config and HostConfig, field by field.

dockerd decodes a create body into Go structs (`ContainerConfigWrapper`: the
embedded `container.Config`, `*container.HostConfig`), so a value of the wrong
JSON type is refused before anything else looks at it, with encoding/json's
message ("json: cannot unmarshal string into Go struct field
HostConfig.HostConfig.Memory of type int64"). `check_create` does the same
here, field by field, with the Go type of each field.

Every field also says whether this engine honours it. A field we cannot
honour is accepted only at its zero value (what clients send when the option
is not used, plus the few explicit "defaults" listed with it); anything else
is refused with a 400 that names the field, never stored and ignored.

Unknown keys are dropped, as Go's decoder drops them; keys match
case-insensitively, as Go's do, and come out in their canonical spelling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument
from ..go_json import json_kind

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int": (-(1 << 63), (1 << 63) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
    "uint": (0, (1 << 64) - 1), "uint64": (0, (1 << 64) - 1),
    "uint32": (0, (1 << 32) - 1), "uint16": (0, (1 << 16) - 1),
}


@dataclass(frozen=True)
class Scalar:
    """A JSON string or bool (Go string, bool)."""

    go: str            # "string" | "bool"


@dataclass(frozen=True)
class Integer:
    """A JSON number that must be a whole number in the Go type's range."""

    go: str            # a key of _INT_RANGES


@dataclass(frozen=True)
class ListOf:
    """A JSON array (Go slice or fixed array) of one element type."""

    elem: GoType
    go: str
    length: int | None = None     # Go arrays ([2]uint) take at most this many elements


@dataclass(frozen=True)
class MapOf:
    """A JSON object with string keys and one value type (Go map)."""

    value: GoType
    go: str


@dataclass(frozen=True)
class StrSlice:
    """Docker's strslice.StrSlice: a string or an array of strings (Cmd, Entrypoint)."""


@dataclass(frozen=True)
class Struct:
    """A JSON object decoded into a Go struct; `name` is the struct's type name in messages."""

    name: str
    go: str
    fields: dict[str, Field] = field(default_factory=dict)


@dataclass(frozen=True)
class AnyJSON:
    """Any JSON value (kept as given)."""


GoType = Scalar | Integer | ListOf | MapOf | StrSlice | Struct | AnyJSON


@dataclass(frozen=True)
class Field:
    """One field: its Go type, and whether the engine does what it asks.

    `honoured` False means only the zero value (null, 0, "", false, [], {}) or one
    of `defaults` is accepted; anything else is refused by name.
    """

    type: GoType
    honoured: bool = True
    defaults: tuple[Any, ...] = ()


STRING = Scalar("string")
BOOL = Scalar("bool")
INT = Integer("int")
INT64 = Integer("int64")
UINT16 = Integer("uint16")
UINT64 = Integer("uint64")
STRINGS = ListOf(STRING, "[]string")
STRING_MAP = MapOf(STRING, "map[string]string")
EMPTY_STRUCT = Struct("", "struct {}")


def _fields(**kinds: GoType) -> dict[str, Field]:
    return {name: Field(kind) for name, kind in kinds.items()}


def _unhonoured(kind: GoType, *defaults: Any) -> Field:
    return Field(kind, honoured=False, defaults=defaults)


_THROTTLE_DEVICE = Struct("ThrottleDevice", "blkiodev.ThrottleDevice", _fields(Path=STRING, Rate=UINT64))
_WEIGHT_DEVICE = Struct("WeightDevice", "blkiodev.WeightDevice", _fields(Path=STRING, Weight=UINT16))
_DEVICE_MAPPING = Struct("DeviceMapping", "container.DeviceMapping", _fields(
    PathOnHost=STRING, PathInContainer=STRING, CgroupPermissions=STRING))
_DEVICE_REQUEST = Struct("DeviceRequest", "container.DeviceRequest", _fields(
    Driver=STRING, Count=INT, DeviceIDs=STRINGS,
    Capabilities=ListOf(STRINGS, "[][]string"), Options=STRING_MAP))
_ULIMIT = Struct("Ulimit", "units.Ulimit", _fields(Name=STRING, Hard=INT64, Soft=INT64))
_PORT_BINDING = Struct("PortBinding", "nat.PortBinding", _fields(HostIp=STRING, HostPort=STRING))
_MOUNT = Struct("Mount", "mount.Mount", _fields(
    Type=STRING, Source=STRING, Target=STRING, ReadOnly=BOOL, Consistency=STRING,
    BindOptions=Struct("BindOptions", "mount.BindOptions", _fields(
        Propagation=STRING, NonRecursive=BOOL, CreateMountpoint=BOOL,
        ReadOnlyNonRecursive=BOOL, ReadOnlyForceRecursive=BOOL)),
    VolumeOptions=Struct("VolumeOptions", "mount.VolumeOptions", _fields(
        NoCopy=BOOL, Labels=STRING_MAP, Subpath=STRING,
        DriverConfig=Struct("Driver", "mount.Driver", _fields(Name=STRING, Options=STRING_MAP)))),
    TmpfsOptions=Struct("TmpfsOptions", "mount.TmpfsOptions", _fields(
        SizeBytes=INT64, Mode=Integer("uint32"), Options=ListOf(STRINGS, "[][]string"))),
))
_HEALTHCHECK = Struct("HealthConfig", "container.HealthConfig", _fields(
    Test=STRINGS, Interval=INT64, Timeout=INT64, StartPeriod=INT64, StartInterval=INT64, Retries=INT))

# container.Config (API v1.44). Healthcheck's ranges are checked with dockerd's
# messages by containers.health.validate.
CONFIG_FIELDS: dict[str, Field] = {
    "Hostname": Field(STRING), "Domainname": Field(STRING), "User": Field(STRING),
    "AttachStdin": Field(BOOL), "AttachStdout": Field(BOOL), "AttachStderr": Field(BOOL),
    "ExposedPorts": Field(MapOf(EMPTY_STRUCT, "nat.PortSet")),
    "Tty": Field(BOOL), "OpenStdin": Field(BOOL), "StdinOnce": Field(BOOL),
    "Env": Field(STRINGS), "Cmd": Field(StrSlice()),
    "Healthcheck": Field(_HEALTHCHECK),
    "ArgsEscaped": Field(BOOL),           # Windows only; dockerd ignores it on Linux too
    "Image": Field(STRING), "Volumes": Field(MapOf(EMPTY_STRUCT, "map[string]struct {}")),
    "WorkingDir": Field(STRING), "Entrypoint": Field(StrSlice()),
    "NetworkDisabled": _unhonoured(BOOL),
    "MacAddress": Field(STRING),          # helper "details" applies it
    "OnBuild": Field(STRINGS),            # image-build metadata: nothing to do at run time
    "Labels": Field(STRING_MAP), "StopSignal": Field(STRING),
    "StopTimeout": Field(INT), "Shell": Field(StrSlice()),
}

# container.HostConfig with its embedded container.Resources (API v1.44).
HOST_CONFIG_FIELDS: dict[str, Field] = {
    # Resources
    "CpuShares": Field(INT64), "Memory": Field(INT64), "NanoCpus": Field(INT64),
    "CgroupParent": _unhonoured(STRING),
    "BlkioWeight": _unhonoured(UINT16),
    "BlkioWeightDevice": _unhonoured(ListOf(_WEIGHT_DEVICE, "[]*blkiodev.WeightDevice")),
    "BlkioDeviceReadBps": _unhonoured(ListOf(_THROTTLE_DEVICE, "[]*blkiodev.ThrottleDevice")),
    "BlkioDeviceWriteBps": _unhonoured(ListOf(_THROTTLE_DEVICE, "[]*blkiodev.ThrottleDevice")),
    "BlkioDeviceReadIOps": _unhonoured(ListOf(_THROTTLE_DEVICE, "[]*blkiodev.ThrottleDevice")),
    "BlkioDeviceWriteIOps": _unhonoured(ListOf(_THROTTLE_DEVICE, "[]*blkiodev.ThrottleDevice")),
    "CpuPeriod": Field(INT64), "CpuQuota": Field(INT64),
    "CpuRealtimePeriod": _unhonoured(INT64), "CpuRealtimeRuntime": _unhonoured(INT64),
    "CpusetCpus": Field(STRING), "CpusetMems": Field(STRING),
    "Devices": Field(ListOf(_DEVICE_MAPPING, "[]container.DeviceMapping")),   # helper "nsdev"
    "DeviceCgroupRules": Field(STRINGS),                                          # helper "nsdev"
    "DeviceRequests": _unhonoured(ListOf(_DEVICE_REQUEST, "[]container.DeviceRequest")),
    "KernelMemory": _unhonoured(INT64), "KernelMemoryTCP": _unhonoured(INT64),
    "MemoryReservation": Field(INT64), "MemorySwap": Field(INT64),
    "MemorySwappiness": _unhonoured(INT64, -1),
    "OomKillDisable": _unhonoured(BOOL),
    "PidsLimit": Field(INT64),
    "Ulimits": Field(ListOf(_ULIMIT, "[]*units.Ulimit")),
    "CpuCount": _unhonoured(INT64), "CpuPercent": _unhonoured(INT64),
    "IOMaximumIOps": _unhonoured(UINT64), "IOMaximumBandwidth": _unhonoured(UINT64),
    # HostConfig proper
    "Binds": Field(STRINGS), "ContainerIDFile": Field(STRING),   # the CLI writes that file itself
    "LogConfig": Field(Struct("LogConfig", "container.LogConfig", _fields(Type=STRING, Config=STRING_MAP))),
    "NetworkMode": Field(STRING),
    "PortBindings": Field(MapOf(ListOf(_PORT_BINDING, "[]nat.PortBinding"), "nat.PortMap")),
    "RestartPolicy": Field(Struct("RestartPolicy", "container.RestartPolicy",
                                  _fields(Name=STRING, MaximumRetryCount=INT))),
    "AutoRemove": Field(BOOL),
    "VolumeDriver": _unhonoured(STRING, "local"),
    "VolumesFrom": Field(STRINGS),                                    # helper "nsdev"
    "Mounts": Field(ListOf(_MOUNT, "[]mount.Mount")),
    "ConsoleSize": Field(ListOf(Integer("uint"), "[2]uint", length=2)),
    "Annotations": Field(STRING_MAP),     # OCI runtime hints: no runtime reads them here
    "CapAdd": Field(StrSlice()), "CapDrop": Field(StrSlice()),
    "CgroupnsMode": Field(STRING),                                   # helper "nsdev"
    "Dns": Field(STRINGS), "DnsOptions": Field(STRINGS), "DnsSearch": Field(STRINGS),
    "ExtraHosts": Field(STRINGS), "GroupAdd": Field(STRINGS),
    "IpcMode": Field(STRING),                                        # helper "nsdev"
    "Cgroup": _unhonoured(STRING),
    "Links": Field(STRINGS),                                         # helper "details"
    "OomScoreAdj": Field(INT),
    "PidMode": Field(STRING),                                        # helper "nsdev"
    "Privileged": Field(BOOL), "PublishAllPorts": Field(BOOL), "ReadonlyRootfs": Field(BOOL),
    "SecurityOpt": Field(STRINGS),                                   # helper "seccomp"
    "StorageOpt": _unhonoured(STRING_MAP),
    "Tmpfs": Field(STRING_MAP),
    "UTSMode": _unhonoured(STRING),
    "UsernsMode": _unhonoured(STRING),
    "ShmSize": Field(INT64),
    "Sysctls": Field(STRING_MAP),
    "Runtime": _unhonoured(STRING, "runc"),
    "Isolation": _unhonoured(STRING, "default"),
    "MaskedPaths": Field(STRINGS), "ReadonlyPaths": Field(STRINGS),
    "Init": Field(BOOL),
}

_CONFIG_STRUCT = Struct("ContainerConfigWrapper", "container.Config", CONFIG_FIELDS)
_HOST_CONFIG_STRUCT = Struct("HostConfig", "container.HostConfig", HOST_CONFIG_FIELDS)


def unhonoured_fields() -> list[str]:
    """Names ("HostConfig.BlkioWeight", "Healthcheck") of the fields refused unless left at their default."""
    return ([name for name, f in CONFIG_FIELDS.items() if not f.honoured]
            + [f"HostConfig.{name}" for name, f in HOST_CONFIG_FIELDS.items() if not f.honoured])


class _TypeError(Exception):
    """A value does not fit its Go type: the pieces of encoding/json's message."""

    def __init__(self, kind: str, go: str) -> None:
        super().__init__(kind)
        self.kind, self.go = kind, go


def _mismatch(value: Any, go: str) -> _TypeError:
    return _TypeError(json_kind(value), go)


def _decode(value: Any, kind: GoType, struct: str, path: str) -> Any:
    """`value` checked against `kind`; raises InvalidArgument with Go's message.

    `struct` and `path` are what Go names the field by: the innermost struct's
    type name and the dotted JSON path from the top of the request.
    """
    if value is None or isinstance(kind, AnyJSON):
        return value            # null decodes to the zero value in Go
    try:
        return _decode_value(value, kind, struct, path)
    except _TypeError as err:
        raise InvalidArgument(f"json: cannot unmarshal {err.kind} into Go struct field "
                              f"{struct}.{path} of type {err.go}") from None


def _decode_value(value: Any, kind: GoType, struct: str, path: str) -> Any:
    if isinstance(kind, Scalar):
        ok = isinstance(value, bool) if kind.go == "bool" else isinstance(value, str)
        if not ok:
            raise _mismatch(value, kind.go)
        return value
    if isinstance(kind, Integer):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(value, kind.go)
        low, high = _INT_RANGES[kind.go]
        if isinstance(value, float) or not low <= value <= high:
            raise _TypeError(f"number {value}", kind.go)
        return value
    if isinstance(kind, StrSlice):
        # StrSlice tries []string, then string, and reports the second failure.
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) or v is None for v in value):
            return ["" if v is None else v for v in value]
        raise _mismatch(value, "string")
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise _mismatch(value, kind.go)
        if kind.length is not None:
            value = (value + [0] * kind.length)[:kind.length]   # Go fills or drops
        return [_element(v, kind.elem, struct, path) for v in value]
    if isinstance(kind, MapOf):
        if not isinstance(value, dict):
            raise _mismatch(value, kind.go)
        return {k: _element(v, kind.value, struct, path) for k, v in value.items()}
    if isinstance(kind, Struct):
        if not isinstance(value, dict):
            raise _mismatch(value, kind.go)
        if not kind.fields:
            return {}
        return _decode_struct(value, kind, path)
    raise AssertionError(f"unknown schema type {kind!r}")


def _element(value: Any, kind: GoType, struct: str, path: str) -> Any:
    """An array element or map value: null becomes the element type's zero value, as in Go."""
    if value is None and isinstance(kind, (Scalar, Integer)):
        return False if kind.go == "bool" else ("" if isinstance(kind, Scalar) else 0)
    return _decode(value, kind, struct, path)


def _canonical_keys(value: dict[str, Any], fields: dict[str, Field]) -> dict[str, Any]:
    """Keys in the schema's spelling (Go matches names case-insensitively); unknown ones dropped."""
    lower = {name.lower(): name for name in fields}
    result: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in fields else lower.get(key.lower())
        if name is not None and (name not in result or key == name):
            result[name] = item
    return result


def _decode_struct(value: dict[str, Any], kind: Struct, prefix: str) -> dict[str, Any]:
    result = _canonical_keys(value, kind.fields)
    for name, f in kind.fields.items():
        if name in result:
            path = f"{prefix}.{name}" if prefix else name
            result[name] = _decode(result[name], f.type, kind.name, path)
    return result


def decode_struct(value: dict[str, Any], kind: Struct) -> dict[str, Any]:
    """A request object decoded as Go decodes it into `kind` (`docker update`'s UpdateConfig)."""
    return _decode_struct(value, kind, "")


def _is_default(value: Any, f: Field) -> bool:
    return value in (None, 0, "", False, [], {}) or value in f.defaults


def _refuse_unhonoured(values: dict[str, Any], fields: dict[str, Field], prefix: str) -> None:
    for name, f in fields.items():
        if not f.honoured and name in values and not _is_default(values[name], f):
            raise InvalidArgument(f"{prefix}{name} is not supported by Dockyard "
                                  f"(got {json.dumps(values[name])}); remove this option")


def check_create(config: dict[str, Any], host_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Type-check a create request's Config and HostConfig; refuse fields we cannot honour.

    Returns copies with canonical key names and unknown keys dropped. Raises
    InvalidArgument with Go's decoding message or with the refused field's name.
    """
    if not isinstance(config, dict):
        raise InvalidArgument(f"json: cannot unmarshal {json_kind(config)} into Go value "
                              "of type container.ContainerConfigWrapper")
    cfg = _decode_struct(config, _CONFIG_STRUCT, "")
    hc = _decode(host_config, _HOST_CONFIG_STRUCT, "ContainerConfigWrapper", "HostConfig") or {}
    _refuse_unhonoured(cfg, CONFIG_FIELDS, "")
    _refuse_unhonoured(hc, HOST_CONFIG_FIELDS, "HostConfig.")
    return cfg, hc
