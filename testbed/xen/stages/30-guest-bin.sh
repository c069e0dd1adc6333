#!/bin/bash
# Stage guest-bin (always runs; cargo's own incremental build makes it ~1 s when nothing changed):
# the static guest test binary, `+crt-static` glibc, into $CARGO_TARGET_DIR under the cache dir.
#   FLAVOR=xway  (default) links xway-tokio (the real XwayStream/XwayListener)
#   FLAVOR=plain stand-ins on plain tokio (feature `plain`); built from a copy of the manifest without
#                the xway-tokio dependency, so it works even while xway-tokio's manifest cannot load.
# Flavor xway also builds the root package's `xway` binary the same way (static, release, no debug info),
# for dom0's `xway xen-directory`; it lands at $CARGO_TARGET_DIR/<target>/release/xway (run.sh looks there).
# Output: the guest binary's path on the last line of stdout.
set -euo pipefail
: "${TB:?}" "${C:?}" "${FLAVOR:?}"
TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=$C/cargo-target
mkdir -p "$CARGO_TARGET_DIR"
case $FLAVOR in
  xway)  MANIFEST=$TB/guest/Cargo.toml; FEATURES=() ;;
  plain) P=$C/guest-plain; mkdir -p "$P"
         sed -e '/^xway-tokio *=/d' -e 's/^xway = \["dep:xway-tokio"\]/xway = []/' "$TB/guest/Cargo.toml" > "$P/Cargo.toml.new"
         cmp -s "$P/Cargo.toml.new" "$P/Cargo.toml" && rm "$P/Cargo.toml.new" || mv "$P/Cargo.toml.new" "$P/Cargo.toml"
         ln -sfn "$TB/guest/src" "$P/src"
         MANIFEST=$P/Cargo.toml; FEATURES=(--no-default-features --features plain) ;;
  *) echo "XWAY_TESTBED_FLAVOR must be xway or plain"; exit 2 ;;
esac
CARGO=(cargo)
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && ! command -v cargo >/dev/null; then
  # `sudo run.sh`: build as the invoking user, with their toolchain, into a target dir they own.
  H=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  chown -R "$SUDO_USER" "$CARGO_TARGET_DIR" ${P:+"$P"}
  CARGO=(runuser -u "$SUDO_USER" -- env HOME="$H" PATH="$H/.cargo/bin:$PATH" CARGO_TARGET_DIR="$CARGO_TARGET_DIR" cargo)
elif ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH \
    || { echo "cargo not found: install a Rust toolchain (rustup) first"; exit 2; }
fi
RUSTFLAGS='-C target-feature=+crt-static' nice -n 10 "${CARGO[@]}" build --release --target $TARGET \
  --manifest-path "$MANIFEST" "${FEATURES[@]}" >&2
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] || { echo "no ELF at $1" >&2; exit 1; }; }
BIN=$CARGO_TARGET_DIR/$TARGET/release/xway-testbed-guest
is_elf "$BIN"
if [ "$FLAVOR" = xway ]; then
  REPO=$(cd "$TB/../.." && pwd)
  RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    nice -n 10 "${CARGO[@]}" build --release --target $TARGET --manifest-path "$REPO/Cargo.toml" --bin xway >&2
  is_elf "$CARGO_TARGET_DIR/$TARGET/release/xway"
fi
echo "$BIN"
