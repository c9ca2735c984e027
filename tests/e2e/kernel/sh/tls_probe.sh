# RPC-with-TLS from the kernel client: tlshd does the handshake the kernel asks for
# (xprtsec=tls, then xprtsec=mtls), the tree is listed and a file read, both through TLS.
# params.sh: SERVER, EXPORT, MOUNT_OPTS (without xprtsec), MOUNT_TIMEOUT, MODES.
. /e2e/lib.sh

mkdir -p /etc/tlshd /var/run
cp /e2e/ca.pem /e2e/client.pem /e2e/client.key /etc/tlshd/
chmod 600 /etc/tlshd/client.key
# busybox has no /etc/hosts by default; tlshd may look the server's name up.
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
        say "TLSHD died $(oneline </tmp/tlshd.log)"
        continue
    fi
    say "TLSHD running $mode"
    if nfs_mount "$MOUNT_OPTS,xprtsec=$mode" /mnt; then
        say "LS_$mode $(ls /mnt | oneline)"
        h=$(cat "/mnt/$READ_FILE" | sha256sum)
        say "SHA_$mode ${h%% *}"
        umount /mnt || say "UMOUNT failed"
    fi
    kill $tlshd_pid
    wait $tlshd_pid 2>/dev/null
    say "TLSHDLOG_$mode $(oneline </tmp/tlshd.log | cut -c1-1500)"
done
