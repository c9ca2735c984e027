# Read a large file while the host kills and restarts the server (hard mount).
. /e2e/lib.sh
nfs_mount "$MOUNT_OPTS" /mnt || exit 1
list_tree /mnt ENTRY
step restart-read
# The host kills the server (kill -9) shortly after this line and starts it again.
# dd keeps 1 MiB READs in flight almost all the time, so the kill hits one.
say "READING_STARTED $(now)"
t0=$(now)
dd if="/mnt/$RESTART_FILE" of=/dev/null bs=1048576 2>/tmp/dd.err
rc=$?
t1=$(now)
say "RESTART_READ rc=$rc $t0 $t1 $(oneline </tmp/dd.err)"
# The bytes that read brought in, from the page cache (or read again if evicted).
step restart-hash
h=$(sha256sum <"/mnt/$RESTART_FILE")
say "RESTART_SHA rc=$? ${h%% *}"
# Forget cached dentries and attributes: the next listing asks the restarted server.
sync
echo 3 >/proc/sys/vm/drop_caches
list_tree /mnt ENTRY2
sha_ranges /mnt /e2e/checks.txt
step umount
out=$(umount /mnt 2>&1)
say "UMOUNT rc=$? $(echo "$out" | oneline)"
