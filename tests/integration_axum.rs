//! axum 0.8 over xway: `axum::serve` with an `XwayListener` in a child process, called by
//! hyper-util's client through `XwayConnector` (over the ring) and by Python's `http.client`
//! (a plain TCP peer).

mod integration_support;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use integration_support::{run_role_if_child, with_descriptors_exhausted, MAX_CPU_WHILE_EXHAUSTED};
use xway_tokio::{XwayConnector, XwayInfo, XwayListener};

/// Not a test: the entry point of the child processes (see `integration_support`).
#[test]
fn child_process_role() {
    run_role_if_child(|role| async move {
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap());
        let served = match role.as_str() {
            // `ConnectInfo<XwayInfo>` on the listener as it is.
            "axum-xwayinfo" => {
                let app = Router::new().route(
                    "/",
                    get(|ConnectInfo(info): ConnectInfo<XwayInfo>| async move {
                        format!(
                            "remote={} transport={}",
                            info.remote_addr().unwrap(),
                            info.transport()
                        )
                    }),
                );
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<XwayInfo>(),
                )
                .await
            }
            // `ConnectInfo<SocketAddr>` on a listener wrapped with `tap_io`.
            "axum-socketaddr" => {
                let app = Router::new().route(
                    "/",
                    get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                        format!("remote={peer}")
                    }),
                );
                let listener = listener.tap_io(|stream| {
                    println!("ACCEPTED {}", stream.transport());
                    stream.set_nodelay(true).unwrap();
                });
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
            }
            other => panic!("unknown role {other}"),
        };
        println!("SERVER STOPPED {served:?}");
    });
}

type XwayClient = Client<XwayConnector, Empty<Bytes>>;

/// GETs `url`; returns the client-side connection info and the body.
async fn get_text(client: &XwayClient, url: &str) -> (XwayInfo, String) {
    let response = client.get(url.parse().unwrap()).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let info = response.extensions().get::<XwayInfo>().unwrap().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (info, String::from_utf8(body.to_vec()).unwrap())
}

fn client() -> XwayClient {
    Client::builder(TokioExecutor::new()).build(XwayConnector::new())
}

#[tokio::test]
async fn axum_serves_an_xway_client_process_over_the_ring_with_xwayinfo_connect_info() {
    let mut server = integration_support::spawn_role("axum-xwayinfo", &[]);
    let url = format!("http://{}/", server.listening());
    let client = client();
    for _ in 0..50 {
        let (info, body) = get_text(&client, &url).await;
        assert!(info.transport().is_ring(), "client: {}", info.transport());
        assert_eq!(
            body,
            format!(
                "remote={} transport=ring (local)",
                info.local_addr().unwrap()
            )
        );
    }
}

#[tokio::test]
async fn axum_connect_info_socketaddr_works_on_a_tapped_xway_listener() {
    let mut server = integration_support::spawn_role("axum-socketaddr", &[]);
    let url = format!("http://{}/", server.listening());
    let (info, body) = get_text(&client(), &url).await;
    assert!(info.transport().is_ring(), "client: {}", info.transport());
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
    assert_eq!(body, format!("remote={}", info.local_addr().unwrap()));
}

#[tokio::test]
async fn axum_answers_pythons_http_client_over_plain_tcp() {
    let mut server = integration_support::spawn_role("axum-xwayinfo", &[]);
    let addr = server.listening();
    const SCRIPT: &str = r#"
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=20)
conn.request("GET", "/")
response = conn.getresponse()
print("STATUS", response.status)
print("LOCAL %s:%d" % conn.sock.getsockname())
print("BODY", response.read().decode())
"#;
    let output = tokio::process::Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "python failed: {stdout}");
    let line = |key: &str| -> String {
        let prefix = format!("{key} ");
        let line = stdout.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("no {key} in {stdout:?}"))[prefix.len()..].to_owned()
    };
    assert_eq!(line("STATUS"), "200");
    assert_eq!(
        line("BODY"),
        format!(
            "remote={} transport=tcp (client made no ring offer (plain TCP peer))",
            line("LOCAL")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_listener_neither_stops_nor_spins_when_accept_fails_for_lack_of_descriptors() {
    let mut server = integration_support::spawn_role("axum-socketaddr", &[]);
    let addr = server.listening();
    let pid = server.pid();
    // A plain connection waiting in the backlog makes every accept fail with EMFILE until
    // the limit is restored; `Listener::accept` must retry after a pause, not give up or spin.
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
    // The waiting connection is accepted once descriptors are available again...
    assert!(server.expect("ACCEPTED").starts_with("tcp"));
    // ...and so are new ones.
    let (info, body) = get_text(&client(), &format!("http://{addr}/")).await;
    assert!(info.transport().is_ring());
    assert_eq!(body, format!("remote={}", info.local_addr().unwrap()));
    drop(probe);
}
