//! A tonic gRPC server (the `helloworld.Greeter` of `tonic_greeter/mod.rs`) on an
//! [`XwayListener`].
//!
//! ```text
//! cargo run --features tonic014 --example tonic_server [ADDR]    # ADDR: 127.0.0.1:50051
//! cargo run --features tonic014 --example tonic_client [URL]     # in another terminal
//! ```
//!
//! The only xway-specific line is the listener: `serve_with_incoming(listener.incoming())`
//! instead of `serve(addr)`. `XwayListener::incoming()` (feature `stream`, implied by
//! `tonic014`) never yields an error, so no accept error can stop the server, and each accepted
//! `XwayStream` reports tonic's own `TcpConnectInfo`, so `Request::remote_addr()` works in the
//! handlers. Each connection is printed with the transport it uses: a shared-memory ring for
//! xway clients in other processes on this host (`tonic_client`), plain TCP for any other
//! client (`grpcurl -plaintext`, a remote host, a client run with `XWAY_FORCE_TCP=1`).
//!
//! Stop it with Ctrl-C.

mod tonic_greeter;

use std::process::ExitCode;

use tokio_stream::StreamExt;
use tonic_greeter::{DemoGreeter, GreeterServer};
use xway_tokio::XwayListener;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tonic_server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let listener = XwayListener::bind(&addr).await?;
    println!("LISTENING {}", listener.local_addr()?);

    let incoming = listener.incoming().with_nodelay(true).map(|accepted| {
        if let Ok(stream) = &accepted {
            let peer = stream.peer_addr().map(|a| a.to_string());
            let peer = peer.unwrap_or_else(|e| e.to_string());
            println!("ACCEPTED {peer} over {}", stream.transport());
        }
        accepted
    });

    tonic::transport::Server::builder()
        .add_service(GreeterServer::new(DemoGreeter))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await?;
    Ok(())
}
