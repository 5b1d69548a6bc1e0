"""Volumes: named and anonymous volume directories, their metadata, the `local` driver's mounts.

Owns <root>/volumes. Which containers use a volume is the engine's knowledge, not
this package's. May import the runtime's shared base modules and `runtime.linux`;
never images, network, containers or the engine.
"""
