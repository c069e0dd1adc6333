//! An echo client on [`XwayStream`]: sends text, prints what comes back.
//!
//! ```text
//! cargo run --example echo_client [ADDR] [MESSAGE...]   # ADDR defaults to 127.0.0.1:7878
//! cargo run --example echo_client 127.0.0.1:7878 hello world
//! printf 'one\ntwo\n' | cargo run --example echo_client
//! ```
//!
//! With MESSAGE words, sends them joined by spaces plus a newline; without, sends standard
//! input line by line as it is typed (end it with Ctrl-D). Either way it then shuts down
//! writing and prints everything the server sends back until the server closes. The echoed
//! bytes go to standard output exactly as received; status lines go to standard error.
//!
//! Against `cargo run --example echo_server` in another terminal the connection is a
//! shared-memory ring (`connected to ... over ring (local)`); against any other echo server
//! (a remote one, `socat`, a few lines of Python) it is plain TCP, and the reason is shown.
//! `XWAY_FORCE_TCP=1` forces TCP.

use std::cell::Cell;
use std::fmt::Display;
use std::io;
use std::process::ExitCode;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use xway_tokio::XwayStream;

const DEFAULT_ADDR: &str = "127.0.0.1:7878";

fn main() -> ExitCode {
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let result = runtime.block_on(run());
            // Do not wait for a read of standard input that may still be blocked (the server
            // closed first): that could take until the user types another line.
            runtime.shutdown_background();
            result
        }
        Err(e) => Err(e).context("starting the tokio runtime"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_client: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let words: Vec<String> = args.collect();

    let mut stream = XwayStream::connect(&addr)
        .await
        .context(format_args!("connecting to {addr}"))?;
    let peer = stream.peer_addr().context("reading the peer address")?;
    eprintln!("connected to {peer} over {}", stream.transport());

    // Send and receive at the same time: a server echoes while we are still sending, and if
    // nobody read its replies, both directions could fill up and stall each other.
    let (mut rd, mut wr) = stream.split();
    let sent = Cell::new(0);
    let send = async {
        if words.is_empty() {
            send_lines(&mut tokio::io::stdin(), &mut wr, &sent).await?;
        } else {
            let message = format!("{}\n", words.join(" "));
            wr.write_all(message.as_bytes())
                .await
                .context("sending the message")?;
            sent.set(message.len() as u64);
        }
        // End of our data: the server sees end of stream once it has read everything above.
        wr.shutdown().await.context("shutting down writing")
    };
    let receive = print_replies(&mut rd);
    tokio::pin!(send, receive);
    let received = tokio::select! {
        biased;
        done = &mut send => {
            done?;
            receive.await?
        }
        // The server closed before we were done sending: nobody would read the rest.
        received = &mut receive => {
            let received = received?;
            eprintln!("the server closed the connection before the end of the input");
            received
        }
    };
    eprintln!(
        "sent {} bytes, received {received} bytes, server closed the connection",
        sent.get()
    );
    Ok(())
}

/// Sends `input` line by line as it arrives (each line exactly as read, newline included),
/// counting the bytes sent in `sent`.
async fn send_lines(
    input: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
    sent: &Cell<u64>,
) -> io::Result<()> {
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .await
            .context("reading standard input")?;
        if n == 0 {
            return Ok(());
        }
        wr.write_all(&line).await.context("sending a line")?;
        sent.set(sent.get() + n as u64);
    }
}

/// Copies what the server sends to standard output until it closes the connection, flushing
/// as it goes so that interactive replies show up at once.
async fn print_replies(rd: &mut (impl AsyncRead + Unpin)) -> io::Result<u64> {
    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    let mut received = 0;
    loop {
        let n = rd.read(&mut buf).await.context("receiving")?;
        if n == 0 {
            return Ok(received);
        }
        stdout
            .write_all(&buf[..n])
            .await
            .context("writing standard output")?;
        stdout.flush().await.context("writing standard output")?;
        received += n as u64;
    }
}

/// Adds what was being done to an I/O error, keeping its kind.
trait Context<T> {
    fn context(self, what: impl Display) -> io::Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl Display) -> io::Result<T> {
        self.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}
