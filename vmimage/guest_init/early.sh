#!/bin/sh
# Dockyard guest init, stage 1b: pid 1 in the final root (Debian's dash).
# Starts the agent and sshd at once when the data disk was already mounted
# and the host key exists (every boot but the first), so their start overlaps
# the Python init's own start-up; then becomes the Python init, which adopts
# them. On a first boot the Python init formats the disk and starts them.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
# Every process inherits this: containers get the kernel's maximum of open files, as
# under Docker Desktop (dockerd runs with LimitNOFILE=infinity), not the boot default of 1024.
ulimit -n 1048576
hostloop=10.0.2.2
initnice=@INIT_NICE@
for word in $(cat /proc/cmdline); do
    case "$word" in
        dockyard.hostloop=*) hostloop="${word#dockyard.hostloop=}" ;;
        dockyard.initnice=*) initnice="${word#dockyard.initnice=}" ;;
    esac
done
if [ -n "$DOCKYARD_DATA_MOUNTED" ]; then
    mkdir -p @ENGINE_ROOT@
    PYTHONPATH=@CODE_DIR@ PYTHONDONTWRITEBYTECODE=1 DOCKYARD_HOST_LOOPBACK="$hostloop" \
        @AGENT_CMD@ </dev/null >>@AGENT_LOG@ 2>&1 &
    export DOCKYARD_AGENT_PID=$!
    if [ -s @HOST_KEY@ ] && [ -s @HOST_KEY@.pub ]; then
        mkdir -p /run/sshd
        @SSHD_CMD@ </dev/null >>@SSHD_LOG@ 2>&1 &
        export DOCKYARD_SSHD_PID=$!
    fi
    read -r DOCKYARD_EARLY_SPAWN _ < /proc/uptime
    export DOCKYARD_EARLY_SPAWN
fi
# The init may run niced until ready: on one TCG vCPU every cycle it takes is
# one the agent (the slowest to start) does not get. It resets itself when ready.
exec /usr/bin/nice -n "$initnice" /usr/bin/python3 -I -S /opt/dockyard/init/dockyard-init
