#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Regenerates xway-sys/src/bindings/{x86_64,aarch64}.rs from the vendored headers in
# xway-sys/include/ with a pinned bindgen-cli. `cargo build` never runs this: the output is
# committed, so building xway-sys needs neither libclang nor any Xen header.
#
# Usage: ./regenerate.sh [--out-dir DIR]
#   --out-dir DIR  write the files into DIR instead of src/bindings (check-bindings.sh uses it)
#
# Needs:
#   - libclang (Debian: `apt-get install libclang-dev`; bindgen loads it at run time, and
#     honours LIBCLANG_PATH). No cross toolchain and no system headers are used: clang runs
#     with -nostdinc against include/shim/, so the output is the same on any host.
#   - bindgen-cli $BINDGEN_VERSION. Taken from $XWAY_SYS_BINDGEN if set, else from
#     ${XDG_CACHE_HOME:-~/.cache}/xway-sys/bindgen-cli-$BINDGEN_VERSION/bin/bindgen, which is
#     installed there with `cargo install --locked` when missing (unless XWAY_SYS_NO_INSTALL=1).
#
# Bumping bindgen: change BINDGEN_VERSION, rerun, review the diff, run `cargo test`.
# Adding an architecture: add it to TARGETS below, to the cfg list in src/lib.rs, and check
# that include/shim/sys/ioctl.h has the right _IOC layout for it (it refuses others).
set -euo pipefail

BINDGEN_VERSION=0.73.2
# Rust version the generated code may rely on (the workspace's rust-version), and edition.
RUST_TARGET=1.85
RUST_EDITION=2021
# Rust target_arch -> clang target triple.
TARGETS=(
	"x86_64 x86_64-linux-gnu"
	"aarch64 aarch64-linux-gnu"
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

out_dir="src/bindings"
while [ $# -gt 0 ]; do
	case "$1" in
	--out-dir)
		out_dir="${2:?--out-dir needs a directory}"
		shift 2
		;;
	-h | --help)
		sed -n '2,22p' "$0"
		exit 0
		;;
	*)
		echo "regenerate.sh: unknown argument: $1" >&2
		exit 2
		;;
	esac
done
mkdir -p "$out_dir"

# --- find or install the pinned bindgen-cli -------------------------------------------------
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/xway-sys/bindgen-cli-$BINDGEN_VERSION"
bindgen="${XWAY_SYS_BINDGEN:-$cache_root/bin/bindgen}"
if [ ! -x "$bindgen" ]; then
	if [ -n "${XWAY_SYS_BINDGEN:-}" ] || [ "${XWAY_SYS_NO_INSTALL:-0}" = 1 ]; then
		echo "regenerate.sh: bindgen not found at $bindgen" >&2
		exit 3
	fi
	echo "regenerate.sh: installing bindgen-cli $BINDGEN_VERSION into $cache_root" >&2
	build_dir="$(mktemp -d)"
	CARGO_TARGET_DIR="$build_dir" cargo install --locked bindgen-cli \
		--version "=$BINDGEN_VERSION" --root "$cache_root" >&2
	rm -rf "$build_dir"
fi

# `bindgen --version --verbose` prints "bindgen X.Y.Z" and then "Clang: <libclang version>"; it fails
# when libclang cannot be loaded.
if ! version_out="$("$bindgen" --version --verbose 2>&1)"; then
	echo "regenerate.sh: bindgen could not load libclang (install libclang-dev):" >&2
	echo "$version_out" >&2
	exit 4
fi
bindgen_line="$(printf '%s\n' "$version_out" | sed -n 1p)"
if [ "$bindgen_line" != "bindgen $BINDGEN_VERSION" ]; then
	echo "regenerate.sh: $bindgen is '$bindgen_line', want bindgen $BINDGEN_VERSION" >&2
	exit 3
fi
clang_line="$(printf '%s\n' "$version_out" | sed -n 's/^Clang: //p')"
if [ -z "$clang_line" ]; then
	echo "regenerate.sh: could not read the libclang version from: $version_out" >&2
	exit 4
fi

# --- the fixed options -------------------------------------------------------------------
bindgen_args=(
	--rust-target "$RUST_TARGET"
	--rust-edition "$RUST_EDITION"
	--use-core
	--formatter prettyplease
	# Evaluate function-like macros such as _IOC(...) so the IOCTL_* numbers are emitted.
	--clang-macro-fallback
	# The generated __IncompleteArrayField helper then passes `unsafe_op_in_unsafe_fn`.
	--wrap-unsafe-ops
	# `XS_READ` rather than `xsd_sockmsg_type_XS_READ`, as in C.
	--no-prepend-enum-name
	--with-derive-default
	# Debug for the few types where it cannot be derived (unions), for the workspace lint.
	--impl-debug
	# /dev/xen/evtchn, /dev/xen/gntalloc, /dev/xen/gntdev (xen/{evtchn,gntalloc,gntdev}.h)
	--allowlist-type 'ioctl_.*'
	--allowlist-type 'domid_t'
	--allowlist-type 'grant_ref_t'
	--allowlist-var 'IOCTL_.*'
	--allowlist-var 'UNMAP_NOTIFY_.*'
	--allowlist-var 'GNTALLOC_FLAG_.*'
	--allowlist-var 'GNTDEV_DMA_FLAG_.*'
	# XenStore wire protocol (xen/io/xs_wire.h)
	--allowlist-type 'xsd_sockmsg.*'
	--allowlist-type 'xs_watch_type'
	--allowlist-type 'xenstore_domain_interface'
	--allowlist-type 'XENSTORE_.*'
	--allowlist-var 'XS_.*'
	--allowlist-var 'XENSTORE_.*'
	# vchan shared-page layout (xen/io/libxenvchan.h)
	--allowlist-type 'ring_shared'
	--allowlist-type 'vchan_interface'
	--allowlist-var 'VCHAN_NOTIFY_.*'
)

fallback_dir="$(mktemp -d)"
tmp_out="$(mktemp)"
trap 'rm -rf "$fallback_dir" "$tmp_out"' EXIT

for entry in "${TARGETS[@]}"; do
	arch="${entry%% *}"
	triple="${entry#* }"
	clang_args=(-nostdinc -isystem include/shim -Iinclude "--target=$triple")
	"$bindgen" "${bindgen_args[@]}" \
		--clang-macro-fallback-build-dir "$fallback_dir" \
		--output "$tmp_out" \
		include/wrapper.h -- "${clang_args[@]}"
	{
		echo "// @generated by xway-sys/regenerate.sh for target_arch = \"$arch\". Do not edit."
		echo "// bindgen-cli: $BINDGEN_VERSION"
		echo "// libclang: $clang_line"
		echo "// Inputs: include/wrapper.h and the headers it includes (include/README.md)."
		echo "// Command, run in xway-sys/:"
		echo "//   bindgen \\"
		# Quote each argument so the command can be pasted into a shell.
		# One option per line, with its value if it has one.
		n=${#bindgen_args[@]}
		i=0
		while [ "$i" -lt "$n" ]; do
			a="${bindgen_args[$i]}"
			b="${bindgen_args[$((i + 1))]:-}"
			if [ -n "$b" ] && [ "${b#--}" = "$b" ]; then
				printf '//     %q %q \\\n' "$a" "$b"
				i=$((i + 2))
			else
				printf '//     %q \\\n' "$a"
				i=$((i + 1))
			fi
		done
		echo "//     --clang-macro-fallback-build-dir \"\$(mktemp -d)\" \\"
		echo "//     --output src/bindings/$arch.rs \\"
		printf '//     include/wrapper.h --'
		printf ' %q' "${clang_args[@]}"
		echo
		echo
		cat "$tmp_out"
	} >"$out_dir/$arch.rs"
	echo "regenerate.sh: wrote $out_dir/$arch.rs ($bindgen_line, libclang $clang_line)" >&2
done
