//! A tonic gRPC client (the `helloworld.Greeter` of `tonic_greeter/mod.rs`) that connects
//! through xway: a unary call, then a bidirectional stream.
//!
//! ```text
//! cargo run --features tonic014 --example tonic_server               # in one terminal
//! cargo run --features tonic014 --example tonic_client [URL] [NAME]  # URL: http://127.0.0.1:50051
//! ```
//!
//! The xway-specific line is `Endpoint::connect_with_connector(XwayConnector::new())`; the
//! rest is ordinary tonic. The connector is wrapped here only to print the transport of each
//! connection the channel opens: a ring when the server is an xway server on this host, plain
//! TCP otherwise (or with `XWAY_FORCE_TCP=1`).

mod tonic_greeter;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tonic::codegen::{http::Uri, Service};
use tonic::transport::Endpoint;
use tonic_greeter::{GreeterClient, HelloRequest};
use xway_tokio::{XwayConnector, XwayStream};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tonic_client: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let name = args.next().unwrap_or_else(|| "world".to_owned());

    let channel = Endpoint::from_shared(url)?
        .connect_with_connector(PrintTransport(XwayConnector::new()))
        .await?;
    let mut client = GreeterClient::new(channel);

    let reply = client
        .say_hello(HelloRequest { name: name.clone() })
        .await?;
    println!("SayHello: {}", reply.into_inner().message);

    let requests = tokio_stream::iter((1..=3).map(move |i| HelloRequest {
        name: format!("{name} #{i}"),
    }));
    let mut replies = client.chat(requests).await?.into_inner();
    while let Some(reply) = replies.message().await? {
        println!("Chat: {}", reply.message);
    }
    Ok(())
}

/// Passes connections through from `XwayConnector`, printing the transport of each.
#[derive(Clone)]
struct PrintTransport(XwayConnector);

impl Service<Uri> for PrintTransport {
    type Response = TokioIo<XwayStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<XwayStream>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri.clone());
        Box::pin(async move {
            let io = connecting.await?;
            println!("CONNECTED {uri} over {}", io.inner().transport());
            Ok(io)
        })
    }
}
