"""The Dockerfile front end against Debian's dockerd classic builder, in the same test.

Each case builds `FROM scratch` images on dockerd (`DOCKER_BUILDKIT=0`, no RUN, so no
base image is needed) and checks that our parse and expansion give what dockerd made.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from runtime.build.dockerfile import DockerfileError, healthcheck_config, parse_dockerfile
from runtime.build.dockerignore import IgnoreMatcher, kept_paths
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


# A context with ignored and excepted files: comments, globs, **, exceptions inside an
# ignored directory, leading / and ./, escaped brackets, the .dockerignore itself.
DOCKERIGNORE = """# a comment
*.log
!keep.log
**/*.o
!src/gen/keep.o
node_modules
!node_modules/keep
/docs/img
./tmp
.git/
sub/deep
!sub/deep/e.txt
  spaced.txt
weird\\[1\\].txt
?.md
.dockerignore
"""
CONTEXT_FILES = ["a.log", "keep.log", "sub/b.log", "sub/c.txt", "sub/deep/d.txt", "sub/deep/e.txt",
                 "node_modules/x/index.js", "node_modules/keep/k.js", "docs/readme.md", "docs/img/p.png",
                 "tmp/t", "tmpfile", "spaced.txt", "weird[1].txt", "weird1.txt", ".git/config", "src/main.c",
                 "src/main.o", "src/gen/main.o", "src/gen/keep.o", "a.md", "ab.md", "empty/"]


def make_context(root: Path) -> None:
    for name in CONTEXT_FILES:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx\n")
    (root / ".dockerignore").write_text(DOCKERIGNORE)


def saved_paths(dockerd, image: str, under: str) -> set[str]:
    """The paths below `under` in the layers of `image`, from `docker save`."""
    saved = subprocess.run([DOCKER_CLI, "save", image], capture_output=True, timeout=120,
                           env=dockerd.docker_env())
    assert saved.returncode == 0, saved.stderr
    found: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                for member in inner.getmembers():
                    name = member.name.rstrip("/")
                    if name.startswith(under + "/"):
                        found.add(name[len(under) + 1:])
    return found


def test_dockerignore_keeps_what_docker_keeps(dockerd, tmp_path):
    make_context(tmp_path)
    theirs = saved_paths(dockerd, classic_build(dockerd, tmp_path), "ctx")
    matcher = IgnoreMatcher.from_text(DOCKERIGNORE)
    ours = set(kept_paths(tmp_path, matcher))
    # A kept file inside an ignored directory brings its parent directories along.
    ours |= {"/".join(p.split("/")[:i]) for p in ours for i in range(1, p.count("/") + 1)}
    assert ours == theirs
    assert "node_modules/keep/k.js" in ours and "sub/deep/e.txt" in ours and "a.log" not in ours


# Instruction forms whose parse shows in the image config: JSON and its shell-form fallback,
# HEALTHCHECK, ONBUILD triggers kept as written, one-argument instructions, continuations.
FORMS_DOCKERFILE = """FROM scratch
cmd ["a" "b"]
ENTRYPOINT [ "/bin/x", "-c" ]  trailing text
HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 \\
  CMD curl -f http://localhost/ \\
      || exit 1
onbuild  run  echo "$a" \\
  b
ONBUILD COPY --chown=1:2 a b /c/
ONBUILD foo bar
ONBUILD RUN trailing blanks kept   \x20
STOPSIGNAL SIGKILL
USER  me:grp
WORKDIR /w
"""


def test_instruction_forms_match_dockerd(dockerd, tmp_path):
    (tmp_path / "Dockerfile").write_text(FORMS_DOCKERFILE)
    config = dockerd_config(dockerd, tmp_path)
    insts = {i.keyword: i for i in parse_dockerfile(FORMS_DOCKERFILE).stages[0].instructions}
    cmd, entrypoint = insts["CMD"], insts["ENTRYPOINT"]
    assert (cmd.json_form, entrypoint.json_form) == (False, True)
    assert config["Cmd"] == ["/bin/sh", "-c", *cmd.args]
    assert config["Entrypoint"] == entrypoint.args
    assert config["Healthcheck"] == healthcheck_config(insts["HEALTHCHECK"])
    onbuild = [i.onbuild.original for i in parse_dockerfile(FORMS_DOCKERFILE).stages[0].instructions
               if i.keyword == "ONBUILD"]
    assert config["OnBuild"] == onbuild
    assert (config["StopSignal"], config["User"], config["WorkingDir"]) == (
        insts["STOPSIGNAL"].args[0], insts["USER"].args[0], insts["WORKDIR"].args[0])


# Dockerfiles dockerd refuses: where it names a line we must name the same one, and the
# reason must be the same. dockerd 20.10 words the prefix "dockerfile parse error line N:"
# for instruction errors and "failed to parse Dockerfile:" (no line) for lexical ones.
BAD_DOCKERFILES = [
    "FROM scratch\nENV a=1\n\n# c\nFOO bar\n",
    "FROM scratch\nRUN a \\\n  b\nWORKDIR\n",
    "FROM scratch AS 1x\n",
    "FROM scratch\nENV =b\n",
    "FROM scratch\nCOPY --from a b\n",
    "FROM scratch\nCOPY a\n",
    "FROM scratch\nONBUILD ONBUILD RUN x\n",
    "FROM scratch\nHEALTHCHECK --retries=0 CMD x\n",
    "FROM scratch\nSHELL /bin/sh\n",
    "FROM scratch\nLABEL a=b c\n",
    'FROM scratch\nCMD ["a", 1]\n',
    "# escape=x\nFROM scratch\n",
]


@pytest.mark.parametrize("text", BAD_DOCKERFILES)
def test_parse_errors_match_dockerd(dockerd, tmp_path, text):
    (tmp_path / "Dockerfile").write_text(text)
    env = {**dockerd.docker_env(), "DOCKER_BUILDKIT": "0"}
    result = subprocess.run([DOCKER_CLI, "build", "-q", "--network", "none", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    theirs = result.stderr.strip().splitlines()[-1].removeprefix("Error response from daemon: ")
    with pytest.raises(DockerfileError) as caught:
        parse_dockerfile(text)
    ours = str(caught.value)
    if theirs.startswith("failed to parse Dockerfile: "):
        assert caught.value.reason == theirs.removeprefix("failed to parse Dockerfile: ")
    else:
        assert ours.lower() == theirs.lower()
