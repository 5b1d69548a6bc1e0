"""Images: references, the registry session and client, pulls, blob and layer stores, safe unpacking.

Owns everything under the image store's root (blobs, image records, tags,
unpacked layers). May import the runtime's shared base modules and
`runtime.linux`; never containers, volumes, network or the engine.
"""
