//! `xway`: the xway command-line tool.
//!
//! ```text
//! xway doctor     which providers work here, and for each that does not, why
//! xway version    print the version
//! ```

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: xway doctor | xway version");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("doctor") => {
            let reports = xway_tokio::doctor::diagnose();
            for r in &reports {
                print!("{r}");
            }
            if std::env::var_os(xway_tokio::FORCE_TCP_ENV).is_some() {
                println!(
                    "note: {} is set: every connection of a process with this environment uses TCP",
                    xway_tokio::FORCE_TCP_ENV
                );
            }
            if reports.iter().any(|r| r.usable) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("version" | "--version" | "-V") => {
            println!("xway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
