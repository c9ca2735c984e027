# Mount with no port options: the kernel asks the portmapper on port 111 of the server.
. /e2e/lib.sh
nfs_mount "$MOUNT_OPTS" /mnt || exit 1
list_tree /mnt
sha_ranges /mnt /e2e/checks.txt
step umount
out=$(umount /mnt 2>&1)
say "UMOUNT rc=$? $(echo "$out" | oneline)"
