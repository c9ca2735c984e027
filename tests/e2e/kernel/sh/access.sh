# Access control as the kernel client sees it: refused, then allowed, then revoked while
# mounted. On ALLOW_ME and REVOKE_ME the host rewrites the exports file and runs
# `recovery-fs exports reload` (scenarios.run_access); the guest's calls come from
# 127.0.0.1 with an unprivileged port (QEMU's NAT), so "allowed" is 127.0.0.1(insecure).
. /e2e/lib.sh

# try_mount LABEL MOUNTPOINT: one bounded attempt; says `ACCESS_MOUNT LABEL rc=N t0 t1 message`.
try_mount() {
    mkdir -p "$2"
    t0=$(now)
    out=$(timeout -s KILL "$MOUNT_TIMEOUT" mount -t nfs -o "$MOUNT_OPTS" "$SERVER:$EXPORT" "$2" 2>&1)
    rc=$?
    say "ACCESS_MOUNT $1 rc=$rc $t0 $(now) $(echo "$out" | oneline)"
    return $rc
}

# read_out LABEL FILE: read a whole file; says `ACCESS_READ LABEL rc=N bytes=N sha256 message`
# (the bytes and their hash are of what arrived, whatever the exit status).
read_out() {
    rm -f /tmp/read.out
    timeout -s KILL 60 dd if="$2" of=/tmp/read.out bs=131072 2>/tmp/dd.err
    rc=$?
    n=$(stat -c %s /tmp/read.out 2>/dev/null || echo 0)
    h=$(cat /tmp/read.out 2>/dev/null | sha256sum)
    say "ACCESS_READ $1 rc=$rc bytes=$n ${h%% *} $(oneline </tmp/dd.err)"
}

step refused
if try_mount refused /mnt; then
    say "ERROR mounted while not listed"
    umount /mnt
fi

say "ALLOW_ME $(now)"
step allowed
i=0
until try_mount allowed /mnt; do
    i=$((i + 1))
    [ $i -ge "$ALLOW_TRIES" ] && exit 1
    sleep 1
done
say "MOUNTINFO $(grep " /mnt " /proc/mounts | oneline)"
read_out before "/mnt/$READ_FIRST"

say "REVOKE_ME $(now)"
sleep "$SETTLE"
step revoked
say "REVOKED_START $(now)"
read_out unread "/mnt/$READ_LATER"
out=$(timeout -s KILL 60 ls /mnt 2>&1)
say "ACCESS_LS rc=$? $(echo "$out" | oneline)"
sync
echo 3 >/proc/sys/vm/drop_caches
read_out dropped "/mnt/$READ_FIRST"
step umount
out=$(umount /mnt 2>&1) || out="$out; $(umount -l /mnt 2>&1)"
say "UMOUNT rc=$? $(echo "$out" | oneline)"
if try_mount again /mnt; then
    say "ERROR mounted again after the revocation"
    umount /mnt
fi
