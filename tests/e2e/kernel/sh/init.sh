#!/bin/busybox sh
# /init of the kernel-client guest: modules, network, then the scenario of this run.
# The scenario and its data come in a second cpio archive appended per run (/e2e/).
# Results go to the second serial port as `KEY value` lines; the host reads them.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 3>/dev/ttyS1
say() { echo "$*" >&3; }
say "BOOTED $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /etc/modules.order); do
    insmod "/lib/modules/$m.ko" || say "ERROR insmod $m"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2 \
    || say "ERROR network"
say "NETWORK $(cut -d' ' -f1 /proc/uptime)"
if [ -f /e2e/scenario.sh ]; then
    cd /e2e && sh /e2e/scenario.sh
    say "EXIT $?"
else
    say "ERROR no /e2e/scenario.sh"
fi
say "END $(cut -d' ' -f1 /proc/uptime)"
# Closing the port waits until its output is drained; then power off at once.
exec 3>&-
sync
poweroff -f
