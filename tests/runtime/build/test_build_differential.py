"""The Dockerfile front end against Debian's dockerd classic builder, in the same test.

Each case builds `FROM scratch` images on dockerd (`DOCKER_BUILDKIT=0`, no RUN, so no
base image is needed) and checks that our parse and expansion give what dockerd made.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runtime.build.dockerfile import parse_dockerfile
from runtime.build.shell_words import expand_word, parse_arg_defaults, parse_key_values
from tests.support.agent import DOCKER_CLI

# Quotes, escapes, every ${} form dockerd 20.10 knows, ENV k=v on several lines and in the
# legacy form, a LABEL key with spaces, ARG defaults and a meta ARG re-declared in the stage.
EXPANSION_DOCKERFILE = r"""
ARG META=meta-default
ARG UNUSED
FROM scratch
ARG META
ARG A=alpha B="b e t a" C
ARG D=${A:-x}-${C:-unset}-${C:+set}
ENV E1=$A E2="${B}" E3='$A' E4=\$A E5="a\"b" E6=a\ b E7=${A:+plus} E8=${NOPE:-dflt}
ENV E9=${NOPE:+x} E10=$META E11=$D E12="${A:-q q}" E13=${B:+$A} E14=pre${A}post E15=$1 E16=$ E17=a$
ENV E18='x'"y"z E19="a\b" E20='a\b' E21=${NOPE:-${A:+nested}} E22="multi \
   line" E23=$A-$B E24="\$A \x"
# a comment between instructions
ENV legacy  spaced   value "q"  \$A
ENV  M1=1 M2=$M1 M3=${M1}x
ENV M4=$M2 M1=changed M5=$M1
LABEL "com.example.label with space"="v a l" simple=s esc=a\\b dollar=\$A braces="${A}" \
      multi="line \
 continued"
LABEL legacyk legacy  value $A
ENV META=$META
"""

BACKTICK_DOCKERFILE = """# escape=`
FROM scratch
ARG P=c:\\path
ENV W1=$P W2=a`$P W3="q`"q" W4=x` y W5='`' `
    W6=c:\\dir\\
LABEL win="c:\\x`\\y" tick=a``b
"""


def classic_build(dockerd, context: Path) -> str:
    """Build `context` with dockerd's classic builder; the image id."""
    env = {**dockerd.docker_env(), "DOCKER_BUILDKIT": "0"}
    result = subprocess.run([DOCKER_CLI, "build", "-q", "--network", "none", str(context)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def dockerd_config(dockerd, context: Path) -> dict:
    image = classic_build(dockerd, context)
    inspected = dockerd.docker("image", "inspect", image)
    assert inspected.returncode == 0, inspected.stderr
    return json.loads(inspected.stdout)[0]["Config"]


def our_env_and_labels(text: str) -> tuple[list[str], dict[str, str]]:
    """ENV, ARG and LABEL run as the classic builder runs them, on our parse and expansion.

    Each instruction expands with the environment from before it (ENV over build ARGs);
    a stage's ARG without a default takes the meta ARG's value.
    """
    df = parse_dockerfile(text)
    esc = df.escape
    meta: dict[str, str | None] = {}
    for inst in df.meta_args:
        for name, default in parse_arg_defaults(inst.args, esc):
            scope = {k: v for k, v in meta.items() if v is not None}
            meta[name] = expand_word(default, scope, esc) if default is not None else None
    args: dict[str, str | None] = {}
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    for inst in df.stages[0].instructions:
        scope = {**{k: v for k, v in args.items() if v is not None}, **env}
        if inst.keyword == "ARG":
            for name, default in parse_arg_defaults(inst.args, esc):
                args[name] = expand_word(default, scope, esc) if default is not None else meta.get(name)
        elif inst.keyword in ("ENV", "LABEL"):
            target = env if inst.keyword == "ENV" else labels
            for key, value in parse_key_values(inst.args, inst.keyword, esc):
                target[expand_word(key, scope, esc)] = expand_word(value, scope, esc)
    return [f"{k}={v}" for k, v in env.items()], labels


@pytest.mark.parametrize("text", [EXPANSION_DOCKERFILE, BACKTICK_DOCKERFILE], ids=["backslash", "backtick"])
def test_env_and_labels_match_dockerd(dockerd, tmp_path, text):
    (tmp_path / "Dockerfile").write_text(text)
    config = dockerd_config(dockerd, tmp_path)
    # dockerd adds a default PATH to an image FROM scratch; that is the builder's business.
    theirs_env = [e for e in config["Env"] if not e.startswith("PATH=")]
    ours_env, ours_labels = our_env_and_labels(text)
    assert ours_env == theirs_env
    assert ours_labels == config["Labels"]
    assert len(ours_env) > 5 and len(ours_labels) > 1
