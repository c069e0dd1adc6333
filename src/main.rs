//! `xway`: the xway command-line tool.
//!
//! ```text
//! xway doctor                                  which providers work here, and why not
//! xway xen-selftest offerer|mapper PEER_DOMID [--wait-exit] [--timeout SECS]
//!                                              Xen device self-test with another domain
//! xway xen-directory [--once]                  in dom0: publish (and keep current) the trusted
//!                                              map from guest IP to domain id in XenStore
//! xway version                                 print the version
//! ```

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: xway doctor | xway xen-selftest offerer|mapper PEER_DOMID [--wait-exit] [--timeout SECS] | xway xen-directory [--once] | xway version");
    ExitCode::from(2)
}

fn xen_selftest(args: &[String]) -> ExitCode {
    use xway_tokio::doctor::{xen_device_selftest, XenSelftestRole};
    let role = match args.first().map(String::as_str) {
        Some("offerer") => XenSelftestRole::Offerer,
        Some("mapper") => XenSelftestRole::Mapper,
        _ => return usage(),
    };
    let Some(peer) = args.get(1).and_then(|d| d.parse::<u16>().ok()) else {
        return usage();
    };
    let wait_exit = args.iter().any(|a| a == "--wait-exit");
    let timeout = args
        .iter()
        .position(|a| a == "--timeout")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let checks = rt.block_on(xen_device_selftest(
        role,
        peer,
        wait_exit,
        std::time::Duration::from_secs(timeout),
    ));
    let mut ok = true;
    for c in &checks {
        match &c.result {
            Ok(d) => println!("XEN-SELFTEST PASS {}: {d}", c.what),
            Err(e) => {
                ok = false;
                println!("XEN-SELFTEST FAIL {}: {e}", c.what);
            }
        }
    }
    if ok && !checks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `xway xen-directory [--once]`: dom0's publisher of `/xway/directory`. One line per pass
/// that changed something; runs until an error unless `--once`.
fn xen_directory(args: &[String]) -> ExitCode {
    let once = match args {
        [] => false,
        [a] if a == "--once" => true,
        _ => return usage(),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(xway_tokio::doctor::xen_directory(!once, |update| {
        println!("xway xen-directory: {update}");
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xway xen-directory: {e}");
            ExitCode::FAILURE
        }
    }
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
        Some("xen-selftest") => xen_selftest(&args[1..]),
        Some("xen-directory") => xen_directory(&args[1..]),
        Some("version" | "--version" | "-V") => {
            println!("xway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

/// A current-thread runtime for a subcommand, or the exit code after saying why not.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("xway: cannot start a runtime: {e}");
            ExitCode::FAILURE
        })
}
