//! Self-diagnosis: which providers can work in this environment, and if not, why.
//!
//! Used by the `xway doctor` command; available to applications that want to log it at start.
//! Also home to the Xen tools of the `xway` binary: the device self-test
//! ([`xen_device_selftest`]) and dom0's trusted-directory publisher ([`xen_directory`]).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::provider::xen::directory as xen_dir;
use crate::sys;

/// What [`diagnose`] found about one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReport {
    /// The provider's name (`local`, `xen`).
    pub provider: &'static str,
    /// True if rings of this provider can be set up here.
    pub usable: bool,
    /// One line per check, in order; the first failing one explains `usable == false`.
    pub checks: Vec<Check>,
}

/// One check of a [`ProviderReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// `Ok(detail)` or `Err(reason)`.
    pub result: Result<String, String>,
}

impl fmt::Display for ProviderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.usable { "usable" } else { "NOT usable" };
        writeln!(f, "{} provider: {verdict}", self.provider)?;
        for c in &self.checks {
            match &c.result {
                Ok(d) => writeln!(f, "  ok    {}: {d}", c.what)?,
                Err(e) => writeln!(f, "  FAIL  {}: {e}", c.what)?,
            }
        }
        Ok(())
    }
}

fn check(what: &str, result: Result<String, String>) -> Check {
    Check {
        what: what.to_owned(),
        result,
    }
}

/// Checks every provider. Cheap (a few syscalls) and side-effect free.
///
/// # Examples
///
/// ```
/// for report in xway_tokio::doctor::diagnose() {
///     print!("{report}");
/// }
/// ```
pub fn diagnose() -> Vec<ProviderReport> {
    vec![diagnose_local(), diagnose_xen()]
}

fn diagnose_local() -> ProviderReport {
    let mut checks = Vec::new();
    let memfd =
        sys::memfd_sealed(8192).map_err(|e| format!("memfd_create/ftruncate/F_ADD_SEALS: {e}"));
    checks.push(check(
        "sealed memfd",
        memfd
            .as_ref()
            .map(|_| "memfd_create with F_SEAL_SHRINK".into())
            .map_err(Clone::clone),
    ));
    if let Ok(fd) = &memfd {
        let mapped =
            sys::Mapping::map_sealed(fd.as_fd(), 8192).map(|_| "MAP_SHARED read-write".to_owned());
        checks.push(check(
            "shared mapping",
            mapped.map_err(|e| format!("mmap: {e}")),
        ));
    }
    checks.push(check(
        "doorbell socket pair",
        sys::doorbell_pair()
            .map(|_| "AF_UNIX SOCK_DGRAM socketpair".into())
            .map_err(|e| format!("socketpair: {e}")),
    ));
    let name = format!("xway-doctor/{}", std::process::id());
    checks.push(check(
        "abstract Unix socket",
        sys::listen_abstract(name.as_bytes())
            .map(|_| "bind + listen in the network namespace".into())
            .map_err(|e| format!("bind: {e}")),
    ));
    let usable = checks.iter().all(|c| c.result.is_ok());
    ProviderReport {
        provider: "local",
        usable,
        checks,
    }
}

fn diagnose_xen() -> ProviderReport {
    let probe = crate::provider::xen::probe();
    let devices_ok = probe.usable();
    let xenstore_ok = probe
        .checks
        .iter()
        .any(|c| c.what == "xenstore" && c.result.is_ok());
    let mut checks: Vec<Check> = probe
        .checks
        .into_iter()
        .map(|c| check(c.what, c.result))
        .collect();
    // Where a client learns a server's domain id (I3): dom0's directory, or the operator.
    let directory = if xenstore_ok {
        xen_directory_status()
    } else {
        Err("not checked: XenStore is not reachable (see above)".into())
    };
    let directory_ok = directory.is_ok();
    checks.push(check("trusted directory", directory));
    let mut peers_ok = false;
    if let Some(peers) = std::env::var_os(xen_dir::PEERS_ENV) {
        let peers = xen_dir::parse_peers(&peers.to_string_lossy()).and_then(|p| {
            if p.is_empty() {
                return Err(format!("{} names no peer", xen_dir::PEERS_ENV));
            }
            let list: Vec<String> = p.iter().map(|(ip, d)| format!("{ip} -> dom{d}")).collect();
            Ok(format!(
                "{} operator-configured peers: {}",
                p.len(),
                list.join(", ")
            ))
        });
        peers_ok = peers.is_ok();
        checks.push(check(xen_dir::PEERS_ENV, peers));
    }
    ProviderReport {
        provider: "xen",
        usable: devices_ok && (directory_ok || peers_ok),
        checks,
    }
}

/// Reads `/xway/directory` as a client would: readable, dom0's alone, and how many entries.
/// In a thread with its own runtime, so that [`diagnose`] stays synchronous and callable from
/// inside a runtime; bounded by a few seconds.
fn xen_directory_status() -> Result<String, String> {
    let worker = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime to read XenStore: {e}"))?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), read_xen_directory())
                .await
                .unwrap_or_else(|_| Err("XenStore did not answer within 5 s".into()))
        })
    });
    worker
        .join()
        .unwrap_or_else(|_| Err("the XenStore reader panicked".into()))
}

async fn read_xen_directory() -> Result<String, String> {
    use crate::provider::xen::xenstore::{xs_errno, Tx, XenStore};
    use xen_dir::{lookup, parse_entry_name, perms_trusted, DIRECTORY, PEERS_ENV};
    let xs = XenStore::open()
        .map_err(|e| format!("XenStore: {e}"))?
        .with_timeout(Duration::from_secs(2));
    let perms = match xs.get_perms(Tx::NONE, DIRECTORY).await {
        Ok(p) => p,
        Err(e) if xs_errno(&e) == Some(libc::ENOENT) => {
            return Err(format!(
                "{DIRECTORY} does not exist: nobody publishes the map from guest address to \
                 domain; run `xway xen-directory` in dom0, or set {PEERS_ENV}"
            ))
        }
        Err(e) if xs_errno(&e) == Some(libc::EACCES) => {
            return Err(format!(
                "{DIRECTORY} is not readable by this domain ({e}); dom0 must give it \
                 permissions r0 (`xway xen-directory` does)"
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let shown: Vec<String> = perms.iter().map(ToString::to_string).collect();
    if !perms_trusted(&perms) {
        return Err(format!(
            "{DIRECTORY} has permissions {}: not dom0's alone, so not trusted",
            shown.join(",")
        ));
    }
    let names = xs
        .directory(Tx::NONE, DIRECTORY)
        .await
        .map_err(|e| e.to_string())?;
    if names.is_empty() {
        return Err(format!(
            "{DIRECTORY} is empty: dom0's toolstack gives no guest interface an ip= setting \
             (xl: vif = [ \"ip=...\" ])"
        ));
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for name in &names {
        let Some(ip) = parse_entry_name(name) else {
            bad.push(format!("{name}: not an address"));
            continue;
        };
        match lookup(&xs, ip).await {
            Ok(d) => good.push(format!("{ip} -> dom{d}")),
            Err(e) => bad.push(format!("{ip}: {e}")),
        }
    }
    const SHOWN: usize = 8;
    let more = good.len().saturating_sub(SHOWN);
    let mut detail = format!(
        "{DIRECTORY} (perms {}): {} entries readable and dom0's ({}{})",
        shown.join(","),
        good.len(),
        good[..good.len().min(SHOWN)].join(", "),
        if more > 0 {
            format!(", {more} more")
        } else {
            String::new()
        }
    );
    if bad.is_empty() {
        Ok(detail)
    } else {
        detail.push_str(&format!("; {} unusable: {}", bad.len(), bad.join("; ")));
        if good.is_empty() {
            Err(detail)
        } else {
            Ok(detail)
        }
    }
}

/// Which side of [`xen_device_selftest`] this domain plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XenSelftestRole {
    /// Shares pages (gntalloc), binds an unbound event channel, publishes both in XenStore.
    Offerer,
    /// Reads the offer from XenStore, maps the pages (gntdev), binds to the event channel.
    Mapper,
}

/// Exercises the Xen provider's device layer with another domain running the other role:
/// grant sharing and mapping, event channels both ways, a XenStore node only the two domains
/// can read, and unmap-notify when the other side exits. `peer_domid` must come from a trusted
/// source (the toolstack, the operator). Every step is bounded by `timeout`.
///
/// Returns one [`Check`] per step; all `Ok` means the devices work between the two domains.
/// On a machine without Xen the first step fails and says why.
///
/// # Examples
///
/// ```no_run
/// # async fn f() {
/// use std::time::Duration;
/// use xway_tokio::doctor::{xen_device_selftest, XenSelftestRole};
/// let checks = xen_device_selftest(XenSelftestRole::Mapper, 1, true, Duration::from_secs(30)).await;
/// assert!(checks.iter().all(|c| c.result.is_ok()));
/// # }
/// ```
pub async fn xen_device_selftest(
    role: XenSelftestRole,
    peer_domid: u16,
    wait_for_peer_exit: bool,
    timeout: std::time::Duration,
) -> Vec<Check> {
    use crate::provider::xen::{selftest, DomId};
    let Some(peer) = DomId::new(peer_domid) else {
        return vec![check(
            "peer domain id",
            Err(format!("{peer_domid} is a reserved domain id")),
        )];
    };
    let checks = match role {
        XenSelftestRole::Offerer => selftest::offerer(peer, wait_for_peer_exit, timeout).await,
        XenSelftestRole::Mapper => selftest::mapper(peer, wait_for_peer_exit, timeout).await,
    };
    checks
        .into_iter()
        .map(|c| check(c.what, c.result))
        .collect()
}

/// One pass of [`xen_directory`]: the trusted Xen directory after the pass, and what the pass
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenDirectoryUpdate {
    /// Every published entry: a guest's address and its domain id.
    pub entries: Vec<(IpAddr, u16)>,
    /// Entries this pass wrote (new ones, changed ones, repaired permissions).
    pub written: usize,
    /// Nodes this pass removed from the directory (a domain gone, a stray node).
    pub removed: usize,
    /// Why some guest interfaces or addresses were not published (no `ip=` setting, an
    /// address claimed by two domains, ...).
    pub notes: Vec<String>,
    text: String,
}

impl fmt::Display for XenDirectoryUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Publishes, in dom0, the map from guest IP address to domain id that the xen provider's
/// clients trust (`/xway/directory/<ip>`, permissions `r0`: every domain reads, only dom0
/// writes), built from the toolstack's data: each guest vif's `ip=` setting
/// (`/local/domain/0/backend/vif/<domid>/<devid>/ip`). Entries of domains that are gone and
/// stray nodes are removed; a pass that finds the directory current writes nothing.
///
/// With `keep_current`, it then keeps the directory current: it re-syncs after every change
/// under the vif backends, the directory itself and `@releaseDomain` (events within 250 ms
/// are handled together), and at least every 30 s. It returns only on error. Without
/// `keep_current` it returns after one pass.
///
/// `on_update` sees the first pass and every later pass that changed something (or whose
/// notes changed).
///
/// # Errors
///
/// - `PermissionDenied` when not run in dom0 (the message says so: guests only read the
///   directory);
/// - `NotFound` without Xen or without a running xenstored (the message says what was tried);
/// - XenStore errors: the connection lost, or three passes in a row failing (a failed pass is
///   retried a second later; the pass that succeeds then carries a note saying so).
///
/// # Cancel safety
///
/// Dropping the future stops publishing; the entries already written stay (they remain right
/// until the toolstack's data changes).
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// // In dom0, as `xway xen-directory` does:
/// xway_tokio::doctor::xen_directory(true, |update| println!("{update}")).await?;
/// # Ok(())
/// # }
/// ```
pub async fn xen_directory(
    keep_current: bool,
    mut on_update: impl FnMut(&XenDirectoryUpdate),
) -> io::Result<()> {
    xen_dir::run(keep_current, &mut |u| {
        on_update(&XenDirectoryUpdate {
            entries: u.entries.iter().map(|(ip, d)| (*ip, d.get())).collect(),
            written: u.written.len(),
            removed: u.removed.len(),
            notes: u.notes.clone(),
            text: u.to_string(),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_provider_is_usable_on_linux_and_reports_each_step() {
        let local = diagnose_local();
        assert!(local.usable, "{local}");
        assert_eq!(local.checks.len(), 4);
    }

    #[test]
    fn xen_report_explains_why_it_is_off() {
        let xen = diagnose_xen();
        assert!(!xen.usable);
        assert!(xen.checks.iter().any(|c| c.result.is_err()));
        assert!(xen.to_string().contains("xen provider: NOT usable"));
        // Without Xen (CI), the directory is not read, and the report says why.
        let dir = xen.checks.iter().find(|c| c.what == "trusted directory");
        let dir = dir.expect("a trusted-directory line");
        if !std::path::Path::new("/dev/xen/xenbus").exists() {
            assert!(dir
                .result
                .as_ref()
                .unwrap_err()
                .contains("XenStore is not reachable"));
        }
    }

    #[tokio::test]
    async fn the_directory_publisher_explains_a_missing_xen() {
        if std::path::Path::new("/dev/xen/xenbus").exists() {
            return;
        }
        let e = xen_directory(false, |_| panic!("no update without Xen"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/dev/xen/xenbus"), "{e}");
    }
}
