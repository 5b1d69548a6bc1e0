"""The Dockyard machine: a small Linux VM (libvirt or direct QEMU) that runs our engine.

Modules: config (typed, persisted machine configuration), accel (accelerator
probe), backend (interface), libvirt_backend / qemu_backend (implementations),
ready_channel (guest "ready" line), instance (one machine's files, records and
backend), manager (lifecycle), supervisor (host-side services of a running
machine), guest_power (powering the guest off over SSH). The manager and the
supervisor both build on instance and never import each other. Host
settings and locations live in desktop.settings and desktop.paths.
"""
