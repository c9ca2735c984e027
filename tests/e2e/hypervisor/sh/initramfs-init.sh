#!/bin/busybox sh
# /e2e/hv-init.sh, the hypervisor guest's rdinit=: load the block modules,
# mount the VM's disk (/dev/vda: the -flat.vmdk QEMU opened over NFS) on /mnt
# and switch_root to it. Nothing else happens here: the VM's own /sbin/init,
# on that disk, runs the checks. Failures go to the second serial port, then
# power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "$*" > /dev/ttyS1; }
say "INITRAMFS $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /etc/modules.order); do
    insmod "/lib/modules/$m.ko" || say "ERROR insmod $m"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if mount -t ext4 -o rw /dev/vda /mnt; then
    say "ROOT_MOUNTED $(cut -d' ' -f1 /proc/uptime)"
    mount --move /dev /mnt/dev
    umount /proc /sys
    exec switch_root /mnt /sbin/init
fi
say "ERROR cannot mount /dev/vda: $(ls -l /dev/vd* 2>&1)"
say "END failed"
poweroff -f
