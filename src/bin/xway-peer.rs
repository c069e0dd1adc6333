//! `xway-peer`: a small, scriptable peer process for xway's cross-process tests and benchmarks.
//!
//! Each mode prints machine-readable lines on stdout (one event per line, flushed at once), so
//! a parent process can follow it:
//!
//! ```text
//! xway-peer echo-server [ADDR] [--tcp-only] [--greeting TEXT] [--conns N]
//!     LISTENING <addr>            then, per connection:  ACCEPTED <transport>
//!     echoes every byte until EOF (after writing TEXT first, if given); exits after N conns
//! xway-peer sink-server [ADDR] [--tcp-only]
//!     LISTENING <addr>, ACCEPTED <transport>; reads and discards until EOF, then READ <total>
//! xway-peer source ADDR [--chunk BYTES] [--tcp-only]
//!     CONNECTED <transport>; writes the byte pattern `i % 251` forever in chunks, printing
//!     WROTE <total> after each chunk has been accepted by the stream
//! xway-peer echo-client ADDR [--tcp-only]
//!     CONNECTED <transport>; echoes every byte it receives until EOF
//! xway-peer source-server [ADDR] [--chunk BYTES] [--tcp-only]
//!     LISTENING <addr>, ACCEPTED <transport>; writes the byte pattern `i % 251` to its one
//!     connection forever, printing WROTE <total> after each chunk (`source`, server side)
//! ```
//!
//! `--tcp-only` uses `Mode::TcpOnly`; `XWAY_FORCE_TCP=1` has the same effect process-wide.

use std::io::{self, Write};
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{Mode, XwayConfig, XwayListener, XwayStream};

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Args {
    mode: String,
    addr: Option<String>,
    tcp_only: bool,
    greeting: Option<String>,
    conns: Option<usize>,
    chunk: usize,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("usage: xway-peer MODE [ADDR] [options]")?;
    let mut args = Args {
        mode,
        addr: None,
        tcp_only: false,
        greeting: None,
        conns: None,
        chunk: 64 * 1024,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tcp-only" => args.tcp_only = true,
            "--greeting" => args.greeting = Some(it.next().ok_or("--greeting needs a value")?),
            "--conns" => {
                args.conns = Some(
                    it.next()
                        .ok_or("--conns needs a value")?
                        .parse()
                        .map_err(|e| format!("--conns: {e}"))?,
                )
            }
            "--chunk" => {
                args.chunk = it
                    .next()
                    .ok_or("--chunk needs a value")?
                    .parse()
                    .map_err(|e| format!("--chunk: {e}"))?
            }
            other if !other.starts_with("--") && args.addr.is_none() => {
                args.addr = Some(other.to_owned())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn config(args: &Args) -> XwayConfig {
    let mode = if args.tcp_only {
        Mode::TcpOnly
    } else {
        Mode::Auto
    };
    XwayConfig::builder().mode(mode).build()
}

async fn echo(stream: &mut XwayStream) -> io::Result<u64> {
    let (mut rd, mut wr) = stream.split();
    let n = tokio::io::copy(&mut rd, &mut wr).await?;
    wr.shutdown().await?;
    Ok(n)
}

async fn run(args: Args) -> io::Result<()> {
    let addr = args
        .addr
        .clone()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    match args.mode.as_str() {
        "echo-server" | "sink-server" => {
            let listener = XwayListener::bind_with(&addr, config(&args)).await?;
            say(format_args!("LISTENING {}", listener.local_addr()?));
            let mut served = 0;
            while args.conns.is_none_or(|n| served < n) {
                let (mut stream, _) = listener.accept().await?;
                served += 1;
                say(format_args!("ACCEPTED {}", stream.transport()));
                let sink = args.mode == "sink-server";
                let greeting = args.greeting.clone();
                tokio::spawn(async move {
                    let res = async {
                        if sink {
                            let mut buf = vec![0u8; 1 << 16];
                            let mut total = 0u64;
                            loop {
                                let n = stream.read(&mut buf).await?;
                                if n == 0 {
                                    break;
                                }
                                total += n as u64;
                            }
                            say(format_args!("READ {total}"));
                        } else {
                            if let Some(g) = greeting {
                                stream.write_all(g.as_bytes()).await?;
                            }
                            let n = echo(&mut stream).await?;
                            say(format_args!("ECHOED {n}"));
                        }
                        Ok::<_, io::Error>(())
                    }
                    .await;
                    if let Err(e) = res {
                        say(format_args!("ERROR {:?} {e}", e.kind()));
                    }
                });
            }
            // Let the last connection finish.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Ok(())
        }
        "source" => {
            let addr = args
                .addr
                .clone()
                .ok_or_else(|| io::Error::other("source needs ADDR"))?;
            let mut stream = XwayStream::connect_with(&addr, &config(&args)).await?;
            say(format_args!("CONNECTED {}", stream.transport()));
            let chunk: Vec<u8> = Vec::with_capacity(args.chunk);
            let mut total: u64 = 0;
            let mut chunk = chunk;
            loop {
                chunk.clear();
                chunk.extend((0..args.chunk as u64).map(|i| ((total + i) % 251) as u8));
                stream.write_all(&chunk).await?;
                total += args.chunk as u64;
                say(format_args!("WROTE {total}"));
            }
        }
        "echo-client" => {
            let addr = args
                .addr
                .clone()
                .ok_or_else(|| io::Error::other("echo-client needs ADDR"))?;
            let mut stream = XwayStream::connect_with(&addr, &config(&args)).await?;
            say(format_args!("CONNECTED {}", stream.transport()));
            let n = echo(&mut stream).await?;
            say(format_args!("ECHOED {n}"));
            Ok(())
        }
        "source-server" => {
            let listener = XwayListener::bind_with(&addr, config(&args)).await?;
            say(format_args!("LISTENING {}", listener.local_addr()?));
            let (mut stream, _) = listener.accept().await?;
            say(format_args!("ACCEPTED {}", stream.transport()));
            let mut total: u64 = 0;
            let mut chunk = Vec::with_capacity(args.chunk);
            loop {
                chunk.clear();
                chunk.extend((0..args.chunk as u64).map(|i| ((total + i) % 251) as u8));
                stream.write_all(&chunk).await?;
                total += args.chunk as u64;
                say(format_args!("WROTE {total}"));
            }
        }
        other => Err(io::Error::other(format!("unknown mode {other}"))),
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xway-peer: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(format_args!("ERROR {:?} {e}", e.kind()));
            ExitCode::FAILURE
        }
    }
}
