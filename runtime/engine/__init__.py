"""The engine: the facade the guest agent drives, over one service per kind of resource.

`facade.Engine` owns start-up, recovery and shutdown and holds the services as
attributes (`engine.containers`, `.execs`, `.images`, `.volumes`, `.networks`,
`.events`, `.system`); the API layer calls the services through it. Container
operations are split one module per operation (`container_*.py`), as moby's
`daemon/` is. Reads for inspect and list return snapshots taken under the
container's lock (`live.snapshot`), never the live record.

May import every runtime package below it; nothing in runtime/ imports it (only
the guest agent drives the engine). This `__init__` holds only this docstring.
"""
