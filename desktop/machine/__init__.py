"""The Dockyard machine: a small Linux VM (libvirt or direct QEMU) that runs our engine.

Modules: config (typed, persisted settings), accel (accelerator probe), backend
(interface), libvirt_backend / qemu_backend (implementations), ready_channel
(guest "ready" line), manager (lifecycle), supervisor (host-side services of a
running machine).
"""
