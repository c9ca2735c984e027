# Read a large file while the host kills and restarts the server (hard mount).
. /e2e/lib.sh
nfs_mount "$MOUNT_OPTS" /mnt || exit 1
list_tree /mnt ENTRY
step restart-read
# The host restarts the server when it sees this line (after a short delay).
say "READING_STARTED $(now)"
t0=$(now)
h=$(dd if="/mnt/$RESTART_FILE" bs=1048576 2>/tmp/dd.err | sha256sum)
rc=$?
t1=$(now)
say "RESTART_READ rc=$rc ${h%% *} $t0 $t1 $(oneline </tmp/dd.err)"
# Forget cached dentries and attributes: the next listing asks the restarted server.
sync
echo 3 >/proc/sys/vm/drop_caches
list_tree /mnt ENTRY2
sha_ranges /mnt /e2e/checks.txt
step umount
out=$(umount /mnt 2>&1)
say "UMOUNT rc=$? $(echo "$out" | oneline)"
