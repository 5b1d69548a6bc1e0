"""The guest agent: serves the Docker Engine API over a unix socket on top of `runtime`.

Knows nothing of Qt or libvirt; standard library only (it runs on the guest's python3).
"""
