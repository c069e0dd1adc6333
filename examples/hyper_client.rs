//! A hyper-util client whose connections go through xway: several requests over one pooled
//! connection, each printed with the transport it used.
//!
//! ```text
//! cargo run --features hyper1 --example hyper_server                    # in one terminal
//! cargo run --features hyper1 --example hyper_client [URL] [COUNT]      # URL: http://127.0.0.1:3000/hello
//! ```
//!
//! The xway-specific line is `Client::builder(...).build(XwayConnector::new())`, in place of
//! `build_http()`. Each response carries an `XwayInfo` in its extensions: the transport (a
//! shared-memory ring when the server is an xway server on this host, plain TCP otherwise or
//! with `XWAY_FORCE_TCP=1`) and the connection's addresses, which stay the same while the pool
//! reuses the connection.

use std::process::ExitCode;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use xway_tokio::{XwayConnector, XwayInfo};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper_client: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url: hyper::Uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:3000/hello".to_owned())
        .parse()?;
    let count: u32 = args.next().map_or(Ok(3), |n| n.parse())?;

    let client: Client<XwayConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(XwayConnector::new());

    for _ in 0..count {
        let response = client.get(url.clone()).await?;
        let status = response.status();
        let info = response.extensions().get::<XwayInfo>().cloned();
        let body = response.into_body().collect().await?.to_bytes();
        match info {
            Some(info) => println!(
                "{status} via {:?} over {}",
                info.local_addr(),
                info.transport()
            ),
            None => println!("{status} (no connection info)"),
        }
        print!("  {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}
