"""The test sshd for the link tests, with sessions as clean as the guest's.

The link tests log in as root on this machine, and bash sources ~/.bashrc
even for `bash -c` when sshd starts it. A developer's or CI runner's root
.bashrc can do anything there: with pyenv, `pyenv init -` runs `pyenv
rehash`, which waits up to 60 s for a lock file that a killed shell left
behind; every guest command and the sshfs exec then took over a minute, and
SftpShare's mount checks timed out. The guest's root has no such dotfiles,
so the test sessions get an empty HOME of their own (SetEnv is applied by
sshd after it sets HOME from the password database).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.sshd import RunningSshd, start_sshd


def start_link_sshd(base: Path) -> RunningSshd:
    base = Path(base)
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    return start_sshd(base, extra_config=f'SetEnv HOME="{home}"')
