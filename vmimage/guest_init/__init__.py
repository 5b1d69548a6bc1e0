"""Stage 2 of the Dockyard guest init: pid 1 in the guest, run by Debian's python3.

It must use the standard library only and import little (every import costs
~10x more under TCG), which is why processes are started with os.posix_spawn
rather than subprocess, and mounts go through libc via ctypes.
"""
