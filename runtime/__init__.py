"""Dockyard's container runtime: images, containers, networks and volumes.

Knows nothing of HTTP or VMs. Runs on the guest's Debian python3 with the
standard library only.

Layout, lowest layer first (a package imports only from the ones before it;
tests/test_layering.py checks this):

* shared base modules at the top: `errors`, `models`, `atomic_file`, `lazy_re`,
  `timestamps`, `path_scope`, `host_loopback`, `version`, `event_bus`, `go_json`;
* `linux/`: Linux plumbing (syscalls, netlink, namespaces, cgroups, mounts);
* `images/`, `volumes/`, `network/`: one kind of resource each;
* `containers/`: a container's config, launch, stdio, logs and records;
* `engine/`: the `Engine` facade the guest agent's API layer drives, over one service per
  kind of resource (containers, execs, images, volumes, networks, events, system).

Package `__init__` modules hold only a docstring: importing a package must cost
nothing, because the agent's start-up path is kept lean for the TCG guest.
"""
