//! A line protocol with tokio-util's `Framed` and `LinesCodec` over [`XwayStream`]: the
//! server answers every line with the line in upper case.
//!
//! ```text
//! cargo run --features framed --example framed_lines -- server [ADDR]          # 127.0.0.1:7879
//! cargo run --features framed --example framed_lines -- client [ADDR] [LINE]...
//! ```
//!
//! `Framed::new(stream, codec)` asks only for `AsyncRead + AsyncWrite`, so the code is the
//! code one writes for a `TcpStream`; nothing in xway-tokio is specific to tokio-util. Both
//! roles print the transport: a ring between two xway processes on this host, plain TCP with
//! any other peer (`nc 127.0.0.1 7879` works as a client) or with `XWAY_FORCE_TCP=1`.

use std::error::Error;
use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{Framed, LinesCodec};
use xway_tokio::{XwayListener, XwayStream};

const DEFAULT_ADDR: &str = "127.0.0.1:7879";
/// Longest line accepted, so that a peer cannot make us buffer without bound.
const MAX_LINE: usize = 16 << 20;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(args.get(1).map_or(DEFAULT_ADDR, String::as_str)).await,
        Some("client") => {
            let addr = args.get(1).map_or(DEFAULT_ADDR, String::as_str);
            let mut lines: Vec<String> = args.iter().skip(2).cloned().collect();
            if lines.is_empty() {
                lines = vec!["hello".into(), "over xway".into()];
            }
            client(addr, &lines).await
        }
        _ => Err("usage: framed_lines server [ADDR] | client [ADDR] [LINE]...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("framed_lines: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn server(addr: &str) -> Result<(), Box<dyn Error>> {
    let listener = XwayListener::bind(addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
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
        tokio::spawn(async move {
            let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
            let mut answered = 0u64;
            while let Some(line) = lines.next().await {
                let reply = match line {
                    Ok(line) => line.to_uppercase(),
                    Err(e) => {
                        eprintln!("{peer}: {e}");
                        break;
                    }
                };
                if let Err(e) = lines.send(reply).await {
                    eprintln!("{peer}: {e}");
                    break;
                }
                answered += 1;
            }
            println!("DONE {peer}: answered {answered} lines");
        });
    }
}

async fn client(addr: &str, lines: &[String]) -> Result<(), Box<dyn Error>> {
    let stream = XwayStream::connect(addr).await?;
    println!("CONNECTED over {}", stream.transport());
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    for line in lines {
        framed.send(line.as_str()).await?;
        let reply = framed
            .next()
            .await
            .ok_or("the server closed the connection")??;
        println!("{line} -> {reply}");
    }
    Ok(())
}
