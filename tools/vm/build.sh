#!/usr/bin/env bash
# Builds (or refreshes) the artefacts of pptpkit's test VM in $PKVM_CACHE:
#
#   rootfs/ + base.cpio.gz   Debian minbase with the real ppp, pptpd, pptp-linux, python3 ...
#   kernel/ + vmlinuz        the Debian kernel package linux-image-amd64 points at
#   overlay/ + overlay.cpio.gz   /init, the guest scripts, the needed kernel modules, configs
#   initramfs.img            base.cpio.gz followed by overlay.cpio.gz (a later cpio member wins)
#
# Each stage records a key of its inputs (*.key) and is redone only when that key changes, so
# a warm run takes well under a second and editing tools/vm/guest/* only redoes the overlay.
#
# Usage: build.sh [--force]     (--force: redo every stage)
set -euo pipefail
# shellcheck source=settings.sh
. "$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)/settings.sh"
export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C

force=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        *) pkvm_fail "build.sh: unknown argument $arg" ;;
    esac
done
[ "$(id -u)" = 0 ] || pkvm_fail "build.sh must run as root"

mkdir -p "$PKVM_CACHE"
# One builder at a time: pkvm up calls us, and so may a parallel test run.
exec 8>"$PKVM_CACHE/.lock"
flock 8

rootfs=$PKVM_CACHE/rootfs
debs=$PKVM_CACHE/debs
kdir=$PKVM_CACHE/kernel
ovl=$PKVM_CACHE/overlay
log=$PKVM_CACHE/build.log

# Bump when the way a stage is produced changes (and its inputs alone would not show it).
ROOTFS_REV=1

hash_of() { sha256sum | cut -c1-32; }
key_is() { [ $force = 0 ] && [ -f "$PKVM_CACHE/$1.key" ] && [ "$(cat "$PKVM_CACHE/$1.key")" = "$2" ]; }
key_set() { printf '%s\n' "$2" > "$PKVM_CACHE/$1.key"; }

host_tools() {
    local want=() tool pkg
    for tool in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap cpio:cpio \
                depmod:kmod ip:iproute2 flock:util-linux; do
        command -v "${tool%%:*}" >/dev/null || want+=("${tool#*:}")
    done
    if ((${#want[@]})); then
        pkvm_say "installing host packages: ${want[*]}"
        apt-get update -qq || pkvm_say "apt-get update failed; trying the install anyway"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
    fi
}

stage_rootfs() {
    local key
    key=$(printf '%s|%s|%s' "$ROOTFS_REV" "$PKVM_SUITE" "$PKVM_GUEST_PKGS" | hash_of)
    if key_is rootfs "$key" && [ -f "$PKVM_CACHE/base.cpio.gz" ]; then
        return 0
    fi
    local mirror
    mirror=$(pkvm_mirror) || pkvm_fail "no Debian mirror in the host's apt configuration (set PKVM_MIRROR)"
    pkvm_say "rootfs: debootstrap minbase $PKVM_SUITE (+ ${PKVM_GUEST_PKGS// /,})"
    rm -rf "$rootfs" "$PKVM_CACHE/base.cpio.gz" "$PKVM_CACHE/rootfs.key"
    mkdir -p "$debs"
    if ! debootstrap --variant=minbase --cache-dir="$debs" --include="${PKVM_GUEST_PKGS// /,}" \
            "$PKVM_SUITE" "$rootfs" "$mirror" >>"$log" 2>&1; then
        tail -n 25 "$log" >&2
        pkvm_fail "debootstrap failed (full log: $log)"
    fi
    # The whole tree lives in guest RAM: drop what nothing at run time reads.
    rm -rf "$rootfs"/usr/share/{doc,man,info}/* "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
           "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n' \
        ppp pptpd pptp-linux iproute2 busybox python3 python3-pycryptodome python3-pyroute2 \
        > "$PKVM_CACHE/versions.txt"
    pkvm_say "rootfs: packing base.cpio.gz"
    (cd "$rootfs" && find . -print0 | sort -z | cpio --null -o -H newc -R 0:0 --quiet | gzip -1) \
        > "$PKVM_CACHE/base.cpio.gz.part"
    mv "$PKVM_CACHE/base.cpio.gz.part" "$PKVM_CACHE/base.cpio.gz"
    key_set rootfs "$key"
}

kernel_package() {
    if [ -n "$PKVM_KERNEL_PKG" ]; then
        echo "$PKVM_KERNEL_PKG"
        return 0
    fi
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    if [ -z "$pkg" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    fi
    [ -n "$pkg" ] || return 1
    echo "$pkg"
}

stage_kernel() {
    local pkg version key deb kver
    pkg=$(kernel_package) || pkvm_fail "cannot resolve linux-image-amd64 from the host's apt lists"
    version=$(apt-cache show "$pkg" 2>/dev/null | awk '$1 == "Version:" { print $2; exit }')
    key="$pkg $version"
    if key_is kernel "$key" && [ -f "$PKVM_CACHE/vmlinuz" ]; then
        return 0
    fi
    pkvm_say "kernel: $pkg $version"
    mkdir -p "$debs"
    deb=$debs/${pkg}_${version//:/%3a}_amd64.deb
    if [ ! -f "$deb" ]; then
        # _apt cannot write into a root-only cache directory; download as root instead.
        (cd "$debs" && apt-get -qq -o APT::Sandbox::User=root download "$pkg=$version" >>"$log" 2>&1) \
            || pkvm_fail "apt-get download $pkg=$version failed (log: $log)"
        [ -f "$deb" ] || pkvm_fail "apt-get download did not produce $deb"
    fi
    rm -rf "$kdir" "$PKVM_CACHE/kernel.key"
    mkdir -p "$kdir"
    dpkg-deb -x "$deb" "$kdir"
    kver=$(ls "$kdir/lib/modules")
    [ "$(wc -w <<<"$kver")" = 1 ] || pkvm_fail "expected one kernel in $deb, found: $kver"
    echo "$kver" > "$PKVM_CACHE/kver"
    cp "$kdir/boot/vmlinuz-$kver" "$PKVM_CACHE/vmlinuz"
    depmod -b "$kdir" "$kver"
    key_set kernel "$key"
}

stage_overlay() {
    local key kver
    key=$( { cat "$PKVM_CACHE/rootfs.key" "$PKVM_CACHE/kernel.key"; echo "$PKVM_MODULES";
             cat "${BASH_SOURCE[0]}"; (cd "$PKVM_HOME/guest" && find . -type f -print0 | sort -z | xargs -0 sha256sum);
           } | hash_of)
    if key_is overlay "$key" && [ -f "$PKVM_CACHE/initramfs.img" ]; then
        return 0
    fi
    kver=$(cat "$PKVM_CACHE/kver")
    rm -rf "$ovl" "$PKVM_CACHE/overlay.key"
    # Debian's rootfs is merged-/usr (/lib is a symlink). A real lib/ directory in the
    # later archive would replace that symlink and break the dynamic loader.
    mkdir -p "$ovl/usr/lib/modules/$kver" "$ovl/usr/local/sbin" "$ovl/etc/ppp/ip-up.d" \
             "$ovl/etc/ppp/ip-down.d" "$ovl/pk" "$ovl/pptpkit"
    ln -s usr/lib "$ovl/lib"

    local mod line path missing=()
    for mod in $PKVM_MODULES; do
        if ! line=$(modprobe -d "$kdir" -S "$kver" --show-depends "$mod" 2>/dev/null); then
            missing+=("$mod")
            continue
        fi
        # "insmod /path/x.ko [params]" per module; "builtin x" needs nothing copied.
        while read -r kind path _; do
            [ "$kind" = insmod ] || continue
            path=${path#"$kdir"}
            mkdir -p "$ovl$(dirname "$path")"
            cp -n "$kdir$path" "$ovl$path"
        done <<<"$line"
    done
    ((${#missing[@]} == 0)) || pkvm_fail "kernel modules not found in $kver: ${missing[*]}"
    cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$ovl/lib/modules/$kver/"
    depmod -b "$ovl" "$kver"

    install -m 0755 "$PKVM_HOME/guest/init" "$ovl/init"
    local script
    for script in "$PKVM_HOME"/guest/pk-*; do
        install -m 0755 "$script" "$ovl/usr/local/sbin/"
    done
    install -m 0755 "$PKVM_HOME/guest/ppp-hook" "$ovl/etc/ppp/ip-up.d/0pkvm"
    install -m 0755 "$PKVM_HOME/guest/ppp-hook" "$ovl/etc/ppp/ip-down.d/0pkvm"
    # The test credentials, for the server (what it checks) and the client (what it sends).
    printf '# client\tserver\tsecret\taddresses\nalice\t*\twonderland\t*\n' > "$ovl/etc/ppp/chap-secrets"
    cp "$ovl/etc/ppp/chap-secrets" "$ovl/etc/ppp/pap-secrets"
    chmod 0600 "$ovl/etc/ppp/chap-secrets" "$ovl/etc/ppp/pap-secrets"
    # Debian packages pycryptodome under the name Cryptodome; pptpkit imports Crypto.
    mkdir -p "$ovl/usr/lib/python3/dist-packages" "$ovl/etc/pkvm"
    ln -s Cryptodome "$ovl/usr/lib/python3/dist-packages/Crypto"
    printf '%s\n' $PKVM_MODULES > "$ovl/etc/pkvm/modules"
    echo pkvm > "$ovl/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tpkvm\n' > "$ovl/etc/hosts"

    (cd "$ovl" && find . -print0 | sort -z | cpio --null -o -H newc -R 0:0 --quiet | gzip -1) \
        > "$PKVM_CACHE/overlay.cpio.gz"
    cat "$PKVM_CACHE/base.cpio.gz" "$PKVM_CACHE/overlay.cpio.gz" > "$PKVM_CACHE/initramfs.img.part"
    mv "$PKVM_CACHE/initramfs.img.part" "$PKVM_CACHE/initramfs.img"
    key_set overlay "$key"
    pkvm_say "initramfs.img: $(du -h "$PKVM_CACHE/initramfs.img" | cut -f1) (kernel $kver)"
}

started=$SECONDS
host_tools
stage_rootfs
stage_kernel
stage_overlay
if ((SECONDS - started > 1)); then
    pkvm_say "build finished in $((SECONDS - started)) s"
fi
