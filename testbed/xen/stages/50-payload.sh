#!/bin/bash
# Stage payload: the second disk of dom0 (mounted read-only at /lab): the driver, its settings, the
# guests' kernel + initramfs, and the test binary for dom0's own checks.
set -euo pipefail
: "${TB:?}" "${B:?}" "${GUEST_BIN:?}"
P=$B/payload; rm -rf "$P"; mkdir -p "$P"
install -m 0755 "$TB/dom0/driver.sh" "$P/driver.sh"
cp "$B/settings.env" "$P/settings.env"
ln "$B/vmlinux" "$P/vmlinux" 2>/dev/null || cp "$B/vmlinux" "$P/vmlinux"
cp "$B/guest.cpio.gz" "$P/"
install -m 0755 "$GUEST_BIN" "$P/xway-testbed-guest"
rm -f "$B/payload.img"; truncate -s 256M "$B/payload.img"
mkfs.ext4 -q -L payload -d "$P" "$B/payload.img"
echo "payload.img $(du -h "$B/payload.img" | cut -f1)"
