"""Linux plumbing: ctypes syscalls, rtnetlink, network namespaces, cgroups, overlay mounts.

Owns the kernel interfaces the rest of the runtime builds on, with no Docker
semantics of their own. May import only the standard library and the runtime's
shared base modules (`runtime.errors` and the like), never another runtime
package: everything else sits above it.
"""
