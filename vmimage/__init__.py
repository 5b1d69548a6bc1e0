"""Builds the Dockyard guest: kernel, initramfs and root filesystem from Debian packages."""
