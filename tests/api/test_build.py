"""`docker build` (classic builder, DOCKER_BUILDKIT=0) and docker-py's images.build against our engine:
the layer cache, options, the JSON stream, and bad input. Where dockerd defines the wording
(a failing RUN, a COPY from outside the context) it builds the same context in the same test."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.support.build_compare import build, built_id, container_count, docker, write_context


@pytest.fixture(scope="module")
def base(agent, test_images) -> str:
    ref = test_images["busybox"]
    r = docker(agent, "pull", "-q", ref)
    assert r.returncode == 0, r.stderr
    return ref


@pytest.fixture(scope="module")
def base_on_dockerd(dockerd, test_images) -> str:
    ref = test_images["busybox"]
    r = docker(dockerd, "pull", "-q", ref)
    assert r.returncode == 0, r.stderr
    return ref


def _app(tmp_path, base: str, extra: str = ""):
    return write_context(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base}\nENV A=1\nCOPY app.txt /app/\nRUN cat /app/app.txt > /copy\n"
                      f"{extra}CMD [\"cat\", \"/copy\"]\n",
        "app.txt": "version 1\n"})


def _steps(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("Step ", " ---> "))]


def test_unchanged_rebuild_uses_the_cache_for_every_step(agent, base, tmp_path):
    ctx = _app(tmp_path, base)
    images_before = len(docker(agent, "images", "-aq").stdout.split())
    first = build(agent, ctx, "-t", "cache-test:1")
    assert first.returncode == 0, first.stderr
    assert "Using cache" not in first.stdout
    # The image a RUN container starts from is no image of its own once the step is over.
    assert len(docker(agent, "images", "-aq").stdout.split()) == images_before + 1
    second = build(agent, ctx, "-t", "cache-test:1")
    assert second.returncode == 0, second.stderr
    # Every step after FROM is taken from the cache, and the image is the same one.
    assert second.stdout.count(" ---> Using cache") == 4
    assert "Running in" not in second.stdout
    assert _steps(first.stdout)[-1] == _steps(second.stdout)[-1]
    r = docker(agent, "run", "--rm", "--network", "none", "cache-test:1")
    assert r.stdout == "version 1\n"


def test_a_changed_source_file_misses_from_its_copy_on(agent, base, tmp_path):
    ctx = _app(tmp_path, base)
    built_id(agent, ctx)
    (ctx / "app.txt").write_text("version 2\n")
    r = build(agent, ctx, "-t", "cache-test:2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" ---> Using cache") == 1          # ENV only
    assert "Running in" in r.stdout
    assert docker(agent, "run", "--rm", "--network", "none", "cache-test:2").stdout == "version 2\n"
    (ctx / "app.txt").chmod(0o600)                             # a mode is content too
    again = build(agent, ctx)
    assert again.stdout.count(" ---> Using cache") == 1


def test_no_cache_runs_every_step(agent, base, tmp_path):
    ctx = _app(tmp_path, base)
    built_id(agent, ctx)
    r = build(agent, ctx, "--no-cache")
    assert r.returncode == 0, r.stderr
    assert "Using cache" not in r.stdout
    assert "Running in" in r.stdout


def test_build_cache_prune_empties_the_cache(agent, base, tmp_path):
    ctx = _app(tmp_path, base, "LABEL prune=me\n")
    built_id(agent, ctx)
    assert "Using cache" in build(agent, ctx).stdout
    r = docker(agent, "builder", "prune", "-f")
    assert r.returncode == 0, r.stderr
    after = build(agent, ctx)
    assert after.returncode == 0, after.stderr
    assert "Using cache" not in after.stdout


def test_several_tags_labels_and_quiet(agent, base, tmp_path):
    ctx = _app(tmp_path, base)
    r = build(agent, ctx, "-t", "multi-tag:a", "-t", "other/multi:b", "--label", "x=1")
    assert r.returncode == 0, r.stderr
    assert "Successfully tagged multi-tag:a" in r.stdout
    assert "Successfully tagged other/multi:b" in r.stdout
    ids = {docker(agent, "image", "inspect", "-f", "{{.Id}}", t).stdout.strip()
           for t in ("multi-tag:a", "other/multi:b")}
    assert len(ids) == 1
    labels = json.loads(docker(agent, "image", "inspect", "-f", "{{json .Config.Labels}}", "multi-tag:a").stdout)
    assert labels == {"x": "1"}
    quiet = build(agent, ctx, "-q", "--label", "x=1")
    assert quiet.stdout.strip() == ids.pop()


def test_failing_run_reports_the_exit_code_and_leaves_no_container(agent, dockerd, base, base_on_dockerd, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nRUN echo about to fail && exit 3\n"})
    before = container_count(agent)
    ours = build(agent, ctx)
    theirs = build(dockerd, ctx)
    assert ours.returncode == theirs.returncode != 0   # the CLI exits with the RUN's code
    message = "The command '/bin/sh -c echo about to fail && exit 3' returned a non-zero code: 3"
    assert message in theirs.stderr
    assert message in ours.stderr
    assert "about to fail" in ours.stdout
    assert container_count(agent) == before


def test_rm_false_keeps_the_build_container(agent, base, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nRUN echo kept > /kept\n"})
    before = container_count(agent)
    r = build(agent, ctx, "--rm=false", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert "Removing intermediate container" not in r.stdout
    assert container_count(agent) == before + 1
    cid = r.stdout.split("Running in ")[1].split()[0]
    assert docker(agent, "rm", cid).returncode == 0


def test_run_containers_join_the_build_network(agent, base, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nRUN ls /sys/class/net > /nets\n"})
    image = built_id(agent, ctx, "--no-cache")   # built with --network none
    nets = docker(agent, "run", "--rm", "--network", "none", image, "cat", "/nets").stdout.split()
    assert nets == ["lo"]
    r = docker(agent, "build", "--no-cache", "-q", "--network", "bridge", str(ctx))
    assert r.returncode == 0, r.stderr
    bridged = docker(agent, "run", "--rm", "--network", "none", r.stdout.strip(), "cat", "/nets").stdout.split()
    assert "eth0" in bridged


def test_pull_option_pulls_the_base_again(agent, base, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\n"})
    plain = build(agent, ctx)
    assert "Pulling from" not in plain.stdout and "Image is up to date" not in plain.stdout
    pulled = build(agent, ctx, "--pull")
    assert pulled.returncode == 0, pulled.stderr
    assert "Image is up to date" in pulled.stdout or "Pulling from" in pulled.stdout


def test_syntax_error_names_its_line(agent, base, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nRUN true\nNOTANINSTRUCTION x\n"})
    r = build(agent, ctx)
    assert r.returncode == 1
    assert "line 3" in r.stderr and "unknown instruction" in r.stderr.lower()


def test_copy_from_outside_the_context_is_refused(agent, dockerd, base, base_on_dockerd, tmp_path):
    (tmp_path / "secret").write_text("outside\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nCOPY ../secret /secret\n"})
    for engine in (agent, dockerd):
        r = build(engine, ctx)
        assert r.returncode == 1
        assert "outside the build context" in r.stderr, (engine, r.stderr)


def test_options_the_builder_cannot_honour_are_refused_by_name(agent, base, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\n"})
    r = build(agent, ctx, "--add-host", "db:10.0.0.1")
    assert r.returncode == 1 and "--add-host" in r.stderr
    r = build(agent, ctx, "--memory", "64m")
    assert r.returncode == 1 and "memory" in r.stderr


def test_docker_py_build_streams_the_image_id(agent, base, tmp_path):
    ctx = _app(tmp_path, base)
    client = agent.client()
    image, logs = client.images.build(path=str(ctx), tag="docker-py-built:1", network_mode="none")
    logs = list(logs)
    assert any("aux" in entry and entry["aux"]["ID"] == image.id for entry in logs)
    assert any(entry.get("stream", "").startswith("Successfully built") for entry in logs)
    assert "docker-py-built:1" in image.tags


@pytest.mark.parametrize("generation", ["v2", "v1"])
def test_compose_build_uses_the_classic_builder(generation, agent, base, tmp_path):
    from tests.support.compose import Compose

    project = write_context(tmp_path / "project", {
        "Dockerfile": f"FROM {base}\nRUN echo composed > /composed\nCMD [\"cat\", \"/composed\"]\n",
        "compose.yaml": f"services:\n  app:\n    build: .\n    image: composed-{generation}:1\n"})
    # Compose v2 builds with Bake/BuildKit unless told to use the engine's classic builder.
    compose = Compose(generation, agent.docker_host, tmp_path / "config", project, f"build{generation}",
                      {"DOCKER_BUILDKIT": "0"})
    compose.run("build", check=True, timeout=300)
    r = docker(agent, "run", "--rm", "--network", "none", f"composed-{generation}:1")
    assert r.stdout == "composed\n", r.stderr


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    from tests.conftest import CACHE_DIR
    from tests.support.registry import start_registry
    from tests.support.test_images import push_test_images

    reg = start_registry(tmp_path_factory.mktemp("registry-build-auth"), auth="basic")
    refs = push_test_images(reg, CACHE_DIR, names=["busybox"])
    yield reg, refs["busybox"]
    reg.stop()


def test_base_image_from_a_registry_that_needs_a_login(agent, auth_registry, tmp_path):
    reg, ref = auth_registry
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {ref}\nRUN echo authed > /a\n"})
    refused = build(agent, ctx)
    assert refused.returncode == 1 and refused.stderr.strip()
    login = agent.docker("login", "-u", reg.username, "--password-stdin", reg.host, input=reg.password + "\n")
    assert login.returncode == 0, login.stderr
    try:
        # The CLI sends its logins in X-Registry-Config; the FROM pull uses the registry's.
        image = built_id(agent, ctx)
    finally:
        agent.docker("logout", reg.host)
    assert docker(agent, "run", "--rm", "--network", "none", image, "cat", "/a").stdout == "authed\n"
    # The same busybox under a second name would turn other tests' `rmi busybox` into an untag.
    assert docker(agent, "rmi", image, ref).returncode == 0


def test_a_context_larger_than_a_buffered_body_builds(agent, base, tmp_path):
    blob = os.urandom(17 * 1024 * 1024)   # over the 16 MiB a buffered request body may hold
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nCOPY big.bin /big.bin\n", "big.bin": blob})
    image = built_id(agent, ctx)
    r = docker(agent, "run", "--rm", "--network", "none", image, "md5sum", "/big.bin")
    assert r.stdout.split()[0] == hashlib.md5(blob).hexdigest()


def test_a_base_for_another_platform_is_refused_by_name(agent, base, tmp_path):
    other = "linux/arm64" if os.uname().machine == "x86_64" else "linux/amd64"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM --platform={other} {base}\nRUN true\n"})
    r = build(agent, ctx)
    assert r.returncode == 1 and f"--platform={other}" in r.stderr
