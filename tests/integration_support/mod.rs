//! Shared by the `integration_*` tests: a second process for the server side, made by running
//! this same test binary again in a *role* (the "re-exec" pattern), and helpers around it.
//!
//! Each test binary has a `#[test] fn child_process_role()` that calls [`run_role_if_child`]:
//! in a normal test run the role variable is unset and it returns at once; in a child started
//! by [`spawn_role`] it runs the requested server role until the child is killed.
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::future::Future;
use std::process::Command;
use std::time::Duration;

/// The environment variable that tells a re-executed test binary which role to run.
pub const ROLE_ENV: &str = "XWAY_IT_ROLE";

/// The role this process was started in, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// In a child process, runs `serve(role)` on a multi-threaded runtime and never returns
/// (the parent kills the child); in the test process itself, returns at once.
pub fn run_role_if_child<F, Fut>(serve: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(role) = child_role() else { return };
    // libtest has printed "test child_process_role ... " without a line break: end that line,
    // so that every line of the role starts with its keyword.
    println!();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve(role));
    println!("ROLE ENDED");
    std::process::exit(0);
}

/// Child processes and the test pattern are the cross-process tests' own helpers.
#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test file uses a different subset
pub use common::{pattern, Peer};

/// Starts this test binary again as a [`Peer`], running only `child_process_role` with `role`.
pub fn spawn_role(role: &str, env: &[(&str, &str)]) -> Peer {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "child_process_role",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Peer::spawn_command(cmd)
}

/// The lowest descriptor number `pid` does not use: with the soft `RLIMIT_NOFILE` set to it,
/// the process's next `accept` fails with `EMFILE`.
pub fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the child's descriptors")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// Sets the soft descriptor limit of `pid` (the hard limit stays) with util-linux `prlimit`.
pub fn set_soft_fd_limit(pid: u32, soft: u64) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit failed: {status}");
}

/// The soft descriptor limit of `pid`, from `/proc/PID/limits`.
pub fn soft_fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// CPU time (user + system, all threads) that process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name is in parentheses and may contain spaces: fields count from after it.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// How long [`with_descriptors_exhausted`] keeps the child short of descriptors: long enough
/// for several failed accepts, and for a retry after a 1 s backoff.
pub const EXHAUSTED_FOR: Duration = Duration::from_millis(1500);

/// Leaves process `pid` unable to open a single descriptor for [`EXHAUSTED_FOR`], calls `poke`
/// at the start of it, then restores the limit. Returns what `poke` returned and the CPU time
/// the child used meanwhile.
///
/// `poke` should make the child's listener accept (a plain TCP connect does), so that its
/// `accept` fails with `EMFILE` for as long as the limit lasts.
pub fn with_descriptors_exhausted<T>(pid: u32, poke: impl FnOnce() -> T) -> (T, Duration) {
    let original = soft_fd_limit(pid);
    set_soft_fd_limit(pid, lowest_free_fd(pid));
    let cpu_before = cpu_time(pid);
    let out = poke();
    std::thread::sleep(EXHAUSTED_FOR);
    let cpu_used = cpu_time(pid).saturating_sub(cpu_before);
    set_soft_fd_limit(pid, original);
    (out, cpu_used)
}

/// Most CPU time a server may use while its accepts fail for [`EXHAUSTED_FOR`]: a few
/// attempts cost microseconds; a loop that retries without pausing costs most of a core.
pub const MAX_CPU_WHILE_EXHAUSTED: Duration = Duration::from_millis(150);
