"""Registry credentials: shared by the image store's API and the registry client.

Its own module so the image store can name it without importing the (heavier)
registry client, which is loaded only on the first pull.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass
class RegistryCredentials:
    """Credentials for one registry, from the client's X-Registry-Auth header (or a config)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def from_any(cls, creds: Any) -> RegistryCredentials:
        """Copy of anything with the same attributes (None: anonymous)."""
        if creds is None:
            return cls()
        return cls(getattr(creds, "username", "") or "", getattr(creds, "password", "") or "",
                   getattr(creds, "identity_token", "") or "",
                   getattr(creds, "registry_token", "") or "")

    @property
    def present(self) -> bool:
        return bool(self.username or self.identity_token or self.registry_token)

    def key(self) -> str:
        """A cache key that does not keep the secret itself in memory as a dict key."""
        raw = "\0".join((self.username, self.password, self.identity_token, self.registry_token))
        return hashlib.sha256(raw.encode()).hexdigest()
