#!/bin/bash
# dom0 driver of the Xen test bed: exec'd by /sbin/lab-init (PID 1, no systemd) from the payload disk
# (/lab), output on hvc0 = QEMU's serial log. Brings up the Xen toolstack by hand, a bridge with no
# uplink (192.0.2.0/24 exists only inside the VM), two PV guests, runs dom0's own checks, decides the
# verdict, writes every log to the results disk (/dev/vdc, a tar read by run.sh) and powers off.
#
# Protocol (see guest/src/main.rs): XWAY-TEST/XWAY-BENCH/XWAY-INFO lines from the guests' consoles and
# from dom0's checks; GUEST-RESULT <role> ok=0|1 from each guest's /init; here: LAB-FLAKE <what> for the
# known emulation flake (run.sh may reboot once for it) and finally `LAB-RESULT: PASS|FAIL <why>`.
#
# Extension points, in order of the run:
#   guest_extra()     kernel args per guest (e.g. xway_expect_ring=1 once the Xen provider exists)
#   dom0_after_create() dom0 setup once the guests exist (e.g. publish IP -> domid for discovery)
#   dom0_checks()     checks dom0 runs while the guests run (today: a plain TCP peer against guest A)
#   REQUIRED          checks that must have PASSed (a check that silently did not run is a FAIL)
#
# dom0 runs the project's `xway xen-directory` (the trusted map guest IP -> domain id, /xway/directory)
# in the background from dom0_after_create() on, and checks it with the toolstack's own tools
# (xenstore-read, xenstore-ls -p). The last test is the peer domain's destruction: once guest B holds
# an idle stream to guest A (XWAY-READY client destroy-hold), dom0 runs `xl destroy xway-a` and tells B
# (data/xway-destroyed in B's home); B's read must end within a bound.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
. /lab/settings.env
T0=$(cut -d' ' -f1 /proc/uptime)
ts() { echo "[dom0 +$(awk -v t0="$T0" '{printf "%.1f", $1-t0}' /proc/uptime)s] $*"; }
RES=/var/log/xway; CON=/var/log/xen/console
mkdir -p "$RES"
DOM0LOG=$RES/dom0-tests.log
: > "$DOM0LOG"
# dtest <name> PASS|FAIL <detail>: one of dom0's own checks (results protocol of guest/src/main.rs).
dtest() { local n=$1 v=$2; shift 2; echo "XWAY-TEST dom0 $n $v $*" | tee -a "$DOM0LOG"; }

SERVER_IP=192.0.2.11; CLIENT_IP=192.0.2.12; DOM0_IP=192.0.2.1; PORT=7000
# Connections guest A's tcp-server serves: guest B's XwayStream client, guest B's plain peer, dom0's plain peer.
CONNS=3
REQUIRED="
server:dev-evtchn server:dev-gntalloc server:dev-gntdev server:dev-xenbus
client:dev-evtchn client:dev-gntalloc client:dev-gntdev client:dev-xenbus
server:loopback:bulk-echo server:loopback:half-close client:loopback:bulk-echo client:loopback:half-close
server:listen server:served
server:echo:xway-client@$CLIENT_IP server:echo:plain-peer@$CLIENT_IP server:echo:plain-peer@$DOM0_IP
client:connect
client:xway-client:no-unsolicited-bytes client:xway-client:small-messages client:xway-client:bulk-echo
client:xway-client:small-after-bulk client:xway-client:ping-pong client:xway-client:half-close
client:plain-peer:no-unsolicited-bytes client:plain-peer:bulk-echo client:plain-peer:half-close
dom0:plain-peer:no-unsolicited-bytes dom0:plain-peer:bulk-echo dom0:plain-peer:half-close
"
# Peer death and the benchmark (guest/src/faults.rs, bench.rs), on any transport; the checks that the
# stream was a ring (and that a destroyed domain ends it: plain TCP cannot see that) need EXPECT_RING.
REQUIRED="$REQUIRED
server:bench-server:served client:bench:xway:ping-pong client:bench:xway:bulk
client:bench:xway-256k:ping-pong client:bench:xway-256k:bulk
client:bench:tcp:ping-pong client:bench:tcp:bulk client:bench:tcp:tcp-used
server:killed:wrote server:killed:sigkill client:killed:bytes client:killed:end
server:destroyed:accepted dom0:destroyed:xl-destroy
"
[ "${EXPECT_RING:-0}" = 1 ] && REQUIRED="$REQUIRED client:ring-used client:bench:xway:ring-used client:bench:xway-256k:ring-used
client:killed:ring-used client:destroyed:ring-used client:destroyed:end"
# The device self-test needs xway-tokio: never in the plain flavor (its binary only says "skipped").
SELFTEST=0
[ "${XEN_SELFTEST:-0}" = 1 ] && [ "$FLAVOR" = xway ] && SELFTEST=1
# The trusted directory (xway xen-directory in dom0): needs the xway binary, so the xway flavor.
DIRECTORY=0
[ "$FLAVOR" = xway ] && [ -x /lab/xway ] && DIRECTORY=1
[ $DIRECTORY = 1 ] && REQUIRED="$REQUIRED
dom0:xen-directory:published dom0:xen-directory:perms dom0:xen-directory:keeps-current
dom0:xen-directory:follows-destroy dom0:xen-directory:running dom0:xen-directory:follows-lifecycle
client:directory:peer-entry client:directory:perms client:directory:no-forgery client:doctor:xen-usable
"
# Xen device layer self-test (guest/init.sh): round 1 A offers / B maps and exits; round 2 B offers /
# A maps and is killed with SIGKILL.
[ "${XEN_SELFTEST:-0}" = 1 ] && [ "$FLAVOR" = xway ] && REQUIRED="$REQUIRED
server:xen-selftest:peer-domid server:xen-selftest:offer server:xen-selftest:receive
server:xen-selftest:notify server:xen-selftest:peer-exit
client:xen-selftest:map client:xen-selftest:notify client:xen-selftest:receive
client:xen-selftest-killed:offer client:xen-selftest-killed:receive client:xen-selftest-killed:notify
client:xen-selftest-killed:peer-exit server:xen-selftest-killed:peer-domid server:xen-selftest-killed:holder-killed
"

# What every process is waiting for, and the kernel's blocked tasks with their stacks (sysrq w, to
# the console): for a hang (a stuck xl, a wedged xenstored, a process in D state).
diagnose_hang() {
  ts "diagnosis: processes (pid stat wchan comm), xenstored answering?, blocked tasks"
  ps -eo pid,stat,wchan:32,comm 2>/dev/null | grep -vE ' (kworker|ksoftirq|migration|rcu_|cpuhp|idle_inject)' | tail -n 60
  timeout 5 xenstore-read /local/domain/0/name >/dev/null 2>&1 && ts "xenstored answers" || ts "xenstored does NOT answer"
  for p in $(ps -eo pid,stat | awk '$2 ~ /^D/ {print $1}'); do
    echo "---- D-state pid $p ($(cat /proc/$p/comm 2>/dev/null)): $(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)"
    cat /proc/$p/stack 2>/dev/null
  done
  echo w > /proc/sysrq-trigger 2>/dev/null
  sleep 1
}

finish() {
  local verdict=$1
  ts "collecting logs"
  timeout 10 xl list > "$RES/xl-list.txt" 2>&1
  timeout 10 xl dmesg > "$RES/xen-dmesg.log" 2>&1
  dmesg > "$RES/dom0-dmesg.log" 2>&1
  cp /var/log/xen/xl-*.log "$RES/" 2>/dev/null
  for n in a b; do tr -d '\r' < $CON/guest-xway-$n.log > "$RES/guest-xway-$n.log" 2>/dev/null; done
  echo "LAB-RESULT: $verdict" > "$RES/verdict"
  # Results disk: a plain tar on the raw device; run.sh extracts it after QEMU stops.
  tar -C /var/log -cf /dev/vdc xway xen 2>/dev/null || ts "writing results disk failed"
  sync
  ts "LAB-RESULT: $verdict"
  sync; sleep 1; echo o > /proc/sysrq-trigger; sleep 5; poweroff -f
}

ts "dom0 userspace up; kernel $(uname -r); flavor $FLAVOR"
# Watchdog: give up (with a diagnosis and the logs) before run.sh's per-boot limit kills QEMU and
# the results disk is never written. dom0's clock follows the host's under TCG.
( sleep $(( ${BOOT_TIMEOUT:-600} - 100 )); ts "DOM0 WATCHDOG: no verdict after $(( ${BOOT_TIMEOUT:-600} - 100 ))s"
  diagnose_hang; finish "FAIL dom0 watchdog (a hang; see the diagnosis on the serial log)" ) &
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/log/xen/console /var/lib/xenstored
ln -sfn /run /var/run 2>/dev/null
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-netback bridge; do modprobe $m || ts "modprobe $m failed"; done
mount -t xenfs xenfs /proc/xen || ts "xenfs mount failed"
xenstored --pid-file /run/xenstored.pid || finish "FAIL xenstored did not start"
for i in $(seq 50); do [ -S /run/xenstored/socket ] && break; sleep 0.1; done
xen-init-dom0 || ts "xen-init-dom0 failed"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=$CON || ts "xenconsoled failed"
xl info | grep -E '^(xen_version|nr_cpus|total_memory|free_memory|xen_commandline)'
ip link add xenbr0 type bridge && ip addr add $DOM0_IP/24 dev xenbr0 && ip link set xenbr0 up
ip link set lo up

guest_extra() {  # <role> <ip> <peer> [more args]
  local e="console=hvc0 loglevel=4 random.trust_cpu=on xway_role=$1 xway_ip=$2/24 xway_peer=$3 xway_port=$PORT"
  e="$e xway_conns=$CONNS xway_bytes=${BYTES:-1048576} xway_expect_ring=${EXPECT_RING:-0}"
  e="$e xway_xen_selftest=$SELFTEST xway_dir=$DIRECTORY xway_bench_bytes=${BENCH_BYTES:-8388608}"
  e="$e xway_rtt_iters=${RTT_ITERS:-500}${4:+ $4}"
  [ -n "${GUEST_LOG:-}" ] && e="$e xway_log=$GUEST_LOG"
  echo "$e"
}
mkcfg() {  # <letter> <role> <ip> <peer> <mac-suffix> [more kernel args]
  cat > /tmp/guest-$1.cfg <<CFG
name     = "xway-$1"
type     = "pv"
kernel   = "/lab/vmlinux"
ramdisk  = "/lab/guest.cpio.gz"
extra    = "$(guest_extra "$2" "$3" "$4" "${6:-}")"
memory   = 256
vcpus    = 1
vif      = [ "mac=00:16:3e:00:00:$5,bridge=xenbr0,ip=$3" ]
on_poweroff = "destroy"
on_crash    = "destroy"
CFG
}

create() {  # one retry in place: the known TCG flake (domain build / XZ decompress) is intermittent
  ts "xl create xway-$1"
  xl create /tmp/guest-$1.cfg > "$RES/xl-create-$1.out" 2>&1 && return 0
  cat "$RES/xl-create-$1.out"
  ts "LAB-FLAKE-RETRY xl create xway-$1 failed, retrying once"
  xl destroy xway-$1 2>/dev/null; sleep 2
  xl create /tmp/guest-$1.cfg > "$RES/xl-create-$1.out" 2>&1 && return 0
  cat "$RES/xl-create-$1.out"
  if grep -qE 'unable to XZ decompress kernel|xc_dom_probe_bzimage_kernel|cannot \(re-\)build domain' "$RES/xl-create-$1.out"; then
    echo "LAB-FLAKE xl-create xway-$1"
  fi
  xl destroy xway-a 2>/dev/null; xl destroy xway-b 2>/dev/null
  finish "FAIL xl create xway-$1"
}
# Domain ids come from the toolstack (a trusted source): B gets A's on its kernel command line (so A
# is created first), A gets B's from a dom0-owned XenStore node (dom0_after_create).
mkcfg a server $SERVER_IP $CLIENT_IP 0a
create a
DOMID_A=$(xl domid xway-a)
mkcfg b client $CLIENT_IP $SERVER_IP 0b "xway_peer_domid=$DOMID_A"
create b
DOMID_B=$(xl domid xway-b)
xl list
# The guests' result lines, live on the serial log too (kept even if this boot never finishes).
for n in a b; do
  ( tail -F -n +1 $CON/guest-xway-$n.log 2>/dev/null | sed -u 's/\r//g' \
      | grep -a --line-buffered -E '^(XWAY-TEST|XWAY-READY|GUEST-RESULT|XWAY-INFO [a-z]+ (destroyed|killed|bench|crng))' \
      | sed -u "s/^/[xway-$n] /" ) &
done

# dom0-side setup that needs the guests' domain ids: the self-test's peer id for guest A, and the
# trusted directory (`xway xen-directory`, from the payload) that the Xen provider's clients read.
DIR_PID=
dom0_after_create() {
  # Guest A's peer domain id, readable by A only, writable by dom0 only (xenstore-perms.md: a node dom0
  # creates under A's home inherits owner A until the chmod; A's reader waits for owner dom0).
  local n=/local/domain/$DOMID_A/data/xway-peer-domid
  xenstore-write "$n" "$DOMID_B" && xenstore-chmod "$n" n0 "r$DOMID_A" || ts "publishing $n failed"
  ts "domain ids: xway-a=$DOMID_A xway-b=$DOMID_B; $n = $(xenstore-read "$n") ($(xenstore-ls -p "$n" 2>/dev/null | tr -s ' '))"
  [ $DIRECTORY = 1 ] || return 0
  ts "vif backends: $(for d in $DOMID_A $DOMID_B; do echo -n "dom$d ip=$(xenstore-read /local/domain/0/backend/vif/$d/0/ip 2>&1) "; done)"
  /lab/xway xen-directory > "$RES/xen-directory.log" 2>&1 &
  DIR_PID=$!
  directory_checks
  directory_lifecycle
}

# A guest created and destroyed while the publisher runs (A and B existed before it started):
# its entry must appear, then go.
C_IP=192.0.2.13 E_C=/xway/directory/192-0-2-13
directory_lifecycle() {
  local i v="" created=0 gone=0 t0
  mkcfg c idle $C_IP $SERVER_IP 0c
  sed -i 's/^memory   = 256/memory   = 128/' /tmp/guest-c.cfg
  create c
  local d=$(xl domid xway-c)
  t0=$(cut -d' ' -f1 /proc/uptime)
  for i in $(seq 120); do v=$(timeout 5 xenstore-read $E_C 2>/dev/null); [ "$v" = "$d" ] && { created=1; break; }; sleep 0.25; done
  local t_up=$(awk -v a=$t0 -v b=$(cut -d' ' -f1 /proc/uptime) 'BEGIN{printf "%.1f", b-a}')
  timeout 120 xl destroy xway-c > "$RES/xl-destroy-c.out" 2>&1 || ts "xl destroy xway-c failed: $(cat "$RES/xl-destroy-c.out")"
  t0=$(cut -d' ' -f1 /proc/uptime)
  for i in $(seq 120); do timeout 5 xenstore-read $E_C >/dev/null 2>&1 || { gone=1; break; }; sleep 0.25; done
  local t_down=$(awk -v a=$t0 -v b=$(cut -d' ' -f1 /proc/uptime) 'BEGIN{printf "%.1f", b-a}')
  if [ $created = 1 ] && [ $gone = 1 ]; then
    dtest xen-directory:follows-lifecycle PASS "xway-c (dom$d, $C_IP) created: $E_C = $v within ${t_up}s; destroyed: entry gone within ${t_down}s"
  else
    dtest xen-directory:follows-lifecycle FAIL "xway-c (dom$d): entry appeared=$created ('$v' after ${t_up}s), removed after destroy=$gone (${t_down}s); $(timeout 5 xenstore-ls -p /xway 2>&1 | tr -s ' ' | tr '\n' ';')"
  fi
}

# The directory as dom0's tools see it: both guests' entries, permissions r0 on the directory node
# and on each entry (xenstore-perms.md 1c: only a node's own permissions count), and the publisher
# keeps it current (removes a stale entry, repairs permissions).
E_A=/xway/directory/${SERVER_IP//./-} E_B=/xway/directory/${CLIENT_IP//./-}
directory_checks() {
  local i a b ls
  for i in $(seq 120); do
    a=$(xenstore-read $E_A 2>/dev/null) b=$(xenstore-read $E_B 2>/dev/null)
    [ "$a" = "$DOMID_A" ] && [ "$b" = "$DOMID_B" ] && break
    kill -0 $DIR_PID 2>/dev/null || break
    sleep 0.25
  done
  if [ "$a" = "$DOMID_A" ] && [ "$b" = "$DOMID_B" ]; then
    dtest xen-directory:published PASS "$E_A = $a, $E_B = $b after ~$((i/4))s; publisher: $(head -c 300 "$RES/xen-directory.log" | tr '\n' ' ')"
  else
    dtest xen-directory:published FAIL "$E_A = '$a' (want $DOMID_A), $E_B = '$b' (want $DOMID_B); publisher $(kill -0 $DIR_PID 2>/dev/null && echo running || echo exited): $(tail -c 400 "$RES/xen-directory.log" | tr '\n' ' ')"
  fi
  ls=$(xenstore-ls -p /xway 2>&1 | tr -s ' ')
  local bad=""
  for node in directory ${SERVER_IP//./-} ${CLIENT_IP//./-}; do
    echo "$ls" | grep -E "^ *$node = " | grep -qE '\(r0\)$' || bad="$bad $node"
  done
  if [ -z "$bad" ]; then
    dtest xen-directory:perms PASS "r0 on the directory and both entries: $(echo "$ls" | tr '\n' ';')"
  else
    dtest xen-directory:perms FAIL "not (r0):$bad; xenstore-ls -p /xway: $(echo "$ls" | tr '\n' ';')"
  fi
  # Keeps current: a stale entry disappears, tampered permissions come back (the watch on the
  # directory itself), all within the publisher's debounce plus TCG slowness.
  xenstore-write /xway/directory/192-0-2-99 77 && xenstore-chmod $E_B b0
  local gone=0 fixed=0
  for i in $(seq 80); do
    xenstore-read /xway/directory/192-0-2-99 >/dev/null 2>&1 || gone=1
    xenstore-ls -p /xway 2>/dev/null | grep -E "^ *${CLIENT_IP//./-} = " | grep -qE '\(r0\)\s*$' && fixed=1
    [ $gone = 1 ] && [ $fixed = 1 ] && break
    sleep 0.25
  done
  if [ $gone = 1 ] && [ $fixed = 1 ]; then
    dtest xen-directory:keeps-current PASS "a stale entry removed and $E_B's permissions (b0) back to r0 within ~$((i/4))s"
  else
    dtest xen-directory:keeps-current FAIL "stale entry removed=$gone, permissions repaired=$fixed after 20s: $(xenstore-ls -p /xway 2>&1 | tr -s ' ' | tr '\n' ';')"
  fi
}
dom0_after_create

dom0_checks() {
  ts "waiting for guest A's listener"
  # 200 s: guest A runs devices, loopback and the Xen self-test (2 rounds) before it listens.
  for i in $(seq 400); do grep -aq 'XWAY-READY server' $CON/guest-xway-a.log 2>/dev/null && break; sleep 0.5; done
  ts "server ready; dom0 plain-peer check"
  timeout 150 /lab/xway-testbed-guest plain-peer --role dom0 --peer $SERVER_IP:$PORT --bytes "${BYTES:-1048576}" \
    --deadline 140 > "$RES/dom0-plain-peer.log" 2>&1
  local rc=$?
  [ $rc = 0 ] || echo "XWAY-TEST dom0 plain-peer-exit FAIL exit status $rc" >> "$RES/dom0-plain-peer.log"
  cat "$RES/dom0-plain-peer.log" | tee -a "$DOM0LOG"
  destroy_peer
}

# Peer domain destroyed: once guest A has printed its result and guest B holds an idle stream to
# A's hold-server, destroy A, then tell B (a dom0-owned node B can read); B checks its stream ends.
destroy_peer() {
  local i ready=0
  ts "waiting for guest A's result and guest B's held stream"
  for i in $(seq 500); do
    grep -aq 'GUEST-RESULT server' $CON/guest-xway-a.log 2>/dev/null \
      && grep -aq 'XWAY-READY client destroy-hold' $CON/guest-xway-b.log 2>/dev/null && { ready=1; break; }
    xl list | grep -q 'xway-b ' || break
    sleep 0.5
  done
  ts "destroying xway-a (ready=$ready)"
  local t0 t1 n=/local/domain/$DOMID_B/data/xway-destroyed
  t0=$(cut -d' ' -f1 /proc/uptime)
  if timeout 120 xl destroy xway-a > "$RES/xl-destroy-a.out" 2>&1; then
    t1=$(cut -d' ' -f1 /proc/uptime)
    timeout 10 xenstore-write $n "dom$DOMID_A destroyed by xl in $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.1f", b-a}')s" \
      && timeout 10 xenstore-chmod $n n0 r$DOMID_B || ts "writing $n failed"
    if [ $ready = 1 ]; then
      dtest destroyed:xl-destroy PASS "xl destroy xway-a (dom$DOMID_A) while guest B held a stream to it; took $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.1f", b-a}')s"
    else
      dtest destroyed:xl-destroy FAIL "destroyed xway-a without guest B holding its stream (no XWAY-READY client destroy-hold, or no GUEST-RESULT server)"
    fi
  else
    dtest destroyed:xl-destroy FAIL "xl destroy xway-a (status $?, 124 = timed out after 120s): $(tr '\n' ' ' < "$RES/xl-destroy-a.out")"
    diagnose_hang
  fi
  [ $DIRECTORY = 1 ] || return 0
  # The publisher follows the toolstack: A's vif backend is gone, so is its entry.
  for i in $(seq 80); do timeout 5 xenstore-read $E_A >/dev/null 2>&1 || break; sleep 0.25; done
  if timeout 5 xenstore-read $E_A >/dev/null 2>&1; then
    dtest xen-directory:follows-destroy FAIL "$E_A still there 20s after xl destroy: $(xenstore-ls -p /xway 2>&1 | tr -s ' ' | tr '\n' ';')"
  else
    dtest xen-directory:follows-destroy PASS "$E_A removed within ~$((i/4))s of xl destroy; $E_B = $(xenstore-read $E_B 2>&1)"
  fi
}
dom0_checks

ts "waiting for guests to finish"
for i in $(seq ${GUEST_TIMEOUT:-200}); do timeout 10 xl list | grep -q xway- || break; sleep 1; done
if timeout 10 xl list | grep -q xway-; then
  echo "XWAY-TEST dom0 guests-finished FAIL still running after ${GUEST_TIMEOUT:-200}s; destroyed" >> "$DOM0LOG"
  xl destroy xway-a 2>/dev/null; xl destroy xway-b 2>/dev/null
fi
ts "guests done"
if [ $DIRECTORY = 1 ]; then
  if kill -0 $DIR_PID 2>/dev/null; then
    dtest xen-directory:running PASS "the publisher ran the whole test; its log: $(tr '\n' '|' < "$RES/xen-directory.log" | tail -c 600)"
    kill $DIR_PID
  else
    wait $DIR_PID; dtest xen-directory:running FAIL "the publisher exited (status $?): $(tr '\n' '|' < "$RES/xen-directory.log" | tail -c 600)"
  fi
fi

# Verdict. Console logs of xenconsoled may have CRs.
for n in a b; do tr -d '\r' < $CON/guest-xway-$n.log > "$RES/guest-xway-$n.log" 2>/dev/null; done
ALL=$RES/all-results.txt
cat "$RES/guest-xway-a.log" "$RES/guest-xway-b.log" "$DOM0LOG" 2>/dev/null \
  | grep -aE '^(XWAY-TEST|XWAY-BENCH|GUEST-RESULT) ' > "$ALL"
echo "==== RESULTS BEGIN"; cat "$ALL"; echo "==== RESULTS END"
why=""
nfail=$(grep -c '^XWAY-TEST [^ ]* [^ ]* FAIL' "$ALL")
[ "$nfail" = 0 ] || why="$why $nfail-failed-checks"
for r in server client; do grep -q "^GUEST-RESULT $r ok=1" "$ALL" || why="$why guest-$r-not-ok"; done
missing=""
for req in $REQUIRED; do
  role=${req%%:*} name=${req#*:}
  grep -qF "XWAY-TEST $role $name PASS" "$ALL" || missing="$missing $req"
done
[ -z "$missing" ] || { echo "required checks without PASS:$missing"; why="$why missing:$(echo $missing | tr ' ' ',')"; }
if [ -z "$why" ]; then
  finish "PASS $(grep -c '^XWAY-TEST [^ ]* [^ ]* PASS' "$ALL") checks passed (flavor $FLAVOR)"
else
  for n in a b; do echo "======== console of xway-$n (tail)"; tail -n 40 "$RES/guest-xway-$n.log"; done
  finish "FAIL$why"
fi
