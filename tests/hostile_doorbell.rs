//! A hostile peer attacks the doorbell instead of the ring: the doorbell travels with
//! `SCM_RIGHTS`, so both processes share its open file description, *including its
//! `O_NONBLOCK` flag*. The peer clears `O_NONBLOCK` on the doorbell the victim rings and never
//! reads it. With an eventfd doorbell (xway's first design) a full counter then blocked the
//! victim's next `write(2)` and its whole runtime thread (invariants I2 and I4); the socket-pair
//! doorbell is rung with `send(MSG_DONTWAIT)`, which cannot block. (`sys.rs` has the unit test
//! that fills a blocking doorbell 100,000 times.)
//!
//! The victim is an `xway-peer echo-server` (one tokio thread); the attacker is this test
//! binary re-executed in the role `doorbell_attacker_role`. After the attack, a bystander
//! connection to the same server must still be echoed.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Peer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayConfig, XwayStream};

/// Unix socket descriptors of this process (the doorbell end among them).
fn unix_sockets() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_str()?
                .starts_with("socket:")
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Entry point of the attacker; a no-op in a normal test run.
#[test]
fn doorbell_attacker_role() {
    let Ok(addr) = std::env::var("XWAY_DOORBELL_ATTACK") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let before = unix_sockets();
        let stream = XwayStream::connect(addr).await.unwrap();
        assert!(stream.transport().is_ring(), "{}", stream.transport());
        for fd in unix_sockets().into_iter().filter(|fd| !before.contains(fd)) {
            // SAFETY: plain fcntl calls on descriptors this process owns.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        // Make the victim ring us: bytes on the control connection fail its stream, and
        // failing rings the peer's doorbell unconditionally.
        // SAFETY: writes one valid byte to the TCP socket this process owns.
        unsafe { libc::write(stream.as_raw_fd(), b"!".as_ptr().cast(), 1) };
        println!("\nATTACKED");
        std::thread::sleep(Duration::from_secs(30));
    });
    std::process::exit(0);
}

/// The victim keeps serving other connections after the attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_freeze_the_victim_through_its_doorbell() {
    let mut victim = Peer::spawn(&["echo-server"]);
    let addr = victim.listening();
    let mut attacker = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "doorbell_attacker_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("XWAY_DOORBELL_ATTACK", addr.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = attacker.stdout.take().unwrap();
    let attacked = tokio::task::spawn_blocking(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("ATTACKED"))
    });
    assert!(
        attacked.await.unwrap(),
        "the attacker did not get to attack"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A bystander: ring or TCP, its bytes must come back.
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_millis(300))
        .build();
    let res = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = XwayStream::connect_with(addr, &config).await?;
        s.write_all(b"still there?").await?;
        let mut back = [0u8; 12];
        s.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    })
    .await;
    let _ = attacker.kill();
    let _ = attacker.wait();
    victim.kill9();
    let back = res
        .expect("the victim server is frozen: its thread blocks in a doorbell write")
        .unwrap();
    assert_eq!(&back, b"still there?");
}
