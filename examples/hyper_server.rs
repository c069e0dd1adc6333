//! An HTTP/1 and HTTP/2 server with hyper-util's `auto` connection builder on an
//! [`XwayListener`].
//!
//! ```text
//! cargo run --features hyper1 --example hyper_server [ADDR]     # ADDR: 127.0.0.1:3000
//! cargo run --features hyper1 --example hyper_client            # in another terminal
//! curl http://127.0.0.1:3000/hello                              # a plain TCP client
//! ```
//!
//! Nothing here is xway-specific but the listener: hyper serves any tokio stream wrapped in
//! `TokioIo`, and an `XwayStream` is one. Each connection is printed with its transport, and
//! each response says which connection and transport it came through: an xway client in
//! another process on this host gets a shared-memory ring, curl gets plain TCP.
//!
//! Stop it with Ctrl-C.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use xway_tokio::XwayListener;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper_server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = XwayListener::bind(&addr).await?;
    println!("LISTENING {}", listener.local_addr()?);

    let mut connections = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // One failed accept (a reset connection, a descriptor limit) is not the end of
                // the server; pause briefly so a persistent condition does not spin.
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => {
                println!("shutting down");
                return Ok(());
            }
        };
        connections += 1;
        let connection = connections;
        let transport = stream.transport().to_string();
        println!("ACCEPTED connection #{connection} from {peer} over {transport}");

        let requests = Arc::new(AtomicU64::new(0));
        let service = service_fn(move |request: Request<Incoming>| {
            let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
            let body = format!(
                "{} {}: request #{n} on connection #{connection}, over {transport}\n",
                request.method(),
                request.uri().path(),
            );
            async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
        });
        tokio::spawn(async move {
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                eprintln!("connection #{connection}: {e}");
            }
        });
    }
}
