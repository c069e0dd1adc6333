//! An echo server on [`XwayListener`]: every connection gets back exactly the bytes it sends.
//!
//! ```text
//! cargo run --example echo_server [ADDR]        # ADDR defaults to 127.0.0.1:7878
//! ```
//!
//! Connections from xway clients in other processes on this host (for example
//! `cargo run --example echo_client`) are carried by a shared-memory ring; every other client
//! (`nc 127.0.0.1 7878`, a Python socket, a remote host, a client run with `XWAY_FORCE_TCP=1`)
//! gets plain TCP. The server code is the same either way: it is the usual tokio echo loop with
//! `TcpListener` renamed to `XwayListener`. Each connection is logged with the transport that
//! was chosen and, for TCP, why.
//!
//! Stop the server with Ctrl-C.

use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::io::AsyncWriteExt;
use xway_tokio::{XwayListener, XwayStream};

const DEFAULT_ADDR: &str = "127.0.0.1:7878";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    if let Some(extra) = args.next() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unexpected argument {extra:?}; usage: echo_server [ADDR]"),
        ));
    }

    let listener = XwayListener::bind(&addr)
        .await
        .context(format_args!("binding {addr}"))?;
    let local = listener
        .local_addr()
        .context("reading the listener's address")?;
    println!(
        "listening on {local} (advertised to xway clients: {})",
        if listener.is_advertised() {
            "yes"
        } else {
            "no"
        }
    );

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(async move {
                        if let Err(e) = echo(stream, peer).await {
                            eprintln!("{peer}: error: {e}");
                        }
                    });
                }
                // A failed accept (out of descriptors, a connection reset before it was
                // accepted) concerns one connection, not the server.
                Err(e) => eprintln!("accept failed: {e}"),
            },
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                println!("shutting down");
                return Ok(());
            }
        }
    }
}

/// Echoes everything `peer` sends until it shuts down writing, then closes the connection.
async fn echo(mut stream: XwayStream, peer: SocketAddr) -> io::Result<()> {
    println!("{peer} connected over {}", stream.transport());
    let (mut rd, mut wr) = stream.split();
    let echoed = tokio::io::copy(&mut rd, &mut wr).await.context("echoing")?;
    wr.shutdown().await.context("closing")?;
    println!("{peer} done: echoed {echoed} bytes, connection closed");
    Ok(())
}

/// Adds what was being done to an I/O error, keeping its kind.
trait Context<T> {
    fn context(self, what: impl Display) -> io::Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl Display) -> io::Result<T> {
        self.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}
