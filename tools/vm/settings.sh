# shellcheck shell=bash
# Settings of pptpkit's QEMU test VM, sourced by tools/vm/build.sh and tools/vm/pkvm.
# Every value can be overridden from the environment (PKVM_*).
#
# Names are deliberately distinct from any other VM harness on the machine (namespace
# "pkvm-host", bridge "pkvmbr0", tap "pkvmtap0", cache /var/cache/pptpkit-vm, state
# /run/pptpkit-vm) so that two harnesses can run side by side.

PKVM_HOME=${PKVM_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
# The project checkout shared read-only with the guest (mounted there on /pptpkit).
PKVM_SRC=${PKVM_SRC:-$(cd "$PKVM_HOME/../.." && pwd)}

PKVM_CACHE=${PKVM_CACHE:-/var/cache/pptpkit-vm}
PKVM_STATE=${PKVM_STATE:-/run/pptpkit-vm}

PKVM_NS=${PKVM_NS:-pkvm-host}
PKVM_BRIDGE=${PKVM_BRIDGE:-pkvmbr0}
PKVM_TAP=${PKVM_TAP:-pkvmtap0}
# TEST-NET-1 (RFC 5737) only; the namespace gets no default route.
PKVM_HOST_ADDR=${PKVM_HOST_ADDR:-192.0.2.1}
PKVM_GUEST_ADDR=${PKVM_GUEST_ADDR:-192.0.2.2}
PKVM_PREFIXLEN=${PKVM_PREFIXLEN:-24}
PKVM_MAC=${PKVM_MAC:-52:54:00:70:6b:02}

PKVM_MEM=${PKVM_MEM:-1024}
PKVM_CPUS=${PKVM_CPUS:-1}
# auto = hardware KVM when kvm_intel/kvm_amd is loaded, TCG otherwise (see README.md).
PKVM_ACCEL=${PKVM_ACCEL:-auto}
PKVM_BOOT_TIMEOUT=${PKVM_BOOT_TIMEOUT:-120}

PKVM_SUITE=${PKVM_SUITE:-bookworm}
# Empty = taken from the host's apt configuration at build time (pkvm_mirror below).
PKVM_MIRROR=${PKVM_MIRROR:-}
PKVM_APT_DIR=${PKVM_APT_DIR:-/etc/apt}
# Empty = whatever linux-image-amd64 depends on in the host's apt lists.
PKVM_KERNEL_PKG=${PKVM_KERNEL_PKG:-}

PKVM_GUEST_PKGS=${PKVM_GUEST_PKGS:-ppp pptpd pptp-linux iproute2 iputils-ping kmod procps busybox tini iperf3 tcpdump python3 python3-pycryptodome python3-pyroute2}

# Loaded at guest boot, in this order; modprobe's dependency closure goes into the image.
PKVM_MODULES=${PKVM_MODULES:-virtio_pci virtio_net virtio_rng 9pnet_virtio 9p slhc ppp_generic ppp_async ppp_synctty ppp_deflate bsd_comp ppp_mppe gre pptp tun veth}

pkvm_say() { printf 'pkvm %s: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pkvm_fail() { pkvm_say "error: $*"; exit 1; }

# Print the Debian mirror the host's own apt uses for the main archive: the first URI of a
# deb822 stanza (sources.list.d/*.sources) or a one-line "deb" entry whose URI is not a
# security or updates archive. Nothing about mirrors is stored in the repository.
pkvm_mirror() {
    if [ -n "$PKVM_MIRROR" ]; then
        echo "$PKVM_MIRROR"
        return 0
    fi
    local f uri
    for f in "$PKVM_APT_DIR"/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(awk '
            /^[ \t]*$/ { if (deb && uri != "") { print uri; exit } deb = 0; uri = ""; next }
            tolower($1) == "types:" { deb = ($0 ~ /[ \t]deb([ \t]|$)/) }
            tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i !~ /security/) { uri = $i; break } }
            END { if (deb && uri != "") print uri }
        ' "$f" | head -n1)
        if [ -n "$uri" ]; then
            echo "${uri%/}"
            return 0
        fi
    done
    for f in "$PKVM_APT_DIR"/sources.list "$PKVM_APT_DIR"/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri=$(awk '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($i !~ /security/ && $(i + 1) !~ /-(updates|security|backports)$/) { print $i; exit }
            }
        ' "$f")
        if [ -n "$uri" ]; then
            echo "${uri%/}"
            return 0
        fi
    done
    return 1
}
