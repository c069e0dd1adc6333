//! Invariant I1: a peer that is not xway sees exactly the bytes the application wrote, in both
//! directions, for protocols where either side speaks first, with no added wait. The plain peer
//! is Python's `socket` module in its own process.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{FallbackReason, XwayConfig, XwayListener, XwayStream};

/// Runs a Python program; its first stdout line is returned, the child is killed on drop.
struct Python(Child);

impl Python {
    fn run(script: &str, args: &[&str]) -> (Python, String) {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed by the interop tests");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        (Python(child), line.trim().to_owned())
    }

    /// The rest of its stdout, after it exits.
    fn finish(mut self) -> String {
        let mut rest = String::new();
        self.0
            .stdout
            .as_mut()
            .unwrap()
            .read_to_string(&mut rest)
            .unwrap();
        assert!(self.0.wait().unwrap().success(), "python failed: {rest}");
        rest
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain server: optionally speaks first, then records everything until EOF, then answers
/// with the hex of what it got.
const PY_SERVER: &str = r#"
import socket, sys
greeting = sys.argv[1].encode()
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
if greeting: c.sendall(greeting)
got = b""
while True:
    d = c.recv(65536)
    if not d: break
    got += d
c.sendall(b"GOT " + got.hex().encode())
c.close()
"#;

/// A plain client: connects, optionally speaks first, half-closes, prints what it got (hex).
const PY_CLIENT: &str = r#"
import socket, sys
port, first = int(sys.argv[1]), sys.argv[2].encode()
c = socket.create_connection(("127.0.0.1", port))
print("connected", flush=True)
if first: c.sendall(first)
c.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = c.recv(65536)
    if not d: break
    got += d
print(got.hex(), flush=True)
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The app's bytes, including ones that look like xway's own framing.
fn payload() -> Vec<u8> {
    let mut p = b"XWAYVRD1 is not special here \x00\x01\xff".to_vec();
    p.extend((0..=255u8).cycle().take(100_000));
    p
}

async fn xway_client_against_python_server(greeting: &str) {
    let (py, port) = Python::run(PY_SERVER, &[greeting]);
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_secs(60))
        .build();
    let started = Instant::now();
    let mut stream = XwayStream::connect_with(("127.0.0.1", port.parse::<u16>().unwrap()), &config)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "connect must not wait for a rendezvous"
    );
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::NotAdvertised)
    );
    if !greeting.is_empty() {
        let mut g = vec![0u8; greeting.len()];
        stream.read_exact(&mut g).await.unwrap();
        assert_eq!(
            g,
            greeting.as_bytes(),
            "the server's first bytes reach the app untouched"
        );
    }
    let data = payload();
    stream.write_all(&data).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(
        answer,
        format!("GOT {}", hex(&data)),
        "the server saw exactly the app's bytes"
    );
    py.finish();
}

#[tokio::test]
async fn xway_client_and_plain_server_that_speaks_first() {
    xway_client_against_python_server("220 hello from a plain server\r\n").await;
}

#[tokio::test]
async fn xway_client_and_plain_server_that_waits_for_the_client() {
    xway_client_against_python_server("").await;
}

async fn python_client_against_xway_listener(client_first: &str, server_first: &[u8]) {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    assert!(listener.is_advertised());
    let port = listener.local_addr().unwrap().port().to_string();
    let (py, hello) = Python::run(PY_CLIENT, &[&port, client_first]);
    assert_eq!(hello, "connected");
    let (mut stream, _) = listener.accept().await.unwrap();
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::NoOffer)
    );
    stream.write_all(server_first).await.unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(
        got,
        client_first.as_bytes(),
        "the listener saw exactly the client's bytes"
    );
    let data = payload();
    stream.write_all(&data).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut expected = server_first.to_vec();
    expected.extend_from_slice(&data);
    assert_eq!(
        py.finish().trim(),
        hex(&expected),
        "the plain client saw exactly the app's bytes"
    );
}

#[tokio::test]
async fn plain_client_and_xway_listener_that_speaks_first() {
    python_client_against_xway_listener("", b"* OK server greeting\r\n").await;
}

#[tokio::test]
async fn plain_client_that_speaks_first_and_xway_listener() {
    python_client_against_xway_listener("GET / HTTP/1.0\r\n\r\n", b"").await;
}
