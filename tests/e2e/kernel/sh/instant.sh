# Instant recovery: a session mounted read-write; files made, renamed, removed, truncated;
# random writes, truncates and reads over the merged disk image checked against a model
# in the guest's memory (fsx-style), while the host SIGKILLs and restarts the server.
. /e2e/lib.sh
nfs_mount "$MOUNT_OPTS" /mnt || exit 1
D=/mnt/$FOLDER
list_tree /mnt ENTRY

# ok NAME COMMAND...: say `OP NAME rc output`.
ok() {
    name=$1
    shift
    out=$("$@" 2>&1 </dev/null)
    say "OP $name rc=$? $(echo "$out" | oneline)"
}

step files
ok create sh -c "echo hello >$D/new.txt"
ok append sh -c "echo world >>$D/new.txt"
ok mkdir mkdir "$D/sub"
ok create2 sh -c "echo x >$D/sub/a"
ok rename-in mv "$D/sub/a" "$D/sub/b"
ok rename-across mv "$D/sub/b" "$D/b"
ok rename-over-base mv "$D/new.txt" "$D/$VMX"
ok remove-base rm "$D/$DESCRIPTOR"
ok rmdir rmdir "$D/sub"
ok symlink ln -s "$VMX" "$D/link"
ok swap sh -c "truncate -s 2G $D/vm.vswp"
ok read-vmx sh -c "cat $D/$VMX"
ok readlink readlink "$D/link"
ok truncate-up sh -c "echo abc >$D/t && truncate -s 100000 $D/t && truncate -s 2 $D/t && truncate -s 8192 $D/t"
say "TSHA $(sha256sum <"$D/t" | cut -d' ' -f1)"
ok hardlink-refused sh -c "ln $D/b $D/hard && echo made"
sync
echo 3 >/proc/sys/vm/drop_caches
list_tree /mnt AFTER

# The fsx-style run over the merged image.
IMG=$D/$DISK
step model
cp "$IMG" /tmp/model
say "BASE_SHA $(sha256sum </tmp/model | cut -d' ' -f1)"
awk -v seed="$SEED" -v n="$OPS" -v size="$(stat -c %s /tmp/model)" 'BEGIN {
    srand(seed)
    for (i = 0; i < n; i++) {
        r = rand()
        off = int(rand() * (size + 65536))
        len = 1 + int(rand() * 65536)
        if (r < 0.55) print "w", off, len
        else if (r < 0.9) print "r", off, len
        else { size = int(rand() * 12 * 1048576); print "t", size, 0 }
    }
}' >/tmp/ops
say "FSX_STARTED $(now)"
i=0
bad=0
while read -r op off len; do
    i=$((i + 1))
    case $op in
    w)
        dd if=/dev/urandom of=/tmp/chunk bs="$len" count=1 2>/dev/null
        dd if=/tmp/chunk of=/tmp/model bs="$len" seek="$off" oflag=seek_bytes conv=notrunc 2>/dev/null
        if [ $((i % 2)) -eq 0 ]; then flag=seek_bytes,direct; else flag=seek_bytes; fi
        dd if=/tmp/chunk of="$IMG" bs="$len" seek="$off" oflag=$flag conv=notrunc 2>/tmp/dd.err \
            || { say "FSX_ERR $i w $off $len $(oneline </tmp/dd.err)"; bad=$((bad + 1)); }
        ;;
    r)
        a=$(dd if=/tmp/model bs=65536 iflag=skip_bytes,count_bytes skip="$off" count="$len" 2>/dev/null | sha256sum)
        b=$(dd if="$IMG" bs=65536 iflag=skip_bytes,count_bytes skip="$off" count="$len" 2>/tmp/dd.err | sha256sum) \
            || say "FSX_ERR $i r $off $len $(oneline </tmp/dd.err)"
        [ "$a" = "$b" ] || { say "FSX_MISMATCH $i r $off $len"; bad=$((bad + 1)); }
        ;;
    t)
        truncate -s "$off" /tmp/model
        truncate -s "$off" "$IMG" 2>/tmp/t.err || { say "FSX_ERR $i t $off $(oneline </tmp/t.err)"; bad=$((bad + 1)); }
        ;;
    esac
done </tmp/ops
say "FSX_DONE ops=$i bad=$bad $(now)"
sync
echo 3 >/proc/sys/vm/drop_caches
say "FSX_FINAL $(sha256sum </tmp/model | cut -d' ' -f1) $(sha256sum <"$IMG" | cut -d' ' -f1) $(stat -c %s /tmp/model) $(stat -c %s "$IMG")"

# Rewriting in place, as a running VM does: 40 passes of 4 MiB over one region, 2.5
# times the session's quota (QUOTA_MIB): the cleaning gives the overwritten bytes back.
step rewrite
i=0
err=0
while [ $i -lt 40 ]; do
    dd if=/dev/urandom of=/tmp/chunk4 bs=1M count=4 2>/dev/null
    dd if=/tmp/chunk4 of="$D/rewrite.bin" bs=1M count=4 oflag=direct conv=notrunc 2>/tmp/dd.err \
        || { err=$((err + 1)); say "REWRITE_ERR $i $(oneline </tmp/dd.err)"; }
    i=$((i + 1))
done
sync
echo 3 >/proc/sys/vm/drop_caches
say "REWRITE_DONE passes=$i errors=$err $(sha256sum </tmp/chunk4 | cut -d' ' -f1) $(sha256sum <"$D/rewrite.bin" | cut -d' ' -f1)"
# Scattered 4 KiB writes, as a VM's: ~900 pieces in one file, written over nconnect's
# connections (both workers), so each process edits a map the other keeps changing.
step scatter
S=$D/scatter.img
truncate -s 8M "$S"
dd if=/dev/zero of=/tmp/smodel bs=1M count=8 2>/dev/null
awk -v seed="$SEED" 'BEGIN { srand(seed + 1); for (i = 0; i < 1200; i++) print int(rand() * 2048) }' >/tmp/sops
err=0
while read -r blk; do
    dd if=/dev/urandom of=/tmp/b4 bs=4096 count=1 2>/dev/null
    dd if=/tmp/b4 of=/tmp/smodel bs=4096 seek="$blk" conv=notrunc 2>/dev/null
    dd if=/tmp/b4 of="$S" bs=4096 seek="$blk" oflag=direct conv=notrunc 2>/tmp/dd.err \
        || { err=$((err + 1)); say "SCATTER_ERR $blk $(oneline </tmp/dd.err)"; }
done </tmp/sops
sync
echo 3 >/proc/sys/vm/drop_caches
say "SCATTER_DONE writes=1200 errors=$err $(sha256sum </tmp/smodel | cut -d' ' -f1) $(sha256sum <"$S" | cut -d' ' -f1)"
rm -f /tmp/smodel
list_tree /mnt FINAL
step umount
out=$(umount /mnt 2>&1)
say "UMOUNT rc=$? $(echo "$out" | oneline)"
