# The main scenario: mount with explicit ports (and without noacl), read, compare, try to write.
. /e2e/lib.sh
nfs_mount "$MOUNT_OPTS" /mnt || exit 1
# Cold sequential read first, before anything is in the guest's page cache.
timed_read "/mnt/$THROUGHPUT_FILE"
list_tree /mnt
sha_ranges /mnt /e2e/checks.txt
lookups /mnt /e2e/hidden.txt

step readonly
f="/mnt/$RO_FILE"
expect_fail touch-existing touch "$f"
expect_fail touch-new touch /mnt/tree/new-file
sh_fail create-new "echo x > /mnt/tree/new-file2"
sh_fail append-existing "echo x >> '$f'"
sh_fail truncate-existing "echo x > '$f'"
expect_fail mkdir mkdir /mnt/tree/new-dir
expect_fail rm rm -f "$f"
expect_fail rmdir rmdir "/mnt/$RO_EMPTY_DIR"
expect_fail rename mv "$f" /mnt/tree/renamed
expect_fail chmod chmod 600 "$f"
expect_fail symlink ln -s target /mnt/tree/new-symlink
expect_fail hardlink ln "$f" /mnt/tree/new-hardlink
say "AFTER size $(stat -c %s "$f") entries $(ls -a /mnt/tree | oneline)"
h=$(sha256sum <"$f")
say "AFTER sha ${h%% *}"

step umount
out=$(umount /mnt 2>&1)
say "UMOUNT rc=$? $(echo "$out" | oneline)"
