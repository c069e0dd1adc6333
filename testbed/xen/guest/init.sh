#!/bin/sh
# /init of the PV guests' initramfs (busybox). Configured by kernel args (xl `extra=`, written by
# dom0/driver.sh): xway_role=server|client xway_ip=A.B.C.D/24 xway_peer=IP xway_port=N xway_conns=N
# xway_bytes=N xway_log=LEVEL xway_expect_ring=0|1 xway_xen_selftest=0|1 xway_peer_domid=N (client only:
# guest A's domain id, from dom0's toolstack; guest A reads guest B's from a dom0-owned XenStore node)
# xway_dir=0|1 (dom0 publishes the trusted directory) xway_bench_bytes=N xway_rtt_iters=N.
# Runs the test binary's subcommands for its role; every line the binary prints goes to the console
# (xenconsoled's log in dom0). Ends with `GUEST-RESULT <role> ok=<0|1>` and powers off; the server
# instead stays up after its result, holding a stream open until dom0 destroys its domain.
#
# Ports: xway_port (echo: tcp-server), +1 (bench-server), +2 (killed-server), +3 (hold-server).
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
xway_role=unknown xway_port=7000 xway_conns=1 xway_bytes=1048576 xway_log= xway_expect_ring=0
xway_xen_selftest=0 xway_peer_domid= xway_dir=0 xway_bench_bytes=8388608 xway_rtt_iters=500
for a in $(cat /proc/cmdline); do case $a in xway_*=*) eval "$a";; esac; done
R=$xway_role
echo "XWAY-INFO $R guest up: kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-netfront; do insmod /lib/modules/$m.ko || echo "XWAY-INFO $R insmod $m failed"; done
for i in $(seq 50); do [ -c /dev/xen/gntalloc ] && [ -c /dev/xen/gntdev ] && [ -c /dev/xen/evtchn ] && break; sleep 0.1; done
# Role idle (guest C): exists only so that dom0 can watch its directory entry come and go.
if [ "$R" = idle ]; then echo "XWAY-INFO $R idle until destroyed"; while :; do sleep 1000; done; fi
ip link set lo up
for i in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip addr add "$xway_ip" dev eth0 && ip link set eth0 up || echo "XWAY-INFO $R eth0 setup failed"
[ -n "$xway_log" ] && export XWAY_LOG=$xway_log
T=/bin/xway-testbed-guest
ok=1
# run <check-name> <timeout-s> <subcommand> [args]: a non-zero exit (failed check, panic, timeout) is a FAIL
run() {
  name=$1 secs=$2; shift 2
  timeout "$secs" "$T" "$@" --role "$R"; rc=$?
  [ $rc = 0 ] || { echo "XWAY-TEST $R $name-exit FAIL exit status $rc"; ok=0; }
}
# bg_run <check-name> ...: run() in the background; its ok goes to /tmp/ok.<check-name> (see collect_ok)
bg_run() {
  mkdir -p /tmp
  ( ok=1; run "$@"; echo $ok > /tmp/ok.$1 ) &
}
collect_ok() {
  for f in /tmp/ok.*; do [ -f "$f" ] && [ "$(cat "$f")" != 1 ] && ok=0; done
}
# Peer process killed (server side): killed-server writes its bytes to the one client, records
# `done N` in its state file and waits; we SIGKILL it then. The client checks what it received.
killed_job() {
  st=/tmp/killed.state; rm -f $st
  "$T" killed-server --listen 0.0.0.0:$((xway_port+2)) --bytes 32768 --state $st --deadline 400 \
    --role "$R" > /tmp/killed.out 2>&1 &
  pid=$! wrote=0 alive=0 accepted=0
  # Up to 300 s for guest B to connect, then 60 s for the writes (32 KiB fit in any ring).
  for i in $(seq 3600); do
    grep -q '^done' $st 2>/dev/null && { wrote=1; break; }
    kill -0 $pid 2>/dev/null || break
    [ -f $st ] && [ $accepted = 0 ] && accepted=$i
    [ $accepted != 0 ] && [ $((i - accepted)) -gt 600 ] && break
    sleep 0.1
  done
  kill -0 $pid 2>/dev/null && alive=1
  if [ $wrote = 0 ] && [ $alive = 1 ]; then
    # Stuck: where each of its threads waits, and the kernel's xenwatch thread (watch delivery).
    echo "XWAY-INFO $R killed: stuck at '$(cat $st 2>/dev/null)'; threads' wait channels:$(for t in /proc/$pid/task/*; do echo -n " $(cat $t/comm 2>/dev/null)=$(cat $t/wchan 2>/dev/null)"; done)"
    for t in /proc/$pid/task/*; do echo "XWAY-INFO $R killed: stack of $t: $(tr '\n' '|' < $t/stack 2>/dev/null)"; done
    for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = xenwatch ] && echo "XWAY-INFO $R killed: xenwatch wchan=$(cat $p/wchan 2>/dev/null) stack: $(tr '\n' '|' < $p/stack 2>/dev/null)"; done
  fi
  kill -9 $pid 2>/dev/null; wait $pid; rc=$?
  cat /tmp/killed.out
  if [ $wrote = 1 ] && [ $alive = 1 ] && [ $rc = 137 ]; then
    echo "XWAY-TEST $R killed:sigkill PASS pid $pid killed with SIGKILL after '$(cat $st)' with the stream open"
    echo 1 > /tmp/ok.killed
  else
    echo "XWAY-TEST $R killed:sigkill FAIL wrote-all=$wrote alive-at-kill=$alive exit status $rc state '$(cat $st 2>/dev/null)'"
    echo 0 > /tmp/ok.killed
  fi
}
run devices 20 devices
# Canary for the emulation itself (see README.md: -cpu max corrupted guest memory): 4 MiB over 127.0.0.1.
run loopback 90 loopback --bytes 4194304 --deadline 80

# Xen device layer (xway_tokio::doctor::xen_device_selftest), two rounds:
#  1. A offers (waits for the mapper's exit), B maps and exits: grants, event channels both ways,
#     XenStore perms, unmap-notify on a clean exit.
#  2. B offers (waits for the mapper's exit), A maps and holds (--wait-exit: the offerer never exits
#     first) until this script kill -9s it once its gntdev mapping is visible: unmap-notify on a
#     killed process. Swapping roles means round 2's offer node (in B's home) cannot be confused with
#     round 1's (in A's home).
SELFTEST_NODE=data/xway-peer-domid   # written by dom0 (dom0/driver.sh), relative to our XenStore home
hold_and_kill() {  # <prefix>: run a mapper in the background, kill -9 it once it has mapped
  mkdir -p /tmp
  "$T" xen-devices --xen-role mapper --peer-domid-node $SELFTEST_NODE --wait-exit --prefix "$1" \
    --deadline 140 --role "$R" > /tmp/hold.out 2>&1 &
  pid=$! mapped=0 alive=0
  for i in $(seq 1200); do
    grep -q /dev/xen/gntdev /proc/$pid/maps 2>/dev/null && { mapped=1; break; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  # Mapping -> bind -> set unmap-notify -> write -> notify take microseconds; 2 s is ample under TCG.
  [ $mapped = 1 ] && sleep 2
  kill -0 $pid 2>/dev/null && alive=1
  kill -9 $pid 2>/dev/null; wait $pid; rc=$?
  cat /tmp/hold.out
  if [ $mapped = 1 ] && [ $alive = 1 ] && [ $rc = 137 ]; then
    echo "XWAY-TEST $R $1:holder-killed PASS mapper pid $pid held the mapping and was killed with SIGKILL"
  else
    echo "XWAY-TEST $R $1:holder-killed FAIL mapped=$mapped alive-at-kill=$alive exit status $rc"; ok=0
  fi
}
if [ "$xway_xen_selftest" = 1 ]; then
  case $R in
    server)
      run xen-selftest 150 xen-devices --xen-role offerer --peer-domid-node $SELFTEST_NODE --wait-exit \
        --prefix xen-selftest --deadline 140
      hold_and_kill xen-selftest-killed ;;
    client)
      run xen-selftest 150 xen-devices --xen-role mapper --peer-domid "$xway_peer_domid" \
        --prefix xen-selftest --deadline 140
      run xen-selftest-killed 150 xen-devices --xen-role offerer --peer-domid "$xway_peer_domid" --wait-exit \
        --prefix xen-selftest-killed --deadline 140 ;;
  esac
fi

ring=; [ "$xway_expect_ring" = 1 ] && ring=--expect-ring
# getrandom() blocks until the kernel's CRNG is seeded (an xway client needs a nonce per ring):
# say when that happened, relative to the steps below.
crng() { echo "XWAY-INFO $R crng at uptime $(cut -d' ' -f1 /proc/uptime)s: $(dmesg | grep -m1 'crng init' || echo 'not seeded yet')"; }
crng
hold=
case $R in
  server)
    # Guest B uses these one after the other, after the echo exchanges (its order: tcp-client,
    # plain-peer, bench, killed-client, destroyed-client); they all listen from now on.
    bg_run bench-server 420 bench-server --listen 0.0.0.0:$((xway_port+1)) --deadline 410
    bench=$!
    killed_job &
    killed=$!
    # Runs until dom0 destroys this domain (after our GUEST-RESULT below).
    "$T" hold-server --listen 0.0.0.0:$((xway_port+3)) --deadline 600 --role "$R" &
    hold=$!
    # 290 s: it serves guest B's two exchanges one after the other (170 s was cut short under host load).
    run tcp-server 300 tcp-server --listen 0.0.0.0:$xway_port --conns "$xway_conns" --deadline 290
    wait $bench $killed
    collect_ok ;;
  client)
    ping -c 1 -W 5 "$xway_peer" >/dev/null 2>&1 || echo "XWAY-INFO $R ping $xway_peer failed (continuing)"
    # dom0's `xway xen-directory` publishes the peer's domain id; we read it and cannot forge it.
    if [ "$xway_dir" = 1 ]; then
      run directory 100 directory --peer "$xway_peer:$xway_port" --peer-domid "$xway_peer_domid" --deadline 90
      # `xway doctor` here: the xen provider usable, the directory readable with entries.
      run doctor 30 doctor --deadline 25
    fi
    run tcp-client 150 tcp-client --peer "$xway_peer:$xway_port" --bytes "$xway_bytes" $ring --deadline 140
    run plain-peer 150 plain-peer --peer "$xway_peer:$xway_port" --bytes "$xway_bytes" --deadline 140
    run bench 300 bench --peer "$xway_peer:$((xway_port+1))" --bytes "$xway_bench_bytes" \
      --rtt-iters "$xway_rtt_iters" $ring --deadline 290
    run killed-client 120 killed-client --peer "$xway_peer:$((xway_port+2))" --bytes 32768 --bound 10 \
      $ring --deadline 110
    # Last: dom0 destroys guest A once we print XWAY-READY, then writes data/xway-destroyed.
    run destroyed-client 300 destroyed-client --peer "$xway_peer:$((xway_port+3))" \
      --notice-node data/xway-destroyed --bound 30 $ring --deadline 290 ;;
  *) echo "XWAY-TEST $R role FAIL unknown role"; ok=0 ;;
esac
crng
echo "GUEST-RESULT $R ok=$ok uptime=$(cut -d' ' -f1 /proc/uptime)s"
if [ -n "$hold" ]; then
  # Domain-destroyed test: keep the held stream open; dom0 destroys this domain.
  echo "XWAY-INFO $R holding a stream open until dom0 destroys this domain"
  wait $hold
  echo "XWAY-INFO $R hold-server exited before this domain was destroyed"
fi
sleep 1
poweroff -f
