//! Mapping another domain's grants: `/dev/xen/gntdev`, the accepting side's
//! [`SharedMemory`].
//!
//! [`Gntdev::map`] checks the number of refs against a bound *before* anything is mapped
//! (invariant I2: an offer is peer input), registers the refs with the kernel
//! (`IOCTL_GNTDEV_MAP_GRANT_REF`) and maps them at the offset it returned. Dropping the
//! mapping unmaps it, then releases the refs (`IOCTL_GNTDEV_UNMAP_GRANT_REF`).
//!
//! A mapping is [`ReadWrite`] or [`ReadOnly`], chosen by type, because one gntdev `mmap` has
//! one protection for all its pages. Only read-write mappings are [`SharedMemory`]: the ring
//! core writes its consumer indexes into the control page and produces into its own ring.
//! A read-only mapping fits the peer's producer pages, for a later region made of several
//! mappings (see the [module docs](super)).
//!
//! Xen keeps a mapped grant's page alive even if the granting domain dies, so a mapping never
//! faults under us; the peer's death shows up through its unmap notification and the TCP
//! connection instead.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::sys::{self, Device, PageMapping};
use super::{DomId, UnmapNotify, MAX_GRANT_PAGES, PAGE_SIZE};
use crate::ring::SharedMemory;

/// The protection of a [`GrantMapping`], as a type.
pub(crate) trait Access: sealed::Sealed + Send + Sync + std::fmt::Debug + 'static {
    const WRITABLE: bool;
}

/// Mapped `PROT_READ | PROT_WRITE`: a [`SharedMemory`].
#[derive(Debug)]
pub(crate) enum ReadWrite {}

/// Mapped `PROT_READ`: the peer's producer pages; not a [`SharedMemory`].
#[derive(Debug)]
pub(crate) enum ReadOnly {}

impl Access for ReadWrite {
    const WRITABLE: bool = true;
}
impl Access for ReadOnly {
    const WRITABLE: bool = false;
}

mod sealed {
    pub(crate) trait Sealed {}
    impl Sealed for super::ReadWrite {}
    impl Sealed for super::ReadOnly {}
}

/// An open `/dev/xen/gntdev`. Cheap to clone; every [`GrantMapping`] keeps it open.
#[derive(Debug, Clone)]
pub(crate) struct Gntdev {
    fd: Arc<File>,
}

impl Gntdev {
    /// Opens the device.
    ///
    /// # Errors
    ///
    /// `NotFound` without Xen (or without the `xen-gntdev` module), `PermissionDenied` without
    /// access to the device; the message names the device and the likely cause.
    pub(crate) fn open() -> io::Result<Gntdev> {
        Ok(Gntdev {
            fd: Arc::new(File::from(sys::open_device(Device::Gntdev)?)),
        })
    }

    /// Maps `refs` granted by domain `peer`, one page each, contiguously and in order.
    ///
    /// `max_pages` is the caller's bound for this offer (at most [`MAX_GRANT_PAGES`]); it is
    /// checked before the kernel sees anything, so a hostile offer cannot make us map more.
    /// `peer` must be the authenticated owner of the offer (invariant I3).
    ///
    /// # Errors
    ///
    /// `InvalidData` if `refs` is empty or longer than the bound; the kernel's error otherwise
    /// (a ref that `peer` did not grant us fails the `mmap`).
    pub(crate) fn map<A: Access>(
        &self,
        peer: DomId,
        refs: &[u32],
        max_pages: usize,
    ) -> io::Result<GrantMapping<A>> {
        check_page_count(refs.len(), max_pages)?;
        // Owned from here: dropped (releasing the refs) if the mapping fails.
        let grants = self.register(peer, refs)?;
        let map = PageMapping::map(self.fd.as_fd(), grants.index, refs.len(), A::WRITABLE)
            .map_err(|e| mapping_error(e, refs.len(), peer))?;
        Ok(GrantMapping {
            map,
            grants,
            _access: PhantomData,
        })
    }
}

impl Gntdev {
    /// Maps `refs` granted by domain `peer` contiguously and in order, like [`Gntdev::map`],
    /// but the pages `read_only` (page indexes) read-only and the others read-write: for a ring
    /// region, the peer's data ring read-only and the rest writable. Each part is its own grant
    /// mapping (one `mmap` of gntdev has a single protection), placed in one reserved range.
    ///
    /// # Errors
    ///
    /// As [`Gntdev::map`]; `InvalidInput` if `read_only` is not within `refs`.
    pub(crate) fn map_with_read_only(
        &self,
        peer: DomId,
        refs: &[u32],
        read_only: std::ops::Range<usize>,
        max_pages: usize,
    ) -> io::Result<PartlyReadOnly> {
        check_page_count(refs.len(), max_pages)?;
        if read_only.start > read_only.end || read_only.end > refs.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "xway: read-only pages {read_only:?} outside {} pages",
                    refs.len()
                ),
            ));
        }
        let map = PageMapping::reserve(refs.len())?;
        let pieces = [
            (0..read_only.start, true),
            (read_only.clone(), false),
            (read_only.end..refs.len(), true),
        ];
        let mut grants = Vec::with_capacity(3);
        for (pages, writable) in pieces.into_iter().filter(|(p, _)| !p.is_empty()) {
            // Owned from here: released if mapping fails (after `map` unmaps what it holds).
            grants.push(self.register(peer, &refs[pages.clone()])?);
            let index = grants[grants.len() - 1].index;
            map.map_fixed(pages.start, self.fd.as_fd(), index, pages.len(), writable)
                .map_err(|e| mapping_error(e, pages.len(), peer))?;
        }
        Ok(PartlyReadOnly {
            map,
            _grants: grants,
            read_only: read_only.start * PAGE_SIZE..read_only.end * PAGE_SIZE,
        })
    }
}

impl Gntdev {
    /// Registers `refs` of `peer` with the device, to be mapped at the returned grants' index.
    fn register(&self, peer: DomId, refs: &[u32]) -> io::Result<Grants> {
        let index = sys::gntdev_map(self.fd.as_fd(), peer.get(), refs).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "xway: registering {} grants of domain {peer}: {e}",
                    refs.len()
                ),
            )
        })?;
        Ok(Grants {
            dev: self.clone(),
            index,
            pages: refs.len(),
            peer,
        })
    }
}

fn mapping_error(e: io::Error, pages: usize, peer: DomId) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("xway: mapping {pages} grants of domain {peer}: {e}"),
    )
}

/// Refuses an offer of `n` pages outside `1..=max_pages` (and [`MAX_GRANT_PAGES`]) before the
/// kernel sees it (I2).
fn check_page_count(n: usize, max_pages: usize) -> io::Result<()> {
    let bound = max_pages.min(MAX_GRANT_PAGES);
    if n == 0 || n > bound {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("xway: offer asks to map {n} pages; the bound is 1..={bound}"),
        ));
    }
    Ok(())
}

/// Another domain's pages mapped in one range, part of it read-only
/// ([`Gntdev::map_with_read_only`]).
#[derive(Debug)]
pub(crate) struct PartlyReadOnly {
    // Fields drop in declaration order: the whole range is unmapped before the refs go.
    map: PageMapping,
    _grants: Vec<Grants>,
    read_only: std::ops::Range<usize>,
}

// SAFETY: `map` is one page-aligned, non-null range of shared grant mappings: read-write
// everywhere except `read_only` (mapped PROT_READ, and declared so), which lies within it.
// Nothing is left unmapped (the pieces cover every page of the reservation). It never moves or
// shrinks while `self` lives, and Xen keeps a mapped grant's page alive even if the granting
// domain revokes it or dies. No references into it are created here.
unsafe impl SharedMemory for PartlyReadOnly {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn read_only(&self) -> std::ops::Range<usize> {
        self.read_only.clone()
    }
}

/// Another domain's pages, mapped here.
#[derive(Debug)]
pub(crate) struct GrantMapping<A: Access> {
    // Fields drop in declaration order: unmapping (which unmaps the grants from Xen and fires
    // the unmap notification) comes before the refs are released.
    map: PageMapping,
    grants: Grants,
    _access: PhantomData<A>,
}

/// Refs registered with the gntdev descriptor; released on drop.
#[derive(Debug)]
struct Grants {
    dev: Gntdev,
    /// File offset of the mapping (from `IOCTL_GNTDEV_MAP_GRANT_REF`).
    index: u64,
    pages: usize,
    peer: DomId,
}

impl Drop for Grants {
    fn drop(&mut self) {
        if let Err(e) = sys::gntdev_unmap(self.dev.fd.as_fd(), self.index, self.pages) {
            // Closing the descriptor (when the last `Gntdev` clone goes) releases them anyway.
            tracing::debug!(error = %e, "xway: gntdev unmap failed");
        }
    }
}

impl<A: Access> GrantMapping<A> {
    /// The granting domain.
    pub(crate) fn peer(&self) -> DomId {
        self.grants.peer
    }

    /// Number of pages.
    pub(crate) fn pages(&self) -> usize {
        self.grants.pages
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Start of the mapping, for raw-pointer reads (the peer may write it at any time).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// Arranges for the kernel to clear a byte of the mapping and/or notify a port when it is
    /// unmapped, including when this process dies: the peer's signal that we are gone.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `notify.clear_byte` is outside the mapping, or set on a read-only
    /// mapping; the kernel's error otherwise (`EINVAL` if the port is not bound in this
    /// process).
    pub(crate) fn set_unmap_notify(&self, notify: UnmapNotify<'_>) -> io::Result<()> {
        if notify.clear_byte.is_some() && !A::WRITABLE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "xway: unmap-notify cannot clear a byte of a read-only mapping",
            ));
        }
        let (action, port, offset) = notify.to_raw(self.map.len())?;
        sys::gntdev_set_unmap_notify(
            self.grants.dev.fd.as_fd(),
            self.grants.index + offset as u64,
            action,
            port,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("xway: gntdev unmap-notify: {e}")))
    }
}

// SAFETY: `map` is a shared PROT_READ|PROT_WRITE mapping of whole pages (the `ReadWrite` type
// guarantees the protection): page (so 8-byte) aligned and non-null. It never moves or shrinks
// while `self` lives: it is unmapped only when `self` is dropped, and Xen keeps a mapped grant's
// page alive even if the granting domain revokes the grant or dies. No references into it are
// created here.
unsafe impl SharedMemory for GrantMapping<ReadWrite> {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> Gntdev {
        Gntdev {
            fd: Arc::new(File::open("/dev/null").unwrap()),
        }
    }

    #[test]
    fn the_page_bound_is_checked_before_the_kernel_sees_the_offer() {
        // /dev/null would answer ENOTTY: InvalidData proves the kernel was never asked.
        let dev = fake();
        let refs = vec![8u32; MAX_GRANT_PAGES + 1];
        for (n, max) in [
            (0, 10),
            (11, 10),
            (4098, 4097),
            (MAX_GRANT_PAGES + 1, usize::MAX),
        ] {
            let e = dev
                .map::<ReadWrite>(DomId::DOM0, &refs[..n], max)
                .map(|_| ())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{n} {max}: {e}");
            let e = dev
                .map::<ReadOnly>(DomId::DOM0, &refs[..n], max)
                .map(|_| ())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{n} {max}: {e}");
        }
        // Within the bound, the kernel is asked (and /dev/null refuses).
        let e = dev
            .map::<ReadWrite>(DomId::DOM0, &refs[..3], 4097)
            .map(|_| ())
            .unwrap_err();
        assert_ne!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("registering 3 grants of domain 0"),
            "{e}"
        );
    }

    #[test]
    fn only_writable_mappings_are_shared_memory() {
        fn region_ready<T: SharedMemory + 'static>() {}
        region_ready::<GrantMapping<ReadWrite>>();
        region_ready::<super::super::gntalloc::SharedPages>();
        const { assert!(ReadWrite::WRITABLE && !ReadOnly::WRITABLE) };
    }

    #[test]
    fn opening_without_xen_says_why() {
        if std::path::Path::new("/dev/xen/gntdev").exists() {
            return;
        }
        let e = Gntdev::open().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/dev/xen/gntdev"), "{e}");
    }
}
