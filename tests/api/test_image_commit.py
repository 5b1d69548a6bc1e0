"""`docker commit` through the real docker CLI and docker-py, side by side with dockerd:
the committed image's config, history, parent and events must be the ones dockerd makes."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.side_by_side import Engines, normalised

# Config fields an image carries that do not depend on the engine (Hostname is the container's id).
COMPARED = ("User", "ExposedPorts", "Env", "Cmd", "Healthcheck", "Image", "Volumes", "WorkingDir",
            "Entrypoint", "OnBuild", "Labels", "StopSignal", "Tty", "OpenStdin", "AttachStdout",
            "AttachStderr", "Domainname")


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images):
    return Engines(agent, dockerd, test_images["busybox"])


def _inspect(engine, ref: str) -> dict:
    result = engine.docker("image", "inspect", ref)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def _history(engine, ref: str) -> list[str]:
    result = engine.docker("history", "--no-trunc", "--format",
                           "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}", ref)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _container(engines: Engines, name: str, *run_args: str) -> None:
    engines.cleanup(name)
    for result in engines.each("run", "--network", "none", "--name", name, *run_args, timeout=60):
        assert result.returncode == 0, result.stderr


CHANGES = [
    ["ENV A=1 B=$FOO", "CMD echo hi", "EXPOSE 80 53/udp 9000-9001", 'LABEL a=b "c d"=e',
     "USER nobody", "WORKDIR rel", 'VOLUME /data ["/x"]'],
    ['ENTRYPOINT ["/bin/sh"]'],
    ["ENTRYPOINT echo x", "ONBUILD RUN echo hi", "HEALTHCHECK --interval=5s --retries=2 CMD true"],
    ["HEALTHCHECK NONE", 'VOLUME ["/a", "/b"]', "ENV X Y Z", "WORKDIR /abs/../x", "ENV FOO=changed"],
    ['CMD ["a"]', 'ENTRYPOINT ["b"]', "LABEL x=${FOO:-no} y=${NOPE:-dflt} z='$FOO'"],
    ['ENTRYPOINT []', 'HEALTHCHECK --timeout=3s CMD ["true", "x"]', "ONBUILD ADD . /app"],
    ["WORKDIR a b", "USER 1000:1000", "EXPOSE 8080/udp", "ENV PATH=/opt:$PATH"],
]


@pytest.mark.parametrize("changes", CHANGES, ids=[f"changes{i}" for i in range(len(CHANGES))])
def test_commit_config_and_history_match_dockerd(engines: Engines, changes: list[str]) -> None:
    _container(engines, "commit-src", "-e", "FOO=bar", "-w", "/tmp", engines.image,
               "sh", "-c", "echo hi > /f && rm /etc/group")
    args = [a for c in changes for a in ("-c", c)]
    outcome = engines.compare("commit", "-m", "a message", "-a", "Someone <s@x>", *args,
                              "commit-src", "committed:v1")
    assert outcome.code == 0
    ours, theirs = _inspect(engines.ours, "committed:v1"), _inspect(engines.reference, "committed:v1")
    for key in COMPARED:
        assert ours["Config"].get(key) == theirs["Config"].get(key), key
    for key in ("Parent", "Comment", "Author", "Architecture", "Os", "RepoTags"):
        assert ours[key] == theirs[key], key
    assert ours["Container"] == engines.ours.docker("inspect", "-f", "{{.Id}}", "commit-src").stdout.strip()
    assert len(ours["RootFS"]["Layers"]) == len(theirs["RootFS"]["Layers"]) == 2
    ours_history, theirs_history = _history(engines.ours, "committed:v1"), _history(engines.reference, "committed:v1")
    strip_id = [[row.split("|", 1)[1] for row in rows] for rows in (ours_history, theirs_history)]
    assert strip_id[0] == strip_id[1]
    # The commit's row has the image's id, the next its parent's (busybox), as dockerd shows.
    for rows, engine in ((ours_history, engines.ours), (theirs_history, engines.reference)):
        assert rows[0].split("|")[0] == _inspect(engine, "committed:v1")["Id"]
        assert rows[1].split("|")[0] == _inspect(engine, engines.image)["Id"]
    # The image holds the container's file changes, and only those (not the runtime's
    # /etc/hosts & co.), as dockerd's does.
    files = engines.compare("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh",
                            "committed:v1", "-c", "cat /f; test -e /etc/group || echo gone")
    assert files.out == "hi\ngone\n"
    engines.cleanup("commit-src")
    for engine in (engines.ours, engines.reference):
        engine.docker("rmi", "committed:v1")


@pytest.mark.parametrize("change", ["RUN x", "ENV", "bogus", "ONBUILD ONBUILD RUN x", "EXPOSE abc",
                                    "ONBUILD FROM x", "LABEL", "WORKDIR",
                                    "HEALTHCHECK --interval=1ns CMD true", "HEALTHCHECK WHAT true"])
def test_bad_changes_are_refused_as_dockerd_refuses_them(engines: Engines, change: str) -> None:
    _container(engines, "commit-bad", engines.image, "true")
    outcome = engines.compare("commit", "-c", change, "commit-bad", "never:made")
    assert outcome.code == 1 and outcome.error
    assert engines.ours.docker("image", "inspect", "never:made").returncode == 1
    engines.cleanup("commit-bad")


def test_an_unchanged_container_commits_an_empty_layer(engines: Engines) -> None:
    _container(engines, "commit-same", engines.image, "true")
    engines.compare("commit", "commit-same", "unchanged")
    ours, theirs = _inspect(engines.ours, "unchanged"), _inspect(engines.reference, "unchanged")
    base = _inspect(engines.ours, engines.image)
    assert ours["RootFS"]["Layers"] == theirs["RootFS"]["Layers"] == base["RootFS"]["Layers"]
    strip = [[r.split("|", 1)[1] for r in _history(e, "unchanged")] for e in (engines.ours, engines.reference)]
    assert strip[0] == strip[1] and strip[0][0] == "true|0B|"
    engines.cleanup("commit-same")
    for engine in (engines.ours, engines.reference):
        engine.docker("rmi", "unchanged")
    # A container never started has changed nothing either.
    engines.cleanup("commit-created")
    for engine in (engines.ours, engines.reference):
        assert engine.docker("create", "--network", "none", "--name", "commit-created", engines.image,
                             "true").returncode == 0
    engines.compare("commit", "commit-created", "never-started")
    layers = [_inspect(e, "never-started")["RootFS"]["Layers"] for e in (engines.ours, engines.reference)]
    assert layers[0] == layers[1] == base["RootFS"]["Layers"]
    engines.cleanup("commit-created")
    for engine in (engines.ours, engines.reference):
        engine.docker("rmi", "never-started")


def _actions(engine, name: str, since: float) -> list[str]:
    result = engine.docker("events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                           "--filter", f"container={name}", "--format", "{{.Action}}")
    assert result.returncode == 0, result.stderr
    return [a for a in result.stdout.split() if a in ("pause", "unpause", "commit")]


@pytest.mark.parametrize("pause", [True, False])
def test_commit_of_a_running_container_pauses_it_unless_told(engines: Engines, pause: bool) -> None:
    engines.cleanup("commit-run")
    for engine in (engines.ours, engines.reference):
        assert engine.docker("run", "-d", "--network", "none", "--name", "commit-run", engines.image,
                             "sh", "-c", "echo running > /state; sleep 300").returncode == 0
    since = time.time()
    extra = [] if pause else ["--pause=false"]
    engines.compare("commit", *extra, "commit-run", "from-running")
    assert _actions(engines.ours, "commit-run", since) == _actions(engines.reference, "commit-run", since)
    assert engines.ours.docker("inspect", "-f", "{{.State.Status}}", "commit-run").stdout.strip() == "running"
    out = engines.ours.docker("run", "--rm", "--network", "none", "from-running", "cat", "/state")
    assert out.stdout == "running\n"
    engines.cleanup("commit-run")
    for engine in (engines.ours, engines.reference):
        engine.docker("rmi", "from-running")


def test_docker_py_commit_with_conf_and_changes(engines: Engines) -> None:
    _container(engines, "commit-py", "-e", "KEEP=1", engines.image, "sh", "-c", "touch /py")
    import docker

    results = []
    for engine in (engines.ours, engines.reference):
        client = docker.DockerClient(base_url=getattr(engine, "docker_host", None) or engine.host,
                                     timeout=60)
        try:
            c = client.containers.get("commit-py")
            image = c.commit("pycommit", "t", message="py", author="py-author",
                             changes=["ENV ADDED=2", "EXPOSE 7000"], conf={"Cmd": ["echo", "conf"]})
            attrs = client.images.get("pycommit:t").attrs
            assert image.id == attrs["Id"]
            results.append({k: attrs["Config"].get(k) for k in COMPARED} |
                           {"Comment": attrs["Comment"], "Author": attrs["Author"]})
            client.images.remove("pycommit:t")
        finally:
            client.close()
    assert results[0] == results[1]
    engines.cleanup("commit-py")


def test_commit_errors_match_dockerd(engines: Engines) -> None:
    _container(engines, "commit-err", engines.image, "true")
    for args in (["no-such-container", "x"], ["commit-err", "bad::tag"], ["commit-err", "UPPER"]):
        ours, theirs = engines.each("commit", *args)
        assert ours.returncode == theirs.returncode == 1
        assert normalised(ours).error == normalised(theirs).error or \
            ours.stderr.strip() == theirs.stderr.strip(), (ours.stderr, theirs.stderr)
    engines.cleanup("commit-err")


def test_an_image_with_a_committed_child_is_removed_as_dockerd_removes_it(engines: Engines) -> None:
    """The parent of a commit: by name it is only untagged; by id it cannot be deleted while
    the child exists; once the child is gone it can."""
    for engine in (engines.ours, engines.reference):
        engine.docker("rmi", "-f", "parent-img:1", "child-img:1")
        assert engine.docker("tag", engines.image, "parent-img:1").returncode == 0
    _container(engines, "commit-parent", "parent-img:1", "sh", "-c", "echo child > /child")
    engines.compare("commit", "commit-parent", "child-img:1")
    engines.cleanup("commit-parent")
    # A second name, so that removing the parent by id must delete rather than untag.
    for engine in (engines.ours, engines.reference):
        engine.docker("tag", "parent-img:1", "parent-img:2")
    parent_id = _inspect(engines.ours, "parent-img:1")["Id"]
    by_id = engines.compare("rmi", "-f", parent_id)
    assert by_id.code == 1 and "dependent child images" in by_id.error
    untag = engines.compare("rmi", "parent-img:2")
    assert untag.out == "Untagged: parent-img:2\n"
    engines.compare("rmi", "child-img:1")
    engines.compare("rmi", "parent-img:1")
    assert engines.ours.docker("image", "inspect", engines.image).returncode == 0
