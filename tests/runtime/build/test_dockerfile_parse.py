"""parse_dockerfile: instruction forms, continuations, directives and errors naming their line.

The expected values and messages are dockerd 20.10's (checked against its classic builder
when these cases were written; tests/runtime/build/test_build_differential.py keeps a live
comparison of the expansion side).
"""

from __future__ import annotations

import pytest

from runtime.build.dockerfile import (
    DockerfileError,
    healthcheck_config,
    parse_dockerfile,
    parse_duration,
    parse_instruction,
    path_words,
)
from runtime.errors import BuildError, InvalidArgument


def only(text: str):
    """The single instruction of the first stage of `FROM scratch\\n` + text."""
    df = parse_dockerfile("FROM scratch\n" + text)
    (inst,) = df.stages[0].instructions
    return inst


# (instruction text, keyword, args, json_form, flags)
FORMS = [
    ("RUN echo hi", "RUN", ["echo hi"], False, {}),
    ('RUN ["echo", "hi"]', "RUN", ["echo", "hi"], True, {}),
    ('run  [ "a" ]   trailing', "RUN", ["a"], True, {}),          # Go's decoder stops after the array
    ('CMD ["a" "b"]', "CMD", ['["a" "b"]'], False, {}),            # not JSON: shell form
    ("CMD [NaN]", "CMD", ["[NaN]"], False, {}),
    ("CMD []", "CMD", [], True, {}),
    ("CMD", "CMD", [], False, {}),
    ("entrypoint [\"/bin/x\", \"-c\"]", "ENTRYPOINT", ["/bin/x", "-c"], True, {}),
    ('SHELL ["/bin/bash", "-c"]', "SHELL", ["/bin/bash", "-c"], True, {}),
    ("COPY --from=build --chown=1:2 a b /d/", "COPY", ["a b /d/"], False, {"from": "build", "chown": "1:2"}),
    ('COPY ["a b", "/d/"]', "COPY", ["a b", "/d/"], True, {}),
    ('COPY "--chown=a b" x y', "COPY", ['"--chown=a b" x y'], False, {}),   # not a flag: no leading --
    ("COPY --chown='a b' x y", "COPY", ["x y"], False, {"chown": "a b"}),
    ("COPY -- --x y", "COPY", ["--x y"], False, {}),
    ("ADD --chown=1 http://x/y /z", "ADD", ["http://x/y /z"], False, {"chown": "1"}),
    ("VOLUME /a /b", "VOLUME", ["/a /b"], False, {}),
    ('VOLUME ["/a", "/b c"]', "VOLUME", ["/a", "/b c"], True, {}),
    ("ENV a=b c=d", "ENV", ["a=b c=d"], False, {}),
    ("ENV a b c", "ENV", ["a b c"], False, {}),
    ('LABEL "x y"=z', "LABEL", ['"x y"=z'], False, {}),
    ("ARG a", "ARG", ["a"], False, {}),
    ("EXPOSE 80 90/udp", "EXPOSE", ["80 90/udp"], False, {}),
    ("WORKDIR /a b", "WORKDIR", ["/a b"], False, {}),
    ("USER  me:grp ", "USER", ["me:grp"], False, {}),
    ("STOPSIGNAL SIGKILL", "STOPSIGNAL", ["SIGKILL"], False, {}),
    ("MAINTAINER Me <m@x>", "MAINTAINER", ["Me <m@x>"], False, {}),
    ("HEALTHCHECK NONE", "HEALTHCHECK", ["NONE"], False, {}),
    ("HEALTHCHECK --interval=5s NONE", "HEALTHCHECK", ["NONE"], False, {"interval": "5s"}),
    ("healthcheck --retries=3 cmd curl -f x", "HEALTHCHECK", ["CMD", "curl -f x"], False, {"retries": "3"}),
    ('HEALTHCHECK CMD ["a", "b"]', "HEALTHCHECK", ["CMD", "a", "b"], True, {}),
    ("ONBUILD RUN echo hi", "ONBUILD", ["RUN echo hi"], False, {}),
]


@pytest.mark.parametrize(("text", "keyword", "args", "json_form", "flags"), FORMS)
def test_instruction_forms(text, keyword, args, json_form, flags):
    inst = only(text + "\n")
    assert (inst.keyword, inst.args, inst.json_form, inst.flags) == (keyword, args, json_form, flags)
    assert inst.line == 2


def test_stages_meta_args_and_from_forms():
    df = parse_dockerfile("ARG BASE=busybox\nARG V\nFROM $BASE AS Build\nRUN x\n"
                          "from --platform=linux/amd64 scratch\nCOPY --from=build /a /b\n")
    assert [a.args for a in df.meta_args] == [["BASE=busybox"], ["V"]]
    first, second = df.stages
    assert (first.base, first.name, first.platform, first.line) == ("$BASE", "build", None, 3)
    assert (second.base, second.name, second.platform, second.line) == ("scratch", None, "linux/amd64", 5)
    assert [i.keyword for i in first.instructions] == ["RUN"]
    assert [i.keyword for i in second.instructions] == ["COPY"]


def test_continuations_comments_and_blank_lines_inside():
    text = ("FROM scratch\n"
            "RUN echo a \\\n"
            "  # a comment inside the continuation\n"
            "\n"
            "   b \\  \n"
            "c\n"
            "   # a comment\n"
            "\n"
            "ENV x=1\n"
            "WORKDIR /a\\\n")        # an escape on the last line of the file: nothing follows
    insts = parse_dockerfile(text).stages[0].instructions
    assert [(i.keyword, i.args, i.line) for i in insts] == [
        ("RUN", ["echo a    b c"], 2), ("ENV", ["x=1"], 9), ("WORKDIR", ["/a"], 10)]
    assert insts[0].original == "RUN echo a    b c"


def test_crlf_and_bom():
    df = parse_dockerfile("\ufeffFROM scratch\r\nENV a=1 \\\r\n b=2\r\n")
    assert df.stages[0].instructions[0].args == ["a=1  b=2"]


@pytest.mark.parametrize(("text", "escape", "syntax", "args"), [
    ("# escape=`\nFROM scratch\nRUN a `\n b\n", "`", "", ["a  b"]),
    ("# syntax=docker/dockerfile:1\n#ESCAPE = `\nFROM scratch\nRUN a `\n b\n", "`", "docker/dockerfile:1",
     ["a  b"]),
    ("# escape=`\nFROM scratch\nRUN a \\\n", "`", "", ["a \\"]),     # \ is plain text now
    # A directive after any other line is a comment: the escape stays a backslash.
    ("\n# escape=`\nFROM scratch\nRUN a `\n", "\\", "", ["a `"]),
    ("# comment\n# escape=`\nFROM scratch\nRUN a `\n", "\\", "", ["a `"]),
    ("# foo=bar\n# escape=`\nFROM scratch\nRUN a `\n", "\\", "", ["a `"]),
    ("FROM scratch\n# escape=`\nRUN a `\n", "\\", "", ["a `"]),
])
def test_parser_directives_only_at_the_top(text, escape, syntax, args):
    df = parse_dockerfile(text)
    assert (df.escape, df.syntax, df.stages[0].instructions[0].args) == (escape, syntax, args)


# (Dockerfile, line named, message after "Dockerfile parse error line N: ")
ERRORS = [
    ("FROM scratch\nFOO bar\n", 2, "unknown instruction: FOO"),
    ("FROM scratch\n\n# c\nRUN a \\\n b\nfoo \\\n bar\n", 6, "unknown instruction: FOO"),
    ("FROM scratch\nENV\n", 2, "ENV requires at least one argument"),
    ("FROM scratch\nENV a\n", 2, "ENV must have two arguments"),
    ("FROM scratch\nLABEL a=b c\n", 2, 'Syntax error - can\'t find = in "c". Must be of the form: name=value'),
    ("FROM scratch\nENV =b\n", 2, "ENV names can not be blank"),
    ("FROM scratch\nARG a b\nARG =x\n", 3, "ARG names can not be blank"),
    ("RUN x\n", 1, "no build stage in current context"),
    ("\n#c\n", 2, "file with no instructions"),
    ("#escape=\\\n# escape=`\nFROM scratch\n", 2, "only one escape parser directive can be used"),
    ("# escape=x\nFROM scratch\n", 1, "invalid escape token 'x' does not match ` or \\"),
    ('FROM scratch\nCMD ["a", 1]\n', 2, "when using JSON array syntax, arrays must be comprised of strings only"),
    ("FROM scratch\nONBUILD ONBUILD RUN x\n", 2, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM scratch\nONBUILD FROM x\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM scratch\nONBUILD maintainer x\n", 2, "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("FROM scratch\nHEALTHCHECK CURL x\n", 2, 'Unknown type "CURL" in HEALTHCHECK (try CMD)'),
    ("FROM scratch\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK NONE takes no arguments"),
    ("FROM scratch\nHEALTHCHECK --retries=0 CMD x\n", 2, "--retries must be at least 1 (not 0)"),
    ("FROM scratch\nHEALTHCHECK --interval=1us CMD x\n", 2, 'Interval "interval" cannot be less than 1ms'),
    ("FROM scratch\nHEALTHCHECK --foo=1 CMD x\n", 2, "Unknown flag: foo"),
    ("FROM scratch\nHEALTHCHECK CMD\n", 2, "Missing command after HEALTHCHECK CMD"),
    ("FROM scratch AS 1x\n", 1, 'invalid name for build stage: "1x", name can\'t start with a number or '
                                "contain symbols"),
    ("FROM scratch as\n", 1, "FROM requires either one or three arguments"),
    ("FROM scratch\nCOPY --foo=1 a b\n", 2, "Unknown flag: foo"),
    ("FROM scratch\nCOPY --from a b\n", 2, "Missing a value on flag: from"),
    ("FROM scratch\nCOPY a\n", 2, "COPY requires at least two arguments, but only one was provided. "
                                  "Destination could not be determined"),
    ("FROM scratch\nADD a\n", 2, "ADD requires at least two arguments, but only one was provided. "
                                 "Destination could not be determined"),
    ("FROM scratch\nSHELL /bin/sh\n", 2, "SHELL requires the arguments to be in JSON form"),
    ("FROM scratch\nSHELL []\n", 2, "SHELL requires at least one argument"),
    ("FROM scratch\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
    ("FROM scratch\nVOLUME\n", 2, "VOLUME requires at least one argument"),
    ('FROM scratch\nVOLUME ["", "a"]\n', 2, "VOLUME specified can not be an empty string"),
    ("FROM scratch\nEXPOSE\n", 2, "EXPOSE requires at least one argument"),
    ("FROM scratch\nSTOPSIGNAL\n", 2, "STOPSIGNAL requires exactly one argument"),
    ("FROM scratch\nRUN --network=none true\n", 2, "Unknown flag: network"),
    ("FROM scratch\nRUN --mount=type=cache,target=/x true\n", 2,
     "the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how "
     "to build images with BuildKit enabled"),
]


@pytest.mark.parametrize(("text", "line", "message"), ERRORS)
def test_errors_name_their_line(text, line, message):
    with pytest.raises(DockerfileError) as caught:
        parse_dockerfile(text)
    assert str(caught.value) == f"Dockerfile parse error line {line}: {message}"
    assert caught.value.line == line
    assert isinstance(caught.value, BuildError) and isinstance(caught.value, InvalidArgument)


def test_onbuild_keeps_the_trigger_as_written_and_parsed():
    inst = only('onbuild  run  --x=1 echo "$a" \\\n  b\n')
    assert inst.onbuild is not None
    # What dockerd stores in the image's OnBuild: the text after ONBUILD, continuations joined.
    assert inst.onbuild.original == 'run  --x=1 echo "$a"   b'
    assert (inst.onbuild.keyword, inst.onbuild.args, inst.onbuild.flags) == ("RUN", ['echo "$a"   b'],
                                                                              {"x": "1"})
    # An unknown trigger is accepted until a child build runs it, as dockerd does...
    assert only("ONBUILD FOO bar\n").onbuild.keyword == "FOO"
    # ...and that child build's parse_instruction refuses it then.
    with pytest.raises(DockerfileError, match="unknown instruction: FOO"):
        parse_instruction("FOO bar")
    with pytest.raises(DockerfileError, match="Unknown flag: x"):
        parse_instruction(inst.onbuild.original)


def test_path_words_and_healthcheck_config():
    assert path_words(only("COPY  a   b\t/c/\n")) == ["a", "b", "/c/"]
    assert path_words(only('COPY ["a b", "c"]\n')) == ["a b", "c"]
    assert healthcheck_config(only("HEALTHCHECK --interval=5s --retries=3 CMD [\"a\",\"b\"]\n")) == {
        "Test": ["CMD", "a", "b"], "Interval": 5_000_000_000, "Retries": 3}
    assert healthcheck_config(only("HEALTHCHECK --timeout=1m30s --start-period=1.5s CMD a b\n")) == {
        "Test": ["CMD-SHELL", "a b"], "Timeout": 90_000_000_000, "StartPeriod": 1_500_000_000}
    assert healthcheck_config(only("HEALTHCHECK NONE\n")) == {"Test": ["NONE"]}


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0), ("5s", 5_000_000_000), ("1m30s", 90_000_000_000), ("1.5h", 5_400_000_000_000),
    ("300ms", 300_000_000), ("2us", 2_000), ("-1s", -1_000_000_000), (".5s", 500_000_000)])
def test_go_durations(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "1s2"])
def test_bad_go_durations(text):
    with pytest.raises(BuildError, match="time: "):
        parse_duration(text)
