//! Peer death on an established stream (invariant I4): the survivor gets every byte written
//! before the death, then EOF or an error, within a bound; never a hang.
//!
//! * Peer process killed: `killed-server` accepts one connection, writes `--bytes` of the
//!   pattern, records its progress in `--state` (`written N`, then `done N`) and waits; the
//!   guest's `/init` SIGKILLs it once it is `done`. `killed-client` connects, waits
//!   [`KILLED_CLIENT_PAUSE`] without reading (so the bytes are still in flight when the writer
//!   dies), then reads: all `--bytes` exactly, then EOF or `ConnectionReset` within `--bound`
//!   of the last byte.
//! * Peer domain destroyed: `hold-server` accepts one connection, writes `hold\n` and keeps the
//!   stream idle. `destroyed-client` reads `hold\n`, prints `XWAY-READY <role> destroy-hold` and
//!   reads again; dom0 then runs `xl destroy` on the server's domain and writes the node
//!   `--notice-node` (relative to our XenStore home). From that notice, the read must end (EOF,
//!   `ConnectionReset` or `TimedOut`) within `--bound`. Plain TCP without keepalive cannot
//!   notice a silently vanished peer, so without `--expect-ring` the outcome is only reported.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::{net, pattern, retry_connect, usage, xs, Args, Report, XwayListener};

/// How long `killed-client` leaves the stream unread after connecting.
pub(crate) const KILLED_CLIENT_PAUSE: Duration = Duration::from_secs(5);
const KILLED_WRITE: usize = 4096;

async fn accept_one(rep: &mut Report, a: &Args, what: &str) -> Option<net::XwayStream> {
    let listener = match XwayListener::bind(a.listen).await {
        Ok(l) => l,
        Err(e) => {
            rep.check(
                &format!("{what}:listen"),
                false,
                format_args!("XwayListener::bind({}): {e}", a.listen),
            );
            return None;
        }
    };
    rep.info(format_args!("{what} listening on {}", a.listen));
    match listener.accept().await {
        Ok((s, peer)) => {
            rep.info(format_args!(
                "{what}: accepted {peer}: transport {}",
                s.transport()
            ));
            Some(s)
        }
        Err(e) => {
            rep.check(&format!("{what}:accept"), false, e);
            None
        }
    }
}

pub(crate) async fn killed_server(rep: &mut Report, a: &Args) {
    let state = a.state.clone().unwrap_or_else(|| usage());
    let Some(mut s) = accept_one(rep, a, "killed").await else {
        return;
    };
    let transport = s.transport().to_string();
    let mut off = 0usize;
    while off < a.bytes {
        let len = KILLED_WRITE.min(a.bytes - off);
        let chunk: Vec<u8> = (off as u64..(off + len) as u64).map(pattern).collect();
        if let Err(e) = s.write_all(&chunk).await {
            return rep.check(
                "killed:wrote",
                false,
                format_args!("write after {off} B: {e}; transport: {transport}"),
            );
        }
        off += len;
        let _ = std::fs::write(&state, format!("written {off}\n"));
    }
    rep.check(
        "killed:wrote",
        true,
        format_args!("{off} B written, now waiting for SIGKILL; transport: {transport}"),
    );
    let _ = std::fs::write(&state, format!("done {off}\n"));
    // Hold the stream until /init kills us.
    std::future::pending::<()>().await;
}

pub(crate) async fn killed_client(rep: &mut Report, a: &Args) {
    let peer = a.peer.unwrap_or_else(|| usage());
    let Some(mut s) = retry_connect(rep, "killed-client connect", peer, || {
        net::connect(peer, false)
    })
    .await
    else {
        return;
    };
    let transport = s.transport().to_string();
    if a.expect_ring {
        rep.check(
            "killed:ring-used",
            s.transport().is_ring(),
            format_args!("transport: {transport}"),
        );
    }
    tokio::time::sleep(KILLED_CLIENT_PAUSE).await;
    let mut got = 0usize;
    let mut bad = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    let end = loop {
        match timeout(a.bound, s.read(&mut buf)).await {
            Err(_) => {
                break Err(format!(
                    "no EOF or error within {:?} after the last byte: a hang",
                    a.bound
                ))
            }
            Ok(Ok(0)) => break Ok("EOF".to_string()),
            Ok(Ok(n)) => {
                if bad.is_none() {
                    bad = (0..n)
                        .find(|&i| buf[i] != pattern((got + i) as u64))
                        .map(|i| got + i);
                }
                got += n;
                last = Instant::now();
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                break Ok(format!("ConnectionReset ({e})"))
            }
            Ok(Err(e)) => {
                break Err(format!(
                    "{:?} error, want EOF or ConnectionReset: {e}",
                    e.kind()
                ))
            }
        }
    };
    let after = last.elapsed().as_secs_f64();
    rep.check(
        "killed:bytes",
        got == a.bytes && bad.is_none(),
        format_args!(
            "{got} of {} B before the end, first bad byte {bad:?}; transport: {transport}",
            a.bytes
        ),
    );
    match end {
        Ok(how) => rep.check(
            "killed:end",
            true,
            format_args!("{how} {after:.2}s after the last byte; transport: {transport}"),
        ),
        Err(e) => rep.check(
            "killed:end",
            false,
            format_args!("{e}; transport: {transport}"),
        ),
    }
}

pub(crate) async fn hold_server(rep: &mut Report, a: &Args) {
    let Some(mut s) = accept_one(rep, a, "destroyed").await else {
        return;
    };
    let transport = s.transport().to_string();
    match s.write_all(b"hold\n").await {
        Ok(()) => rep.check(
            "destroyed:accepted",
            true,
            format_args!(
                "holding the stream until this domain is destroyed; transport: {transport}"
            ),
        ),
        Err(e) => {
            return rep.check(
                "destroyed:accepted",
                false,
                format_args!("write: {e}; transport: {transport}"),
            )
        }
    }
    // Keep reading: the client never writes, so this waits until the domain goes.
    let mut b = [0u8; 64];
    let r = s.read(&mut b).await;
    rep.info(format_args!(
        "destroyed: hold stream read returned {r:?} (the client should not write or close)"
    ));
    std::future::pending::<()>().await;
}

/// Polls `node` (every 200 ms, in a thread: the xenbus client blocks) until it exists.
fn notice(node: String) -> tokio::sync::oneshot::Receiver<Result<(Instant, String), String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let mut f = xs::open()?;
            loop {
                if let Some(v) = xs::read(&mut f, &node)? {
                    return Ok((Instant::now(), v));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })();
        let _ = tx.send(r);
    });
    rx
}

fn end_ok(r: &io::Result<usize>) -> Result<String, String> {
    match r {
        Ok(0) => Ok("EOF".into()),
        Ok(n) => Err(format!("{n} unexpected bytes")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(format!("{:?} ({e})", e.kind()))
        }
        Err(e) => Err(format!(
            "{:?} error, want EOF, ConnectionReset or TimedOut: {e}",
            e.kind()
        )),
    }
}

pub(crate) async fn destroyed_client(rep: &mut Report, a: &Args) {
    let peer = a.peer.unwrap_or_else(|| usage());
    let node = a.notice_node.clone().unwrap_or_else(|| usage());
    let Some(mut s) = retry_connect(rep, "destroyed-client connect", peer, || {
        net::connect(peer, false)
    })
    .await
    else {
        return;
    };
    let transport = s.transport().to_string();
    let ring = s.transport().is_ring();
    let mut hello = [0u8; 5];
    match timeout(Duration::from_secs(60), s.read_exact(&mut hello)).await {
        Ok(Ok(_)) if &hello == b"hold\n" => {}
        other => {
            return rep.check(
                "destroyed:hold",
                false,
                format_args!("want \"hold\\n\", got {other:?} {hello:?}; transport: {transport}"),
            )
        }
    }
    if a.expect_ring {
        rep.check(
            "destroyed:ring-used",
            ring,
            format_args!("transport: {transport}"),
        );
    }
    println!("XWAY-READY {} destroy-hold {transport}", rep.role);
    let mut notice = notice(node.clone());
    let mut b = [0u8; 64];
    // Either the stream ends first (then the notice must follow soon: the domain was being
    // destroyed), or the notice comes first and the stream must end within the bound.
    let outcome: Result<String, String> = tokio::select! {
        r = s.read(&mut b) => {
            let ended = Instant::now();
            let how = end_ok(&r);
            match timeout(Duration::from_secs(15), &mut notice).await {
                Ok(Ok(Ok((_, v)))) => how.map(|h| format!("{h} {:.2}s before dom0's notice ({v})", ended.elapsed().as_secs_f64())),
                _ => Err(format!("the stream ended ({how:?}) but dom0 did not report destroying the peer within 15 s")),
            }
        }
        n = &mut notice => match n {
            Ok(Ok((at, v))) => match timeout(a.bound, s.read(&mut b)).await {
                Ok(r) => end_ok(&r).map(|h| format!("{h} {:.2}s after dom0's notice ({v})", at.elapsed().as_secs_f64())),
                Err(_) => Err(format!("no EOF, ConnectionReset or TimedOut within {:?} after dom0 destroyed the peer ({v}): a hang", a.bound)),
            },
            Ok(Err(e)) => Err(format!("reading the notice node {node}: {e}")),
            Err(_) => Err("the notice thread died".into()),
        },
    };
    let detail = match &outcome {
        Ok(d) | Err(d) => format!("{d}; transport: {transport}"),
    };
    if a.expect_ring {
        rep.check("destroyed:end", outcome.is_ok(), detail);
    } else {
        // Plain TCP (no keepalive) cannot see a peer vanish without a word: report only.
        rep.info(format_args!(
            "destroyed:end (not checked without --expect-ring) ok={} {detail}",
            outcome.is_ok()
        ));
    }
}
