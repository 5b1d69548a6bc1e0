"""Dockyard's container runtime: images, containers, networks and volumes.

Knows nothing of HTTP or VMs. Runs on the guest's Debian python3 with the
standard library only.
"""
