"""The Docker Engine version Dockyard behaves like (shown by /version and /info).

A module of its own so the agent can answer /version before it imports the engine.
"""

SERVER_VERSION = "28.2.2"
