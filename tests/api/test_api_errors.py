"""The runtime-exception → HTTP status mapping, and that errors never stop the agent."""

from __future__ import annotations

import json

import pytest

from guest_agent.api_errors import NotImplementedByDockyard, error_response_for, status_for, stream_error
from guest_agent.routes_images import decode_registry_auth, pull_reference
from runtime.errors import (
    Conflict,
    ContainerStartError,
    DockyardError,
    InvalidArgument,
    NotFound,
    NotModified,
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RuntimeFailure,
)


@pytest.mark.parametrize("err, status", [
    (NotFound("No such container: x"), 404),
    (Conflict("in use"), 409),
    (InvalidArgument("bad"), 400),
    (NotModified("already started"), 304),
    (ContainerStartError("exec: \"nope\": executable file not found in $PATH", 127), 500),
    (RegistryNotFound("pull access denied for nosuch"), 404),
    (RegistryAuthError("unauthorized"), 401),
    (RegistryError("digest mismatch"), 500),
    (RuntimeFailure("overlay mount failed"), 500),
    (NotImplementedByDockyard("no builds"), 501),
    (DockyardError("generic"), 500),
    (KeyError("x"), 500),
])
def test_status_for_each_error_class(err, status):
    assert status_for(err) == status


def test_runtime_messages_pass_through_unexpected_ones_do_not():
    assert error_response_for(NotFound("No such container: nosuch")) == (404, "No such container: nosuch")
    status, message = error_response_for(ZeroDivisionError("private detail"), "GET /x")
    assert status == 500 and "private detail" not in message and "agent log" in message


def test_stream_error_shape():
    assert stream_error("boom") == {"errorDetail": {"message": "boom"}, "error": "boom"}


def test_registry_auth_header_decoding():
    import base64

    def enc(obj: dict, pad: bool = True) -> str:
        s = base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()
        return s if pad else s.rstrip("=")

    assert decode_registry_auth(None) is None
    assert decode_registry_auth(enc({})) is None
    assert decode_registry_auth("e30") is None  # "{}" without padding, as the CLI sends it
    creds = decode_registry_auth(enc({"username": "u", "password": "p?>", "serveraddress": "r"}, False))
    assert (creds.username, creds.password) == ("u", "p?>")
    combined = base64.b64encode(b"user:pa:ss").decode()
    creds = decode_registry_auth(enc({"auth": combined}))
    assert (creds.username, creds.password) == ("user", "pa:ss")
    assert decode_registry_auth(enc({"identitytoken": "tok"})).identity_token == "tok"
    with pytest.raises(InvalidArgument):
        decode_registry_auth("!!!not base64!!!")


def test_pull_reference_joins_image_and_tag():
    assert pull_reference("127.0.0.1:5000/busybox", "latest") == "127.0.0.1:5000/busybox:latest"
    assert pull_reference("busybox", "sha256:abc") == "busybox@sha256:abc"
    assert pull_reference("busybox:1.36", None) == "busybox:1.36"


def test_bad_requests_to_the_real_agent_get_400_and_it_keeps_serving(agent):
    status, _, body = agent.request("POST", "/v1.45/containers/create", body=b"{not json",
                                    headers={"Content-Type": "application/json"})
    assert status == 400 and "invalid JSON" in json.loads(body)["message"]
    status, _, body = agent.request("POST", "/v1.45/containers/create", body=b"[]")
    assert status == 400
    status, _, body = agent.request("GET", "/v1.45/containers/json?filters=%7Bbroken")
    assert status == 400 and "filters" in json.loads(body)["message"]
    status, _, body = agent.request("GET", "/v1.45/containers/nosuch/json")
    assert status == 404 and json.loads(body)["message"] == "No such container: nosuch"
    status, _, body = agent.request("POST", "/v1.45/build")   # no context: the client's mistake
    assert status == 400 and "Dockerfile" in json.loads(body)["message"]
    status, _, body = agent.request("GET", "/v1.45/images/search?term=busybox")
    assert status == 501 and "search" in json.loads(body)["message"]
    assert agent.request("GET", "/_ping")[0] == 200
    assert agent.alive()
