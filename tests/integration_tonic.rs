//! tonic over xway, between two processes: a tonic server fed by `XwayListener::incoming()` in
//! a child process, a tonic channel through `XwayConnector` in the test process. The service
//! is the hand-written `helloworld.Greeter` of `examples/tonic_greeter`.

mod integration_support;
#[path = "../examples/tonic_greeter/mod.rs"]
mod tonic_greeter;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use integration_support::{
    run_role_if_child, with_descriptors_exhausted, Peer, MAX_CPU_WHILE_EXHAUSTED,
};
use tokio_stream::StreamExt;
use tonic::codegen::{http::Uri, Service};
use tonic::transport::{Channel, Endpoint};
use tonic_greeter::{greeting, DemoGreeter, GreeterClient, GreeterServer, HelloRequest};
use xway_tokio::{FallbackReason, Transport, XwayConnector, XwayInfo, XwayListener, XwayStream};

/// Not a test: the entry point of the child processes (see `integration_support`).
#[test]
fn child_process_role() {
    run_role_if_child(|role| async move {
        match role.as_str() {
            "tonic-server" => tonic_server().await,
            other => panic!("unknown role {other}"),
        }
    });
}

/// The greeter behind `XwayListener::incoming()`, printing each connection's transport. If
/// the server ever stops, it says so.
async fn tonic_server() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    let incoming = listener.incoming().with_nodelay(true).map(|accepted| {
        if let Ok(stream) = &accepted {
            println!("ACCEPTED {}", stream.transport());
        }
        accepted
    });
    let result = tonic::transport::Server::builder()
        .add_service(GreeterServer::new(DemoGreeter))
        .serve_with_incoming(incoming)
        .await;
    println!("SERVER STOPPED {result:?}");
}

/// `XwayConnector`, remembering what each connection it made looked like.
#[derive(Clone, Default)]
struct Recording {
    connector: XwayConnector,
    connections: Arc<Mutex<Vec<XwayInfo>>>,
}

impl Service<Uri> for Recording {
    type Response = TokioIo<XwayStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<XwayStream>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.connector.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.connector.call(uri);
        let connections = self.connections.clone();
        Box::pin(async move {
            let io = connecting.await?;
            connections.lock().unwrap().push(XwayInfo::new(io.inner()));
            Ok(io)
        })
    }
}

/// A channel to `server` through a recording `XwayConnector`.
async fn connect(server: &mut Peer) -> (GreeterClient, Arc<Mutex<Vec<XwayInfo>>>) {
    let addr = server.listening();
    let recording = Recording::default();
    let connections = recording.connections.clone();
    let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(recording)
        .await
        .unwrap();
    (GreeterClient::new(channel), connections)
}

fn only_connection(connections: &Mutex<Vec<XwayInfo>>) -> XwayInfo {
    let connections = connections.lock().unwrap();
    assert_eq!(connections.len(), 1, "{connections:?}");
    connections[0].clone()
}

#[tokio::test]
async fn grpc_unary_call_crosses_processes_over_the_ring_with_remote_addr_intact() {
    let mut server = integration_support::spawn_role("tonic-server", &[]);
    let (mut client, connections) = connect(&mut server).await;
    let reply = client
        .say_hello(HelloRequest {
            name: "ring".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let info = only_connection(&connections);
    assert!(info.transport().is_ring(), "client: {}", info.transport());
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
    // The server's `Request::remote_addr()` is this end of the connection.
    assert_eq!(reply.message, greeting("ring", info.local_addr()));
}

#[tokio::test]
async fn grpc_bidirectional_stream_interleaves_both_directions_over_the_ring() {
    let mut server = integration_support::spawn_role("tonic-server", &[]);
    let (mut client, connections) = connect(&mut server).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<HelloRequest>(1);
    let mut replies = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let from = only_connection(&connections).local_addr();
    // Each request is sent only after the previous reply arrived, so the exchange completes
    // only if both directions stream at the same time. Some names are larger than a ring.
    for i in 0..400usize {
        let len = match i % 100 {
            99 => 2 << 20,
            n => 1 + n * 37,
        };
        let name: String = std::iter::repeat_n((b'a' + (i % 26) as u8) as char, len).collect();
        tx.send(HelloRequest { name: name.clone() }).await.unwrap();
        let reply = replies
            .message()
            .await
            .unwrap()
            .expect("a reply per request");
        assert!(
            reply.message == greeting(&name, from),
            "reply {i} differs (length {})",
            reply.message.len()
        );
    }
    drop(tx);
    assert!(
        replies.message().await.unwrap().is_none(),
        "one reply per request"
    );
    assert!(only_connection(&connections).transport().is_ring());
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
}

#[tokio::test]
async fn grpc_server_stream_and_client_stream_flow_concurrently_in_bulk() {
    let mut server = integration_support::spawn_role("tonic-server", &[]);
    let (mut client, connections) = connect(&mut server).await;
    // All requests at once, unthrottled: the replies stream back while requests still flow.
    let names: Vec<String> = (0..5000).map(|i| format!("caller {i}")).collect();
    let requests = tokio_stream::iter(names.clone()).map(|name| HelloRequest { name });
    let mut replies = client.chat(requests).await.unwrap().into_inner();
    let from = only_connection(&connections).local_addr();
    for name in &names {
        let reply = replies
            .message()
            .await
            .unwrap()
            .expect("a reply per request");
        assert_eq!(reply.message, greeting(name, from));
    }
    assert!(replies.message().await.unwrap().is_none());
    assert!(only_connection(&connections).transport().is_ring());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_neither_stops_nor_spins_when_accept_fails_for_lack_of_descriptors() {
    let mut server = integration_support::spawn_role("tonic-server", &[]);
    let addr = server.listening();
    let pid = server.pid();
    // While the server cannot open a descriptor, a plain connection waiting in its backlog
    // makes every accept fail with EMFILE. The incoming stream must neither end the server
    // (tonic up to some 0.14 releases stopped on such errors) nor retry in a tight loop
    // (tonic 0.14.9 retries at once when the stream yields them).
    let (probe, cpu_used) = tokio::task::spawn_blocking(move || {
        with_descriptors_exhausted(pid, || std::net::TcpStream::connect(addr).unwrap())
    })
    .await
    .unwrap();
    assert!(server.is_running(), "the server process exited");
    assert!(
        cpu_used < MAX_CPU_WHILE_EXHAUSTED,
        "the server used {cpu_used:?} of CPU while out of descriptors: it spins"
    );

    let recording = Recording::default();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(recording.clone())
        .await
        .expect("the server accepts again once descriptors are available");
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest {
            name: "after".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let info = only_connection(&recording.connections);
    assert_eq!(reply.message, greeting("after", info.local_addr()));
    drop(probe);
}

#[tokio::test]
async fn grpc_works_over_tcp_when_the_server_process_is_forced_to_tcp() {
    let mut server = integration_support::spawn_role("tonic-server", &[("XWAY_FORCE_TCP", "1")]);
    let (mut client, connections) = connect(&mut server).await;
    let names = ["one", "two", "three"];
    let requests = tokio_stream::iter(names).map(|n| HelloRequest { name: n.into() });
    let replies: Vec<String> = client
        .chat(requests)
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap().message)
        .collect()
        .await;
    let info = only_connection(&connections);
    assert_eq!(
        info.transport(),
        &Transport::Tcp {
            reason: FallbackReason::NotAdvertised
        }
    );
    let expected: Vec<String> = names
        .iter()
        .map(|n| greeting(n, info.local_addr()))
        .collect();
    assert_eq!(replies, expected);
    assert!(server.expect("ACCEPTED").contains("XWAY_FORCE_TCP"));
}
