"""How the guest mounts a 9p share: one definition for the init at boot and the host after a resume."""

NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"
