"""Client mistakes get dockerd's 4xx answer, side by side with Debian's dockerd.

The same malformed request goes to both engines over the API (version 1.41, the
newest the reference dockerd 20.10 speaks) and the two answers must agree:
wrong JSON types in exec, start, volume and login bodies, bad query values.
Where dockerd itself answers 500 for a client's
mistake (a non-numeric `t` on stop, a login body of the wrong shape), ours must
answer 400 instead; those cases say so.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any, Iterator

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

