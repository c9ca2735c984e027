#!/bin/sh
# /sbin/init of the VM's root file system (the backed-up disk, served by an
# instant-recovery session over NFS). What it does depends on hv_step= of
# the kernel command line:
#   write   report the files, write new ones, sync, reboot
#   verify  report the files (the written ones must be there), power off
#   fresh   report the files (a new session: the written ones must be gone)
# Reports are `KEY value` lines on the second serial port.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -c /dev/ttyS1 ] || mount -t devtmpfs devtmpfs /dev
exec 3>/dev/ttyS1
say() { echo "$*" >&3; }
step=$(sed -n 's/.*hv_step=\([a-z]*\).*/\1/p' /proc/cmdline)
say "VM_INIT $step $(cut -d' ' -f1 /proc/uptime)"
say "ROOT $(grep ' / ' /proc/mounts | grep -v rootfs)"
report() {
    for f in /etc/day1.txt /etc/day2.txt /data/written.txt /data/written.bin; do
        if [ -f "$f" ]; then
            say "FILE $f $(sha256sum "$f" | cut -d' ' -f1) $(stat -c %s "$f")"
        else
            say "FILE $f absent"
        fi
    done
    say "TEXT day2 $(cat /etc/day2.txt 2>/dev/null)"
    say "TEXT written $(cat /data/written.txt 2>/dev/null)"
}
report
if [ "$step" = write ]; then
    echo "written by the VM booted from session $(sed -n 's/.*hv_session=\([a-z0-9]*\).*/\1/p' /proc/cmdline)" \
        > /data/written.txt
    say "WRITING $(cut -d' ' -f1 /proc/uptime)"
    dd if=/dev/urandom of=/data/written.bin bs=64k count=256 conv=fsync 2>/dev/null
    sync
    say "WROTE /data/written.bin $(sha256sum /data/written.bin | cut -d' ' -f1)"
    say "WROTE /data/written.txt $(sha256sum /data/written.txt | cut -d' ' -f1)"
fi
mount -o remount,ro / || say "ERROR remount ro"
sync
say "END $step $(cut -d' ' -f1 /proc/uptime)"
exec 3>&-
if [ "$step" = write ]; then reboot -f; else poweroff -f; fi
