//! An axum 0.8 server on an [`XwayListener`], whose handlers see each request's transport.
//!
//! ```text
//! cargo run --features axum08 --example axum_server [ADDR]          # ADDR: 127.0.0.1:3001
//! cargo run --features hyper1 --example hyper_client http://127.0.0.1:3001/   # over the ring
//! curl http://127.0.0.1:3001/                                         # over TCP
//! ```
//!
//! `axum::serve` takes the `XwayListener` as it takes tokio's `TcpListener` (feature
//! `axum08`: `XwayListener` implements `axum::serve::Listener`, retrying accept errors itself).
//! The handler asks for `ConnectInfo<XwayInfo>`: the peer's address and the transport of its
//! connection. (`ConnectInfo<SocketAddr>` works too, on a listener wrapped with `tap_io`, as
//! here; see `XwayListener`'s `Listener` documentation.) `tap_io` also prints each accepted
//! connection with its transport and sets `TCP_NODELAY`, which matters on the TCP path.
//!
//! Stop it with Ctrl-C (in-flight requests finish first).

use std::process::ExitCode;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use xway_tokio::{XwayInfo, XwayListener};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum_server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".to_owned());
    let listener = XwayListener::bind(&addr).await?;
    println!("LISTENING {}", listener.local_addr()?);

    let listener = listener.tap_io(|stream| {
        let peer = stream.peer_addr().map(|a| a.to_string());
        let peer = peer.unwrap_or_else(|e| e.to_string());
        println!("ACCEPTED {peer} over {}", stream.transport());
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("{peer}: could not set TCP_NODELAY: {e}");
        }
    });

    let app = Router::new().route("/", get(hello));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<XwayInfo>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    })
    .await
}

/// `GET /`: a greeting that names the caller's address and transport.
async fn hello(ConnectInfo(info): ConnectInfo<XwayInfo>) -> String {
    let peer = info
        .remote_addr()
        .map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
    format!("hello {peer}, you came over {}\n", info.transport())
}
