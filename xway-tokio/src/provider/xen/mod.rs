//! The xen provider's device layer: two domains on one Xen host.
//!
//! Each piece maps onto the crate's provider interface ([`super`]):
//!
//! | Piece | Device | Gives the provider interface |
//! | --- | --- | --- |
//! | [`gntalloc`] | `/dev/xen/gntalloc` | the creator's [`SharedMemory`]: our pages, granted to one domain; the grant refs go in the offer |
//! | [`gntdev`] | `/dev/xen/gntdev` | the other side's [`SharedMemory`]: the creator's pages mapped by grant ref, with a page bound checked before mapping (I2) |
//! | [`evtchn`] | `/dev/xen/evtchn` | the [`Doorbell`]: one event-channel port per connection, demultiplexed from one descriptor per process |
//! | [`xenstore`] | `/dev/xen/xenbus` or the xenstored socket | the rendezvous: advertisement, inbox, offers, permissions, watches, transactions |
//! | [`UnmapNotify`] | gntalloc / gntdev | the fast liveness signal: when a process dies, its kernel clears a byte in the shared page and fires the event channel |
//!
//! The pieces are independent of each other except for one ordering rule: an unmap
//! notification that sends an event needs the port bound first ([`UnmapNotify::event`] takes
//! an [`evtchn::EvtchnPort`]). A connection, as [`rendezvous`] drives it:
//!
//! 1. The client finds the server's domain id in dom0's directory (a trusted source, I3) and
//!    the listener's advertisement under that domain's XenStore home. It shares
//!    `1 + ring pages` with that domain ([`gntalloc::Gntalloc::share`]), writes the header,
//!    binds an unbound port for it ([`evtchn::EvtchnPort::bind_unbound`]), and publishes the
//!    refs and port in an offer node in the listener's inbox ([`xenstore::XenStore`], in a
//!    transaction, permissions `n<client>,b<server>`), then connects.
//! 2. The server, when its inbox watch has announced an offer for the accepted connection,
//!    reads it, authenticates the client domain from the node's owner
//!    ([`xenstore::XenStore::get_perms`]), checks the page count against the layout, maps the
//!    refs ([`gntdev::Gntdev::map`]), checks the ring header against the connection, binds to
//!    the client's port ([`evtchn::EvtchnPort::bind_interdomain`]), and claims the region and
//!    sends its verdict on the TCP connection, as the local provider does.
//!
//! Liveness: a killed peer process closes its TCP connection (its kernel does it); a destroyed
//! peer domain closes nothing, so xen ring connections turn on TCP keepalive, which ends them
//! within about five seconds. Unmap notifications are not used for it: they would add nothing
//! for a killed process and fire nothing for a destroyed domain.
//!
//! What is exactly the same as the local provider: the ring layout, the verdict, and the TCP
//! connection kept open as the liveness signal. What differs: the offer travels through
//! XenStore instead of `SCM_RIGHTS`, the peer's identity is a domain id (the node's owner)
//! instead of a uid, and there is one doorbell descriptor per process instead of two per
//! connection.
//!
//! # Read-only mappings and the ring
//!
//! The server maps the client's region with the client's data ring read-only
//! ([`gntdev::Gntdev::map_with_read_only`]): the control page (where it writes its consumer
//! index) and its own data ring are read-write, the ring it only reads is not. One `mmap` of
//! gntdev has a single protection, so the three parts are three grant mappings placed in one
//! reserved range, and [`Region`](crate::ring::Region) refuses (panics on) any write or
//! control-word access there, a bug of ours rather than peer input. The client's own pages
//! (gntalloc) are its memory and stay read-write.
//!
//! Nothing here panics on a machine without Xen: every device open fails with the device's
//! own error kind (`NotFound` without Xen) and a message naming the device and the likely
//! cause. [`probe`] reports the same for `xway doctor`.
//!
//! [`SharedMemory`]: crate::ring::SharedMemory
//! [`Doorbell`]: super::Doorbell

// Parts of the device layer (read-only mappings, unmap notifications, the XenStore operations
// the rendezvous does not need) are used only by the self-test and the tests.
#![allow(dead_code)]

pub(crate) mod directory;
pub(crate) mod evtchn;
pub(crate) mod gntalloc;
pub(crate) mod gntdev;
pub(crate) mod rendezvous;
mod sys;
pub(crate) mod xenstore;

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::ring::layout::{CONTROL_LEN, MAX_ORDER};

pub(crate) use sys::Device;

/// Size of a Xen page, the unit of grants. The provider requires the kernel's page size to be
/// the same (it is on x86_64; an aarch64 kernel with 16 or 64 KiB pages is refused).
pub(crate) const PAGE_SIZE: usize = 4096;

/// The most pages one offer can ask to map: a control page and two rings of the largest order
/// the ring layout accepts (16 MiB each), 8193 pages. Checked before any mapping (I2).
pub(crate) const MAX_GRANT_PAGES: usize = (CONTROL_LEN + (2 << MAX_ORDER)) / PAGE_SIZE;

/// Pages needed to share `len` bytes, if `len` is a non-zero multiple of [`PAGE_SIZE`] and at
/// most [`MAX_GRANT_PAGES`] pages.
pub(crate) fn pages_for_len(len: usize) -> Option<usize> {
    (len != 0 && len % PAGE_SIZE == 0 && len / PAGE_SIZE <= MAX_GRANT_PAGES)
        .then_some(len / PAGE_SIZE)
}

/// A Xen domain id of a real domain (below `DOMID_FIRST_RESERVED`, 0x7FF0).
///
/// Grants and event channels go only to a domain id from a trusted source (invariant I3):
/// toolstack data, operator configuration, or the owner of a XenStore node. This type says a
/// value is well formed, not that it is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DomId(u16);

impl DomId {
    /// Domain 0.
    pub(crate) const DOM0: DomId = DomId(0);
    /// First reserved domain id (`DOMID_FIRST_RESERVED` in Xen's `xen.h`): `DOMID_SELF`,
    /// `DOMID_IO` and friends are not domains anything can be shared with.
    pub(crate) const FIRST_RESERVED: u16 = 0x7FF0;

    /// `None` for a reserved id.
    pub(crate) const fn new(raw: u16) -> Option<DomId> {
        if raw < Self::FIRST_RESERVED {
            Some(DomId(raw))
        } else {
            None
        }
    }

    /// The raw id.
    pub(crate) const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parses a decimal domain id as XenStore writes it: ASCII digits only, no sign, no spaces.
impl FromStr for DomId {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<DomId> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a domain id: {:?}", truncate(s, 16)),
            )
        };
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u16>().ok().and_then(DomId::new).ok_or_else(bad)
    }
}

/// At most `max` characters of `s`, for error messages about peer-supplied strings.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What the kernel does when a shared mapping goes away, including when the process holding it
/// dies: the peer's signal that we are gone (gntalloc: `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`,
/// gntdev: `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`).
///
/// - `clear_byte`: byte offset within the mapping that the kernel sets to zero. The peer sees
///   it in the same page, so the ring layout must give each side such a byte (a "live" flag,
///   as libxenvchan's `cli_live`/`srv_live`). Not allowed on a read-only gntdev mapping.
/// - `event`: a port bound in this process that the kernel notifies afterwards. The kernel
///   takes its own reference on the port, so it stays bound until the notification is sent,
///   even if the [`EvtchnPort`](evtchn::EvtchnPort) is dropped first.
///
/// Setting it again replaces the previous notification.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnmapNotify<'a> {
    pub(crate) clear_byte: Option<usize>,
    pub(crate) event: Option<&'a evtchn::EvtchnPort>,
}

impl UnmapNotify<'_> {
    /// The ioctl's `action` bits and port, checking `clear_byte < len`.
    fn to_raw(self, len: usize) -> io::Result<(u32, u32, usize)> {
        let mut action = 0;
        let mut offset = 0;
        if let Some(off) = self.clear_byte {
            if off >= len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unmap-notify byte {off} is outside the {len}-byte mapping"),
                ));
            }
            action |= xway_sys::UNMAP_NOTIFY_CLEAR_BYTE;
            offset = off;
        }
        let mut port = 0;
        if let Some(p) = self.event {
            action |= xway_sys::UNMAP_NOTIFY_SEND_EVENT;
            port = p.port();
        }
        Ok((action, port, offset))
    }
}

/// One line of [`probe`]'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeCheck {
    /// What was checked (a device path, or a property).
    pub(crate) what: &'static str,
    /// `Ok(detail)` or `Err(reason)`.
    pub(crate) result: Result<String, String>,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) checks: Vec<ProbeCheck>,
}

impl Probe {
    /// True if every check passed: the xen provider's devices all work here.
    pub(crate) fn usable(&self) -> bool {
        self.checks.iter().all(|c| c.result.is_ok())
    }
}

/// Checks which Xen devices this process can use, and why not, for `xway doctor`.
///
/// Synchronous, needs no runtime, and leaves nothing behind: it opens each device, grants one
/// page to domain 0 and takes it back (proving gntalloc works, not only that it opens), and
/// connects to XenStore without sending anything.
pub(crate) fn probe() -> Probe {
    let mut checks = Vec::new();
    let hypervisor = std::fs::read_to_string("/sys/hypervisor/type");
    checks.push(ProbeCheck {
        what: "hypervisor",
        result: match hypervisor {
            Ok(t) if t.trim() == "xen" => Ok("xen (/sys/hypervisor/type)".into()),
            Ok(t) => Err(format!(
                "/sys/hypervisor/type says {:?}, not xen",
                truncate(t.trim(), 32)
            )),
            Err(e) => Err(format!(
                "/sys/hypervisor/type: {e} (not running on Xen, or the kernel lacks Xen support)"
            )),
        },
    });
    let page = sys::page_size();
    checks.push(ProbeCheck {
        what: "page size",
        result: if page == PAGE_SIZE {
            Ok(format!("{page} bytes, the Xen page size"))
        } else {
            Err(format!(
                "kernel page size is {page} bytes; grants are {PAGE_SIZE}-byte pages"
            ))
        },
    });
    checks.push(ProbeCheck {
        what: Device::Evtchn.path_str(),
        result: sys::open_device(Device::Evtchn)
            .map(|_| "opens read-write, non-blocking".into())
            .map_err(|e| e.to_string()),
    });
    checks.push(ProbeCheck {
        what: Device::Gntalloc.path_str(),
        result: gntalloc::Gntalloc::open()
            .and_then(|g| g.share(DomId::DOM0, 1, gntalloc::PeerAccess::ReadOnly))
            .map(|_| {
                let limit = std::fs::read_to_string("/sys/module/xen_gntalloc/parameters/limit")
                    .map(|l| format!("; at most {} pages granted at once by this kernel (xen_gntalloc limit)", l.trim()))
                    .unwrap_or_default();
                format!("granted and revoked one page{limit}")
            })
            .map_err(|e| e.to_string()),
    });
    checks.push(ProbeCheck {
        what: Device::Gntdev.path_str(),
        result: sys::open_device(Device::Gntdev)
            .map(|_| "opens read-write".into())
            .map_err(|e| e.to_string()),
    });
    checks.push(ProbeCheck {
        what: "xenstore",
        result: xenstore::connect_any()
            .map(|(_, via)| format!("connected through {via}"))
            .map_err(|e| e.to_string()),
    });
    Probe { checks }
}

/// A device-level self-test for two guests of a real Xen host (the QEMU test bed): everything
/// of this module, nothing of the ring protocol.
///
/// The *offerer* grants two pages and an unbound port to the *mapper* and publishes them in
/// `<its home>/data/xway-selftest` (`<port> <ref> <ref>`, permissions `n<offerer>,r<mapper>`).
/// The mapper maps them, binds the port, and both sides set an unmap notification (a "live"
/// byte each, plus the event). They exchange a pattern each way through page 1, ringing the
/// port both ways. Then the side with `wait_for_peer_exit` waits for the other process to exit
/// (or be killed): its kernel clears the peer's live byte and fires the port.
pub(crate) mod selftest {
    use std::io;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::evtchn::EvtchnPort;
    use super::gntalloc::{Gntalloc, PeerAccess};
    use super::gntdev::{Gntdev, ReadWrite};
    use super::xenstore::{Access, Perm, Tx, XenStore};
    use super::{DomId, ProbeCheck, UnmapNotify, PAGE_SIZE};
    use crate::provider::Doorbell;
    use crate::ring::{as_uninit, Region};

    const OFFERER_LIVE: usize = 0;
    const MAPPER_LIVE: usize = 1;
    const TO_MAPPER_SEQ: usize = 64;
    const TO_OFFERER_SEQ: usize = 128;
    const TO_MAPPER_DATA: usize = PAGE_SIZE;
    const TO_OFFERER_DATA: usize = PAGE_SIZE + PAGE_SIZE / 2;
    const NODE: &str = "data/xway-selftest";

    fn pattern(seed: u8) -> Vec<u8> {
        (0..PAGE_SIZE / 2)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn byte(region: &Region, off: usize) -> u8 {
        let mut b = [0u8; 1];
        region.read_bytes(off, as_uninit(&mut b));
        b[0]
    }

    fn bytes(region: &Region, off: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        region.read_bytes(off, as_uninit(&mut v));
        v
    }

    /// Waits for `cond`, re-checking at every event on `port`, until `deadline`.
    async fn wait_for(
        port: &EvtchnPort,
        deadline: Instant,
        what: &str,
        mut cond: impl FnMut() -> bool,
    ) -> io::Result<()> {
        loop {
            if cond() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, std::future::poll_fn(|cx| port.poll_wake(cx)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no {what}")))??;
        }
    }

    fn step(checks: &mut Vec<ProbeCheck>, what: &'static str, r: io::Result<String>) -> bool {
        let ok = r.is_ok();
        checks.push(ProbeCheck {
            what,
            result: r.map_err(|e| e.to_string()),
        });
        ok
    }

    fn mismatch(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what} differs"))
    }

    /// The offering side. `mapper` is the other guest's domain id (from the test bed's
    /// configuration: a trusted source).
    pub(crate) async fn offerer(
        mapper: DomId,
        wait_for_peer_exit: bool,
        timeout: Duration,
    ) -> Vec<ProbeCheck> {
        let deadline = Instant::now() + timeout;
        let mut checks = Vec::new();
        let run = async {
            let xs = XenStore::open()?.with_timeout(timeout);
            let me = xs.own_domid().await?;
            let pages = Gntalloc::open()?.share(mapper, 2, PeerAccess::ReadWrite)?;
            let port = EvtchnPort::bind_unbound(mapper)?;
            pages.set_unmap_notify(UnmapNotify {
                clear_byte: Some(OFFERER_LIVE),
                event: Some(&port),
            })?;
            let mut value = port.port().to_string();
            for r in pages.grant_refs() {
                value += &format!(" {r}");
            }
            let region = Region::new(Arc::new(pages));
            region.write_bytes(OFFERER_LIVE, &[1]);
            region.write_bytes(TO_MAPPER_DATA, &pattern(1));
            let tx = xs.transaction().await?;
            xs.write(tx.id(), NODE, value.as_bytes()).await?;
            let perms = [Perm::new(Access::None, me), Perm::new(Access::Read, mapper)];
            xs.set_perms(tx.id(), NODE, &perms).await?;
            tx.commit().await?;
            Ok::<_, io::Error>((xs, port, region, me, value))
        };
        let Some((xs, port, region, me, value)) = (match run.await {
            Ok(v) => Some(v),
            Err(e) => {
                step(&mut checks, "offer", Err(e));
                None
            }
        }) else {
            return checks;
        };
        step(
            &mut checks,
            "offer",
            Ok(format!("dom{me} published {value:?} for dom{mapper}")),
        );
        let got = wait_for(&port, deadline, "message from the mapper", || {
            region.load(TO_OFFERER_SEQ, Ordering::Acquire) == 1
        })
        .await
        .and_then(|()| {
            (bytes(&region, TO_OFFERER_DATA, PAGE_SIZE / 2) == pattern(2))
                .then(|| "pattern received after an event".to_owned())
                .ok_or_else(|| mismatch("mapper's pattern"))
        });
        if step(&mut checks, "receive", got) {
            region.store(TO_MAPPER_SEQ, 1, Ordering::Release);
            let sent = port.ring_peer().map(|()| "notified the mapper".to_owned());
            step(&mut checks, "notify", sent);
            if wait_for_peer_exit {
                let gone = wait_for(&port, deadline, "unmap notification", || {
                    byte(&region, MAPPER_LIVE) == 0
                })
                .await
                .map(|()| "mapper's live byte cleared by its kernel, event received".to_owned());
                step(&mut checks, "peer-exit", gone);
            }
        }
        if let Err(e) = xs.rm(Tx::NONE, NODE).await {
            tracing::debug!(error = %e, "selftest: removing the offer node");
        }
        checks
    }

    /// The mapping side. `offerer` is the other guest's domain id.
    pub(crate) async fn mapper(
        offerer: DomId,
        wait_for_peer_exit: bool,
        timeout: Duration,
    ) -> Vec<ProbeCheck> {
        let deadline = Instant::now() + timeout;
        let mut checks = Vec::new();
        let run = async {
            let xs = XenStore::open()?.with_timeout(timeout);
            let node = format!("{}/{NODE}", xs.get_domain_path(offerer).await?);
            let value = loop {
                match xs.read(Tx::NONE, &node).await {
                    Ok(v) => break v,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed offer node");
            let text = String::from_utf8(value).map_err(|_| bad())?;
            let mut nums = text.split(' ').map(|n| n.parse::<u32>().map_err(|_| bad()));
            let remote_port = nums.next().ok_or_else(bad)??;
            let refs = nums.collect::<io::Result<Vec<u32>>>()?;
            let map = Gntdev::open()?.map::<ReadWrite>(offerer, &refs, 2)?;
            let port = EvtchnPort::bind_interdomain(offerer, remote_port)?;
            map.set_unmap_notify(UnmapNotify {
                clear_byte: Some(MAPPER_LIVE),
                event: Some(&port),
            })?;
            let region = Region::new(Arc::new(map));
            if byte(&region, OFFERER_LIVE) != 1
                || bytes(&region, TO_MAPPER_DATA, PAGE_SIZE / 2) != pattern(1)
            {
                return Err(mismatch("offerer's pattern"));
            }
            Ok((port, region, text))
        };
        let (port, region) = match run.await {
            Ok((port, region, text)) => {
                step(
                    &mut checks,
                    "map",
                    Ok(format!("mapped {text:?} of dom{offerer}")),
                );
                (port, region)
            }
            Err(e) => {
                step(&mut checks, "map", Err(e));
                return checks;
            }
        };
        region.write_bytes(MAPPER_LIVE, &[1]);
        region.write_bytes(TO_OFFERER_DATA, &pattern(2));
        region.store(TO_OFFERER_SEQ, 1, Ordering::Release);
        let sent = port.ring_peer().map(|()| "notified the offerer".to_owned());
        if !step(&mut checks, "notify", sent) {
            return checks;
        }
        let got = wait_for(&port, deadline, "answer from the offerer", || {
            region.load(TO_MAPPER_SEQ, Ordering::Acquire) == 1
        })
        .await
        .map(|()| "answer received after an event".to_owned());
        if step(&mut checks, "receive", got) && wait_for_peer_exit {
            let gone = wait_for(&port, deadline, "unmap notification", || {
                byte(&region, OFFERER_LIVE) == 0
            })
            .await
            .map(|()| "offerer's live byte cleared by its kernel, event received".to_owned());
            step(&mut checks, "peer-exit", gone);
        }
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domid_parsing_is_strict() {
        assert_eq!("0".parse::<DomId>().unwrap(), DomId::DOM0);
        assert_eq!("32751".parse::<DomId>().unwrap().get(), 32751);
        for bad in [
            "", "-1", "+1", " 1", "1 ", "32752", "65535", "65536", "123456", "0x10", "1a",
        ] {
            assert!(bad.parse::<DomId>().is_err(), "{bad:?}");
        }
        assert!(DomId::new(0x7FF0).is_none());
        assert!(DomId::new(0x7FEF).is_some());
    }

    #[test]
    fn page_bound_covers_the_largest_layout_and_nothing_more() {
        use crate::ring::layout::Layout;
        let max = Layout::symmetric(MAX_ORDER).unwrap().region_len();
        assert_eq!(pages_for_len(max), Some(MAX_GRANT_PAGES));
        assert_eq!(MAX_GRANT_PAGES, 8193);
        assert_eq!(pages_for_len(max + PAGE_SIZE), None);
        assert_eq!(pages_for_len(0), None);
        assert_eq!(pages_for_len(PAGE_SIZE + 1), None);
        assert_eq!(pages_for_len(PAGE_SIZE), Some(1));
    }

    #[test]
    fn unmap_notify_checks_the_byte_offset() {
        let n = UnmapNotify {
            clear_byte: Some(4096),
            event: None,
        };
        assert_eq!(
            n.to_raw(4096).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let n = UnmapNotify {
            clear_byte: Some(4095),
            event: None,
        };
        assert_eq!(
            n.to_raw(4096).unwrap(),
            (xway_sys::UNMAP_NOTIFY_CLEAR_BYTE, 0, 4095)
        );
        assert_eq!(UnmapNotify::default().to_raw(1).unwrap(), (0, 0, 0));
    }

    #[tokio::test]
    async fn the_selftest_reports_the_missing_devices_instead_of_failing_hard() {
        if std::path::Path::new("/dev/xen").exists() {
            return;
        }
        let t = std::time::Duration::from_millis(200);
        for checks in [
            selftest::offerer(DomId::DOM0, true, t).await,
            selftest::mapper(DomId::DOM0, true, t).await,
        ] {
            assert_eq!(checks.len(), 1);
            let reason = checks[0].result.as_ref().unwrap_err();
            assert!(reason.contains("/dev/xen/xenbus"), "{reason}");
        }
    }

    #[test]
    fn probe_explains_each_missing_piece_without_panicking() {
        let p = probe();
        assert_eq!(p.checks.len(), 6);
        if !std::path::Path::new("/dev/xen").exists() {
            assert!(!p.usable());
            let evtchn = &p.checks[2];
            let reason = evtchn.result.as_ref().unwrap_err();
            assert!(reason.contains("/dev/xen/evtchn"), "{reason}");
            assert!(reason.contains("not a Xen guest"), "{reason}");
            let xs = p.checks[5].result.as_ref().unwrap_err();
            assert!(xs.contains("/dev/xen/xenbus"), "{xs}");
        }
    }
}
