//! Granting our pages to another domain: `/dev/xen/gntalloc`, the offering side's
//! [`SharedMemory`].
//!
//! [`Gntalloc::share`] asks the kernel for `n` fresh zeroed pages granted to one domain
//! (`IOCTL_GNTALLOC_ALLOC_GREF`), maps them read-write at the offset the kernel returned, and
//! hands back the grant refs for the offer. Dropping [`SharedPages`] unmaps them and drops the
//! grants (`IOCTL_GNTALLOC_DEALLOC_GREF`); the kernel frees the pages once the peer has unmapped
//! them too, so a peer that still maps them never faults.
//!
//! The kernel limits how many pages all gntalloc users of the guest may grant at once (module
//! parameter `xen_gntalloc.limit`, 1024 by default): `ENOSPC` from [`Gntalloc::share`] is a
//! resource limit, and means TCP (invariant I5).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::sys::{self, Device, PageMapping};
use super::{DomId, UnmapNotify, PAGE_SIZE};
use crate::ring::SharedMemory;

/// What the peer may do with the pages it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerAccess {
    ReadOnly,
    ReadWrite,
}

/// An open `/dev/xen/gntalloc`. Cheap to clone; every [`SharedPages`] keeps it open.
#[derive(Debug, Clone)]
pub(crate) struct Gntalloc {
    fd: Arc<File>,
}

impl Gntalloc {
    /// Opens the device.
    ///
    /// # Errors
    ///
    /// `NotFound` without Xen (or without the `xen-gntalloc` module), `PermissionDenied` without
    /// access to the device; the message names the device and the likely cause.
    pub(crate) fn open() -> io::Result<Gntalloc> {
        Ok(Gntalloc {
            fd: Arc::new(File::from(sys::open_device(Device::Gntalloc)?)),
        })
    }

    /// Shares `pages` fresh zeroed pages with domain `peer`, mapped read-write here.
    ///
    /// `peer` must come from a trusted source (invariant I3). The pages stay granted until the
    /// returned value is dropped.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `pages` outside `1..=MAX_GRANT_PAGES` (checked before the kernel is
    /// asked); the kernel's error otherwise (`ENOSPC`: the guest's gntalloc limit is reached).
    pub(crate) fn share(
        &self,
        peer: DomId,
        pages: usize,
        access: PeerAccess,
    ) -> io::Result<SharedPages> {
        let fd = self.fd.as_fd();
        let writable = access == PeerAccess::ReadWrite;
        let (index, refs) = sys::gntalloc_alloc(fd, peer.get(), writable, pages).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("xway: granting {pages} pages to domain {peer}: {e}"),
            )
        })?;
        // Owned from here: dropped (revoking the grants) if the mapping fails.
        let grants = Grants {
            dev: self.clone(),
            index,
            refs,
            peer,
        };
        let map = PageMapping::map(fd, index, pages, true).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("xway: mapping {pages} granted pages: {e}"),
            )
        })?;
        Ok(SharedPages { map, grants })
    }
}

/// Pages of this domain granted to one other domain and mapped read-write here.
///
/// Dropping it unmaps the pages, then revokes the grants (the kernel frees each page once
/// the peer has unmapped it too).
#[derive(Debug)]
pub(crate) struct SharedPages {
    // Fields drop in declaration order: the mapping goes before the grants are revoked.
    map: PageMapping,
    grants: Grants,
}

/// Grants held through the gntalloc descriptor; revoked on drop.
#[derive(Debug)]
struct Grants {
    dev: Gntalloc,
    /// File offset of the first page (from `IOCTL_GNTALLOC_ALLOC_GREF`).
    index: u64,
    refs: Vec<u32>,
    peer: DomId,
}

impl Drop for Grants {
    fn drop(&mut self) {
        if let Err(e) = sys::gntalloc_dealloc(self.dev.fd.as_fd(), self.index, self.refs.len()) {
            // Closing the descriptor (when the last `Gntalloc` clone goes) releases them anyway.
            tracing::debug!(error = %e, "xway: gntalloc dealloc failed");
        }
    }
}

impl SharedPages {
    /// One grant ref per page, in order: what the peer maps.
    pub(crate) fn grant_refs(&self) -> &[u32] {
        &self.grants.refs
    }

    /// The domain the pages are granted to.
    pub(crate) fn peer(&self) -> DomId {
        self.grants.peer
    }

    /// Number of pages.
    pub(crate) fn pages(&self) -> usize {
        self.grants.refs.len()
    }

    /// Arranges for the kernel to clear a byte of these pages and/or notify a port when they
    /// are released, including when this process dies: the peer's signal that we are gone.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `notify.clear_byte` is outside the pages; the kernel's error otherwise
    /// (`EINVAL` if the port is not bound in this process).
    pub(crate) fn set_unmap_notify(&self, notify: UnmapNotify<'_>) -> io::Result<()> {
        let (action, port, offset) = notify.to_raw(self.map.len())?;
        // The notification lives with the page that holds the byte (the first page if there is
        // no byte); its file offset plus the byte's offset within the page.
        sys::gntalloc_set_unmap_notify(
            self.grants.dev.fd.as_fd(),
            self.grants.index + offset as u64,
            action,
            port,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("xway: gntalloc unmap-notify: {e}")))
    }
}

// SAFETY: `map` is a shared read-write mapping of whole pages: page (so 8-byte) aligned and
// non-null. It never moves or shrinks while `self` lives: it is unmapped only when `self` is
// dropped, and the pages are this domain's own, which the kernel keeps until they are unmapped
// here. No references into it are created here.
unsafe impl SharedMemory for SharedPages {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

const _: () = assert!(PAGE_SIZE % 8 == 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_xen_says_why() {
        if std::path::Path::new("/dev/xen/gntalloc").exists() {
            return;
        }
        let e = Gntalloc::open().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(msg.contains("/dev/xen/gntalloc"), "{msg}");
        assert!(msg.contains("xen-gntalloc"), "{msg}");
    }

    #[test]
    fn a_share_on_a_non_xen_descriptor_fails_without_leaking_or_panicking() {
        let dev = Gntalloc {
            fd: Arc::new(File::open("/dev/null").unwrap()),
        };
        let e = dev
            .share(DomId::DOM0, 1, PeerAccess::ReadWrite)
            .unwrap_err();
        assert!(
            e.to_string().contains("granting 1 pages to domain 0"),
            "{e}"
        );
        let e = dev
            .share(DomId::DOM0, 0, PeerAccess::ReadWrite)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = dev
            .share(
                DomId::DOM0,
                super::super::MAX_GRANT_PAGES + 1,
                PeerAccess::ReadOnly,
            )
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
