"""HostConfig.SecurityOpt: what `--security-opt` asks for, parsed as dockerd parses it.

Accepted, as dockerd accepts them:
  * `seccomp=unconfined`, `seccomp=builtin`, `seccomp=<profile JSON>` (the docker
    CLI reads `seccomp=FILE` and sends the file's JSON inline);
  * `no-new-privileges`, `no-new-privileges=<bool>` (off unless asked);
  * `label=disable` / `label:disable` / `disable`, and `apparmor=unconfined`: this
    engine applies neither SELinux labels nor AppArmor, so these are honoured as is.

Anything else is refused by name: other `label=` values and AppArmor profiles
(current dockerd also refuses a profile on hosts without AppArmor), and
unknown keys with dockerd's own "invalid --security-opt" messages.
`--privileged` containers get no seccomp filter, whatever the options say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import InvalidArgument
from ..spec import BUILTIN_SECCOMP_PROFILE, SeccompPolicy
from .seccomp_profile import parse_profile

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True)
class SecurityOptions:
    """The parsed options; `seccomp_profile` None means unconfined."""

    seccomp_profile: str | None = BUILTIN_SECCOMP_PROFILE
    no_new_privileges: bool = False

    def seccomp_policy(self, capabilities: tuple[str, ...], privileged: bool) -> SeccompPolicy | None:
        """The container's filter, its capability conditions resolved against `capabilities`."""
        if privileged or self.seccomp_profile is None:
            return None
        return SeccompPolicy(profile=self.seccomp_profile, capabilities=tuple(capabilities))


def _split(opt: str) -> tuple[str, str]:
    # dockerd splits on "=", and still accepts the deprecated ":" separator.
    for sep in ("=", ":"):
        if sep in opt:
            key, _, value = opt.partition(sep)
            return key, value
    raise InvalidArgument(f'invalid --security-opt 1: "{opt}"')


def _seccomp(value: str) -> str | None:
    if value == "unconfined":
        return None
    if value in ("", BUILTIN_SECCOMP_PROFILE):
        return BUILTIN_SECCOMP_PROFILE
    # Validates now (400 at create) rather than failing the start later.
    return value if parse_profile(value) is not None else None


def parse_security_options(opts: Any) -> SecurityOptions:
    """HostConfig.SecurityOpt to SecurityOptions; InvalidArgument names any option refused."""
    if opts is None:
        return SecurityOptions()
    if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
        raise InvalidArgument("json: cannot unmarshal SecurityOpt: it must be a list of strings")
    seccomp: str | None = BUILTIN_SECCOMP_PROFILE
    no_new_privileges = False
    for opt in opts:
        if opt == "no-new-privileges":
            no_new_privileges = True
            continue
        if opt == "disable":
            continue    # label disabling: there are no labels here to disable
        key, value = _split(opt)
        if key == "seccomp":
            seccomp = _seccomp(value)
        elif key == "no-new-privileges":
            if value in _TRUE:
                no_new_privileges = True
            elif value in _FALSE:
                no_new_privileges = False
            else:
                raise InvalidArgument(f'invalid --security-opt 2: "{opt}"')
        elif key == "label":
            if value != "disable":
                raise InvalidArgument(f'security option "{opt}" is not supported: this engine '
                                      "does not apply SELinux labels (only label=disable)")
        elif key == "apparmor":
            if value != "unconfined":
                raise InvalidArgument(f"AppArmor is not supported on this host, but the profile "
                                      f"'{value}' was specified (--security-opt {opt})")
        else:
            raise InvalidArgument(f'invalid --security-opt 2: "{opt}"')
    return SecurityOptions(seccomp_profile=seccomp, no_new_privileges=no_new_privileges)


def check_host_config(host_config: dict[str, Any], capabilities: tuple[str, ...]) -> SecurityOptions:
    """Parse SecurityOpt at create; a custom profile is compiled now, so libseccomp's own
    refusals are a 400 at create too (and the start finds it compiled).

    As dockerd, a container sharing the host's pid or ipc namespace, or a privileged
    one, is recorded with `label=disable` unless it names a label itself.
    """
    from .seccomp_filter import program_for

    options = parse_security_options(host_config.get("SecurityOpt"))
    opts = list(host_config.get("SecurityOpt") or [])
    shares_host = host_config.get("PidMode") == "host" or host_config.get("IpcMode") == "host"
    if (host_config.get("Privileged") or shares_host) and not any(
            _split(o)[0] == "label" for o in opts if o not in ("no-new-privileges", "disable")):
        host_config["SecurityOpt"] = [*opts, "label=disable"]
    policy = options.seccomp_policy(capabilities, bool(host_config.get("Privileged")))
    if policy is not None and policy.profile != BUILTIN_SECCOMP_PROFILE:
        program_for(policy, capabilities)
    return options
