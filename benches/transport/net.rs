//! The four transports behind one stream type, the server child process, and its protocol.
//!
//! Every connection starts with one mode byte from the client:
//!
//! - `E` echo: the server writes back whatever it reads, until end of stream (ping-pong,
//!   the 1,000-connection figure, the idle check).
//! - `S` sink: then repeated 16-byte headers `(total: u64 LE, chunk: u64 LE)`; the server
//!   reads `total` bytes into a `chunk`-sized buffer and answers one byte; `total == 0` ends.
//! - `A` setup: the server writes the mode byte back (the first byte each way), then waits for
//!   end of stream.

use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use xway_tokio::{Mode, XwayConfig, XwayListener, XwayStream};

use crate::measure;

/// The hidden first argument that turns the bench binary into the server child.
pub(crate) const CHILD_FLAG: &str = "--xway-bench-child";

/// The transports, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `XwayStream`/`XwayListener`, default configuration: the shared-memory ring.
    Ring,
    /// `XwayStream`/`XwayListener` with `Mode::TcpOnly` on both ends.
    XwayTcp,
    /// tokio `TcpStream` over 127.0.0.1 with `TCP_NODELAY`.
    Tcp,
    /// tokio `UnixStream` on a filesystem path.
    Unix,
}

pub(crate) const KINDS: [Kind; 4] = [Kind::Ring, Kind::XwayTcp, Kind::Tcp, Kind::Unix];

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ring => "ring",
            Kind::XwayTcp => "xway-tcp",
            Kind::Tcp => "tcp",
            Kind::Unix => "unix",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn parse(s: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.name() == s)
    }

    /// The client configuration for the xway kinds; `rendezvous` overrides the default
    /// rendezvous deadline (used for setup under load).
    fn xway_config(self, rendezvous: Option<Duration>) -> XwayConfig {
        let mut b = XwayConfig::builder();
        if self == Kind::XwayTcp {
            b = b.mode(Mode::TcpOnly);
        }
        if let Some(t) = rendezvous {
            b = b.rendezvous_timeout(t);
        }
        // Ring size experiments (the client's size is used for both ends).
        if let Some(n) = std::env::var("XWAY_BENCH_RING_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            b = b.ring_size(n);
        }
        b.build()
    }
}

/// Ring bytes per direction of the xway clients (and so of their connections).
pub(crate) fn ring_size() -> usize {
    Kind::Ring.xway_config(None).ring_size()
}

/// A connected stream of any kind. The enum dispatch costs the same for every transport.
#[derive(Debug)]
pub(crate) enum Conn {
    Xway(XwayStream),
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// True if the bytes go through the shared-memory ring.
    pub(crate) fn is_ring(&self) -> bool {
        matches!(self, Conn::Xway(s) if s.transport().is_ring())
    }

    /// How the connection carries its bytes, for notes.
    pub(crate) fn describe(&self) -> String {
        match self {
            Conn::Xway(s) => s.transport().to_string(),
            Conn::Tcp(_) => "tokio tcp".into(),
            Conn::Unix(_) => "tokio unix".into(),
        }
    }

    /// The xway stream, if this is one.
    pub(crate) fn xway(&self) -> Option<&XwayStream> {
        match self {
            Conn::Xway(s) => Some(s),
            _ => None,
        }
    }
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Xway($s) => $e,
            Conn::Tcp($s) => $e,
            Conn::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Connects to a server child of the same kind. TCP-based kinds set `TCP_NODELAY` (on the
/// ring it applies to the control socket and is harmless), so setup times include it alike.
pub(crate) async fn connect(
    kind: Kind,
    addr: &str,
    rendezvous: Option<Duration>,
) -> io::Result<Conn> {
    Ok(match kind {
        Kind::Ring | Kind::XwayTcp => {
            let s = XwayStream::connect_with(addr, &kind.xway_config(rendezvous)).await?;
            s.set_nodelay(true)?;
            Conn::Xway(s)
        }
        Kind::Tcp => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Conn::Tcp(s)
        }
        Kind::Unix => Conn::Unix(UnixStream::connect(addr).await?),
    })
}

// ---- the server child, seen from the parent ---------------------------------------------------

/// A running server child process; killed (and its socket path removed) on drop.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    /// `ip:port`, or the Unix socket path.
    pub(crate) addr: String,
    path: Option<PathBuf>,
}

impl Server {
    /// Starts `current_exe --xway-bench-child KIND CPU [PATH]` and waits for its address.
    /// `cpu` pins the child to that CPU (else it inherits the parent's affinity).
    pub(crate) fn spawn(kind: Kind, cpu: Option<usize>) -> io::Result<Server> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = (kind == Kind::Unix).then(|| {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            std::env::temp_dir().join(format!("xway-bench-{}-{n}.sock", std::process::id()))
        });
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(CHILD_FLAG)
            .arg(kind.name())
            .arg(cpu.map_or("-".to_owned(), |c| c.to_string()));
        if let Some(p) = &path {
            cmd.arg(p);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("LISTENING ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("server child said {line:?}")));
        };
        Ok(Server {
            addr: addr.to_owned(),
            child,
            path,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

// ---- the server child, from the inside --------------------------------------------------------

/// Entry point of the child: `args` are what follows [`CHILD_FLAG`].
pub(crate) fn child_main(args: &[String]) -> ! {
    let kind = args
        .first()
        .and_then(|k| Kind::parse(k))
        .expect("child: transport kind");
    if let Some(cpu) = args.get(1).and_then(|c| c.parse().ok()) {
        measure::pin_to(cpu);
    }
    measure::raise_nofile_limit();
    let path = args.get(2).map(PathBuf::from);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let res = rt.block_on(serve(kind, path));
    eprintln!("xway-bench child ({}): {res:?}", kind.name());
    std::process::exit(1)
}

fn announce(addr: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "LISTENING {addr}");
    let _ = out.flush();
}

async fn serve(kind: Kind, path: Option<PathBuf>) -> io::Result<()> {
    match kind {
        Kind::Ring | Kind::XwayTcp => {
            let l = XwayListener::bind_with("127.0.0.1:0", kind.xway_config(None)).await?;
            announce(l.local_addr()?);
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        // As for tokio TCP below: the two TCP servers differ only in the type.
                        s.set_nodelay(true)?;
                        spawn_handler(Conn::Xway(s))
                    }
                    Err(e) => accept_error(e).await,
                }
            }
        }
        Kind::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            announce(l.local_addr()?);
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        s.set_nodelay(true)?;
                        spawn_handler(Conn::Tcp(s))
                    }
                    Err(e) => accept_error(e).await,
                }
            }
        }
        Kind::Unix => {
            let path = path.expect("child: unix socket path");
            let l = UnixListener::bind(&path)?;
            announce(path.display());
            loop {
                match l.accept().await {
                    Ok((s, _)) => spawn_handler(Conn::Unix(s)),
                    Err(e) => accept_error(e).await,
                }
            }
        }
    }
}

async fn accept_error(e: io::Error) {
    eprintln!("xway-bench child: accept: {e}");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn spawn_handler(mut conn: Conn) {
    tokio::spawn(async move {
        // A connection that ends abruptly (the parent is done with it) is not an error here.
        let _ = handle(&mut conn).await;
    });
}

async fn handle(conn: &mut Conn) -> io::Result<()> {
    let mut mode = [0u8; 1];
    conn.read_exact(&mut mode).await?;
    match mode[0] {
        b'E' => echo(conn).await,
        b'S' => sink(conn).await,
        b'A' => {
            conn.write_all(b"A").await?;
            let mut b = [0u8; 1];
            while conn.read(&mut b).await? != 0 {}
            Ok(())
        }
        m => Err(io::Error::other(format!("unknown mode byte {m:#x}"))),
    }
}

async fn echo(conn: &mut Conn) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n]).await?;
    }
}

async fn sink(conn: &mut Conn) -> io::Result<()> {
    loop {
        let mut hdr = [0u8; 16];
        conn.read_exact(&mut hdr).await?;
        let total = u64::from_le_bytes(hdr[..8].try_into().unwrap());
        let chunk = u64::from_le_bytes(hdr[8..].try_into().unwrap()) as usize;
        if total == 0 {
            return Ok(());
        }
        let mut buf = vec![0u8; chunk.max(1)];
        let mut left = total;
        while left > 0 {
            let want = buf.len().min(left.try_into().unwrap_or(usize::MAX));
            let n = conn.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= n as u64;
        }
        conn.write_all(&[1]).await?;
    }
}
