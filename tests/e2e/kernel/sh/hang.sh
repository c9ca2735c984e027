# Harness self-test: the host kills the server for good; the hard-mounted read hangs
# and the host timeout must end the run.
. /e2e/lib.sh
nfs_mount "$MOUNT_OPTS" /mnt || exit 1
say "KILL_SERVER $(now)"
sleep 1
step hanging-read
dd if="/mnt/$RESTART_FILE" of=/dev/null bs=1048576 2>/dev/null
say "UNEXPECTED read returned $?"
