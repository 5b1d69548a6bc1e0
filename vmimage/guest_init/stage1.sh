#!/bin/sh
# Dockyard guest init, stage 1: pid 1 inside the initramfs (busybox sh).
# Loads the boot modules, builds the root (read-only Debian ext4 on vda under a
# tmpfs overlay), mounts the API filesystems into it, configures the static
# network with busybox's ip (a static binary starts far faster than iproute2
# under TCG), brings our files in and hands over to early.sh in the new root.
export PATH=/bin
mount -t proc proc /proc
read -r t_start _ < /proc/uptime
mount -t devtmpfs devtmpfs /dev
log=/stage1.log

die() {
    echo "dockyard stage1: $*" > /dev/console
    cat "$log" > /dev/console
    # pid 1 exiting panics the kernel; panic=-1 turns that into a reset.
    exit 1
}

# crc32c-intel needs SSE4.2, which TCG's CPU lacks: there its load fails, and
# busybox insmod then loads it a second time to fail again (~0.1 s under TCG).
case "$(cat /proc/cpuinfo)" in
    *sse4_2*) skip= ;;
    *) skip=crc32c-intel.ko ;;
esac
while read -r module; do
    [ "$module" = "$skip" ] && continue
    insmod "/lib/modules/$module" 2>>"$log" || echo "insmod $module failed" >>"$log"
done < /etc/dockyard/modules.boot
read -r t_modules _ < /proc/uptime

# virtio_blk registers the disk asynchronously: wait for the node, with a deadline.
tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 10000 ] && die "no root disk /dev/vda"
    usleep 1000
done

mkdir -p /base /rw /newroot
mount -t ext4 -o ro /dev/vda /base 2>>"$log" || die "cannot mount /dev/vda"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/base,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    2>>"$log" || die "cannot mount the root overlay"

# Mount the data disk now if it already holds ext4 (every boot but the first),
# so early.sh can start the agent at once; blank disks are the Python init's job.
if mount -t ext4 -o noatime /dev/vdb /newroot/var/lib/dockyard 2>>"$log"; then
    export DOCKYARD_DATA_MOUNTED=1
fi

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /newroot/sys
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/dev/shm
# cgroup v2 only (cgroup_no_v1=all on the command line), every controller
# delegated to children so the runtime can limit containers.
# favordynmods (kernel >= 6.0) makes moving a new container into its cgroup cheap:
# without it every cgroup.procs write waits for an RCU grace period (4-14 ms).
mount -t cgroup2 -o nsdelegate,favordynmods cgroup2 /newroot/sys/fs/cgroup 2>>"$log" \
    || mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup
for controller in $(cat /newroot/sys/fs/cgroup/cgroup.controllers); do
    echo "+$controller" > /newroot/sys/fs/cgroup/cgroup.subtree_control 2>>"$log" \
        || echo "controller $controller not enabled" >>"$log"
done

ip link set lo up
ip link set eth0 up 2>>"$log" && ip addr add 10.0.2.15/24 dev eth0 \
    && ip route add default via 10.0.2.2 || echo "eth0 not configured" >>"$log"

# The code stays in the initramfs and is bind-mounted (no copy); the small
# files are copied over the root.
mkdir -p /newroot/opt/dockyard
mount --bind /dockyard-opt /newroot/opt/dockyard
cp -a /dockyard-root/. /newroot/ || die "cannot copy the dockyard files"
mkdir -p /newroot/run/dockyard

cp "$log" /newroot/run/dockyard/stage1.log

read -r t_end _ < /newroot/proc/uptime
export DOCKYARD_STAGE1_START="$t_start" DOCKYARD_STAGE1_MODULES="$t_modules" DOCKYARD_STAGE1_END="$t_end"
# Like switch_root, minus deleting the initramfs: the bind mount above still
# needs its files.
cd /newroot
mount --move . /
exec chroot . /bin/sh /opt/dockyard/init/early.sh
