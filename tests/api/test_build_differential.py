"""Dockerfiles built by ours and by Debian's dockerd (classic builder) in the same test.

Each case is a build context that exercises some of the instructions and options;
both engines build it with `DOCKER_BUILDKIT=0 docker build --network none`, from the
same base image in the test registry, and the image configs (Cmd, Entrypoint, Env,
WorkingDir, User, ExposedPorts, Labels, Volumes, Healthcheck, StopSignal, Shell,
OnBuild) and file trees (paths, types, modes, owners, link targets, content hashes)
must be the same.
"""

from __future__ import annotations

import difflib
import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.build_compare import built_id, docker, file_tree, image_config, layer_count, write_context


def _tar_gz(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o640, 123, 45, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("inner/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../a.txt"
        tar.addfile(link)
    return gzip.compress(buf.getvalue(), mtime=0)


CASES: dict[str, dict[str, Any]] = {
    "config-instructions": {
        "files": {"Dockerfile": """\
# comments and continuations
FROM {base}
ARG VERSION=1.0
ARG FROM_CLI
ENV APP_HOME=/srv/app \\
    GREETING="hello world" VERSION_SEEN=$VERSION
ENV LEGACY value with spaces
LABEL org.example.version="${{VERSION}}" multi="a b" from.cli=$FROM_CLI
EXPOSE 80 8000-8002/udp 443/tcp
VOLUME ["/data", "/cache"]
VOLUME /logs
WORKDIR $APP_HOME
WORKDIR sub
USER nobody:nogroup
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=4 CMD wget -q -O- localhost || exit 1
SHELL ["/bin/sh", "-ec"]
CMD echo $GREETING
ENTRYPOINT ["/bin/sh", "-c"]
ONBUILD RUN echo triggered > /onbuild
ONBUILD COPY . /ctx
"""},
        "args": ["--build-arg", "FROM_CLI=cli", "--label", "built.by=test", "--label", "zz=last"],
    },
    "files-and-run": {
        "files": {
            "Dockerfile": """\
FROM {base}
RUN true
WORKDIR /app
COPY a.txt b.txt ./
COPY dir /app/dir/
COPY . /whole-context/
COPY --chown=nobody:nogroup a.txt /owned/by-name
COPY --chown=1234:5678 dir /owned/by-number
COPY link.txt /app/
ADD archive.tar.gz /unpacked/
ADD plain.txt /added/plain.txt
RUN mkdir -p /made && echo made > /made/file && chmod 0750 /made && ln -s /made/file /made/link \\
    && rm /etc/group && chmod 0700 /home && touch /app/touched
RUN ["/bin/sh", "-c", "echo exec form > /exec"]
WORKDIR /app
""",
            "a.txt": "alpha\n", "b.txt": "beta\n", "dir/one": "1\n", "dir/sub/two": "2\n",
            "dir/ignored.log": "dropped by .dockerignore\n", "plain.txt": "plain\n",
            "archive.tar.gz": _tar_gz({"a.txt": b"from the tar\n", "inner/b.txt": b"inner\n"}),
            "dir/keep.log": "kept by an exception\n", "private/hidden": "x\n", "private/public.txt": "y\n",
            ".dockerignore": "**/*.log\n!dir/keep.log\nprivate\n!private/public.txt\n",
        },
        "symlinks": {"link.txt": "a.txt"},
    },
    "multi-stage": {
        "files": {"Dockerfile": """\
ARG BASE={base}
FROM $BASE AS builder
RUN mkdir /out && echo built > /out/artifact && chmod 0600 /out/artifact
FROM ${{BASE}} AS second
COPY --from=builder /out/artifact /second-copy
ENV STAGE=second
FROM second
COPY --from=0 /out /from-index
COPY --from=builder /out/* /globbed/
LABEL final=yes
FROM {base} AS unused-after-target
RUN echo never > /never
"""},
        "args": ["--target", "second"],
    },
    "scratch-and-image-source": {
        "files": {"Dockerfile": """\
FROM scratch
COPY --from={base} / /
COPY hello /hello
CMD ["/bin/sh"]
""", "hello": "hi\n"},
    },
    "other-dockerfile-and-escape": {
        "files": {"build/Other.dockerfile": """\
# escape=`
FROM {base}
RUN echo one `
    two > /continued
COPY ["with space.txt", "/with space.txt"]
ENV PATH_WITH_BACKSLASH=C:\\dir
"""},
        "extra_files": {"with space.txt": "spaced\n"},
        "args": ["-f", "{ctx}/build/Other.dockerfile"],
    },
    "platform-of-the-engine": {
        "files": {"Dockerfile": """\
FROM --platform=linux/amd64 {base}
RUN echo same platform > /platform
"""},
    },
    "proxy-args": {
        "files": {"Dockerfile": """\
FROM {base}
ARG http_proxy
RUN echo "proxy=$http_proxy https=$HTTPS_PROXY" > /proxies
"""},
        "args": ["--build-arg", "http_proxy=http://declared:3128", "--build-arg", "HTTPS_PROXY=http://undeclared:1"],
    },
}


@pytest.fixture(scope="module")
def base_on_both(agent, dockerd, test_images) -> str:
    ref = test_images["busybox"]
    for engine in (agent, dockerd):
        r = docker(engine, "pull", "-q", ref)
        assert r.returncode == 0, r.stderr
    return ref


def _context(tmp_path: Path, case: dict[str, Any], base: str) -> Path:
    files = {name: (content.format(base=base) if isinstance(content, str) and "Dockerfile" in name
                    or name.endswith(".dockerfile") else content)
             for name, content in case["files"].items()}
    files.update(case.get("extra_files", {}))
    ctx = write_context(tmp_path / "ctx", files)
    for name, target in case.get("symlinks", {}).items():
        (ctx / name).symlink_to(target)
    return ctx


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_image_as_dockerd(name, agent, dockerd, base_on_both, tmp_path):
    case = CASES[name]
    ctx = _context(tmp_path, case, base_on_both)
    args = [a.format(ctx=ctx) for a in case.get("args", [])]
    ours = built_id(agent, ctx, *args)
    theirs = built_id(dockerd, ctx, *args)
    assert image_config(agent, ours) == image_config(dockerd, theirs)
    assert layer_count(agent, ours) == layer_count(dockerd, theirs)
    ours_tree, theirs_tree = file_tree(agent, ours), file_tree(dockerd, theirs)
    assert ours_tree == theirs_tree, "\n".join(difflib.unified_diff(theirs_tree, ours_tree, "dockerd", "ours",
                                                                   lineterm=""))


def test_onbuild_triggers_run_in_the_child_as_dockerd(agent, dockerd, base_on_both, tmp_path):
    parent = write_context(tmp_path / "parent", {"Dockerfile": f"""\
FROM {base_on_both}
ONBUILD RUN echo triggered > /onbuild
ONBUILD COPY payload /payload
ONBUILD ENV FROM_TRIGGER=1
"""})
    child = write_context(tmp_path / "child", {"Dockerfile": "FROM onbuild-parent:test\nCMD [\"true\"]\n",
                                                "payload": "payload\n"})
    results = []
    for engine in (agent, dockerd):
        built_id(engine, parent, "-t", "onbuild-parent:test")
        image = built_id(engine, child)
        results.append((image_config(engine, image), file_tree(engine, image)))
    assert results[0] == results[1]
    assert results[0][0]["OnBuild"] is None   # triggers run once, not inherited


def test_proxy_args_stay_out_of_history_unless_declared(agent, dockerd, base_on_both, tmp_path):
    ctx = _context(tmp_path, CASES["proxy-args"], base_on_both)
    histories = []
    for engine in (agent, dockerd):
        image = built_id(engine, ctx, *CASES["proxy-args"]["args"])
        r = docker(engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        histories.append(r.stdout)
    for history in histories:
        assert "http://declared:3128" in history
        assert "undeclared" not in history
