"""Image endpoints: list, pull (POST /images/create), push, inspect, history, tag, delete, prune."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import io
import json
import logging
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from runtime.build.build_output import StepFailed
from runtime.engine.facade import Engine
from runtime.engine.image_import import check_platform
from runtime.errors import InvalidArgument
from runtime.images.reference import parse_reference, validate_tag
from runtime.images.registry_credentials import RegistryCredentials
from runtime.images.store import Image

from . import docker_json
from .api_errors import NotImplementedByDockyard
from .build_options import parse_build_options
from .http_request import Request, parse_json, streams_body
from .http_response import Response, StreamResponse, json_response
from .http_server import Router
from .job_stream import Emit, job_stream
from .request_body import BodyFields, top_level_object

log = logging.getLogger(__name__)



def decode_registry_auth(header: str | None) -> RegistryCredentials | None:
    """X-Registry-Auth: base64url(JSON AuthConfig), padding optional. None when absent or empty."""
    if not header or not header.strip():
        return None
    raw = header.strip()
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as err:
        raise InvalidArgument(f"invalid X-Registry-Auth header: {err}") from None
    try:
        auth = BodyFields(top_level_object(parse_json(decoded or b"{}", "X-Registry-Auth header"),
                                           "registry.AuthConfig"), "AuthConfig")
    except InvalidArgument as err:
        raise InvalidArgument(f"invalid X-Registry-Auth header: {err.message}") from None
    username, password = auth.string("username"), auth.string("password")
    combined = auth.string("auth")
    if not username and combined:
        # Some clients send only the combined "user:password" field.
        try:
            username, _, password = base64.b64decode(combined).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidArgument("invalid X-Registry-Auth header: bad auth field") from None
    creds = RegistryCredentials(username=username, password=password,
                                identity_token=auth.string("identitytoken"),
                                registry_token=auth.string("registrytoken"))
    if not any((creds.username, creds.password, creds.identity_token, creds.registry_token)):
        return None
    return creds


def pull_reference(from_image: str, tag: str | None) -> str:
    """Docker's fromImage + tag → one reference ("repo:tag" or "repo@sha256:...")."""
    if not tag:
        return from_image
    if tag.startswith("sha256:"):
        return f"{from_image}@{tag}"
    return f"{from_image}:{tag}"


def _familiar(name: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def matches_reference(image: Image, patterns: list[str]) -> bool:
    """The `reference` filter: glob patterns against "repo:tag" or "repo", full or familiar."""
    candidates: set[str] = set()
    for repo_tag in image.repo_tags:
        repo, _, tag = repo_tag.rpartition(":")
        if "/" in tag:  # the colon was a registry port, there is no tag
            repo, tag = repo_tag, ""
        for form in (repo, _familiar(repo)):
            candidates.add(form)
            if tag:
                candidates.add(f"{form}:{tag}")
    for pattern in patterns:
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            return True
        if ":" not in pattern.rsplit("/", 1)[-1] and \
                any(fnmatch.fnmatchcase(c, pattern + ":*") for c in candidates):
            return True
    return False


class ImageRoutes:
    """Images in the engine's ImageStore."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, router: Router) -> None:
        router.get("/images/json", self.list)
        # Import sends the image's tar as the body: read as it arrives, any size.
        router.post("/images/create", self.create)
        router.post("/images/prune", self.prune)
        router.post("/images/load", self.load)
        router.get("/images/get", self.save)
        router.get("/images/search", self._unsupported("searching registries (docker search)"))
        router.post("/build", self.build)
        router.post("/build/prune", self.build_prune)
        router.get("/images/{name:path}/json", self.inspect)
        router.get("/images/{name:path}/history", self.history)
        router.post("/images/{name:path}/tag", self.tag)
        router.post("/images/{name:path}/push", self.push)
        router.get("/images/{name:path}/get", self.save)
        router.delete("/images/{name:path}", self.remove)

    @staticmethod
    def _unsupported(what: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            raise NotImplementedByDockyard(f"Dockyard does not support {what} yet")
        return handler

    def _containers_by_image(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for c in self.engine.containers.list(all=True):
            users.setdefault(c.image_id, []).append(c.id)
        return users

    def list(self, request: Request) -> Response:
        filters = request.filters()
        images = self.engine.images.list()
        dangling = filters.get("dangling")
        if dangling:
            want = dangling[-1].lower() in ("1", "true")
            images = [i for i in images if (not i.repo_tags) == want]
        if filters.get("reference"):
            images = [i for i in images if matches_reference(i, filters["reference"])]
        users = self._containers_by_image()
        images.sort(key=lambda i: i.created, reverse=True)
        return json_response([docker_json.image_summary(i, len(users.get(i.id, []))) for i in images])

    def inspect(self, request: Request) -> Response:
        name = request.params["name"]
        try:
            image = self.engine.images.get(name)
        except InvalidArgument as err:   # dockerd's wording for a malformed name here
            raise InvalidArgument(f"no such image: {name}: {err.message}") from None
        return json_response(docker_json.image_inspect(image))

    def history(self, request: Request) -> Response:
        return json_response(self.engine.images.history(request.params["name"]))

    def tag(self, request: Request) -> Response:
        repo = request.arg("repo")
        if not repo:
            raise InvalidArgument("repository name must have at least one component")
        self.engine.images.tag(request.params["name"], repo, request.arg("tag") or "latest")
        return Response(status=201, body=b"", content_type=None)

    def remove(self, request: Request) -> Response:
        # The images service decides "in use" under its lock (containers and creates in flight).
        result = self.engine.images.remove(request.params["name"], force=request.bool_arg("force"),
                                           prune=not request.bool_arg("noprune"))
        return json_response(result)

    def prune(self, request: Request) -> Response:
        filters = request.filters()
        dangling = filters.get("dangling", ["true"])[-1].lower() in ("1", "true")
        deleted, reclaimed = self.engine.images.prune(dangling_only=dangling)
        return json_response({"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})

    # -- save and load --------------------------------------------------------
    def save(self, request: Request) -> StreamResponse:
        """`docker save`: GET /images/get?names=a&names=b or /images/{name}/get."""
        names = [request.params["name"]] if "name" in request.params else request.query.get("names", [])
        return StreamResponse(chunks=self.engine.images.save(names), content_type="application/x-tar")

    @streams_body
    def load(self, request: Request) -> StreamResponse:
        """`docker load`: the body is the archive; dockerd's JSON lines come back, progress
        only without `quiet`. Until the first line (which comes only once the whole body
        has been read) an error is a plain status, as dockerd answers."""
        stream = request.stream
        assert stream is not None   # load is marked streams_body
        quiet = request.bool_arg("quiet")
        return job_stream("load", lambda emit: self.engine.images.load(stream, emit, quiet))

    # -- import ---------------------------------------------------------------
    def _import(self, request: Request) -> Response:
        """`docker import`: fromSrc=- (the body is the tar) or an http(s) URL; the answer is
        dockerd's one status line with the new image's id (errors before it are a status)."""
        source = request.arg("fromSrc") or ""
        check_platform(request.arg("platform") or "")
        stream = request.stream
        assert stream is not None   # create is marked streams_body
        image = self.engine.images.import_image(
            stream if source == "-" else source, repo=request.arg("repo") or "",
            tag=request.arg("tag") or "", message=request.arg("message") or "",
            changes=request.query.get("changes", []))
        return Response(body=json.dumps({"status": image.id}).encode() + b"\r\n")
    # -- build ----------------------------------------------------------------
    @streams_body   # a build context may be any size: read as it arrives
    def build(self, request: Request) -> Response | StreamResponse:
        options, dockerfile, quiet = parse_build_options(request)
        # read() is all the context's unpacking asks of it
        context = cast(BinaryIO, request.stream or io.BytesIO(request.body))
        def build(emit: Emit) -> str:
            def shown(message: dict[str, Any]) -> None:
                if not quiet or "aux" in message:
                    emit(message)
            return self.engine.builds.build(context, dockerfile, options, shown)

        def run_error(err: BaseException, line: dict[str, Any]) -> dict[str, Any]:
            if isinstance(err, StepFailed):   # dockerd gives a RUN's exit code too
                line["errorDetail"] = {"code": err.code, "message": line["errorDetail"]["message"]}
            return line

        return job_stream("build", build, error_line=run_error,
                          last_lines=lambda image_id: [{"stream": image_id + "\n"}] if quiet else [])

    def build_prune(self, request: Request) -> Response:
        keys, reclaimed = self.engine.builds.prune()
        return json_response({"CachesDeleted": keys or None, "SpaceReclaimed": reclaimed})

    # -- pull -----------------------------------------------------------------
    @streams_body
    def create(self, request: Request) -> Response | StreamResponse:
        if request.arg("fromSrc"):
            return self._import(request)
        from_image = request.arg("fromImage")
        if not from_image:
            raise InvalidArgument("fromImage is required")
        tag = request.arg("tag")
        if tag and not tag.startswith("sha256:"):
            validate_tag(tag)
        reference = pull_reference(from_image, tag)
        parse_reference(reference)   # a malformed name is a 400 before anything streams
        credentials = decode_registry_auth(request.headers.get("X-Registry-Auth"))
        saw_status = False

        def pull(emit: Emit) -> Image:
            def seen(message: dict[str, Any]) -> None:
                nonlocal saw_status
                if str(message.get("status", "")).startswith("Status:"):
                    saw_status = True
                emit(message)
            return self.engine.images.pull(reference, credentials, seen)

        def summary(image: Image) -> list[dict[str, Any]]:
            if saw_status:
                return []
            return ([{"status": f"Digest: {digest.rpartition('@')[2]}"} for digest in image.repo_digests[:1]]
                    + [{"status": f"Status: Downloaded newer image for {reference}"}])

        return job_stream(f"pull {reference}", pull, last_lines=summary)

    # -- push -----------------------------------------------------------------
    def push(self, request: Request) -> Response | StreamResponse:
        """dockerd's push: `name` may carry the tag itself; no tag at all pushes every tag."""
        name = request.params["name"]
        ref = parse_reference(name, default_tag=False)   # a malformed name is a 400 here
        if ref.digest:
            raise InvalidArgument(f"cannot push a digest reference: {name}")
        tag = request.arg("tag") or ref.tag
        if tag:
            validate_tag(tag)
        repo = ref.familiar_name
        platform = request.arg("platform")
        if platform:
            self._check_push_platform(repo, tag, platform)
        credentials = decode_registry_auth(request.headers.get("X-Registry-Auth"))
        return job_stream(f"push {repo}",
                               lambda emit: self.engine.images.push(repo, tag, credentials, emit))

    def _check_push_platform(self, repo: str, tag: str | None, platform: str) -> None:
        """Images here hold one platform each: `platform` must be theirs, or it is refused."""
        fields = BodyFields(top_level_object(parse_json(platform.encode(), "platform"),
                                             "ocispec.Platform"), "platform")
        want = (fields.string("os"), fields.string("architecture"), fields.string("variant"))
        images = [i for i in self.engine.images.list()
                  if any(t.rpartition(":")[0] == repo and (not tag or t == f"{repo}:{tag}")
                         for t in i.repo_tags)]
        for image in images:
            have = (str(image.config.get("os", "")), str(image.config.get("architecture", "")),
                    str(image.config.get("variant", "")))
            if any(w and w != h for w, h in zip(want, have, strict=True)):
                raise InvalidArgument(f"platform {'/'.join(w for w in want if w)} is not available "
                                      f"for {repo}: its image is {'/'.join(h for h in have if h)}")
