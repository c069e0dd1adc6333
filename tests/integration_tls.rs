//! tokio-rustls over `XwayStream` between two processes: TLS needs only `AsyncRead` +
//! `AsyncWrite` + `Unpin`, so it runs over the ring as over TCP.

mod integration_support;

use std::sync::Arc;

use integration_support::{pattern, run_role_if_child, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use xway_tokio::{FallbackReason, XwayListener, XwayStream};

/// Not a test: the entry point of the child processes (see `integration_support`).
#[test]
fn child_process_role() {
    run_role_if_child(|role| async move {
        assert_eq!(role, "tls-echo-server");
        tls_echo_server().await
    });
}

/// A TLS echo server with a fresh self-signed certificate for `localhost`, printed (PEM, one
/// line per `CERT` line) before `LISTENING`.
async fn tls_echo_server() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    for line in certified.cert.pem().lines() {
        println!("CERT {line}");
    }
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        println!("ACCEPTED {}", stream.transport());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => return println!("HANDSHAKE FAILED {e}"),
            };
            let (mut rd, mut wr) = tokio::io::split(&mut tls);
            tokio::io::copy(&mut rd, &mut wr).await.unwrap();
            tls.shutdown().await.unwrap();
        });
    }
}

/// Reads the server's certificate from its `CERT` lines, up to its `LISTENING` line.
fn connector_for(server: &mut Peer) -> TlsConnector {
    let mut pem = String::new();
    loop {
        let line = server.expect("CERT");
        pem.push_str(&line);
        pem.push('\n');
        if line.starts_with("-----END") {
            break;
        }
    }
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Sends `data` through TLS and reads the echo concurrently; checks it.
async fn echo(connector: &TlsConnector, stream: XwayStream, data: &[u8]) {
    let server_name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(server_name, stream).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    let (mut rd, mut wr) = tokio::io::split(tls);
    let write = async {
        wr.write_all(data).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut echoed = Vec::with_capacity(data.len());
    let read = rd.read_to_end(&mut echoed);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    assert!(echoed == data, "the echo differs from what was sent");
}

#[tokio::test]
async fn tls_echo_crosses_processes_over_the_ring() {
    let mut server = integration_support::spawn_role("tls-echo-server", &[]);
    let connector = connector_for(&mut server);
    let stream = XwayStream::connect(server.listening()).await.unwrap();
    assert!(stream.transport().is_ring(), "{}", stream.transport());
    echo(&connector, stream, &pattern(0, (6 << 20) + 5)).await;
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
}

#[tokio::test]
async fn tls_rejects_a_certificate_it_does_not_trust_over_the_ring() {
    let mut trusted = integration_support::spawn_role("tls-echo-server", &[]);
    let connector = connector_for(&mut trusted);
    let mut other = integration_support::spawn_role("tls-echo-server", &[]);
    let _ = connector_for(&mut other);
    let stream = XwayStream::connect(other.listening()).await.unwrap();
    assert!(stream.transport().is_ring());
    let server_name = ServerName::try_from("localhost").unwrap();
    let err = connector.connect(server_name, stream).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert_eq!(other.expect("ACCEPTED"), "ring (local)");
    other.expect("HANDSHAKE FAILED");
}

#[tokio::test]
async fn tls_echo_works_over_tcp_when_the_server_process_is_forced_to_tcp() {
    let mut server = integration_support::spawn_role("tls-echo-server", &[("XWAY_FORCE_TCP", "1")]);
    let connector = connector_for(&mut server);
    let stream = XwayStream::connect(server.listening()).await.unwrap();
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::NotAdvertised)
    );
    echo(&connector, stream, &pattern(7, 1 << 20)).await;
}
