//! The `helloworld.Greeter` gRPC service, written out by hand: prost messages with
//! `#[derive(prost::Message)]`, and the client and server glue that `tonic-build` would
//! generate. It keeps the examples and tests free of `protoc` and of a build script; a real
//! project would generate the same thing from this `.proto` with `tonic-prost-build`:
//!
//! ```proto
//! syntax = "proto3";
//! package helloworld;
//!
//! service Greeter {
//!   rpc SayHello (HelloRequest) returns (HelloReply);
//!   // Bidirectional streaming: one reply per request, in order.
//!   rpc Chat (stream HelloRequest) returns (stream HelloReply);
//! }
//!
//! message HelloRequest { string name = 1; }
//! message HelloReply { string message = 1; }
//! ```
//!
//! The messages are wire-compatible with that file, so these stubs talk to any `helloworld`
//! greeter, whatever language it is written in (`Chat` is this project's addition).
//!
//! Shared by `tonic_server.rs`, `tonic_client.rs` and `tests/integration_tonic.rs`.
#![allow(dead_code, unreachable_pub)] // each user needs a different half

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, Body, BoxFuture, GrpcMethod, Service, StdError};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// `helloworld.HelloRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `helloworld.HelloReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

const SERVICE: &str = "helloworld.Greeter";

// ---- client ---------------------------------------------------------------------------------

/// A `helloworld.Greeter` client on a tonic [`Channel`].
#[derive(Debug, Clone)]
pub struct GreeterClient {
    inner: tonic::client::Grpc<Channel>,
}

impl GreeterClient {
    pub fn new(channel: Channel) -> GreeterClient {
        GreeterClient {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("service was not ready: {e}")))
    }

    /// `rpc SayHello (HelloRequest) returns (HelloReply)`.
    pub async fn say_hello(
        &mut self,
        request: impl tonic::IntoRequest<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        self.ready().await?;
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "SayHello"));
        let path = http::uri::PathAndQuery::from_static("/helloworld.Greeter/SayHello");
        self.inner.unary(request, path, ProstCodec::default()).await
    }

    /// `rpc Chat (stream HelloRequest) returns (stream HelloReply)`.
    pub async fn chat(
        &mut self,
        request: impl tonic::IntoStreamingRequest<Message = HelloRequest>,
    ) -> Result<Response<Streaming<HelloReply>>, Status> {
        self.ready().await?;
        let mut request = request.into_streaming_request();
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "Chat"));
        let path = http::uri::PathAndQuery::from_static("/helloworld.Greeter/Chat");
        self.inner
            .streaming(request, path, ProstCodec::default())
            .await
    }
}

// ---- server ---------------------------------------------------------------------------------

/// What a `helloworld.Greeter` server implements.
pub trait Greeter: Send + Sync + 'static {
    /// The stream of replies of `Chat`.
    type ChatStream: tokio_stream::Stream<Item = Result<HelloReply, Status>> + Send + 'static;

    fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> impl Future<Output = Result<Response<HelloReply>, Status>> + Send;

    fn chat(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> impl Future<Output = Result<Response<Self::ChatStream>, Status>> + Send;
}

/// The tower service that routes `helloworld.Greeter` calls to a [`Greeter`]; add it to a
/// tonic server with `Server::builder().add_service(GreeterServer::new(greeter))`.
#[derive(Debug)]
pub struct GreeterServer<T> {
    inner: Arc<T>,
}

impl<T> GreeterServer<T> {
    pub fn new(greeter: T) -> GreeterServer<T> {
        GreeterServer {
            inner: Arc::new(greeter),
        }
    }
}

impl<T> Clone for GreeterServer<T> {
    fn clone(&self) -> Self {
        GreeterServer {
            inner: self.inner.clone(),
        }
    }
}

impl<T> tonic::server::NamedService for GreeterServer<T> {
    const NAME: &'static str = SERVICE;
}

struct SayHelloSvc<T>(Arc<T>);

impl<T: Greeter> tonic::server::UnaryService<HelloRequest> for SayHelloSvc<T> {
    type Response = HelloReply;
    type Future = BoxFuture<Response<HelloReply>, Status>;

    fn call(&mut self, request: Request<HelloRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.say_hello(request).await })
    }
}

struct ChatSvc<T>(Arc<T>);

impl<T: Greeter> tonic::server::StreamingService<HelloRequest> for ChatSvc<T> {
    type Response = HelloReply;
    type ResponseStream = T::ChatStream;
    type Future = BoxFuture<Response<T::ChatStream>, Status>;

    fn call(&mut self, request: Request<Streaming<HelloRequest>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.chat(request).await })
    }
}

impl<T, B> Service<http::Request<B>> for GreeterServer<T>
where
    T: Greeter,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        match request.uri().path() {
            "/helloworld.Greeter/SayHello" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.unary(SayHelloSvc(inner), request).await)
            }),
            "/helloworld.Greeter/Chat" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.streaming(ChatSvc(inner), request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

// ---- the demo greeter -----------------------------------------------------------------------

/// The greeter of the examples and tests: it greets each name together with the address it saw
/// the call come from (`Request::remote_addr`, which works over xway because `XwayStream`'s
/// tonic connect info is tonic's own `TcpConnectInfo`).
#[derive(Debug, Default)]
pub struct DemoGreeter;

/// The greeting for `name` from a caller at `from`.
pub fn greeting(name: &str, from: Option<std::net::SocketAddr>) -> String {
    match from {
        Some(addr) => format!("Hello {name} from {addr}"),
        None => format!("Hello {name} from an unknown address"),
    }
}

impl Greeter for DemoGreeter {
    type ChatStream = tonic::codegen::BoxStream<HelloReply>;

    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let from = request.remote_addr();
        let message = greeting(&request.into_inner().name, from);
        Ok(Response::new(HelloReply { message }))
    }

    /// One reply per request, in order, as they arrive: both directions stream at once.
    async fn chat(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        use tokio_stream::StreamExt;
        let from = request.remote_addr();
        let replies = request.into_inner().map(move |item| {
            item.map(|r| HelloReply {
                message: greeting(&r.name, from),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}
