//! Fallback is silent and explained (invariant I5), and the right peer or nothing (I3):
//! squatted or stalled rendezvous endpoints, other users, and what `transport()` says.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::time::{Duration, Instant};

use common::plain_echo_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use xway_tokio::{FallbackReason, Mode, XwayConfig, XwayListener, XwayStream};

fn rendezvous_name(port: u16) -> String {
    format!("xway/3/127.0.0.1/{port}")
}

#[tokio::test]
async fn stalled_rendezvous_falls_back_to_tcp_after_the_deadline_and_bytes_stay_exact() {
    let (addr, server) = plain_echo_server().await;
    // Same user, holds the name, never reads an offer.
    let _squatter = UnixListener::bind_addr(
        &UnixAddr::from_abstract_name(rendezvous_name(addr.port())).unwrap(),
    )
    .unwrap();
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_millis(100))
        .build();
    let started = Instant::now();
    let mut stream = XwayStream::connect_with(addr, &config).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::RendezvousTimeout)
    );
    stream.write_all(b"application bytes").await.unwrap();
    let mut back = [0u8; 17];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"application bytes");
    drop(stream);
    assert_eq!(
        server.await.unwrap(),
        b"application bytes",
        "the plain server saw exactly the app's bytes"
    );
}

#[tokio::test]
async fn squatter_that_reads_offers_never_receives_application_data() {
    let (addr, server) = plain_echo_server().await;
    // Same user, accepts and reads every offer (and its descriptors), answers nothing.
    let squatter = UnixListener::bind_addr(
        &UnixAddr::from_abstract_name(rendezvous_name(addr.port())).unwrap(),
    )
    .unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = squatter.accept().unwrap();
        let mut offer = [0u8; 96];
        std::io::Read::read_exact(&mut conn, &mut offer).unwrap();
        conn
    });
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_millis(100))
        .build();
    let mut stream = XwayStream::connect_with(addr, &config).await.unwrap();
    assert!(!stream.transport().is_ring(), "{}", stream.transport());
    // The client keeps its rendezvous connection for later offers: the squatter has the
    // offer's 96 bytes and, once the application exchanged its data, nothing more.
    let mut conn = reader.join().unwrap();
    stream.write_all(b"secret").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"secret");
    assert_eq!(server.await.unwrap(), b"secret");
    conn.set_nonblocking(true).unwrap();
    let mut more = [0u8; 64];
    match std::io::Read::read(&mut conn, &mut more) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(0) => {}
        other => panic!("the squatter received more than the offer: {other:?}"),
    }
}

#[tokio::test]
async fn rendezvous_held_by_another_user_is_refused_before_any_offer() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    if euid != 0 {
        eprintln!("skipped: needs root to start a process as another user (CI runs as root)");
        return;
    }
    let (addr, _server) = plain_echo_server().await;
    let name = rendezvous_name(addr.port());
    let script = format!(
        "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind('\\0{name}')\ns.listen()\nprint('ready',flush=True)\ntime.sleep(30)"
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .uid(65534)
        .gid(65534)
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let stream = XwayStream::connect(addr).await.unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::PeerUidRejected { uid: 65534 })
    );
}

use std::os::unix::process::CommandExt;

#[tokio::test]
async fn no_advertisement_means_plain_tcp_without_waiting() {
    let (addr, _server) = plain_echo_server().await;
    // A deadline so long that any wait for a rendezvous would be obvious.
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_secs(60))
        .build();
    let started = Instant::now();
    let stream = XwayStream::connect_with(addr, &config).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "connect waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::NotAdvertised)
    );
}

#[tokio::test]
async fn ring_required_fails_clearly_when_the_ring_is_unavailable() {
    let (addr, _server) = plain_echo_server().await;
    let config = XwayConfig::builder().mode(Mode::RingRequired).build();
    let err = XwayStream::connect_with(addr, &config).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    assert!(
        err.to_string().contains("no xway listener advertised"),
        "{err}"
    );
}

#[tokio::test]
async fn ring_required_listener_drops_plain_clients_and_keeps_accepting() {
    let config = XwayConfig::builder().mode(Mode::RingRequired).build();
    let listener = XwayListener::bind_with("127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let accept =
        tokio::spawn(async move { listener.accept().await.map(|(s, _)| s.transport().clone()) });
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        plain.read(&mut buf).await.unwrap(),
        0,
        "the plain client is dropped"
    );
    let ring = XwayStream::connect(addr).await.unwrap();
    assert!(ring.transport().is_ring());
    assert!(accept.await.unwrap().unwrap().is_ring());
}

#[tokio::test]
async fn listener_that_cannot_advertise_serves_plain_tcp_and_says_why() {
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    let _squatter =
        UnixListener::bind_addr(&UnixAddr::from_abstract_name(rendezvous_name(port)).unwrap())
            .unwrap();
    let listener = XwayListener::from_tcp(probe);
    assert!(!listener.is_advertised());
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_millis(50))
        .build();
    let (client, accepted) = tokio::join!(
        XwayStream::connect_with(("127.0.0.1", port), &config),
        listener.accept()
    );
    let (server, _) = accepted.unwrap();
    assert!(!client.unwrap().transport().is_ring());
    match server.transport().fallback_reason() {
        Some(FallbackReason::SetupFailed { error }) => {
            assert!(error.contains("could not advertise"), "{error}")
        }
        other => panic!("unexpected reason {other:?}"),
    }
}

#[tokio::test]
async fn a_cancelled_connect_abandons_its_offer_and_the_server_stays_on_tcp() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The listener's application is not accepting yet, so the client waits for its verdict;
    // the connect future is dropped while it waits.
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_secs(30))
        .build();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        XwayStream::connect_with(addr, &config),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "connect should still be waiting for the verdict"
    );
    let (server, _) = listener.accept().await.unwrap();
    assert_eq!(
        server.transport().fallback_reason(),
        Some(&FallbackReason::ClientAbandoned)
    );
}
