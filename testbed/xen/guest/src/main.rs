//! Test program of the Xen test bed (`testbed/xen/`). One static binary, run inside the two PV guests by
//! their `/init` (`testbed/xen/guest/init.sh`) and in dom0 by the driver (`testbed/xen/dom0/driver.sh`).
//!
//! Results protocol (parsed by dom0's driver and by `run.sh` on the host; one line each, on stdout):
//!
//! ```text
//! XWAY-TEST  <role> <name> PASS|FAIL <detail>      one per check; <name> has no spaces
//! XWAY-BENCH <role> <name> <value> <unit> <detail> informational numbers (never fail a run)
//! XWAY-INFO  <role> <text>                         anything else worth keeping
//! XWAY-READY <role> <addr>                         the server is listening (dom0 waits for it)
//! ```
//!
//! The guest `/init` adds `GUEST-RESULT <role> ok=<0|1>` at the end. The exit status is 0 iff every
//! check of the subcommand passed.
//!
//! Subcommands (all take `--role <role>`; addresses are `IP:port`):
//!
//! * `devices`: open `/dev/xen/{evtchn,gntalloc,gntdev,xenbus}` read-write.
//! * `tcp-server --listen ADDR --conns N`: `XwayListener`, echoes N connections concurrently. The first
//!   line a peer sends is its tag (`xway-client` or `plain-peer`) and names the check
//!   (`echo:<tag>@<peer ip>`). For a `plain-peer` the accepted stream must not be a ring.
//! * `tcp-client --peer ADDR [--bytes N] [--expect-ring]`: `XwayStream::connect`, then the exchange
//!   below; `--expect-ring` (extension point for the Xen provider) turns "transport is a ring" into a check.
//! * `plain-peer --peer ADDR [--bytes N]`: the same exchange over a plain `tokio::net::TcpStream`: the
//!   listener must behave exactly like a TCP listener for it (invariant I1).
//! * `xen-devices --xen-role offerer|mapper (--peer-domid N | --peer-domid-node PATH) [--wait-exit]
//!   [--prefix P]`: `xway_tokio::doctor::xen_device_selftest` against the other guest (grants, event
//!   channels, XenStore, unmap-notify); one `XWAY-TEST <role> <P>:<step>` line per step (default
//!   prefix `xen-selftest`). The peer's domain id comes from the toolstack: the kernel command line
//!   (`--peer-domid`, written by dom0 at `xl create`) or a dom0-owned XenStore node readable by this
//!   domain (`--peer-domid-node`, relative to our home; its owner is checked: `<P>:peer-domid`).
//! * `loopback [--bytes N]`: the same exchange over 127.0.0.1 with plain tokio types, inside this kernel:
//!   a sanity check of the (emulated) machine, independent of xway and of the virtual network.
//!
//! The exchange: no unsolicited bytes before we speak; tag line; small messages (1 B .. 4 KiB) one at a
//! time; N bytes (default 1 MiB) of a deterministic pattern written in odd-sized chunks while the echo
//! is read and compared concurrently; small messages again; a latency loop (bench); half-close and EOF.
//!
//! Extension points for the coming tests (see ../README.md): `--expect-ring`; a `peer-killed`
//! subcommand (server aborts mid-stream, client must see EOF/ConnectionReset after the bytes already
//! sent); `domain-destroyed` (dom0 runs `xl destroy` on the server while the client reads); a bench
//! that compares ring and TCP on the same pair (today `tcp-client` and `plain-peer` print comparable
//! `XWAY-BENCH` lines).

use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

#[cfg(not(any(feature = "xway", feature = "plain")))]
compile_error!("enable feature `xway` (default) or `plain`");

/// The types under test: xway-tokio's, or (feature `plain`) stand-ins built on plain tokio.
#[cfg(not(feature = "plain"))]
mod net {
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    use xway_tokio::{Mode, XwayConfig};
    pub(crate) use xway_tokio::{XwayListener, XwayStream};
    pub(crate) const FLAVOR: &str = "xway";

    /// Everything is slow under QEMU TCG: a verdict can take far longer than the default 200 ms.
    pub(crate) const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(5);

    /// `XwayStream::connect_with` with the test bed's configuration; `tcp_only` forces TCP
    /// (`Mode::TcpOnly`), for the benchmark's baseline between the same two guests.
    pub(crate) async fn connect(addr: SocketAddr, tcp_only: bool) -> io::Result<XwayStream> {
        connect_sized(addr, tcp_only, None).await
    }

    /// [`connect`] with `xen_ring_size` set (bytes per direction) when `Some`.
    pub(crate) async fn connect_sized(
        addr: SocketAddr,
        tcp_only: bool,
        xen_ring: Option<usize>,
    ) -> io::Result<XwayStream> {
        let mut b = XwayConfig::builder().rendezvous_timeout(RENDEZVOUS_TIMEOUT);
        if tcp_only {
            b = b.mode(Mode::TcpOnly);
        }
        if let Some(bytes) = xen_ring {
            b = b.xen_ring_size(bytes);
        }
        XwayStream::connect_with(addr, &b.build()).await
    }
}

#[cfg(feature = "plain")]
mod net {
    //! Same surface as the xway-tokio API the test uses, over plain tokio types.
    use std::fmt;
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    pub(crate) const FLAVOR: &str = "plain";

    pub(crate) struct XwayListener(tokio::net::TcpListener);
    impl XwayListener {
        pub(crate) async fn bind(addr: SocketAddr) -> io::Result<Self> {
            Ok(Self(tokio::net::TcpListener::bind(addr).await?))
        }
        pub(crate) async fn accept(&self) -> io::Result<(XwayStream, SocketAddr)> {
            let (s, a) = self.0.accept().await?;
            Ok((XwayStream(s), a))
        }
    }

    pub(crate) struct XwayStream(tokio::net::TcpStream);
    pub(crate) struct Transport;
    impl Transport {
        pub(crate) fn is_ring(&self) -> bool {
            false
        }
    }
    impl fmt::Display for Transport {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tcp (testbed built with feature `plain`: xway-tokio not linked)")
        }
    }
    pub(crate) async fn connect(addr: SocketAddr, _tcp_only: bool) -> io::Result<XwayStream> {
        Ok(XwayStream(tokio::net::TcpStream::connect(addr).await?))
    }

    pub(crate) async fn connect_sized(
        addr: SocketAddr,
        tcp_only: bool,
        _xen_ring: Option<usize>,
    ) -> io::Result<XwayStream> {
        connect(addr, tcp_only).await
    }

    impl XwayStream {
        pub(crate) fn transport(&self) -> Transport {
            Transport
        }
    }
    impl AsyncRead for XwayStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }
    impl AsyncWrite for XwayStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, b)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}

use net::XwayListener;

mod bench;
mod faults;

const DEVICES: [&str; 4] = ["evtchn", "gntalloc", "gntdev", "xenbus"];
const SMALL: [usize; 6] = [1, 7, 100, 1000, 1460, 4096];
const OP_DEADLINE: Duration = Duration::from_secs(60);

/// Collects the results of one subcommand; prints each line as it is recorded.
struct Report {
    role: String,
    failed: usize,
    passed: usize,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: impl Display) {
        let verdict = if ok { "PASS" } else { "FAIL" };
        println!(
            "XWAY-TEST {} {} {} {}",
            self.role,
            name,
            verdict,
            one_line(detail)
        );
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }
    fn result<T, E: Display>(
        &mut self,
        name: &str,
        r: Result<T, E>,
        ok_detail: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                let d = ok_detail(&v);
                self.check(name, true, d);
                Some(v)
            }
            Err(e) => {
                self.check(name, false, e);
                None
            }
        }
    }
    fn bench(&self, name: &str, value: f64, unit: &str, detail: impl Display) {
        println!(
            "XWAY-BENCH {} {} {:.1} {} {}",
            self.role,
            name,
            value,
            unit,
            one_line(detail)
        );
    }
    fn info(&self, text: impl Display) {
        println!("XWAY-INFO {} {}", self.role, one_line(text));
    }
}

fn one_line(d: impl Display) -> String {
    d.to_string().replace(['\n', '\r'], " ")
}

struct Args {
    cmd: String,
    role: String,
    listen: SocketAddr,
    peer: Option<SocketAddr>,
    conns: usize,
    bytes: usize,
    rtt_iters: usize,
    expect_ring: bool,
    deadline: Duration,
    xen_role: Option<String>,
    peer_domid: Option<u16>,
    peer_domid_node: Option<String>,
    wait_exit: bool,
    prefix: String,
    state: Option<String>,
    notice_node: Option<String>,
    bound: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: xway-testbed-guest devices|loopback|tcp-server|tcp-client|plain-peer|xen-devices|directory|doctor|bench-server|bench|\
         killed-server|killed-client|hold-server|destroyed-client|version --role R \
         [--listen IP:PORT] [--peer IP:PORT] [--conns N] [--bytes N] [--rtt-iters N] [--expect-ring] [--deadline SECS] \
         [--xen-role offerer|mapper] [--peer-domid N | --peer-domid-node PATH] [--wait-exit] [--prefix P] \
         [--state PATH] [--notice-node PATH] [--bound SECS]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| usage());
    let mut a = Args {
        cmd,
        role: "guest".into(),
        listen: "0.0.0.0:7000".parse().unwrap(),
        peer: None,
        conns: 1,
        bytes: 1 << 20,
        rtt_iters: 200,
        expect_ring: false,
        deadline: Duration::from_secs(150),
        xen_role: None,
        peer_domid: None,
        peer_domid_node: None,
        wait_exit: false,
        prefix: "xen-selftest".into(),
        state: None,
        notice_node: None,
        bound: Duration::from_secs(10),
    };
    while let Some(k) = it.next() {
        if k == "--expect-ring" {
            a.expect_ring = true;
            continue;
        }
        if k == "--wait-exit" {
            a.wait_exit = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| usage());
        let num = |v: &str| v.parse::<usize>().unwrap_or_else(|_| usage());
        let addr = |v: &str| v.parse::<SocketAddr>().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--role" => a.role = v,
            "--listen" => a.listen = addr(&v),
            "--peer" => a.peer = Some(addr(&v)),
            "--conns" => a.conns = num(&v),
            "--bytes" => a.bytes = num(&v),
            "--rtt-iters" => a.rtt_iters = num(&v),
            "--deadline" => a.deadline = Duration::from_secs(num(&v) as u64),
            "--xen-role" => a.xen_role = Some(v),
            "--peer-domid" => a.peer_domid = Some(v.parse().unwrap_or_else(|_| usage())),
            "--peer-domid-node" => a.peer_domid_node = Some(v),
            "--prefix" => a.prefix = v,
            "--state" => a.state = Some(v),
            "--notice-node" => a.notice_node = Some(v),
            "--bound" => a.bound = Duration::from_secs(num(&v) as u64),
            _ => usage(),
        }
    }
    a
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Ok(level) = std::env::var("XWAY_LOG") {
        if let Ok(l) = level.parse::<tracing_subscriber::filter::LevelFilter>() {
            tracing_subscriber::fmt()
                .with_max_level(l)
                .with_writer(io::stderr)
                .init();
        }
    }
    let args = parse_args();
    let mut rep = Report {
        role: args.role.clone(),
        failed: 0,
        passed: 0,
    };
    rep.info(format_args!(
        "{} flavor={} pid={}",
        args.cmd,
        net::FLAVOR,
        std::process::id()
    ));
    let t0 = Instant::now();
    let deadline = args.deadline;
    let run = async {
        match args.cmd.as_str() {
            "devices" => devices(&mut rep),
            "tcp-server" => tcp_server(&mut rep, &args).await,
            "tcp-client" => tcp_client(&mut rep, &args).await,
            "plain-peer" => plain_peer(&mut rep, &args).await,
            "loopback" => loopback(&mut rep, &args).await,
            "xen-devices" => xen_devices(&mut rep, &args).await,
            "directory" => directory(&mut rep, &args).await,
            "doctor" => doctor(&mut rep),
            "bench-server" => bench::server(&mut rep, &args).await,
            "bench" => bench::client(&mut rep, &args).await,
            "killed-server" => faults::killed_server(&mut rep, &args).await,
            "killed-client" => faults::killed_client(&mut rep, &args).await,
            "hold-server" => faults::hold_server(&mut rep, &args).await,
            "destroyed-client" => faults::destroyed_client(&mut rep, &args).await,
            "version" => {}
            _ => usage(),
        }
    };
    if timeout(deadline, run).await.is_err() {
        // `rep` was borrowed by the cancelled future; report directly.
        println!(
            "XWAY-TEST {} {}-deadline FAIL not finished within {:?}",
            args.role, args.cmd, deadline
        );
        std::process::exit(1);
    }
    rep.info(format_args!(
        "{} done: {} passed, {} failed, {:.1}s",
        args.cmd,
        rep.passed,
        rep.failed,
        t0.elapsed().as_secs_f64()
    ));
    std::process::exit(if rep.failed == 0 { 0 } else { 1 });
}

fn devices(rep: &mut Report) {
    for d in DEVICES {
        let path = format!("/dev/xen/{d}");
        let r = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path);
        rep.result(
            &format!("dev-{d}"),
            r.map_err(|e| format!("{path}: {e}")),
            |_| format!("{path} opened read-write"),
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// xen devices

/// The library's device self-test against the other guest. The library bounds every step by its own
/// timeout; ours is 5 s shorter than `--deadline` so that its failures are reported, not cut off.
async fn xen_devices(rep: &mut Report, a: &Args) {
    let p = a.prefix.clone();
    let role = a.xen_role.clone().unwrap_or_else(|| usage());
    let t0 = Instant::now();
    let budget = a.deadline.saturating_sub(Duration::from_secs(5));
    let peer = match (a.peer_domid, &a.peer_domid_node) {
        (Some(d), _) => {
            rep.info(format_args!(
                "{p}: peer domain id {d} from the kernel command line (dom0's toolstack)"
            ));
            d
        }
        (None, Some(node)) => match xs::peer_domid(node, t0 + budget / 2).await {
            Ok((d, detail)) => {
                rep.check(
                    &format!("{p}:peer-domid"),
                    true,
                    format_args!("{d}: {detail}"),
                );
                d
            }
            Err(e) => return rep.check(&format!("{p}:peer-domid"), false, e),
        },
        (None, None) => usage(),
    };
    rep.info(format_args!(
        "{p}: {role} with dom{peer}, wait-exit={}, timeout {:?}",
        a.wait_exit, budget
    ));
    run_selftest(
        rep,
        &p,
        &role,
        peer,
        a.wait_exit,
        budget.saturating_sub(t0.elapsed()),
    )
    .await;
    rep.info(format_args!(
        "{p}: {role} finished in {:.2}s",
        t0.elapsed().as_secs_f64()
    ));
}

#[cfg(not(feature = "plain"))]
async fn run_selftest(
    rep: &mut Report,
    p: &str,
    role: &str,
    peer: u16,
    wait_exit: bool,
    t: Duration,
) {
    use xway_tokio::doctor::{xen_device_selftest, XenSelftestRole};
    let role = match role {
        "offerer" => XenSelftestRole::Offerer,
        "mapper" => XenSelftestRole::Mapper,
        _ => usage(),
    };
    for c in xen_device_selftest(role, peer, wait_exit, t).await {
        let name = format!("{p}:{}", c.what.replace(' ', "-"));
        rep.result(&name, c.result, |d| d.clone());
    }
}

#[cfg(feature = "plain")]
async fn run_selftest(rep: &mut Report, p: &str, _: &str, _: u16, _: bool, _: Duration) {
    rep.info(format_args!(
        "{p}: skipped (feature `plain`: xway-tokio not linked)"
    ));
}

/// A minimal XenStore client on `/dev/xen/xenbus` (wire protocol of `xs_wire.h`), just enough to read a
/// node dom0 published for us and check that dom0 owns it.
mod xs {
    use std::fs::{File, OpenOptions};
    use std::io::{self, Read, Write};
    use std::time::{Duration, Instant};

    const XS_READ: u32 = 2;
    const XS_GET_PERMS: u32 = 3;
    const XS_ERROR: u32 = 16;

    const XS_DIRECTORY: u32 = 1;
    const XS_WRITE: u32 = 11;
    const XS_RM: u32 = 13;

    /// `Ok(Ok(body))`, `Ok(Err(errno name))` for an XS_ERROR reply, `Err` for a device error.
    fn request(f: &mut File, ty: u32, path: &str) -> io::Result<Result<Vec<u8>, String>> {
        request_body(f, ty, format!("{path}\0").as_bytes())
    }

    fn request_body(f: &mut File, ty: u32, body: &[u8]) -> io::Result<Result<Vec<u8>, String>> {
        let mut msg = Vec::with_capacity(16 + body.len());
        for v in [ty, 0x7877, 0, body.len() as u32] {
            msg.extend_from_slice(&v.to_ne_bytes());
        }
        msg.extend_from_slice(body);
        f.write_all(&msg)?;
        let mut hdr = [0u8; 16];
        f.read_exact(&mut hdr)?;
        let word = |i: usize| {
            u32::from_ne_bytes([hdr[4 * i], hdr[4 * i + 1], hdr[4 * i + 2], hdr[4 * i + 3]])
        };
        let len = word(3) as usize;
        if len > 4096 {
            return Err(io::Error::other(format!("xenbus reply of {len} B")));
        }
        let mut reply = vec![0u8; len];
        f.read_exact(&mut reply)?;
        Ok(match word(0) {
            XS_ERROR => Err(String::from_utf8_lossy(&reply)
                .trim_end_matches('\0')
                .to_string()),
            t if t == ty => Ok(reply),
            t => Err(format!("unexpected reply type {t}")),
        })
    }

    pub(crate) fn open() -> Result<File, String> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/xenbus")
            .map_err(|e| format!("/dev/xen/xenbus: {e}"))
    }

    /// The value of `path`, `None` if it does not exist (any other error reply is an error).
    pub(crate) fn read(f: &mut File, path: &str) -> Result<Option<String>, String> {
        match request(f, XS_READ, path).map_err(|e| format!("xenbus: {e}"))? {
            Ok(v) => Ok(Some(
                String::from_utf8_lossy(&v)
                    .trim_end_matches('\0')
                    .to_string(),
            )),
            Err(e) if e == "ENOENT" => Ok(None),
            Err(e) => Err(format!("read {path}: {e}")),
        }
    }

    /// `path`'s permissions as `r0,n1`, or the error name.
    pub(crate) fn perms(f: &mut File, path: &str) -> Result<String, String> {
        let p = request(f, XS_GET_PERMS, path).map_err(|e| format!("xenbus: {e}"))??;
        let v: Vec<String> = p
            .split(|&b| b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        Ok(v.join(","))
    }

    /// `path`'s children, or the error name.
    pub(crate) fn directory(f: &mut File, path: &str) -> Result<Vec<String>, String> {
        let p = request(f, XS_DIRECTORY, path).map_err(|e| format!("xenbus: {e}"))??;
        Ok(p.split(|&b| b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect())
    }

    /// Tries to write `value` at `path`: `Ok(())` if xenstored accepted, `Err(errno name)` if not.
    pub(crate) fn try_write(f: &mut File, path: &str, value: &str) -> Result<(), String> {
        let body = [path.as_bytes(), b"\0", value.as_bytes()].concat();
        request_body(f, XS_WRITE, &body)
            .map_err(|e| format!("xenbus: {e}"))?
            .map(|_| ())
    }

    /// Tries to remove `path`: `Ok(())` if xenstored accepted, `Err(errno name)` if not.
    pub(crate) fn try_rm(f: &mut File, path: &str) -> Result<(), String> {
        request(f, XS_RM, path)
            .map_err(|e| format!("xenbus: {e}"))?
            .map(|_| ())
    }

    /// Waits until `node` exists, is owned by dom0 and nobody else may write it, and holds a domain id.
    pub(crate) async fn peer_domid(node: &str, deadline: Instant) -> Result<(u16, String), String> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/xenbus")
            .map_err(|e| format!("/dev/xen/xenbus: {e}"))?;
        loop {
            let got = request(&mut f, XS_GET_PERMS, node).map_err(|e| format!("xenbus: {e}"))?;
            let last = match got {
                Ok(perms) => {
                    let perms: Vec<String> = perms
                        .split(|&b| b == 0)
                        .filter(|e| !e.is_empty())
                        .map(|e| String::from_utf8_lossy(e).into_owned())
                        .collect();
                    let owner_dom0 = perms.first().is_some_and(|p0| &p0[1..] == "0");
                    let nobody_writes = perms
                        .iter()
                        .all(|e| e.starts_with('n') || e.starts_with('r'));
                    if owner_dom0 && nobody_writes {
                        let v = request(&mut f, XS_READ, node)
                            .map_err(|e| format!("xenbus: {e}"))?
                            .map_err(|e| format!("read {node}: {e}"))?;
                        let v = String::from_utf8_lossy(&v).into_owned();
                        let d = v
                            .parse::<u16>()
                            .map_err(|_| format!("{node} = {v:?}: not a domain id"))?;
                        return Ok((
                            d,
                            format!("{node} owned by dom0, perms {}", perms.join(",")),
                        ));
                    }
                    // dom0 writes, then chmods: until then the node is ours (inherited) and not yet trusted.
                    format!("perms {} (not yet dom0-only)", perms.join(","))
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("{node}: {last} at the deadline"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// trusted directory

/// `/xway/directory/<ip with dashes>`: the node dom0's `xway xen-directory` publishes for `ip`.
fn directory_entry(ip: std::net::IpAddr) -> String {
    format!(
        "/xway/directory/{}",
        ip.to_string().replace(['.', ':'], "-")
    )
}

/// The trusted directory as a guest sees it: dom0 published the peer's domain id (the one the
/// toolstack gave us on the kernel command line), read-only for guests, and we cannot forge it.
async fn directory(rep: &mut Report, a: &Args) {
    const DIR: &str = "/xway/directory";
    let peer = a.peer.unwrap_or_else(|| usage());
    let want = a.peer_domid.unwrap_or_else(|| usage());
    let entry = directory_entry(peer.ip());
    let t0 = Instant::now();
    let budget = a.deadline.saturating_sub(Duration::from_secs(5));
    match xs::peer_domid(&entry, t0 + budget).await {
        Ok((d, detail)) => rep.check(
            "directory:peer-entry",
            d == want,
            format_args!(
                "{} -> dom{d} (toolstack says dom{want}) after {:.1}s: {detail}",
                peer.ip(),
                t0.elapsed().as_secs_f64()
            ),
        ),
        Err(e) => return rep.check("directory:peer-entry", false, e),
    }
    let mut f = match xs::open() {
        Ok(f) => f,
        Err(e) => return rep.check("directory:perms", false, e),
    };
    let dir_perms = xs::perms(&mut f, DIR);
    let entry_perms = xs::perms(&mut f, &entry);
    let listing = xs::directory(&mut f, DIR);
    let listed = listing
        .as_ref()
        .is_ok_and(|l| l.iter().any(|n| entry.ends_with(&format!("/{n}"))));
    rep.check(
        "directory:perms",
        dir_perms.as_deref() == Ok("r0") && entry_perms.as_deref() == Ok("r0") && listed,
        format_args!("{DIR} perms {dir_perms:?}, {entry} perms {entry_perms:?} (want r0 both); listing {listing:?}"),
    );
    // A guest must not be able to change, add or remove anything (the write of a wrong id would
    // be repaired by dom0's publisher anyway).
    let forged = format!("{DIR}/192-0-2-99");
    let tries = [
        (
            "write own peer's entry",
            xs::try_write(&mut f, &entry, "999"),
        ),
        ("create an entry", xs::try_write(&mut f, &forged, "1")),
        ("remove an entry", xs::try_rm(&mut f, &entry)),
    ];
    let refused = tries
        .iter()
        .all(|(_, r)| r.as_ref().err().map(String::as_str) == Some("EACCES"));
    let after = xs::read(&mut f, &entry);
    let detail: Vec<String> = tries
        .iter()
        .map(|(w, r)| {
            format!(
                "{w}: {}",
                r.as_ref().err().map_or("accepted!", |e| e.as_str())
            )
        })
        .collect();
    rep.check(
        "directory:no-forgery",
        refused && after == Ok(Some(want.to_string())),
        format_args!("{}; entry afterwards {after:?}", detail.join(", ")),
    );
}

/// `xway doctor`'s report in this guest: the xen provider must be usable, its trusted directory
/// readable with entries.
#[cfg(not(feature = "plain"))]
fn doctor(rep: &mut Report) {
    for r in xway_tokio::doctor::diagnose() {
        for line in r.to_string().lines() {
            rep.info(format_args!("doctor: {line}"));
        }
        if r.provider == "xen" {
            let dir = r.checks.iter().find(|c| c.what == "trusted directory");
            let detail = dir.map_or_else(
                || "no trusted-directory line".to_string(),
                |c| format!("{:?}", c.result),
            );
            rep.check(
                "doctor:xen-usable",
                r.usable,
                format_args!(
                    "xen provider usable={}; trusted directory: {detail}",
                    r.usable
                ),
            );
        }
    }
}

#[cfg(feature = "plain")]
fn doctor(rep: &mut Report) {
    rep.info("doctor: skipped (feature `plain`: xway-tokio not linked)");
}

// ---------------------------------------------------------------------------------------------------
// server

async fn tcp_server(rep: &mut Report, a: &Args) {
    let listener = match XwayListener::bind(a.listen).await {
        Ok(l) => l,
        Err(e) => {
            return rep.check(
                "listen",
                false,
                format_args!("XwayListener::bind({}): {e}", a.listen),
            )
        }
    };
    rep.check(
        "listen",
        true,
        format_args!("XwayListener bound {}", a.listen),
    );
    println!("XWAY-READY {} {}", rep.role, a.listen);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool, String)>();
    let mut accepted = 0;
    let mut finished = 0;
    while finished < a.conns {
        tokio::select! {
            r = listener.accept(), if accepted < a.conns => match r {
                Ok((stream, peer)) => {
                    accepted += 1;
                    rep.info(format_args!("accepted #{accepted} from {peer}: transport {}", stream.transport()));
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let (t, ring) = (stream.transport().to_string(), stream.transport().is_ring());
                        let (name, ok, detail) = serve(stream, peer, t, ring).await;
                        let _ = tx.send((name, ok, detail));
                    });
                }
                Err(e) => rep.check("accept", false, format_args!("accept #{}: {e}", accepted + 1)),
            },
            Some((name, ok, detail)) = rx.recv() => {
                finished += 1;
                rep.check(&name, ok, detail);
            }
        }
    }
    rep.check(
        "served",
        finished == a.conns,
        format_args!("{finished}/{} connections echoed", a.conns),
    );
}

/// Echo until EOF, then half-close. Names the check after the peer's tag line.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    peer: SocketAddr,
    transport: String,
    ring: bool,
) -> (String, bool, String) {
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut hash = Fnv::new();
    let t0 = Instant::now();
    let res: io::Result<()> = async {
        loop {
            let n = timeout(OP_DEADLINE, s.read(&mut buf))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read"))??;
            if n == 0 {
                break;
            }
            if head.len() < 64 && !head.contains(&b'\n') {
                head.extend_from_slice(&buf[..n.min(64)]);
            }
            hash.update(&buf[..n]);
            total += n as u64;
            timeout(OP_DEADLINE, s.write_all(&buf[..n]))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write"))??;
        }
        s.shutdown().await
    }
    .await;
    let tag = head
        .split(|&b| b == b'\n')
        .next()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default();
    let tag = if tag.is_empty() || tag.contains(' ') || tag.len() > 32 {
        "untagged".to_string()
    } else {
        tag
    };
    let name = format!("echo:{tag}@{}", peer.ip());
    let detail = format!(
        "echoed {total} B fnv={:016x} in {:.2}s, transport: {transport}",
        hash.0,
        t0.elapsed().as_secs_f64()
    );
    match res {
        Err(e) => (name, false, format!("{e} after {detail}")),
        // A peer that does not run xway can never be on a ring (I1).
        Ok(()) if tag == "plain-peer" && ring => {
            (name, false, format!("plain peer got a ring! {detail}"))
        }
        Ok(()) => (name, total > 0, detail),
    }
}

// ---------------------------------------------------------------------------------------------------
// clients

async fn retry_connect<S, F, Fut>(
    rep: &mut Report,
    what: &str,
    addr: SocketAddr,
    mut f: F,
) -> Option<S>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = io::Result<S>>,
{
    let t0 = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match timeout(Duration::from_secs(10), f()).await {
            Ok(Ok(s)) => {
                rep.info(format_args!(
                    "{what} {addr}: connected after {tries} tries, {:.2}s",
                    t0.elapsed().as_secs_f64()
                ));
                return Some(s);
            }
            Ok(Err(e)) if t0.elapsed() < OP_DEADLINE => {
                if tries == 1 {
                    rep.info(format_args!("{what} {addr}: {e}; retrying"));
                }
            }
            Ok(Err(e)) => {
                rep.check(
                    "connect",
                    false,
                    format_args!("{what} {addr}: {e} ({tries} tries)"),
                );
                return None;
            }
            Err(_) => {
                let secs = t0.elapsed().as_secs_f64();
                let d = format!("{what} {addr}: try {tries} timed out (10 s), {secs:.1}s in all");
                rep.check("connect", false, d);
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn tcp_client(rep: &mut Report, a: &Args) {
    let peer = a.peer.unwrap_or_else(|| usage());
    let Some(s) = retry_connect(rep, "XwayStream::connect", peer, || {
        net::connect(peer, false)
    })
    .await
    else {
        return;
    };
    let transport = s.transport().to_string();
    let ring = s.transport().is_ring();
    rep.check("connect", true, format_args!("transport: {transport}"));
    if a.expect_ring {
        rep.check("ring-used", ring, format_args!("transport: {transport}"));
    }
    exchange(rep, s, "xway-client", a, &transport).await;
}

async fn plain_peer(rep: &mut Report, a: &Args) {
    let peer = a.peer.unwrap_or_else(|| usage());
    let Some(s) = retry_connect(rep, "tokio::net::TcpStream::connect", peer, || {
        tokio::net::TcpStream::connect(peer)
    })
    .await
    else {
        return;
    };
    exchange(rep, s, "plain-peer", a, "plain tokio TcpStream").await;
}

/// Sanity check of the machine itself, no xway involved: the same exchange over 127.0.0.1 with plain
/// tokio types inside this one kernel. If this fails, the emulation (not the library) is broken.
async fn loopback(rep: &mut Report, a: &Args) {
    let l = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return rep.check("loopback:listen", false, e),
    };
    let addr = l.local_addr().expect("local_addr");
    let server = tokio::spawn(async move {
        let (s, peer) = l.accept().await?;
        Ok::<_, io::Error>(serve(s, peer, "loopback tcp".into(), false).await)
    });
    let Some(s) = retry_connect(rep, "loopback connect", addr, || {
        tokio::net::TcpStream::connect(addr)
    })
    .await
    else {
        return;
    };
    exchange(rep, s, "loopback", a, "loopback tcp").await;
    match server.await {
        Ok(Ok((_, ok, detail))) => rep.check("loopback:server", ok, detail),
        Ok(Err(e)) => rep.check("loopback:server", false, e),
        Err(e) => rep.check("loopback:server", false, e),
    }
}

/// Deterministic, non-periodic byte pattern.
fn pattern(i: u64) -> u8 {
    let x = i
        .wrapping_add(0x1234_5678)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i as u8)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn io_err(what: &str, e: impl Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

async fn exchange<S>(rep: &mut Report, s: S, tag: &str, a: &Args, transport: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(s);
    let p = tag; // check-name prefix

    // 1. Nothing may arrive before we speak (the listener must not greet, probe or hello us).
    let mut one = [0u8; 1];
    let r = match timeout(Duration::from_millis(300), rd.read(&mut one)).await {
        Err(_) => Ok("nothing within 300 ms".to_string()),
        Ok(Ok(0)) => Err("peer closed before we spoke".to_string()),
        Ok(Ok(_)) => Err(format!("unsolicited byte {:#04x} before we spoke", one[0])),
        Ok(Err(e)) => Err(format!("read: {e}")),
    };
    if rep
        .result(&format!("{p}:no-unsolicited-bytes"), r, |d| d.clone())
        .is_none()
    {
        return;
    }

    // 2. Tag line and small messages, one round trip each.
    if !small(
        rep,
        &mut rd,
        &mut wr,
        tag,
        &format!("{p}:small-messages"),
        &SMALL,
        0,
    )
    .await
    {
        return;
    }

    // 3. Bulk: write a.bytes of the pattern in odd-sized chunks while reading and comparing the echo.
    let n = a.bytes as u64;
    let t0 = Instant::now();
    let writer = async {
        let mut chunk = Vec::with_capacity(70_000);
        let (mut off, mut k) = (0u64, 0u64);
        while off < n {
            let len = (1 + (pattern(k) as u64 * 257 + k * 31) % 65_521).min(n - off);
            chunk.clear();
            chunk.extend((off..off + len).map(pattern));
            timeout(OP_DEADLINE, wr.write_all(&chunk))
                .await
                .map_err(|e| io_err("write", e))??;
            off += len;
            k += 1;
        }
        wr.flush().await?;
        Ok::<_, io::Error>(k)
    };
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0u64;
        while off < n {
            let want = buf.len().min((n - off) as usize);
            let got = timeout(OP_DEADLINE, rd.read(&mut buf[..want]))
                .await
                .map_err(|e| io_err("read", e))??;
            if got == 0 {
                return Err(io_err("read", format_args!("EOF after {off} of {n} B")));
            }
            if let Some(i) = buf[..got]
                .iter()
                .enumerate()
                .position(|(j, &b)| b != pattern(off + j as u64))
            {
                let at = off + i as u64;
                let end = (i + 16).min(got);
                let exp: Vec<u8> = (at..off + end as u64).map(pattern).collect();
                let bad = (i..got)
                    .filter(|&j| buf[j] != pattern(off + j as u64))
                    .count();
                return Err(io_err(
                    "mismatch",
                    format_args!(
                        "echo differs at byte {at} (read of {got} B at {off}, {bad} bad bytes in it): got {} want {}",
                        hex(&buf[i..end]),
                        hex(&exp)
                    ),
                ));
            }
            off += got as u64;
        }
        Ok(off)
    };
    let (w, r) = tokio::join!(writer, reader);
    let secs = t0.elapsed().as_secs_f64();
    let ok = match (w, r) {
        (Ok(chunks), Ok(got)) => {
            rep.check(
                &format!("{p}:bulk-echo"),
                true,
                format_args!("{got} B in {chunks} writes echoed exactly in {secs:.2}s"),
            );
            true
        }
        (w, r) => {
            rep.check(
                &format!("{p}:bulk-echo"),
                false,
                format_args!("writer: {:?}; reader: {:?}", w.err(), r.err()),
            );
            false
        }
    };
    if !ok {
        return;
    }
    rep.bench(
        &format!("{p}:bulk-echo"),
        2.0 * n as f64 / secs / 1e6,
        "MB/s",
        format_args!("both directions, {n} B each way; transport: {transport}"),
    );

    // 4. Small messages after the bulk transfer.
    if !small(
        rep,
        &mut rd,
        &mut wr,
        tag,
        &format!("{p}:small-after-bulk"),
        &SMALL[..3],
        7,
    )
    .await
    {
        return;
    }

    // 5. Latency loop (bench only).
    let t0 = Instant::now();
    let mut msg = [0u8; 64];
    let mut back = [0u8; 64];
    let mut done = 0;
    for i in 0..a.rtt_iters {
        msg[0] = i as u8;
        if timeout(OP_DEADLINE, wr.write_all(&msg)).await.is_err()
            || timeout(OP_DEADLINE, rd.read_exact(&mut back))
                .await
                .is_err()
            || back != msg
        {
            break;
        }
        done += 1;
    }
    let r = if done == a.rtt_iters {
        Ok(done)
    } else {
        Err(format!("round trip {done} of {} failed", a.rtt_iters))
    };
    if rep
        .result(&format!("{p}:ping-pong"), r, |d| {
            format!("{d} x 64 B round trips")
        })
        .is_none()
    {
        return;
    }
    if done > 0 {
        rep.bench(
            &format!("{p}:rtt-64B"),
            t0.elapsed().as_secs_f64() * 1e6 / done as f64,
            "us",
            format_args!("mean of {done}; transport: {transport}"),
        );
    }

    // 6. Half-close: the server sees EOF, finishes echoing, closes; we must read EOF and nothing else.
    let r: io::Result<()> = async {
        wr.shutdown().await?;
        let mut rest = Vec::new();
        timeout(OP_DEADLINE, rd.read_to_end(&mut rest))
            .await
            .map_err(|e| io_err("read", e))??;
        if rest.is_empty() {
            Ok(())
        } else {
            Err(io_err(
                "extra bytes",
                format_args!("{} B after the echo", rest.len()),
            ))
        }
    }
    .await;
    rep.result(&format!("{p}:half-close"), r, |_| {
        "shutdown(write) -> peer EOF -> our EOF, no extra bytes".to_string()
    });
}

/// Small messages, one round trip each; with `seed == 0` the tag line goes first.
async fn small<R, W>(
    rep: &mut Report,
    rd: &mut R,
    wr: &mut W,
    tag: &str,
    name: &str,
    sizes: &[usize],
    seed: u64,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let t0 = Instant::now();
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    if seed == 0 {
        msgs.push(format!("{tag}\n").into_bytes());
    }
    msgs.extend(sizes.iter().enumerate().map(|(k, &n)| {
        (0..n as u64)
            .map(|i| pattern(seed + 1000 * k as u64 + i))
            .collect()
    }));
    let r: io::Result<usize> = async {
        let mut total = 0;
        for (k, m) in msgs.iter().enumerate() {
            timeout(OP_DEADLINE, wr.write_all(m))
                .await
                .map_err(|e| io_err("write", e))??;
            let mut back = vec![0u8; m.len()];
            timeout(OP_DEADLINE, rd.read_exact(&mut back))
                .await
                .map_err(|e| io_err("read", e))??;
            if &back != m {
                let at = back.iter().zip(m).position(|(x, y)| x != y).unwrap_or(0);
                return Err(io_err(
                    "mismatch",
                    format_args!("message {k} ({} B) differs at byte {at}", m.len()),
                ));
            }
            total += m.len();
        }
        Ok(total)
    }
    .await;
    let count = msgs.len();
    rep.result(name, r, |n| {
        format!(
            "{count} messages, {n} B echoed exactly in {:.0} ms",
            t0.elapsed().as_secs_f64() * 1e3
        )
    })
    .is_some()
}

/// FNV-1a 64 (for the server's summary of what it received).
struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}
