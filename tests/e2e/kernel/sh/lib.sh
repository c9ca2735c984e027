# Helpers of the guest scenarios (busybox sh). Sourced by each scenario; params.sh
# (written by the host) sets SERVER, EXPORT, MOUNT_OPTS and the scenario's values.
# Results: `KEY value` lines on fd 3 (the second serial port, opened by /init).
. /e2e/params.sh
set -o pipefail

say() { echo "$*" >&3; }
now() { cut -d' ' -f1 /proc/uptime; }
step() { say "STEP $1 $(now)"; }
# One line of text from a command's output (newlines and tabs become spaces).
oneline() { tr '\n\t' '  ' | sed 's/  */ /g; s/ $//'; }

# nfs_mount OPTIONS MOUNTPOINT: say MOUNT ok|failed; a hung mount is killed after MOUNT_TIMEOUT.
nfs_mount() {
    step "mount $1"
    mkdir -p "$2"
    out=$(timeout -s KILL "${MOUNT_TIMEOUT:-90}" mount -t nfs -o "$1" "$SERVER:$EXPORT" "$2" 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
        say "MOUNT failed rc=$rc $(echo "$out" | oneline)"
        return 1
    fi
    say "MOUNT ok $(now)"
    say "MOUNTINFO $(grep " $2 " /proc/mounts | oneline)"
}

# list_tree DIR [KEY]: one KEY line (default ENTRY) per entry: type|size|mode|inode|path,
# the path relative to DIR.
list_tree() {
    key=${2:-ENTRY}
    step "list $1"
    (cd "$1" && find . -exec stat -c '%F|%s|%a|%i|%n' {} + 2>/tmp/find.err) | while IFS= read -r l; do
        say "$key $l"
    done
    rc=$?
    [ -s /tmp/find.err ] && say "LISTERR $(oneline </tmp/find.err)"
    say "LISTED $key rc=$rc"
}

# sha_ranges DIR CHECKS: CHECKS has lines `ID OFFSET LENGTH PATH`; OFFSET `-` means the
# whole file. Says `SHA ID HEX` or `READERR ID message`.
sha_ranges() {
    step "checks $2"
    while read -r id off len path; do
        if [ "$off" = "-" ]; then
            h=$(dd if="$1/$path" bs=131072 2>/tmp/dd.err | sha256sum) || {
                say "READERR $id $(oneline </tmp/dd.err)"
                continue
            }
        else
            h=$(dd if="$1/$path" bs=65536 iflag=skip_bytes,count_bytes skip="$off" count="$len" \
                2>/tmp/dd.err | sha256sum) || {
                say "READERR $id $(oneline </tmp/dd.err)"
                continue
            }
        fi
        say "SHA $id ${h%% *}"
    done <"$2"
    say "CHECKED $(now)"
}

# expect_fail NAME COMMAND...: run a command that must fail; say `REFUSED NAME rc message`.
expect_fail() {
    name=$1
    shift
    out=$(timeout -s KILL 60 "$@" 2>&1 </dev/null)
    say "REFUSED $name rc=$? $(echo "$out" | oneline)"
}

# sh_fail NAME SCRIPT: the same for a shell snippet (redirections).
sh_fail() {
    out=$(timeout -s KILL 60 sh -c "$2" 2>&1 </dev/null)
    say "REFUSED $1 rc=$? $(echo "$out" | oneline)"
}

# timed_read FILE: a sequential dd bs=1M to /dev/null; says
# `THROUGHPUT bytes start end records` (times from /proc/uptime, 10 ms resolution).
timed_read() {
    step "read $1"
    size=$(stat -c %s "$1")
    t0=$(now)
    if dd if="$1" of=/dev/null bs=1048576 2>/tmp/dd.err; then
        t1=$(now)
        say "THROUGHPUT $size $t0 $t1 $(head -n1 /tmp/dd.err | oneline)"
    else
        say "READERR throughput $(oneline </tmp/dd.err)"
    fi
}

# lookups DIR NAMES: each line of NAMES must not exist; says `LOOKUP rc|path|message`.
lookups() {
    step "lookups $2"
    while IFS= read -r p; do
        out=$(ls -d "$1/$p" 2>&1)
        say "LOOKUP $?|$p|$(echo "$out" | oneline)"
    done <"$2"
}
