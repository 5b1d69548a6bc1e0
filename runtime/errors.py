"""Exceptions the runtime raises; each carries a message a user understands.

The API layer (guest_agent) maps these classes to HTTP status codes in one
place, so new errors should subclass one of these rather than invent codes.
"""


class DockyardError(Exception):
    """Base class: `str(err)` is the user-facing message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DockyardError):
    """The named object (image, container, volume, exec, network) does not exist."""


class Conflict(DockyardError):
    """The request conflicts with the current state (name in use, container running)."""


class InvalidArgument(DockyardError):
    """The request itself is malformed or asks for something impossible."""


class NotModified(DockyardError):
    """Nothing to do: the container is already started or already stopped."""


class RegistryError(DockyardError):
    """The registry refused or failed a request (pull, auth, digest mismatch)."""


class RegistryNotFound(RegistryError, NotFound):
    """The repository or tag does not exist on the registry (or access is denied)."""


class RegistryAuthError(RegistryError):
    """The registry refused our credentials."""


class ContainerStartError(DockyardError):
    """The container process could not be started (bad command, bad mount, ...).

    `exit_code` follows Docker: 127 for a missing executable, 126 when it
    cannot be executed, 128 for other start failures.
    """

    def __init__(self, message: str, exit_code: int = 128) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RuntimeFailure(DockyardError):
    """An internal operation failed; the message says which and why."""


class ResourceError(RuntimeFailure):
    """The operating system refused for want of a resource (disk space, quota, descriptors,
    memory) or because the file system is read-only; the message is the OS's, worded as
    dockerd words it ("write /path: no space left on device")."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @classmethod
    def from_os_error(cls, err: OSError, doing: str = "", path: object = None) -> "ResourceError":
        return cls(describe_os_error(err, doing, path), err.errno)


def describe_os_error(err: OSError, doing: str = "", path: object = None) -> str:
    """Go's os.PathError text for `err`: "<doing> <file>: <reason>", reason in lower case.

    `path` names the file when the error does not (a failed write(2) carries no name).

    Go's syscall messages are Python's strerror with a lower-case first letter
    ("no space left on device", "disk quota exceeded", "read-only file system").
    """
    reason = err.strerror or str(err) or type(err).__name__
    reason = reason[:1].lower() + reason[1:]
    name = _filename(err) or (str(path) if path is not None else "")
    subject = " ".join(part for part in (doing, name) if part)
    return f"{subject}: {reason}" if subject else reason


def _filename(err: OSError) -> str:
    name = err.filename
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return str(name) if name is not None else ""


class InvalidArchive(InvalidArgument):
    """A tar the client sent (import, load, a layer inside one) is corrupt, of an unknown
    format, or tries to write outside its root: refused as a whole, nothing kept."""


class BuildError(InvalidArgument):
    """A build cannot proceed from what the client sent: a Dockerfile that does not parse, a
    context tar that is corrupt, a COPY source outside the context or missing."""
