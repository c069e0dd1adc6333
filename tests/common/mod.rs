//! Shared helpers for the cross-process tests: a handle on an `xway-peer` child process, and
//! in-process connection pairs.
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xway_tokio::{Mode, XwayConfig, XwayListener, XwayStream};

/// How long to wait for an expected line from a peer before failing the test.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `xway-peer` (see `src/bin/xway-peer.rs`), killed when dropped.
pub struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    pub fn spawn(args: &[&str]) -> Peer {
        Peer::spawn_with_env(args, &[])
    }

    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Peer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xway-peer"));
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Peer::spawn_command(cmd)
    }

    /// Starts `cmd` (any program printing one event per line) with its stdout followed.
    pub fn spawn_command(mut cmd: Command) -> Peer {
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn peer process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the next line starting with `prefix ` and returns the rest.
    pub fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(_) => panic!(
                    "peer did not print {prefix:?} in time; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// The address a server peer printed with `LISTENING`.
    pub fn listening(&mut self) -> SocketAddr {
        self.expect("LISTENING").parse().expect("address")
    }

    /// Every line printed so far and until the process exits (after a kill, say).
    pub fn drain(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL, as in a crash: no destructor of the peer runs.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tcp_only() -> XwayConfig {
    XwayConfig::builder().mode(Mode::TcpOnly).build()
}

/// A connected pair in this process: (client, server). `ring` chooses the transport.
pub async fn pair(ring: bool) -> (XwayStream, XwayStream) {
    let config = if ring {
        XwayConfig::default()
    } else {
        tcp_only()
    };
    let listener = XwayListener::bind_with("127.0.0.1:0", config.clone())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) =
        tokio::join!(XwayStream::connect_with(addr, &config), listener.accept());
    let (client, (server, _)) = (client.unwrap(), accepted.unwrap());
    assert_eq!(
        client.transport().is_ring(),
        ring,
        "client transport: {}",
        client.transport()
    );
    assert_eq!(
        server.transport().is_ring(),
        ring,
        "server transport: {}",
        server.transport()
    );
    (client, server)
}

/// The deterministic test pattern: byte `i` of a stream is `i % 251`.
pub fn pattern(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((start + i) % 251) as u8).collect()
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Memory mappings of this process.
pub fn mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// A plain tokio TCP echo server for one connection; the handle yields every byte it received.
pub async fn plain_echo_server() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return seen;
            }
            seen.extend_from_slice(&buf[..n]);
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    (addr, handle)
}
