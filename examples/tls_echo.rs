//! TLS (tokio-rustls) over [`XwayStream`]: an echo server and a client, each printing the
//! transport under the TLS session.
//!
//! ```text
//! cargo run --features tls --example tls_echo -- server [ADDR] [CERT]   # 127.0.0.1:7880
//! cargo run --features tls --example tls_echo -- client [ADDR] [CERT] [MESSAGE]
//! ```
//!
//! The server makes a self-signed certificate for `localhost` at start-up and writes it (PEM)
//! to `CERT` (default: `xway-tls-echo.pem` in the temporary directory); the client trusts that
//! certificate and nothing else. `openssl s_client -connect ADDR -CAfile CERT` works as a
//! client too, over plain TCP.
//!
//! `TlsAcceptor::accept` and `TlsConnector::connect` ask only for `AsyncRead + AsyncWrite +
//! Unpin`, so TLS runs over an `XwayStream` as over a `TcpStream`: on the ring between two
//! xway processes on this host, on TCP otherwise. (Whether TLS is worth having on a ring,
//! whose peer is on the same kernel, is the application's call; it works either way.)

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use xway_tokio::{XwayListener, XwayStream};

const DEFAULT_ADDR: &str = "127.0.0.1:7880";

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.get(1).map_or(DEFAULT_ADDR, String::as_str);
    let cert = args.get(2).map_or_else(
        || std::env::temp_dir().join("xway-tls-echo.pem"),
        PathBuf::from,
    );
    let result = match args.first().map(String::as_str) {
        Some("server") => server(addr, cert).await,
        Some("client") => {
            let message = args
                .get(3)
                .map_or("hello over TLS over xway", String::as_str);
            client(addr, cert, message).await
        }
        _ => Err("usage: tls_echo server [ADDR] [CERT] | client [ADDR] [CERT] [MESSAGE]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls_echo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn server(addr: &str, cert_path: PathBuf) -> Result<(), BoxError> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    std::fs::write(&cert_path, certified.cert.pem())?;
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())?;
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = XwayListener::bind(addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
    println!("CERT {}", cert_path.display());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        println!("ACCEPTED {peer} over {}", stream.transport());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let echoed = async {
                let mut tls = acceptor.accept(stream).await?;
                let (mut rd, mut wr) = tokio::io::split(&mut tls);
                let n = tokio::io::copy(&mut rd, &mut wr).await?;
                tls.shutdown().await?;
                Ok::<u64, std::io::Error>(n)
            };
            match echoed.await {
                Ok(n) => println!("DONE {peer}: echoed {n} bytes"),
                Err(e) => eprintln!("{peer}: {e}"),
            }
        });
    }
}

async fn client(addr: &str, cert_path: PathBuf, message: &str) -> Result<(), BoxError> {
    let mut roots = RootCertStore::empty();
    let pem =
        std::fs::read(&cert_path).map_err(|e| format!("reading {}: {e}", cert_path.display()))?;
    roots.add(CertificateDer::from_pem_slice(&pem)?)?;
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));

    let stream = XwayStream::connect(addr).await?;
    let transport = stream.transport().clone();
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, stream)
        .await?;
    let (_, session) = tls.get_ref();
    println!(
        "CONNECTED over {transport}, {:?} {:?}",
        session.protocol_version(),
        session.negotiated_cipher_suite().map(|s| s.suite())
    );

    tls.write_all(message.as_bytes()).await?;
    tls.shutdown().await?; // close_notify, then end of stream: the server echoes and closes
    let mut echoed = String::new();
    tls.read_to_string(&mut echoed).await?;
    println!("ECHOED {echoed}");
    Ok(())
}
