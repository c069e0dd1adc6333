#!/bin/bash
# xway Xen test bed: build (cached per stage) and boot Xen 4.17 + a PV dom0 + two PV guests under QEMU
# (TCG), run the project's guest test program in both guests and in dom0, print a summary.
# Exit 0 iff every check passed. Must run as root (CI is root; locally: sudo testbed/xen/run.sh).
#
# Environment (all optional):
#   XWAY_TESTBED_DIR           cache/work dir (default <repo>/target/xen-testbed)
#   XWAY_TESTBED_FLAVOR        xway (default: links xway-tokio) | plain (tokio stand-ins, see guest/)
#   XWAY_TESTBED_CLEAN         1: rebuild all stages (keeps downloaded .debs and cargo's target dir)
#                              all: delete the whole cache dir first
#   XWAY_TESTBED_TIMEOUT       overall limit in seconds (default 1500)
#   XWAY_TESTBED_BOOT_TIMEOUT  limit per boot in seconds (default 600)
#   XWAY_TESTBED_FLAKE_RETRIES reboots allowed for the known xl-create flake only (default 1)
#   XWAY_TESTBED_GUEST_LOG     tracing level for the guest binary (e.g. debug); XWAY_LOG in the guests
#   XWAY_TESTBED_EXPECT_RING   1: require the guest-to-guest XwayStream to be on a ring (Xen provider)
#   XWAY_TESTBED_BYTES         bulk bytes per exchange (default 1048576)
#   XWAY_TESTBED_BENCH_BYTES   bytes of the guest-to-guest bulk benchmark, per mode (default 8388608)
#   XWAY_TESTBED_RTT_ITERS     measured 64 B round trips of the benchmark, per mode (default 500)
#   XWAY_TESTBED_XEN_SELFTEST  1 (default): run the Xen device-layer self-test in both guests; 0: skip it
#   XWAY_TESTBED_MIRROR        Debian mirror (default: the one this host's apt uses)
#   XWAY_TESTBED_ACCEL / _CPU  QEMU accelerator and CPU (default tcg / max; see README.md)
#   XWAY_TESTBED_XEN_ARGS_EXTRA, XWAY_TESTBED_DOM0_ARGS_EXTRA  appended to the Xen / dom0 command lines
#                              (dom0: no commas), e.g. DOM0_ARGS_EXTRA=loglevel=7 to see the dom0 kernel
set -euo pipefail
TB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$TB/../.." && pwd)
C=${XWAY_TESTBED_DIR:-$REPO/target/xen-testbed}
TIMEOUT=${XWAY_TESTBED_TIMEOUT:-1500}
BOOT_TIMEOUT=${XWAY_TESTBED_BOOT_TIMEOUT:-600}
FLAKE_RETRIES=${XWAY_TESTBED_FLAKE_RETRIES:-1}
FLAVOR=${XWAY_TESTBED_FLAVOR:-xway}

if [ "$(id -u)" != 0 ]; then
  echo "run.sh: the Xen test bed must run as root (apt-get, debootstrap, chroot, mount): sudo $0" >&2
  exit 2
fi
case $FLAVOR in xway|plain) ;; *) echo "run.sh: XWAY_TESTBED_FLAVOR must be xway or plain" >&2; exit 2;; esac
case "${XWAY_TESTBED_CLEAN:-}" in
  all) rm -rf "$C" ;;
  1)   rm -rf "$C/stamps" "$C/build" "$C/rootfs" ;;
esac
mkdir -p "$C/stamps" "$C/build" "$C/logs"
B=$C/build R=$C/rootfs RUN=$C/run
export TB C B R RUN FLAVOR BOOT_TIMEOUT

# One run per cache dir at a time.
exec 9>"$C/.lock"
flock -n 9 || { echo "run.sh: waiting for another run using $C"; flock -w "$TIMEOUT" 9 || { echo "run.sh: gave up waiting" >&2; exit 1; }; }

T0=$(date +%s)
# Overall timeout: a watchdog kills our process tree (leaves first, so stage traps can unmount) and us.
descendants() { local c; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do descendants "$c"; echo "$c"; done; }
( set +e; sleep "$TIMEOUT" & sp=$!; trap 'kill $sp 2>/dev/null; exit 0' TERM; wait $sp
  echo "run.sh: OVERALL TIMEOUT after ${TIMEOUT}s (XWAY_TESTBED_TIMEOUT)" >&2
  for p in $(descendants $$); do [ "$p" = "$BASHPID" ] || kill -TERM "$p" 2>/dev/null; done
  sleep 3; kill -TERM $$ ) &
WATCHDOG=$!
cleanup() {
  set +e
  kill "$WATCHDOG" 2>/dev/null
  for p in $(descendants $$); do kill -TERM "$p" 2>/dev/null; done   # e.g. a background cargo build
  [ -f "$RUN/qemu.pid" ] && kill "$(cat "$RUN/qemu.pid")" 2>/dev/null || true
  for m in proc var/cache/apt/archives; do mountpoint -q "$R/$m" 2>/dev/null && umount -l "$R/$m"; done
  return 0
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 124' TERM INT

TIMES=()
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b-a}'; }
key() { { for x in "$@"; do if [ -f "$x" ]; then sha256sum < "$x"; else echo "$x"; fi; done; } | sha256sum | cut -c1-16; }
show_fail() {  # <what> <log>
  echo "---- last 60 lines of $2"; tail -n 60 "$2"; echo "----"
  echo "run.sh: stage $1 FAILED; log: $2"
  echo "LAB-RESULT: FAIL stage $1"
  exit 1
}
# stage <name> <key|-> <script>: skip if the stamp matches the key; else run with output to a log.
stage() {
  local name=$1 k=$2 script=$3 t
  t=$(date +%s.%N)
  if [ "$k" != - ] && [ "$(cat "$C/stamps/$name" 2>/dev/null)" = "$k" ]; then
    printf 'stage %-16s cached (key %s)\n' "$name" "$k"; TIMES+=("$name=cached"); return 0
  fi
  rm -f "$C/stamps/$name"
  printf 'stage %-16s running ...\n' "$name"
  bash "$TB/stages/$script" > "$C/logs/stage-$name.log" 2>&1 || show_fail "$name" "$C/logs/stage-$name.log"
  [ "$k" = - ] || echo "$k" > "$C/stamps/$name"
  printf 'stage %-16s %6ss  %s\n' "$name" "$(elapsed "$t")" "$(tail -n 1 "$C/logs/stage-$name.log")"
  TIMES+=("$name=$(elapsed "$t")s")
}

echo "== xway Xen test bed: cache $C, flavor $FLAVOR, $(date -Is)"
stage host-deps - 00-host-deps.sh
# The guest binary builds in the background, overlapping the rootfs/dom0-image stages (2 cores: cargo
# computes while debootstrap and apt mostly wait on I/O). Cargo decides what to rebuild.
GB_T=$(date +%s.%N)
bash "$TB/stages/30-guest-bin.sh" > "$C/logs/stage-guest-bin.log" 2>&1 &
GB_PID=$!
K_ROOTFS=$(key "$TB/stages/10-rootfs.sh")
stage rootfs "$K_ROOTFS" 10-rootfs.sh
K_DOM0=$(key "$K_ROOTFS" "$TB/stages/20-dom0-image.sh" "$TB/dom0/lab-init")
stage dom0-image "$K_DOM0" 20-dom0-image.sh

# Guest binary (started above): its hash keys the stages that embed it.
t=$(date +%s.%N); printf 'stage %-16s waiting for cargo (nice 10, flavor %s) ...\n' guest-bin "$FLAVOR"
wait "$GB_PID" || {
  [ "$FLAVOR" = xway ] && echo "run.sh: hint: while xway-tokio does not build, XWAY_TESTBED_FLAVOR=plain runs the bed with tokio stand-ins"
  show_fail guest-bin "$C/logs/stage-guest-bin.log"; }
GUEST_BIN=$(tail -n 1 "$C/logs/stage-guest-bin.log"); export GUEST_BIN
K_BIN=$(key "$GUEST_BIN")
# dom0's `xway` binary (xway xen-directory), built by the same stage for the xway flavor.
XWAY_BIN=
[ "$FLAVOR" = xway ] && XWAY_BIN=$(dirname "$GUEST_BIN")/xway
export XWAY_BIN
K_XWAY=$(key "${XWAY_BIN:-none}")
printf 'stage %-16s %6ss  (waited %ss) %s (sha %s)\n' guest-bin "$(elapsed "$GB_T")" "$(elapsed "$t")" \
  "$(grep -a 'Finished' "$C/logs/stage-guest-bin.log" | tail -1 | sed 's/^ *//')" "$K_BIN"
TIMES+=("guest-bin=$(elapsed "$GB_T")s(waited-$(elapsed "$t")s)")

K_INITRAMFS=$(key "$K_DOM0" "$K_BIN" "$TB/stages/40-guest-initramfs.sh" "$TB/guest/init.sh")
stage guest-initramfs "$K_INITRAMFS" 40-guest-initramfs.sh

# Settings the dom0 driver reads (part of the payload's key).
{ echo "FLAVOR=$FLAVOR"
  echo "GUEST_LOG=${XWAY_TESTBED_GUEST_LOG:-}"
  echo "EXPECT_RING=${XWAY_TESTBED_EXPECT_RING:-0}"
  echo "BYTES=${XWAY_TESTBED_BYTES:-1048576}"
  echo "XEN_SELFTEST=${XWAY_TESTBED_XEN_SELFTEST:-1}"
  echo "BENCH_BYTES=${XWAY_TESTBED_BENCH_BYTES:-8388608}"
  echo "RTT_ITERS=${XWAY_TESTBED_RTT_ITERS:-500}"
  echo "BOOT_TIMEOUT=$BOOT_TIMEOUT"
} > "$B/settings.env.new"
cmp -s "$B/settings.env.new" "$B/settings.env" && rm "$B/settings.env.new" || mv "$B/settings.env.new" "$B/settings.env"
K_PAYLOAD=$(key "$K_INITRAMFS" "$K_XWAY" "$TB/stages/50-payload.sh" "$TB/dom0/driver.sh" "$B/settings.env")
stage payload "$K_PAYLOAD" 50-payload.sh

# Boot; reboot only for the known emulation flake (exit 3 from the boot stage).
attempt=0
while :; do
  attempt=$((attempt+1)); t=$(date +%s.%N)
  echo "stage boot             attempt $attempt (QEMU TCG, timeout ${BOOT_TIMEOUT}s) ..."
  rc=0; bash "$TB/stages/60-boot.sh" || rc=$?
  printf 'stage %-16s %6ss  %s\n' boot "$(elapsed "$t")" "$(cat "$RUN/verdict" 2>/dev/null)"
  TIMES+=("boot#$attempt=$(elapsed "$t")s")
  [ "$rc" = 3 ] && [ "$attempt" -le "$FLAKE_RETRIES" ] || break
  echo "run.sh: known emulation flake (guest xl create failed in dom0: domain build / XZ decompress); rebooting once"
  mkdir -p "$C/logs/flake-$(date +%Y%m%d-%H%M%S)" && cp "$RUN/serial.log" "$_/" 2>/dev/null || true
done

# ---- summary
mkdir -p "$RUN"; touch "$RUN/serial.log"
RESULTS=$RUN/results/xway/all-results.txt
if [ ! -s "$RESULTS" ]; then   # no results disk: fall back to the block dom0 printed on the serial log
  RESULTS=$RUN/results-from-serial.txt
  tr -d '\r' < "$RUN/serial.log" | sed -n '/^==== RESULTS BEGIN/,/^==== RESULTS END/p' | grep -aE '^(XWAY-TEST|XWAY-BENCH|GUEST-RESULT) ' > "$RESULTS" || true
fi
echo
echo "== results (flavor $FLAVOR)"
printf '%-7s %-40s %-5s %s\n' ROLE CHECK RESULT DETAIL
awk '$1 == "XWAY-TEST" { d = ""; for (i = 5; i <= NF; i++) d = d (i > 5 ? " " : "") $i;
       printf "%-7s %-40s %-5s %s\n", $2, $3, $4, substr(d, 1, 90) }' "$RESULTS"
grep -a '^GUEST-RESULT' "$RESULTS" || true
if grep -qa '^XWAY-BENCH' "$RESULTS"; then
  echo "-- bench (TCG emulation: compare ratios only, never absolute numbers)"
  awk '$1 == "XWAY-BENCH" { printf "%-7s %-32s %10s %-5s %s\n", $2, $3, $4, $5, substr($0, index($0, "transport:")) }' "$RESULTS"
fi
if grep -qa '^XWAY-BENCH [^ ]* bench:' "$RESULTS"; then
  echo "-- guest-to-guest benchmark: guest B -> guest A, xway as configured vs xway forced to TCP (same boot)"
  awk '$1 == "XWAY-BENCH" && $3 ~ /^bench:/ {
         split($3, k, ":"); v[k[2] ":" k[3]] = $4
         if (k[3] == "rtt-64B-p50") t[k[2]] = substr($0, index($0, "transport: ") + 11) }
       function cell(x) { return x == "" ? "-" : x }
       function ratio(x, y) { return (x != "" && y != "" && y + 0 > 0) ? sprintf("%.3f", x / y) : "-" }
       function row(label, fig, lower,   x, z, y) {
         x = v["xway:" fig]; z = v["xway-256k:" fig]; y = v["tcp:" fig]
         printf "%-28s %10s %10s %10s %9s %9s  %s\n", label, cell(x), cell(z), cell(y), ratio(x, y), ratio(z, y), lower }
       END {
         printf "%-28s %10s %10s %10s %9s %9s\n", "figure", "xway", "xway-256k", "tcp", "xway/tcp", "256k/tcp"
         row("64 B ping-pong p50, us", "rtt-64B-p50", "(lower is better)")
         row("64 B ping-pong p99, us", "rtt-64B-p99", "(lower is better)")
         row("bulk, 64 KiB writes, MB/s", "bulk-64KiB", "(higher is better)")
         row("connect, ms", "connect", "(lower is better)")
         printf "transports: xway: %s; xway-256k: %s; tcp: %s\n", cell(t["xway"]), cell(t["xway-256k"]), cell(t["tcp"]) }' "$RESULTS"
fi
VERDICT=$(cat "$RUN/verdict" 2>/dev/null || echo "FAIL no verdict")
nfail=$(grep -c '^XWAY-TEST [^ ]* [^ ]* FAIL' "$RESULTS" || true)
npass=$(grep -c '^XWAY-TEST [^ ]* [^ ]* PASS' "$RESULTS" || true)
case "$VERDICT" in PASS*) [ "$nfail" = 0 ] && [ "$npass" -gt 0 ] || VERDICT="FAIL ($nfail failed, $npass passed checks)";; esac
echo
echo "== timings: ${TIMES[*]} total=$(( $(date +%s)-T0 ))s"
echo "$(date -Is) flavor=$FLAVOR ${TIMES[*]} total=$(( $(date +%s)-T0 ))s verdict=${VERDICT%% *}" >> "$C/timings.log"
case "$VERDICT" in
  PASS*) echo "serial log: $RUN/serial.log"; echo "LAB-RESULT: $VERDICT"; exit 0 ;;
esac
# Failure: keep the logs, show where they are and the last relevant lines.
F=$C/logs/fail-$(date +%Y%m%d-%H%M%S); mkdir -p "$F"
cp "$RUN/serial.log" "$F/" 2>/dev/null || true
cp -r "$RUN/results/xway" "$F/dom0-logs" 2>/dev/null || true
echo "---- last 60 relevant lines of the serial log"
rel=$(tr -d '\r' < "$F/serial.log" | grep -aiE 'XWAY-|GUEST-|LAB-|\[dom0|error|fail|panic|crash|timeout|timed out|call trace|oops' | tail -n 60)
[ -n "$rel" ] && echo "$rel" || tail -n 60 "$F/serial.log"
echo "----"
echo "logs kept in $F:"
find "$F" -type f | sort | sed 's/^/  /'
echo "LAB-RESULT: FAIL ${VERDICT#FAIL }"
exit 1
