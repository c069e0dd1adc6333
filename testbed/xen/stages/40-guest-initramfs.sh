#!/bin/bash
# Stage guest-initramfs: busybox (static, from the dom0 rootfs) + 4 Xen/net modules + the static guest
# test binary + guest/init.sh as /init -> $B/guest.cpio.gz
set -euo pipefail
: "${TB:?}" "${B:?}" "${GUEST_BIN:?}"
G=$B/guest-root; rm -rf "$G"; mkdir -p "$G"/{bin,proc,sys,dev,tmp,lib/modules}
cp "$B/busybox" "$G/bin/busybox"
for a in sh mount ls cat echo sleep ip insmod poweroff grep sed dmesg uname timeout ping cut tee seq kill; do ln -s busybox "$G/bin/$a"; done
cp "$B"/guest-modules/*.ko "$G/lib/modules/"
cp "$GUEST_BIN" "$G/bin/xway-testbed-guest"
install -m 0755 "$TB/guest/init.sh" "$G/init"
(cd "$G" && find . | sort | cpio -o -H newc --quiet -R 0:0 | gzip -6) > "$B/guest.cpio.gz"
echo "guest.cpio.gz $(du -h "$B/guest.cpio.gz" | cut -f1)"
