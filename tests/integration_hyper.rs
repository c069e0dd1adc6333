//! hyper 1 / hyper-util over xway, between two processes: hyper-util's pooled client with
//! `XwayConnector` in the test process, hyper-util's `auto` server on an `XwayListener` in a
//! child process; and the client against a plain HTTP server (Python's `http.server`).

mod integration_support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_support::{pattern, run_role_if_child, Peer};
use xway_tokio::{FallbackReason, Transport, XwayConnector, XwayInfo, XwayListener};

/// Not a test: the entry point of the child processes (see `integration_support`).
#[test]
fn child_process_role() {
    run_role_if_child(|role| async move {
        match role.as_str() {
            "hyper-server" => hyper_server().await,
            other => panic!("unknown role {other}"),
        }
    });
}

/// hyper-util's `auto` server on an `XwayListener` (at `$XWAY_IT_ADDR`, default an ephemeral
/// port). `POST /echo` echoes the body; anything else answers with this process's pid, the
/// connection's number and transport, and the request's number on that connection.
async fn hyper_server() {
    let addr = std::env::var("XWAY_IT_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = XwayListener::bind(&addr).await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    let mut connections = 0u64;
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        connections += 1;
        let conn = connections;
        let transport = stream.transport().to_string();
        println!("ACCEPTED {transport}");
        let requests = Arc::new(AtomicU64::new(0));
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
            let transport = transport.clone();
            async move {
                let body = if req.uri().path() == "/echo" {
                    req.into_body().collect().await.unwrap().to_bytes()
                } else {
                    let pid = std::process::id();
                    Bytes::from(format!(
                        "pid={pid} conn={conn} req={n} transport={transport}"
                    ))
                };
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            }
        });
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type XwayClient = Client<XwayConnector, Full<Bytes>>;

fn client() -> XwayClient {
    Client::builder(TokioExecutor::new()).build(XwayConnector::new())
}

/// GETs `url`; returns the connection info and the body as text.
async fn get(client: &XwayClient, url: &str) -> (XwayInfo, String) {
    let response = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let info = response
        .extensions()
        .get::<XwayInfo>()
        .expect("XwayInfo in the response extensions")
        .clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (info, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn hyper_client_and_server_processes_talk_over_the_ring() {
    let mut server = integration_support::spawn_role("hyper-server", &[]);
    let addr = server.listening();
    let client = client();
    let (info, body) = get(&client, &format!("http://{addr}/")).await;
    assert!(info.transport().is_ring(), "client: {}", info.transport());
    assert_eq!(info.remote_addr(), Some(addr));
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
    assert_eq!(
        body,
        format!("pid={} conn=1 req=1 transport=ring (local)", server.pid())
    );
}

#[tokio::test]
async fn hyper_pool_reuses_one_ring_connection_for_many_requests() {
    let mut server = integration_support::spawn_role("hyper-server", &[]);
    let url = format!("http://{}/", server.listening());
    let client = client();
    let (first, _) = get(&client, &url).await;
    for n in 2..=300 {
        let (info, body) = get(&client, &url).await;
        assert_eq!(info, first, "request {n} used another connection");
        assert!(
            body.contains(&format!(" conn=1 req={n} ")),
            "request {n}: {body}"
        );
    }
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
}

#[tokio::test]
async fn hyper_bodies_larger_than_the_ring_cross_intact_both_ways() {
    let mut server = integration_support::spawn_role("hyper-server", &[]);
    let url = format!("http://{}/echo", server.listening());
    let client = client();
    for (i, len) in [0usize, 1, 3 << 20, (5 << 20) + 17].into_iter().enumerate() {
        let data = Bytes::from(pattern(i as u64, len));
        let request = Request::post(&url).body(Full::new(data.clone())).unwrap();
        let response = client.request(request).await.unwrap();
        assert!(response
            .extensions()
            .get::<XwayInfo>()
            .unwrap()
            .transport()
            .is_ring());
        let echoed = response.into_body().collect().await.unwrap().to_bytes();
        assert!(echoed == data, "body of {len} bytes came back different");
    }
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
}

// Multi-threaded, as a real client is: the pooled connection's task must be able to run (and
// see the peer's death) while this test blocks on the child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_pool_replaces_a_connection_whose_server_process_died() {
    let mut first = integration_support::spawn_role("hyper-server", &[]);
    let addr = first.listening();
    let url = format!("http://{addr}/");
    let client = client();
    let (before, body) = get(&client, &url).await;
    assert!(before.transport().is_ring());
    assert!(body.starts_with(&format!("pid={} ", first.pid())), "{body}");

    first.kill9();
    let mut second =
        integration_support::spawn_role("hyper-server", &[("XWAY_IT_ADDR", &addr.to_string())]);
    assert_eq!(second.listening(), addr);

    let (after, body) = get(&client, &url).await;
    assert!(after.transport().is_ring(), "{}", after.transport());
    assert_ne!(
        after.local_addr(),
        before.local_addr(),
        "the dead connection was reused"
    );
    assert_eq!(
        body,
        format!("pid={} conn=1 req=1 transport=ring (local)", second.pid())
    );
}

#[tokio::test]
async fn hyper_http2_with_prior_knowledge_works_over_the_ring() {
    let mut server = integration_support::spawn_role("hyper-server", &[]);
    let url = format!("http://{}/", server.listening());
    let client: XwayClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(XwayConnector::new());
    for n in 1..=20 {
        let response = client.get(url.parse().unwrap()).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert!(response
            .extensions()
            .get::<XwayInfo>()
            .unwrap()
            .transport()
            .is_ring());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!(" conn=1 req={n} ")), "{body}");
    }
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
}

#[tokio::test]
async fn hyper_client_speaks_plain_http_to_a_python_server() {
    let dir = std::env::temp_dir().join(format!("xway-it-hyper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from python\n").unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(&dir)
        .stderr(std::process::Stdio::null());
    let mut python = Peer::spawn_command(cmd);
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let line = python.expect("Serving HTTP on");
    let port: u16 = line.split_whitespace().nth(2).unwrap().parse().unwrap();

    let client = client();
    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let (info, body) = get(&client, &url).await;
    assert_eq!(body, "hello from python\n");
    assert_eq!(
        info.transport(),
        &Transport::Tcp {
            reason: FallbackReason::NotAdvertised
        }
    );
    assert_eq!(info.remote_addr().map(|a| a.port()), Some(port));
    drop(python);
    let _ = std::fs::remove_dir_all(&dir);
}
