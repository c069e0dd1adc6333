#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Checks that the committed xway-sys/src/bindings/*.rs are exactly what regenerate.sh
# produces from the vendored headers: regenerates into a temporary directory and diffs.
#
# Exit status:
#   0  identical; or skipped because libclang or the pinned bindgen-cli is not available
#      and XWAY_SYS_REQUIRE_REGEN is not set (a message says so)
#   1  the committed bindings differ from a fresh generation (the diff is printed)
#   2+ the check could not run although XWAY_SYS_REQUIRE_REGEN is set, or another error
#
# With XWAY_SYS_REQUIRE_REGEN=1 (for the CI job that installs libclang-dev), a missing
# bindgen-cli is installed (cargo install --locked, into the cache regenerate.sh uses) and
# a missing libclang is an error instead of a skip.
#
# The "// libclang: ..." header line is informational: if it is the only difference (a
# different libclang produced identical code) the check passes with a note.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

require="${XWAY_SYS_REQUIRE_REGEN:-}"
bindgen_version="$(sed -n 's/^BINDGEN_VERSION=//p' regenerate.sh)"
bindgen="${XWAY_SYS_BINDGEN:-${XDG_CACHE_HOME:-$HOME/.cache}/xway-sys/bindgen-cli-$bindgen_version/bin/bindgen}"

skip() {
	echo "check-bindings.sh: skipped: $1"
	exit 0
}

# Is libclang loadable? Ask the pinned bindgen if it is there; otherwise look for the
# library where clang-sys (bindgen's loader) looks: LIBCLANG_PATH, llvm-config, ldconfig.
have_libclang() {
	if [ -x "$bindgen" ]; then
		"$bindgen" --version --verbose 2>/dev/null | grep -q '^Clang: '
		return
	fi
	# libclang.so* or libclang-N.so*, not libclang-cpp (which bindgen cannot use).
	local dir
	for dir in "${LIBCLANG_PATH:-}" "$(llvm-config --libdir 2>/dev/null || true)"; do
		if [ -n "$dir" ] && compgen -G "$dir/libclang[.-][0-9s]*" >/dev/null; then
			return 0
		fi
	done
	ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'
}

if ! have_libclang; then
	if [ -z "$require" ]; then
		skip "libclang not available (install libclang-dev to run this check)"
	fi
	echo "check-bindings.sh: libclang not available and XWAY_SYS_REQUIRE_REGEN is set" >&2
	exit 2
fi
if [ ! -x "$bindgen" ] && [ -z "$require" ]; then
	skip "bindgen-cli $bindgen_version not found at $bindgen (run ./regenerate.sh once, or set XWAY_SYS_REQUIRE_REGEN=1, to install it)"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if ! ./regenerate.sh --out-dir "$tmp" 2>"$tmp/log"; then
	cat "$tmp/log" >&2
	echo "check-bindings.sh: regenerate.sh failed" >&2
	exit 2
fi
rm -f "$tmp/log"

status=0
for committed in src/bindings/*.rs; do
	name="$(basename "$committed")"
	if [ ! -f "$tmp/$name" ]; then
		echo "check-bindings.sh: $committed is not produced by regenerate.sh (stale file?)"
		status=1
	fi
done
for fresh in "$tmp"/*.rs; do
	name="$(basename "$fresh")"
	committed="src/bindings/$name"
	if [ ! -f "$committed" ]; then
		echo "check-bindings.sh: $committed is missing; run xway-sys/regenerate.sh"
		status=1
		continue
	fi
	if cmp -s "$committed" "$fresh"; then
		continue
	fi
	if cmp -s <(grep -v '^// libclang: ' "$committed") <(grep -v '^// libclang: ' "$fresh"); then
		echo "check-bindings.sh: note: $committed was generated with $(grep -m1 '^// libclang: ' "$committed" | sed 's|^// ||'), this machine has $(grep -m1 '^// libclang: ' "$fresh" | sed 's|^// libclang: ||'); the code is identical"
		continue
	fi
	echo "check-bindings.sh: $committed differs from a fresh generation:"
	diff -u "$committed" "$fresh" | sed "s|$tmp/|(fresh)/|" || true
	status=1
done

if [ "$status" -ne 0 ]; then
	echo "check-bindings.sh: FAILED: run xway-sys/regenerate.sh and commit the result (or revert the header change)"
	exit 1
fi
echo "check-bindings.sh: ok: src/bindings/*.rs match a fresh generation (bindgen-cli $bindgen_version)"
