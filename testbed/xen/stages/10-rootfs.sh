#!/bin/bash
# Stage rootfs: debootstrap a Debian 12 root for dom0 with the Xen 4.17 hypervisor, xl, xenstored and a
# kernel (the same kernel the guests boot). Output: $R. The .debs are kept in $C/debcache and
# $C/aptcache, so rebuilding this stage after a script change does not download them again.
set -euo pipefail
: "${C:?}" "${R:?}"
SUITE=bookworm
# The Debian mirror this machine's apt already uses (XWAY_TESTBED_MIRROR overrides).
MIRROR=${XWAY_TESTBED_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
echo "mirror: $MIRROR"
mkdir -p "$C/debcache" "$C/aptcache"
cleanup() { for m in proc var/cache/apt/archives; do mountpoint -q "$R/$m" && umount -l "$R/$m"; done; true; }
trap cleanup EXIT
trap 'exit 143' TERM INT
cleanup
rm -rf "$R"
t0=$(date +%s)
debootstrap --variant=minbase --cache-dir="$C/debcache" "$SUITE" "$R" "$MIRROR"
t1=$(date +%s)
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
# Small initrd, built and unpacked fast: dom0's root is ext4 on virtio-blk, nothing else is needed.
mkdir -p "$R/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nCOMPRESS=zstd\n' > "$R/etc/initramfs-tools/conf.d/xway-testbed"
printf 'virtio_pci\nvirtio_blk\next4\n' > "$R/etc/initramfs-tools/modules"
mount --bind "$C/aptcache" "$R/var/cache/apt/archives"
mount -t proc proc "$R/proc"
chroot "$R" apt-get update -q
DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get install -y -q --no-install-recommends \
  xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils \
  linux-image-amd64 initramfs-tools zstd kmod iproute2 procps busybox-static iputils-ping
# (no apt-get clean: the archive dir is the bind-mounted cache)
cleanup
# Not needed in dom0; makes the image smaller and mkfs faster.
rm -rf "$R/usr/share/doc" "$R/usr/share/man" "$R/usr/share/locale" "$R/var/lib/apt/lists"/*_Packages
echo "debootstrap $((t1-t0))s, apt-get install in chroot $(( $(date +%s)-t1 ))s, $(du -sh "$R" | cut -f1)"
