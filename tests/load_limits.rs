//! Resource exhaustion mid-accept (invariant I5: a resource limit means TCP with a reason,
//! never a failed connection or a dead accept loop): a server process that runs out of
//! descriptors (`RLIMIT_NOFILE`) or of address space for rings (`RLIMIT_AS`), and a client that
//! cannot map its ring.
//!
//! The limited processes are this test binary re-executed in the role `limited_role`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayConfig, XwayListener, XwayStream};

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nLIMITED {line}");
    let _ = out.flush();
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit structures.
    unsafe {
        libc::getrlimit(resource, &mut old);
        let lim = libc::rlimit {
            rlim_max: old.rlim_max,
            ..lim
        };
        assert_eq!(libc::setrlimit(resource, &lim), 0);
    }
}

fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Entry point of the limited processes; a no-op in a normal test run.
#[test]
fn limited_role() {
    let Ok(role) = std::env::var("XWAY_LIMITED_ROLE") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if role == "client-as" {
            let addr = std::env::var("XWAY_LIMITED_ADDR").unwrap();
            // Room for the process, not for a 32 MiB ring region.
            set_limit(libc::RLIMIT_AS, vm_size() + (24 << 20));
            let config = XwayConfig::builder().ring_size(16 << 20).build();
            let mut s = XwayStream::connect_with(addr, &config).await.unwrap();
            say(&format!("CONNECTED {}", s.transport()));
            s.write_all(b"hi").await.unwrap();
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.unwrap();
            say("ECHOED");
            return;
        }
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        match role.as_str() {
            "server-nofile" => {
                let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
                // Room for two ring connections (3 descriptors each) and a little more.
                set_limit(libc::RLIMIT_NOFILE, open + 8);
            }
            "server-as" => set_limit(libc::RLIMIT_AS, vm_size() + (24 << 20)),
            other => panic!("unknown role {other}"),
        }
        say(&format!("LISTENING {}", listener.local_addr().unwrap()));
        loop {
            match listener.accept().await {
                Ok((mut s, _)) => {
                    say(&format!("ACCEPTED {}", s.transport()));
                    tokio::spawn(async move {
                        let (mut rd, mut wr) = s.split();
                        let _ = tokio::io::copy(&mut rd, &mut wr).await;
                    });
                }
                // The TCP accept itself can fail with EMFILE, as tokio's would: a robust
                // server retries. What must never fail is the ring part of an accept.
                Err(e) => {
                    say(&format!("ACCEPT_ERROR {:?}", e.kind()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    std::process::exit(0);
}

struct Limited {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Limited {
    fn spawn(role: &str, addr: Option<SocketAddr>) -> Limited {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "limited_role", "--nocapture", "--test-threads=1"])
            .env("XWAY_LIMITED_ROLE", role)
            .stdout(Stdio::piped());
        if let Some(a) = addr {
            cmd.env("XWAY_LIMITED_ADDR", a.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(at) = l.find("LIMITED ") {
                    let _ = tx.send(l[at + 8..].to_owned());
                }
            }
        });
        Limited {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    async fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.lines.try_recv() {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "no {prefix} line; saw {:?}",
                        self.seen
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("process exited before {prefix}; saw {:?}", self.seen)
                }
            }
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn echo(s: &mut XwayStream, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        s.write_all(b"ping").await?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await?;
        Ok::<_, std::io::Error>(b == *b"ping")
    })
    .await
    .is_ok_and(|r| r.is_ok_and(|ok| ok))
}

#[tokio::test]
async fn server_out_of_descriptors_gives_tcp_with_a_reason_and_recovers() {
    let mut server = Limited::spawn("server-nofile", None);
    let addr: SocketAddr = server.expect("LISTENING").await.parse().unwrap();
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_millis(100))
        .build();
    let mut held = Vec::new();
    for _ in 0..6 {
        // connect never fails: the client falls back to TCP when the server cannot take it.
        let s = XwayStream::connect_with(addr, &config).await.unwrap();
        held.push(s);
    }
    let client_views: Vec<String> = held.iter().map(|s| s.transport().to_string()).collect();
    assert!(held[0].transport().is_ring(), "{}", held[0].transport());
    assert!(
        held.iter().any(|s| !s.transport().is_ring()),
        "the limit was never reached: {client_views:?}"
    );
    // Those the server accepted are served; the others wait in its backlog.
    let mut served = 0;
    for s in &mut held {
        if echo(s, Duration::from_millis(500)).await {
            served += 1;
        }
    }
    // Release the ring connections: the server gets its descriptors back and serves the rest.
    held.retain(|s| !s.transport().is_ring());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &mut held {
        assert!(
            echo(s, Duration::from_secs(5)).await,
            "a TCP fallback was never served"
        );
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fresh = XwayStream::connect_with(addr, &config).await.unwrap();
    assert!(
        fresh.transport().is_ring(),
        "recovered: {}",
        fresh.transport()
    );
    assert!(echo(&mut fresh, Duration::from_secs(5)).await);
    // Collect what the server said about each connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(l) = server.lines.try_recv() {
        server.seen.push(l);
    }
    eprintln!("clients: {client_views:?}; {served} served while held");
    eprintln!("server: {:?}", server.seen);
    let tcp_with_reason = server
        .seen
        .iter()
        .filter(|l| l.starts_with("ACCEPTED tcp ("))
        .count();
    assert!(
        tcp_with_reason >= 1,
        "the server gave no TCP fallback: {:?}",
        server.seen
    );
}

#[tokio::test]
async fn server_out_of_memory_for_a_ring_gives_tcp_with_a_reason() {
    let mut server = Limited::spawn("server-as", None);
    let addr: SocketAddr = server.expect("LISTENING").await.parse().unwrap();
    let big = XwayConfig::builder()
        .ring_size(16 << 20)
        .rendezvous_timeout(Duration::from_millis(100))
        .build();
    let mut s = XwayStream::connect_with(addr, &big).await.unwrap();
    assert!(!s.transport().is_ring(), "{}", s.transport());
    assert!(echo(&mut s, Duration::from_secs(5)).await);
    let reason = server.expect("ACCEPTED").await;
    assert!(reason.starts_with("tcp ("), "{reason}");
    eprintln!("client: {}; server: {reason}", s.transport());
    // Small rings still fit: the accept loop is intact.
    let small = XwayConfig::builder().ring_size(64 << 10).build();
    let mut s = XwayStream::connect_with(addr, &small).await.unwrap();
    assert!(s.transport().is_ring(), "{}", s.transport());
    assert!(echo(&mut s, Duration::from_secs(5)).await);
    assert_eq!(server.expect("ACCEPTED").await, "ring (local)");
}

#[tokio::test]
async fn client_out_of_memory_for_its_ring_gives_tcp_with_a_reason() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let t = s.transport().to_string();
        let (mut rd, mut wr) = s.split();
        let _ = tokio::io::copy(&mut rd, &mut wr).await;
        t
    });
    let mut client = Limited::spawn("client-as", Some(addr));
    let transport = client.expect("CONNECTED").await;
    client.expect("ECHOED").await;
    assert!(
        transport.starts_with("tcp (ring setup failed: creating the ring"),
        "{transport}"
    );
    let server_side = server.await.unwrap();
    assert!(server_side.starts_with("tcp ("), "{server_side}");
    eprintln!("client: {transport}; server: {server_side}");
}
