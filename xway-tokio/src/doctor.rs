//! Self-diagnosis: which providers can work in this environment, and if not, why.
//!
//! Used by the `xway doctor` command; available to applications that want to log it at start.

use std::fmt;
use std::os::fd::AsFd;

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
    let mut checks: Vec<Check> = probe
        .checks
        .into_iter()
        .map(|c| check(c.what, c.result))
        .collect();
    checks.push(check(
        "xen provider in the setup protocol",
        Err(
            "not wired in yet: the device layer exists, connections between domains use TCP".into(),
        ),
    ));
    ProviderReport {
        provider: "xen",
        usable: false,
        checks,
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
    }
}
