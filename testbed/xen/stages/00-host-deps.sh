#!/bin/bash
# Stage host-deps (never cached; cheap when everything is there): Debian packages the host needs.
set -euo pipefail
PKGS="qemu-system-x86 debootstrap busybox-static cpio e2fsprogs xz-utils zstd gzip tar procps util-linux
      gcc libc6-dev debian-archive-keyring ca-certificates"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends $missing
else
  echo "all host packages present"
fi
