"""docker push against registries on 127.0.0.1, through the docker CLI and docker-py.

Round trips (push → rmi → pull gives the same digest, the registry's own API lists
the tags), what a second push and a push into another repository of the same
registry say, every tag of a repository at once, refusals (auth, missing tags), and
dockerd pushing the same image beside ours.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
from urllib.parse import quote

import pytest

from tests.conftest import CACHE_DIR
from tests.support.registry import start_registry
from tests.support.test_images import LAYERED_KEPT, push_test_images

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((DOCKER_MANIFEST, "application/vnd.oci.image.manifest.v1+json"))


@pytest.fixture(scope="module")
def fresh_registry(tmp_path_factory):
    """A registry that holds nothing at first: layers pushed there are really uploaded."""
    reg = start_registry(tmp_path_factory.mktemp("push-registry"))
    yield reg
    reg.stop()


def registry_api(reg, method: str, path: str, token: str = "") -> tuple[int, dict[str, str], bytes]:
    """A request to the registry's own API (Basic or a token of the test token server)."""
    headers = {"Accept": ACCEPT}
    if reg.auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{reg.username}:{reg.password}".encode()).decode()
    elif reg.auth == "token":
        headers["Authorization"] = "Bearer " + token
    conn = http.client.HTTPConnection(reg.host, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def registry_tags(reg, repo: str, token: str = "") -> list[str]:
    status, _, body = registry_api(reg, "GET", f"/v2/{repo}/tags/list", token)
    assert status == 200, body
    return sorted(json.loads(body)["tags"])


def registry_manifest(reg, repo: str, tag: str, token: str = "") -> tuple[str, dict]:
    """(digest, manifest) as the registry serves them; the HEAD digest must agree."""
    status, headers, body = registry_api(reg, "GET", f"/v2/{repo}/manifests/{tag}", token)
    assert status == 200, body
    head_status, head, _ = registry_api(reg, "HEAD", f"/v2/{repo}/manifests/{tag}", token)
    assert head_status == 200 and head["docker-content-digest"] == headers["docker-content-digest"]
    return headers["docker-content-digest"], json.loads(body)


def layer_lines(output: str, status: str) -> list[str]:
    """The layer ids of the CLI's "<id>: <status>" lines."""
    return [line.split(":", 1)[0] for line in output.splitlines() if line.endswith(f": {status}")]


def digest_line(output: str, tag: str) -> tuple[str, int]:
    line = next(x for x in output.splitlines() if x.startswith(f"{tag}: digest: "))
    _, _, digest, _, size = line.split()
    return digest, int(size)


def stream_push(client, repo: str, tag: str | None = None, auth_config: dict | None = None) -> list[dict]:
    return list(client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth_config))


def statuses(lines: list[dict], repo: str) -> list[tuple[str, str]]:
    """(layer id, status) of a push stream, progress left out, `repo` masked, in a stable order."""
    return sorted((m.get("id", ""), m["status"].replace(repo, "REPO")) for m in lines
                  if "status" in m and m["status"] not in ("Pushing", "Waiting"))


def stream_error(lines: list[dict]) -> str:
    errors = [m["errorDetail"]["message"] for m in lines if "errorDetail" in m]
    assert errors, f"the stream reports no error: {lines}"
    return errors[-1]


# --- round trip, repeat, mount --------------------------------------------------------------
def test_push_rmi_pull_gives_the_same_digest(agent, test_images, fresh_registry) -> None:
    source = test_images["layered"]
    target = f"{fresh_registry.host}/rt/layered"
    assert agent.docker("pull", source, timeout=180).returncode == 0
    assert agent.docker("tag", source, f"{target}:v1").returncode == 0
    result = agent.docker("push", f"{target}:v1", timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"The push refers to repository [{target}]" in out
    assert len(layer_lines(out, "Preparing")) == 3
    assert sorted(layer_lines(out, "Pushed")) == sorted(layer_lines(out, "Preparing"))
    digest, size = digest_line(out, "v1")

    assert registry_tags(fresh_registry, "rt/layered") == ["v1"]
    served, manifest = registry_manifest(fresh_registry, "rt/layered", "v1")
    assert served == digest
    assert len(manifest["layers"]) == 3
    inspect = json.loads(agent.docker("image", "inspect", f"{target}:v1").stdout)[0]
    assert f"{target}@{digest}" in inspect["RepoDigests"]
    assert [short for short in layer_lines(out, "Preparing")] == \
        [d[7:19] for d in reversed(inspect["RootFS"]["Layers"])]   # short diff ids, top first

    # Gone from ours entirely, then back from the registry: the same manifest and files.
    assert agent.docker("rmi", f"{target}:v1", source).returncode == 0
    assert agent.docker("image", "inspect", inspect["Id"]).returncode == 1
    pulled = agent.docker("pull", f"{target}:v1", timeout=180)
    assert pulled.returncode == 0, pulled.stderr
    assert f"Digest: {digest}" in pulled.stdout
    assert "Downloaded newer image" in pulled.stdout
    again = json.loads(agent.docker("image", "inspect", f"{target}:v1").stdout)[0]
    assert again["Id"] == inspect["Id"]
    run = agent.docker("run", "--rm", "--network", "none", f"{target}:v1", "cat", f"/{LAYERED_KEPT}")
    assert run.stdout == "kept\n", run.stderr
    assert size == len(registry_api(fresh_registry, "GET", f"/v2/rt/layered/manifests/{digest}")[2])


def test_pushing_again_says_layer_already_exists(agent, test_images, fresh_registry) -> None:
    target = f"{fresh_registry.host}/again/busybox:1"
    assert agent.docker("pull", test_images["busybox"], timeout=180).returncode == 0
    assert agent.docker("tag", test_images["busybox"], target).returncode == 0
    first = agent.docker("push", target, timeout=180)
    assert first.returncode == 0, first.stderr
    second = agent.docker("push", target, timeout=180)
    assert second.returncode == 0, second.stderr
    assert layer_lines(second.stdout, "Layer already exists") == layer_lines(first.stdout, "Preparing")
    assert layer_lines(second.stdout, "Pushed") == []
    assert "Layer already exists" not in first.stdout
    assert digest_line(second.stdout, "1") == digest_line(first.stdout, "1")


def test_retag_into_another_repo_mounts(agent, test_images, tmp_path) -> None:
    with start_registry(tmp_path / "registry") as reg:   # only mount/one will hold the layers
        client = agent.client()
        client.images.pull(test_images["layered"])
        image = client.images.get(test_images["layered"])
        assert image.tag(f"{reg.host}/mount/one", "a") and image.tag(f"{reg.host}/mount/two", "b")
        lines = stream_push(client, f"{reg.host}/mount/one", "a")
        pushed = [m["id"] for m in lines if m.get("status") == "Pushed"]
        assert len(pushed) == 3
        progress = [m for m in lines if m.get("status") == "Pushing"]
        assert {m["id"] for m in progress} == set(pushed)
        for m in progress:
            assert 0 < m["progressDetail"]["current"] <= m["progressDetail"]["total"]
            assert m["progress"]
        aux = [m["aux"] for m in lines if "aux" in m]
        assert len(aux) == 1 and aux[0]["Tag"] == "a"
        assert f"a: digest: {aux[0]['Digest']} size: {aux[0]['Size']}" in [m.get("status") for m in lines]

        mounted = agent.docker("push", f"{reg.host}/mount/two:b", timeout=180)
        assert mounted.returncode == 0, mounted.stderr
        assert sorted(layer_lines(mounted.stdout, "Mounted from mount/one")) == sorted(pushed)
        assert digest_line(mounted.stdout, "b")[0] == aux[0]["Digest"]
        assert registry_tags(reg, "mount/two") == ["b"]


def test_a_name_without_tag_pushes_every_tag(agent, test_images, fresh_registry) -> None:
    repo = f"{fresh_registry.host}/alltags/app"
    client = agent.client()
    client.images.pull(test_images["busybox"])
    image = client.images.get(test_images["busybox"])
    for tag in ("v3", "v2"):
        assert image.tag(repo, tag)
    lines = stream_push(client, repo)
    assert [m["aux"]["Tag"] for m in lines if "aux" in m] == ["v2", "v3"]
    assert sum(1 for m in lines if m.get("status", "").startswith("The push refers")) == 1
    assert registry_tags(fresh_registry, "alltags/app") == ["v2", "v3"]
    assert agent.docker("push", "--all-tags", repo, timeout=180).returncode == 0


# --- refusals -------------------------------------------------------------------------------
def test_missing_tag_or_repository_is_refused_as_dockerd_does(agent, dockerd, test_images,
                                                              fresh_registry) -> None:
    busybox = test_images["busybox"]
    repo = busybox.rsplit(":", 1)[0]
    for engine in (agent, dockerd):
        assert engine.docker("pull", busybox, timeout=180).returncode == 0
    for args in (["push", f"{repo}:no-such-tag"], ["push", f"{fresh_registry.host}/nothing/here"],
                 ["push", "--all-tags", f"{fresh_registry.host}/nothing/here"]):
        ours, theirs = agent.docker(*args), dockerd.docker(*args)
        assert (ours.returncode, ours.stdout, ours.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr), args
        assert ours.returncode == 1


def test_bad_push_requests_are_client_errors(agent, test_images, fresh_registry) -> None:
    repo, tag = f"{fresh_registry.host}/platform/busybox", "1"
    assert agent.docker("pull", test_images["busybox"], timeout=180).returncode == 0
    assert agent.docker("tag", test_images["busybox"], f"{repo}:{tag}").returncode == 0
    arm64 = quote(json.dumps({"os": "linux", "architecture": "arm64"}))
    for path in ("/images/UPPER/push", "/images/busybox/push?tag=bad%20tag",
                 "/images/busybox@sha256:" + "a" * 64 + "/push",
                 f"/images/{repo}/push?tag={tag}&platform={arm64}",
                 f"/images/{repo}/push?tag={tag}&platform=%7Bnot-json"):
        status, _, body = agent.request("POST", path)
        assert status == 400, (path, body)
        assert json.loads(body)["message"]
    amd64 = quote(json.dumps({"os": "linux", "architecture": "amd64"}))
    status, _, body = agent.request("POST", f"/images/{repo}/push?tag={tag}&platform={amd64}")
    assert status == 200 and b'"aux"' in body, body


def test_an_unreachable_registry_is_an_error_in_the_stream(agent, test_images) -> None:
    from tests.support.processes import free_port

    target = f"127.0.0.1:{free_port()}/gone/app:1"     # nothing listens there
    assert agent.docker("pull", test_images["busybox"], timeout=180).returncode == 0
    assert agent.docker("tag", test_images["busybox"], target).returncode == 0
    result = agent.docker("push", target, timeout=180)
    assert result.returncode == 1
    assert "cannot reach registry" in result.stderr and target.split("/")[0] in result.stderr
    assert "The push refers to repository" in result.stdout
    assert agent.docker("rmi", target).returncode == 0


@pytest.fixture(scope="module", params=["basic", "token"])
def auth_registry(request, tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp(f"push-{request.param}"), auth=request.param)
    push_test_images(reg, CACHE_DIR, names=["busybox"])
    yield reg
    reg.stop()


def test_a_registry_refusing_auth_says_so(agent, dockerd, test_images, auth_registry) -> None:
    """Anonymous and wrong-password pushes fail in the stream with dockerd's words."""
    target = f"{auth_registry.host}/team/app"
    for engine in (agent, dockerd):
        assert engine.docker("pull", test_images["busybox"], timeout=180).returncode == 0
        assert engine.docker("tag", test_images["busybox"], f"{target}:1").returncode == 0
    ours, theirs = agent.docker("push", f"{target}:1"), dockerd.docker("push", f"{target}:1")
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr == theirs.stderr
    assert ours.stderr.startswith(("unauthorized: ", "no basic auth credentials"))
    wrong = {"username": auth_registry.username, "password": "wrong"}
    import docker

    reference = docker.DockerClient(base_url=dockerd.host)
    try:
        our_error = stream_error(stream_push(agent.client(), target, "1", wrong))
        their_error = stream_error(stream_push(reference, target, "1", wrong))
    finally:
        reference.close()
    assert our_error == their_error
    assert our_error.startswith("unauthorized: ")


def test_push_with_login(agent, test_images, auth_registry) -> None:
    target = f"{auth_registry.host}/team/login"
    assert agent.docker("pull", test_images["busybox"], timeout=180).returncode == 0
    assert agent.docker("tag", test_images["busybox"], f"{target}:v1").returncode == 0
    login = agent.docker("login", "-u", auth_registry.username, "--password-stdin", auth_registry.host,
                         input=auth_registry.password + "\n")
    assert login.returncode == 0, login.stderr
    try:
        result = agent.docker("push", f"{target}:v1", timeout=180)
    finally:
        agent.docker("logout", auth_registry.host)
    assert result.returncode == 0, result.stderr
    digest, _ = digest_line(result.stdout, "v1")
    token = ""
    if auth_registry.token_server is not None:
        issued = auth_registry.token_server.issued
        assert any({"type": "repository", "name": "team/login", "actions": ["pull", "push"]}
                   in claims["access"] for claims in issued)
        token = auth_registry.token_server.make_token("test", ["repository:team/login:pull"])
    assert registry_tags(auth_registry, "team/login", token) == ["v1"]
    assert registry_manifest(auth_registry, "team/login", "v1", token)[0] == digest
    # A mount needs pull access to the source repository too: asked for with the push.
    assert agent.docker("tag", test_images["busybox"], f"{auth_registry.host}/team/copy:v1").returncode == 0
    agent.docker("login", "-u", auth_registry.username, "--password-stdin", auth_registry.host,
                 input=auth_registry.password + "\n")
    try:
        copied = agent.docker("push", f"{auth_registry.host}/team/copy:v1", timeout=180)
    finally:
        agent.docker("logout", auth_registry.host)
    assert copied.returncode == 0, copied.stderr
    assert layer_lines(copied.stdout, "Mounted from team/login") == layer_lines(result.stdout, "Preparing")


# --- beside dockerd -------------------------------------------------------------------------
def test_push_beside_dockerd(agent, dockerd, test_images, registry) -> None:
    """Both engines push the same pulled image into new repositories of the registry it
    came from: both mount every layer, write the same manifest with the same layer blobs,
    and each engine runs what the other pushed."""
    import docker

    source = test_images["layered"]
    reference = docker.DockerClient(base_url=dockerd.host)
    ours_client = agent.client()
    try:
        pushed: dict[str, list[dict]] = {}
        for side, client in (("ours", ours_client), ("theirs", reference)):
            client.images.pull(source)
            client.images.get(source).tag(f"{registry.host}/side-{side}/layered", "1")
            pushed[side] = stream_push(client, f"{registry.host}/side-{side}/layered", "1")
        # Which repository a layer is mounted from depends on each engine's history of pulls
        # in this session (see test_mount_sources_as_dockerd for the rule itself).
        mounted = {side: [(i, s.split(" from ")[0]) for i, s in statuses(lines, f"side-{side}")]
                   for side, lines in pushed.items()}
        assert mounted["ours"] == mounted["theirs"]
        assert sum(1 for m in pushed["ours"] if m.get("status", "").startswith("Mounted from ")) == 3
        manifests = {side: registry_manifest(registry, f"side-{side}/layered", "1")
                     for side in pushed}
        assert manifests["ours"] == manifests["theirs"]   # digest and manifest
        assert len(manifests["ours"][1]["layers"]) == 3
        # Each engine runs what the other pushed.
        for engine, side in ((dockerd, "ours"), (agent, "theirs")):
            ref = f"{registry.host}/side-{side}/layered:1"
            assert engine.docker("pull", ref, timeout=180).returncode == 0
            run = engine.docker("run", "--rm", "--network", "none", ref, "cat", f"/{LAYERED_KEPT}")
            assert run.stdout == "kept\n", run.stderr
    finally:
        reference.close()


def test_mount_sources_as_dockerd(tmp_path_factory) -> None:
    """Fresh engines with the same history (layered pulled, then busybox, which shares its base
    layer) mount each layer from the same repository: the most recent one that got the blob,
    unless another shares more of the target's path (<side>/other mounts from <side>/layered,
    not from the newer elsewhere-<side>/copy)."""
    import docker

    from tests.support.agent import start_agent
    from tests.support.dockerd import Dockerd

    base = tmp_path_factory.mktemp("mounts")   # short: containerd's socket path must fit
    with contextlib.ExitStack() as stack:
        reg = stack.enter_context(start_registry(base / "registry"))
        theirs = Dockerd(base / "d", ["--bridge", "none", "--iptables=false"])
        stack.callback(theirs.stop)
        ours = start_agent(socket=base / "ours" / "docker.sock", root=base / "ours" / "root")
        stack.callback(ours.stop)
        reference = docker.DockerClient(base_url=theirs.host)
        stack.callback(reference.close)
        refs = push_test_images(reg, CACHE_DIR, names=["busybox", "layered"])
        said: list[list[tuple[str, str]]] = []
        for side, client in (("ours", ours.client()), ("theirs", reference)):
            client.images.pull(refs["layered"])
            client.images.pull(refs["busybox"])
            image = client.images.get(refs["layered"])
            lines = []
            for repo in (f"{side}/layered", f"elsewhere-{side}/copy", f"{side}/other"):
                image.tag(f"{reg.host}/{repo}", "1")
                lines += stream_push(client, f"{reg.host}/{repo}", "1")
            said.append(statuses(lines, side))
        assert said[0] == said[1]
        assert {s for _, s in said[0] if s.startswith("Mounted")} == \
            {"Mounted from busybox", "Mounted from layered", "Mounted from REPO/layered"}
        # <side>/other: <side>/layered shares its first path component, elsewhere-<side>/copy
        # is newer; the likeness wins.
        assert sum(1 for _, s in said[0] if s == "Mounted from REPO/layered") == 6
        assert not [s for _, s in said[0] if "elsewhere" in s and s.startswith("Mounted")]
