#!/bin/bash
# sandbox.sh SYSLOG_FILE CMD [ARGS...]
#
# Meant to run as the first process of a fresh, private mount namespace (and usually a PID
# namespace), started by tests/interop/harness.py through `ip netns exec NS unshare ...`.
# It gives CMD what pptpd/pptpctrl/pptp expect from a host, without touching the host's:
#   * a private /dev: a tmpfs holding bind mounts of the harmless character devices and a NEW
#     devpts instance (pptpctrl allocates a pty per call with openpty),
#   * /dev/log served by busybox syslogd, writing SYSLOG_FILE (the test reads it),
#   * an empty tmpfs on /run/pptp (pptp's call manager keeps its unix sockets there; tests
#     running at the same time must not find each other's).
# CMD keeps our stdin (pptp exchanges PPP frames on fd 0). We exit with CMD's status.
set -euo pipefail

syslog_file=$1
shift

hostdev=$(mktemp -d /tmp/pk-sandbox-dev.XXXXXX)
mount --rbind /dev "$hostdev"
mount -t tmpfs -o mode=0755,size=1m sandbox-dev /dev
for node in null zero full random urandom tty; do
    : >"/dev/$node"
    mount --bind "$hostdev/$node" "/dev/$node"
done
umount -l "$hostdev"
rmdir "$hostdev"
mkdir -m 0755 /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
ln -s /proc/self/fd /dev/fd

mkdir -p /run/pptp
mount -t tmpfs -o mode=0755,size=1m sandbox-run /run/pptp

busybox syslogd -n -S -O "$syslog_file" </dev/null >/dev/null 2>&1 &
syslogd=$!
for _ in $(seq 100); do
    [ -S /dev/log ] && break
    sleep 0.02
done
[ -S /dev/log ] || { echo "sandbox: syslogd did not start" >&2; exit 99; }

set +e
# An explicit <&0: a background job would otherwise get /dev/null as stdin.
"$@" <&0 &
child=$!
# Keep no copy of the caller's stdin here, so the caller sees EOF as soon as CMD exits.
exec </dev/null
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
while :; do
    wait "$child"
    rc=$?
    # wait returns early (status > 128) when a trapped signal arrives; keep waiting for CMD.
    kill -0 "$child" 2>/dev/null || break
done
sleep 0.2  # let syslogd write what CMD logged last
kill "$syslogd" 2>/dev/null
wait "$syslogd" 2>/dev/null
exit "$rc"
