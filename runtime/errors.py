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
