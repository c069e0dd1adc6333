#!/bin/bash
# Stage dom0-image: from $R, the files QEMU boots (xen as an uncompressed ELF32 for multiboot, the dom0
# kernel and initrd), the guests' kernel as an uncompressed ELF (see the flake notes in README.md) and
# kernel modules, and dom0.img (ext4 made with `mkfs.ext4 -d`, no loop device). dom0's /sbin/lab-init
# only mounts the payload disk and runs its driver, so changing a test never rebuilds this image.
set -euo pipefail
: "${TB:?}" "${B:?}" "${R:?}"
mkdir -p "$B"
KVER=$(ls "$R/lib/modules" | sort -V | tail -1); MD=$R/lib/modules/$KVER/kernel
zcat "$R/boot/xen-4.17-amd64.gz" > "$B/xen"
cp "$R/boot/vmlinuz-$KVER" "$B/vmlinuz"
cp "$R/boot/initrd.img-$KVER" "$B/initrd.img"
# Guests boot the ELF vmlinux: no XZ decompression in dom0's libxenguest (it failed intermittently under TCG).
off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$B/vmlinuz" | head -1 | cut -d: -f1)
tail -c +$((off+1)) "$B/vmlinuz" | xz -dc 2>/dev/null > "$B/vmlinux" || true  # trailing data after the xz stream is expected
[ "$(head -c 5 "$B/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c4602 ] || { echo "vmlinux extraction failed"; exit 1; }
rm -rf "$B/guest-modules"; mkdir -p "$B/guest-modules"
cp "$MD/drivers/xen/xen-evtchn.ko" "$MD/drivers/xen/xen-gntdev.ko" "$MD/drivers/xen/xen-gntalloc.ko" \
   "$MD/drivers/net/xen-netfront.ko" "$B/guest-modules/"
cp "$R/bin/busybox" "$B/busybox"
echo "$KVER" > "$B/kernel-version"
install -m 0755 "$TB/dom0/lab-init" "$R/sbin/lab-init"
echo "xway-testbed-dom0" > "$R/etc/hostname"
rm -f "$B/dom0.img"; truncate -s 2G "$B/dom0.img"
mkfs.ext4 -q -L dom0root -d "$R" "$B/dom0.img"
echo "kernel $KVER; dom0.img $(du -h "$B/dom0.img" | cut -f1) used of 2G sparse"
