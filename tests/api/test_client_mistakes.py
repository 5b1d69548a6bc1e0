"""Client mistakes get dockerd's 4xx answer, side by side with Debian's dockerd.

The same malformed request goes to both engines over the API (version 1.41, the
newest the reference dockerd 20.10 speaks) and the two answers must agree:
wrong JSON types in exec, start, volume and login bodies, bad query values,
malformed image references. Where dockerd itself answers 500 for a client's
mistake (a non-numeric `t` on stop, a login body of the wrong shape), ours must
answer 400 instead; those cases say so.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.agent import http_request

API = "/v1.41"


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"docker failed ({result.returncode}): {result.args}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def running(agent, dockerd, test_images) -> Iterator[dict[str, tuple[Any, str, str]]]:
    """{"ours"|"dockerd": (engine, container name, a created exec id)}: a sleeping busybox on each."""
    ref = test_images["busybox"]
    engines: dict[str, tuple[Any, str, str]] = {}
    for key, engine in (("ours", agent), ("dockerd", dockerd)):
        name = f"mistakes-{uuid.uuid4().hex[:8]}"
        ok(engine.docker("pull", ref, timeout=180))
        ok(engine.docker("run", "-d", "--network", "none", "--name", name, ref, "sleep", "600"))
        status, _, data = http_request(engine.socket, "POST", f"{API}/containers/{name}/exec",
                                       json.dumps({"Cmd": ["true"]}).encode(),
                                       {"Content-Type": "application/json"})
        assert status == 201, data
        engines[key] = (engine, name, json.loads(data)["Id"])
    yield engines
    for engine, name, _ in engines.values():
        engine.docker("rm", "-f", name)


def answer(engines: dict[str, tuple[Any, str, str]], key: str, method: str, path: str,
           body: Any = None) -> tuple[int, str]:
    """(status, message) of one request to one engine; NAME and EXEC in `path` are filled in."""
    engine, name, exec_id = engines[key]
    data = None if body is None else json.dumps(body).encode()
    status, _, raw = http_request(engine.socket, method,
                                  API + path.replace("NAME", name).replace("EXEC", exec_id), data,
                                  {"Content-Type": "application/json"} if data is not None else {})
    message = json.loads(raw).get("message", "") if raw.strip() else ""
    return status, message.replace(name, "NAME").replace(exec_id, "EXEC")


# Requests both engines answer with the same 4xx and the same message.
SAME_ANSWER = [
    ("POST", "/containers/NAME/exec", {"Cmd": 5}),
    ("POST", "/containers/NAME/exec", {"Cmd": "true"}),
    ("POST", "/containers/NAME/exec", {"Cmd": [1]}),
    ("POST", "/containers/NAME/exec", {"Cmd": ["true"], "Env": "x"}),
    ("POST", "/containers/NAME/exec", {"Cmd": ["true"], "Tty": "yes"}),
    ("POST", "/containers/NAME/exec", {"Cmd": ["true"], "User": 0}),
    ("POST", "/containers/NAME/exec", {"Cmd": ["true"], "Privileged": []}),
    ("POST", "/containers/NAME/exec", []),
    ("POST", "/containers/NAME/exec", {}),
    ("POST", "/exec/EXEC/start", {"Detach": "x"}),
    ("POST", "/exec/EXEC/start", {"Tty": 1}),
    ("POST", "/exec/EXEC/start", 5),
    ("POST", "/containers/NAME/start", {"Binds": ["/:/host"]}),
    ("POST", "/containers/NAME/kill?signal=FOO", None),
    ("POST", "/containers/NAME/kill?signal=0", None),
    ("POST", "/containers/no-such-container/kill?signal=FOO", None),
    ("POST", "/containers/create", {"Image": "busybox:bad/tag"}),
    ("POST", "/containers/create", {"Image": "busybox@sha256:1234"}),
    ("POST", "/images/create?fromImage=busybox&tag=" + quote("bad/tag"), None),
    ("POST", "/images/create?fromImage=busybox&tag=" + quote("Bad!"), None),
    ("POST", "/images/create?fromImage=" + quote("busybox@sha256:1234"), None),
    ("GET", "/images/" + quote("busybox@sha256:zz") + "/json", None),
]


@pytest.mark.parametrize("method, path, body", SAME_ANSWER, ids=[f"{m} {p} {b!r}" for m, p, b in SAME_ANSWER])
def test_same_answer_as_dockerd(running, method, path, body):
    theirs = answer(running, "dockerd", method, path, body)
    ours = answer(running, "ours", method, path, body)
    assert 400 <= theirs[0] < 500, f"dockerd answered {theirs}"
    assert ours == theirs


# The same refusal by status, with the struct named as current Docker names it (dockerd
# 20.10 says VolumeCreateBody where today's engine says CreateOptions).
SAME_STATUS = [
    ("POST", "/volumes/create", {"Name": 5}, "CreateOptions.Name of type string"),
    ("POST", "/volumes/create", {"Labels": {"a": 1}}, "CreateOptions.Labels of type string"),
    ("POST", "/volumes/create", {"DriverOpts": []}, "CreateOptions.DriverOpts of type map[string]string"),
    ("POST", "/containers/NAME/resize?h=abc&w=3", None, "invalid value for h"),
    ("POST", "/exec/EXEC/resize?h=abc&w=3", None, "invalid value for h"),
]


@pytest.mark.parametrize("method, path, body, words", SAME_STATUS,
                         ids=[f"{m} {p} {b!r}" for m, p, b, _ in SAME_STATUS])
def test_same_status_as_dockerd(running, method, path, body, words):
    theirs = answer(running, "dockerd", method, path, body)
    ours = answer(running, "ours", method, path, body)
    assert 400 <= theirs[0] < 500, f"dockerd answered {theirs}"
    assert ours[0] == theirs[0] and words in ours[1], (ours, theirs)


# dockerd answers 500 for these client mistakes (strconv and JSON errors it does not
# classify); ours refuses them with 400 and a message naming the value.
DOCKERD_500 = [
    ("POST", "/containers/NAME/stop?t=abc", None, "invalid value for t: 'abc' is not an integer"),
    ("POST", "/containers/NAME/restart?t=1.5", None, "invalid value for t: '1.5' is not an integer"),
    ("POST", "/containers/create", [1], "expected a JSON object"),
    ("POST", "/auth", {"username": 5},
     "json: cannot unmarshal number into Go struct field AuthConfig.username of type string"),
    ("POST", "/auth", [], "json: cannot unmarshal array into Go value of type registry.AuthConfig"),
]


@pytest.mark.parametrize("method, path, body, message", DOCKERD_500,
                         ids=[f"{m} {p} {b!r}" for m, p, b, _ in DOCKERD_500])
def test_400_where_dockerd_answers_500(running, method, path, body, message):
    theirs = answer(running, "dockerd", method, path, body)
    ours = answer(running, "ours", method, path, body)
    assert theirs[0] == 500, f"dockerd now answers {theirs}: compare like SAME_ANSWER"
    assert ours[0] == 400 and message in ours[1], ours


def test_malformed_reference_is_400_not_no_such_image(running):
    """`docker image inspect` / `rmi` / `history` of a malformed name: dockerd's 400. The
    upper-case case names the repository, as current Docker (and the CLI's own check on
    run/pull) does; dockerd 20.10 leaves the name out."""
    bad = quote("Bad:Ref!!")
    for method, path in (("GET", f"/images/{bad}/json"), ("DELETE", f"/images/{bad}"),
                         ("GET", f"/images/{bad}/history"),
                         ("POST", f"/images/create?fromImage={bad}")):
        theirs = answer(running, "dockerd", method, path)
        ours = answer(running, "ours", method, path)
        assert theirs[0] == ours[0] == 400, (method, path, ours, theirs)
        assert ours[1].replace(" (library/Bad)", "") == theirs[1], (method, path, ours, theirs)
    status, message = answer(running, "ours", "POST", "/containers/create", {"Image": "Bad:Ref!!"})
    assert (status, message) == (400, "invalid reference format: repository name (library/Bad) "
                                      "must be lowercase")


@pytest.mark.parametrize("args", [
    ("run", "--network", "none", "Bad:Ref!!"),
    ("pull", "Bad:Ref!!"),
    ("create", "busybox:bad/tag"),
    ("pull", "busybox@sha256:1234"),
    ("image", "inspect", "busybox@sha256:zz"),
])
def test_cli_prints_the_same_error(running, args):
    agent, dockerd = running["ours"][0], running["dockerd"][0]
    ours, theirs = agent.docker(*args), dockerd.docker(*args)
    assert ours.returncode == theirs.returncode != 0
    assert ours.stderr == theirs.stderr
