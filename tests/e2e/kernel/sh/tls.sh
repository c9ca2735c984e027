# RPC-with-TLS against the real server: for each mode of MODES (tls, mtls) tlshd runs
# with that mode's configuration, the export is mounted with xprtsec=MODE, listed
# (ENTRY_MODE lines) and read (checks_MODE.txt), then unmounted; last, a mount without
# TLS on the same export must be refused (TLS_PLAIN rc t0 t1 message).
# params.sh: SERVER, EXPORT, MOUNT_OPTS (without xprtsec), MOUNT_TIMEOUT, MODES.
. /e2e/lib.sh

mkdir -p /etc/tlshd /var/run
cp /e2e/ca.pem /e2e/client.pem /e2e/client.key /etc/tlshd/
chmod 600 /etc/tlshd/client.key
echo "127.0.0.1 localhost" > /etc/hosts
write_conf() {
    {
        echo "[debug]"
        echo "loglevel=1"
        echo "tls=0"
        echo "nl=0"
        echo "[authenticate.client]"
        echo "x509.truststore=/etc/tlshd/ca.pem"
        if [ "$1" = mtls ]; then
            echo "x509.certificate=/etc/tlshd/client.pem"
            echo "x509.private_key=/etc/tlshd/client.key"
        fi
    } > /etc/tlshd.conf
}

for mode in $MODES; do
    write_conf "$mode"
    step "tlshd $mode"
    /usr/sbin/tlshd -s -c /etc/tlshd.conf >/tmp/tlshd.log 2>&1 &
    tlshd_pid=$!
    sleep 0.5
    if ! kill -0 $tlshd_pid 2>/dev/null; then
        say "ERROR tlshd $mode died: $(oneline </tmp/tlshd.log)"
        continue
    fi
    if nfs_mount "$MOUNT_OPTS,xprtsec=$mode" /mnt; then
        list_tree /mnt "ENTRY_$mode"
        sha_ranges /mnt "/e2e/checks_$mode.txt"
        out=$(umount /mnt 2>&1)
        say "UMOUNT $mode rc=$? $(echo "$out" | oneline)"
    fi
    kill $tlshd_pid
    wait $tlshd_pid 2>/dev/null
    say "TLSHDLOG_$mode $(oneline </tmp/tlshd.log | cut -c1-1500)"
done

step plain
t0=$(now)
out=$(timeout -s KILL "$MOUNT_TIMEOUT" mount -t nfs -o "$MOUNT_OPTS" "$SERVER:$EXPORT" /mnt 2>&1)
rc=$?
say "TLS_PLAIN rc=$rc $t0 $(now) $(echo "$out" | oneline)"
[ $rc -eq 0 ] && umount /mnt
