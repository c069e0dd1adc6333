#!/bin/bash
# Stage payload: the second disk of dom0 (mounted read-only at /lab): the driver, its settings, the
# guests' kernel + initramfs, the test binary for dom0's own checks, and (flavor xway) the `xway` binary.
set -euo pipefail
: "${TB:?}" "${B:?}" "${GUEST_BIN:?}"
P=$B/payload; rm -rf "$P"; mkdir -p "$P"
install -m 0755 "$TB/dom0/driver.sh" "$P/driver.sh"
cp "$B/settings.env" "$P/settings.env"
ln "$B/vmlinux" "$P/vmlinux" 2>/dev/null || cp "$B/vmlinux" "$P/vmlinux"
cp "$B/guest.cpio.gz" "$P/"
install -m 0755 "$GUEST_BIN" "$P/xway-testbed-guest"
# dom0's `xway xen-directory` (flavor xway only; the driver skips the directory without it).
[ -n "${XWAY_BIN:-}" ] && install -m 0755 "$XWAY_BIN" "$P/xway"
rm -f "$B/payload.img"; truncate -s 256M "$B/payload.img"
mkfs.ext4 -q -L payload -d "$P" "$B/payload.img"
echo "payload.img $(du -h "$B/payload.img" | cut -f1)"
