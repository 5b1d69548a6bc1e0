"""The environment bundle: containers, their images, named volumes and networks in one file (`dockyard bundle`)."""
