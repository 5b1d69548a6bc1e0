"""Containers: Docker's create options and their validation, the launch spec and process,
rootfs, stdio, logs, on-disk records, restart policy, and security (`security/`).

Owns what one container is and how it runs. May import the runtime's shared base
modules, `runtime.linux` and `runtime.volumes` (a create names volumes); never
images, network or the engine, which composes them.
"""
