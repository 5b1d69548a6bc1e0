"""Container networking: the default bridge, IP address pools, NAT rules, published ports, DNS files.

Owns the bridge, the per-container network namespaces and their addresses, and
the port forwarders. May import the runtime's shared base modules and
`runtime.linux`; never images, volumes, containers or the engine.
"""
