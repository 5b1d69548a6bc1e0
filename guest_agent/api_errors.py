"""The one place where runtime exceptions become HTTP status codes and messages.

Docker clients decide what to do from the status (404 on create makes the CLI
pull, 304 on start means "already started"), so the mapping follows dockerd's
errdefs: not found 404, conflict 409, invalid parameter 400, not modified 304,
unauthorized 401, system errors 500. An OSError that reaches here (a full disk,
a read-only file system, no descriptors left) is a system error too: 500 with
the OS's reason in dockerd's words ("mkdir /x: no space left on device"), never
an opaque "internal error". Anything else unexpected is logged with its
traceback and answered with a generic 500; the agent keeps serving.
"""

from __future__ import annotations

import errno
import logging

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
    describe_os_error,
)

log = logging.getLogger(__name__)

# Errors of the machine, not of the agent: worth a warning, not a traceback.
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE,
                             errno.ENFILE, errno.ENOMEM, errno.EFBIG, errno.EIO})


class NotImplementedByDockyard(DockyardError):
    """An endpoint Dockyard does not provide (yet): answered with 501 and a clear message."""


# Order matters: RegistryNotFound is both a RegistryError and a NotFound.
_STATUS_BY_CLASS: tuple[tuple[type[BaseException], int], ...] = (
    (NotModified, 304),
    (RegistryNotFound, 404),
    (RegistryAuthError, 401),
    (RegistryError, 500),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidArgument, 400),
    (ContainerStartError, 500),
    (NotImplementedByDockyard, 501),
    (DockyardError, 500),
)


def status_for(err: BaseException) -> int:
    """The HTTP status Docker would answer for `err`."""
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(err, cls):
            return status
    return 500


def error_response_for(err: BaseException, context: str = "") -> tuple[int, str]:
    """(status, message) for an exception raised while serving `context` (e.g. "POST /x")."""
    status = status_for(err)
    if isinstance(err, DockyardError):
        if status >= 500:
            log.warning("%s failed: %s", context, err.message)
        else:
            log.debug("%s: %s %s", context, status, err.message)
        return status, err.message
    if isinstance(err, OSError) and err.errno is not None:
        message = describe_os_error(err)
        if err.errno in RESOURCE_ERRNOS:
            log.warning("%s failed: %s", context, message)
        else:
            log.error("unexpected OS error serving %s", context, exc_info=err)
        return 500, message
    log.error("unexpected error serving %s", context, exc_info=err)
    return 500, f"internal error in the Dockyard agent ({type(err).__name__}); see the agent log"


def error_body(err: BaseException, context: str = "") -> dict[str, str]:
    """Docker's error body {"message": ...} for `err`."""
    return {"message": error_response_for(err, context)[1]}


def stream_error(message: str) -> dict[str, object]:
    """An error reported inside a JSON progress stream once streaming has begun."""
    return {"errorDetail": {"message": message}, "error": message}
