//! Pins the parts of the generated bindings that xway relies on, independently of bindgen.
//!
//! The generated files already assert the layout libclang computed; these tests catch a
//! regeneration that silently changes what xway sees: a header update that moves a field,
//! a lost `--clang-macro-fallback` (the `IOCTL_*` constants would vanish or change), a
//! wrong `_IOC` layout in `include/shim/sys/ioctl.h`, or renumbered XenStore messages.
//! The expected values come from the kernel and Xen headers and their ABI documentation,
//! and from other implementations (krata hard-codes `0x84501` for
//! `IOCTL_EVTCHN_BIND_INTERDOMAIN`).

use core::mem::{align_of, offset_of, size_of};

use xway_sys::*;

/// Linux's generic ioctl request encoding (`include/uapi/asm-generic/ioctl.h`), used by
/// x86_64 and aarch64: `dir << 30 | size << 16 | type << 8 | nr`, with a 14-bit size.
/// Written out here rather than taken from the bindings, so the two can disagree.
const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(dir < 4, "_IOC direction has 2 bits");
    assert!(size < (1 << 14), "_IOC size has 14 bits");
    (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | (nr as u32)
}

/// `_IOC_NONE`: every Xen device ioctl is declared with it, although the kernel both reads
/// and writes the argument.
const IOC_NONE: u32 = 0;

/// `_IOC(_IOC_NONE, ty, nr, size_of::<T>())`, the form all the Xen headers use.
const fn xen_ioc<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_NONE, ty, nr, size_of::<T>())
}

#[test]
fn ioc_helper_matches_known_numbers() {
    // The helper against well-known Linux request numbers (x86_64 and aarch64).
    assert_eq!(ioc(2, b'E', 0x01, size_of::<i32>()), 0x8004_4501); // EVIOCGVERSION, _IOR
    assert_eq!(ioc(2, 0x12, 114, size_of::<usize>()), 0x8008_1272); // BLKGETSIZE64, _IOR
    assert_eq!(ioc(1, 0x12, 113, size_of::<usize>()), 0x4008_1271); // BLKBSZSET, _IOW
}

#[test]
fn evtchn_ioctl_numbers() {
    let cases: [(&str, u32, u32, u32); 7] = [
        (
            "IOCTL_EVTCHN_BIND_VIRQ",
            IOCTL_EVTCHN_BIND_VIRQ,
            xen_ioc::<ioctl_evtchn_bind_virq>(b'E', 0),
            0x4_4500,
        ),
        (
            "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            xen_ioc::<ioctl_evtchn_bind_interdomain>(b'E', 1),
            0x8_4501,
        ),
        (
            "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
            IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            xen_ioc::<ioctl_evtchn_bind_unbound_port>(b'E', 2),
            0x4_4502,
        ),
        (
            "IOCTL_EVTCHN_UNBIND",
            IOCTL_EVTCHN_UNBIND,
            xen_ioc::<ioctl_evtchn_unbind>(b'E', 3),
            0x4_4503,
        ),
        (
            "IOCTL_EVTCHN_NOTIFY",
            IOCTL_EVTCHN_NOTIFY,
            xen_ioc::<ioctl_evtchn_notify>(b'E', 4),
            0x4_4504,
        ),
        // No argument: size 0.
        (
            "IOCTL_EVTCHN_RESET",
            IOCTL_EVTCHN_RESET,
            ioc(IOC_NONE, b'E', 5, 0),
            0x4505,
        ),
        (
            "IOCTL_EVTCHN_RESTRICT_DOMID",
            IOCTL_EVTCHN_RESTRICT_DOMID,
            xen_ioc::<ioctl_evtchn_restrict_domid>(b'E', 6),
            0x2_4506,
        ),
    ];
    check_numbers(&cases);
}

#[test]
fn gntalloc_ioctl_numbers() {
    let cases: [(&str, u32, u32, u32); 3] = [
        (
            "IOCTL_GNTALLOC_ALLOC_GREF",
            IOCTL_GNTALLOC_ALLOC_GREF,
            xen_ioc::<ioctl_gntalloc_alloc_gref>(b'G', 5),
            0x18_4705,
        ),
        (
            "IOCTL_GNTALLOC_DEALLOC_GREF",
            IOCTL_GNTALLOC_DEALLOC_GREF,
            xen_ioc::<ioctl_gntalloc_dealloc_gref>(b'G', 6),
            0x10_4706,
        ),
        (
            "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY",
            IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
            xen_ioc::<ioctl_gntalloc_unmap_notify>(b'G', 7),
            0x10_4707,
        ),
    ];
    check_numbers(&cases);
}

#[test]
fn gntdev_ioctl_numbers() {
    let cases: [(&str, u32, u32, u32); 10] = [
        (
            "IOCTL_GNTDEV_MAP_GRANT_REF",
            IOCTL_GNTDEV_MAP_GRANT_REF,
            xen_ioc::<ioctl_gntdev_map_grant_ref>(b'G', 0),
            0x18_4700,
        ),
        (
            "IOCTL_GNTDEV_UNMAP_GRANT_REF",
            IOCTL_GNTDEV_UNMAP_GRANT_REF,
            xen_ioc::<ioctl_gntdev_unmap_grant_ref>(b'G', 1),
            0x10_4701,
        ),
        (
            "IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR",
            IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR,
            xen_ioc::<ioctl_gntdev_get_offset_for_vaddr>(b'G', 2),
            0x18_4702,
        ),
        (
            "IOCTL_GNTDEV_SET_MAX_GRANTS",
            IOCTL_GNTDEV_SET_MAX_GRANTS,
            xen_ioc::<ioctl_gntdev_set_max_grants>(b'G', 3),
            0x4_4703,
        ),
        // Same number as IOCTL_GNTALLOC_SET_UNMAP_NOTIFY ('G', 7, 16 bytes): they are
        // on different devices.
        (
            "IOCTL_GNTDEV_SET_UNMAP_NOTIFY",
            IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
            xen_ioc::<ioctl_gntdev_unmap_notify>(b'G', 7),
            0x10_4707,
        ),
        (
            "IOCTL_GNTDEV_GRANT_COPY",
            IOCTL_GNTDEV_GRANT_COPY,
            xen_ioc::<ioctl_gntdev_grant_copy>(b'G', 8),
            0x10_4708,
        ),
        (
            "IOCTL_GNTDEV_DMABUF_EXP_FROM_REFS",
            IOCTL_GNTDEV_DMABUF_EXP_FROM_REFS,
            xen_ioc::<ioctl_gntdev_dmabuf_exp_from_refs>(b'G', 9),
            0x14_4709,
        ),
        (
            "IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED",
            IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED,
            xen_ioc::<ioctl_gntdev_dmabuf_exp_wait_released>(b'G', 10),
            0x8_470a,
        ),
        (
            "IOCTL_GNTDEV_DMABUF_IMP_TO_REFS",
            IOCTL_GNTDEV_DMABUF_IMP_TO_REFS,
            xen_ioc::<ioctl_gntdev_dmabuf_imp_to_refs>(b'G', 11),
            0x14_470b,
        ),
        (
            "IOCTL_GNTDEV_DMABUF_IMP_RELEASE",
            IOCTL_GNTDEV_DMABUF_IMP_RELEASE,
            xen_ioc::<ioctl_gntdev_dmabuf_imp_release>(b'G', 12),
            0x8_470c,
        ),
    ];
    check_numbers(&cases);
}

/// Each case: (name, generated constant, `_IOC` computed here, literal).
fn check_numbers(cases: &[(&str, u32, u32, u32)]) {
    for &(name, generated, computed, literal) in cases {
        assert_eq!(
            generated, computed,
            "{name}: generated {generated:#x}, _IOC gives {computed:#x}"
        );
        assert_eq!(
            generated, literal,
            "{name}: generated {generated:#x}, expected {literal:#x}"
        );
    }
}

/// Asserts size, alignment and field offsets of a generated struct.
macro_rules! assert_layout {
    ($ty:ty, size $size:expr, align $align:expr, { $($field:ident: $off:expr),* $(,)? }) => {{
        assert_eq!(size_of::<$ty>(), $size, "size_of::<{}>()", stringify!($ty));
        assert_eq!(align_of::<$ty>(), $align, "align_of::<{}>()", stringify!($ty));
        $(
            assert_eq!(
                offset_of!($ty, $field),
                $off,
                "offset_of!({}, {})",
                stringify!($ty),
                stringify!($field)
            );
        )*
    }};
}

#[test]
fn evtchn_layouts() {
    assert_layout!(ioctl_evtchn_bind_virq, size 4, align 4, { virq: 0 });
    assert_layout!(ioctl_evtchn_bind_interdomain, size 8, align 4, {
        remote_domain: 0,
        remote_port: 4,
    });
    assert_layout!(ioctl_evtchn_bind_unbound_port, size 4, align 4, { remote_domain: 0 });
    assert_layout!(ioctl_evtchn_unbind, size 4, align 4, { port: 0 });
    assert_layout!(ioctl_evtchn_notify, size 4, align 4, { port: 0 });
    assert_layout!(ioctl_evtchn_restrict_domid, size 2, align 2, { domid: 0 });

    // Field types: `unsigned int` and the wrapper's `domid_t` (uint16_t).
    let b = ioctl_evtchn_bind_interdomain::default();
    let _: (u32, u32) = (b.remote_domain, b.remote_port);
    let _: u32 = ioctl_evtchn_notify::default().port;
    let _: u16 = ioctl_evtchn_restrict_domid::default().domid;
}

#[test]
fn gntalloc_layouts() {
    assert_layout!(ioctl_gntalloc_alloc_gref, size 24, align 8, {
        domid: 0,
        flags: 2,
        count: 4,
        index: 8,
        gref_ids: 16,
    });
    assert_layout!(ioctl_gntalloc_dealloc_gref, size 16, align 8, { index: 0, count: 8 });
    assert_layout!(ioctl_gntalloc_unmap_notify, size 16, align 8, {
        index: 0,
        action: 8,
        event_channel_port: 12,
    });

    let a = ioctl_gntalloc_alloc_gref::default();
    let _: (u16, u16, u32, u64) = (a.domid, a.flags, a.count, a.index);
    // The variable-length tail is emitted as a one-element array (see the crate docs).
    let _: [u32; 1] = a.gref_ids;
    let n = ioctl_gntalloc_unmap_notify::default();
    let _: (u64, u32, u32) = (n.index, n.action, n.event_channel_port);
}

#[test]
fn gntdev_layouts() {
    assert_layout!(ioctl_gntdev_grant_ref, size 8, align 4, { domid: 0, ref_: 4 });
    assert_layout!(ioctl_gntdev_map_grant_ref, size 24, align 8, {
        count: 0,
        pad: 4,
        index: 8,
        refs: 16,
    });
    assert_layout!(ioctl_gntdev_unmap_grant_ref, size 16, align 8, {
        index: 0,
        count: 8,
        pad: 12,
    });
    assert_layout!(ioctl_gntdev_unmap_notify, size 16, align 8, {
        index: 0,
        action: 8,
        event_channel_port: 12,
    });
    assert_layout!(ioctl_gntdev_set_max_grants, size 4, align 4, { count: 0 });

    let r = ioctl_gntdev_grant_ref::default();
    let _: (u32, u32) = (r.domid, r.ref_);
    let m = ioctl_gntdev_map_grant_ref::default();
    let _: (u32, u64) = (m.count, m.index);
    let _: [ioctl_gntdev_grant_ref; 1] = m.refs;
}

#[test]
fn unmap_notify_flags() {
    assert_eq!(UNMAP_NOTIFY_CLEAR_BYTE, 0x1);
    assert_eq!(UNMAP_NOTIFY_SEND_EVENT, 0x2);
    assert_eq!(GNTALLOC_FLAG_WRITABLE, 1);
}

#[test]
fn xenstore_wire() {
    assert_layout!(xsd_sockmsg, size 16, align 4, {
        type_: 0,
        req_id: 4,
        tx_id: 8,
        len: 12,
    });
    let h = xsd_sockmsg::default();
    let _: (u32, u32, u32, u32) = (h.type_, h.req_id, h.tx_id, h.len);

    // Xen 4.17 xs_wire.h numbering; XS_DEBUG is an alias of XS_CONTROL, and 20 was
    // XS_RESTRICT (removed).
    let types: [(&str, xsd_sockmsg_type, u32); 24] = [
        ("XS_CONTROL", XS_CONTROL, 0),
        ("XS_DIRECTORY", XS_DIRECTORY, 1),
        ("XS_READ", XS_READ, 2),
        ("XS_GET_PERMS", XS_GET_PERMS, 3),
        ("XS_WATCH", XS_WATCH, 4),
        ("XS_UNWATCH", XS_UNWATCH, 5),
        ("XS_TRANSACTION_START", XS_TRANSACTION_START, 6),
        ("XS_TRANSACTION_END", XS_TRANSACTION_END, 7),
        ("XS_INTRODUCE", XS_INTRODUCE, 8),
        ("XS_RELEASE", XS_RELEASE, 9),
        ("XS_GET_DOMAIN_PATH", XS_GET_DOMAIN_PATH, 10),
        ("XS_WRITE", XS_WRITE, 11),
        ("XS_MKDIR", XS_MKDIR, 12),
        ("XS_RM", XS_RM, 13),
        ("XS_SET_PERMS", XS_SET_PERMS, 14),
        ("XS_WATCH_EVENT", XS_WATCH_EVENT, 15),
        ("XS_ERROR", XS_ERROR, 16),
        ("XS_IS_DOMAIN_INTRODUCED", XS_IS_DOMAIN_INTRODUCED, 17),
        ("XS_RESUME", XS_RESUME, 18),
        ("XS_SET_TARGET", XS_SET_TARGET, 19),
        ("XS_RESET_WATCHES", XS_RESET_WATCHES, 21),
        ("XS_DIRECTORY_PART", XS_DIRECTORY_PART, 22),
        ("XS_TYPE_COUNT", XS_TYPE_COUNT, 23),
        ("XS_INVALID", XS_INVALID, 0xffff),
    ];
    for (name, got, want) in types {
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(XS_DEBUG, XS_CONTROL);
    assert_eq!((XS_WATCH_PATH, XS_WATCH_TOKEN), (0, 1));

    assert_eq!(XENSTORE_PAYLOAD_MAX, 4096);
    assert_eq!(XENSTORE_ABS_PATH_MAX, 3072);
    assert_eq!(XENSTORE_REL_PATH_MAX, 2048);
    assert_eq!(XENSTORE_RING_SIZE, 1024);
    assert_eq!(XS_WRITE_NONE, b"NONE\0");
    assert_eq!(XS_WRITE_CREATE, b"CREATE\0");
    assert_eq!(XS_WRITE_CREATE_EXCL, b"CREATE|EXCL\0");

    assert_layout!(xenstore_domain_interface, size 2076, align 4, {
        req: 0,
        rsp: 1024,
        req_cons: 2048,
        req_prod: 2052,
        rsp_cons: 2056,
        rsp_prod: 2060,
        server_features: 2064,
        connection: 2068,
        error: 2072,
    });
}

#[test]
fn vchan_layout() {
    assert_layout!(ring_shared, size 8, align 4, { cons: 0, prod: 4 });
    assert_layout!(vchan_interface, size 24, align 4, {
        left: 0,
        right: 8,
        left_order: 16,
        right_order: 18,
        cli_live: 20,
        srv_live: 21,
        cli_notify: 22,
        srv_notify: 23,
        grants: 24,
    });
    // `grants[0]` is a true flexible array member: zero-sized.
    assert_eq!(size_of::<__IncompleteArrayField<u32>>(), 0);
    assert_eq!((VCHAN_NOTIFY_WRITE, VCHAN_NOTIFY_READ), (1, 2));
}

/// The buffer sizing documented in the crate docs for the one-element trailing arrays:
/// at least `size_of::<T>() + (n - 1) * size_of::<Elem>()` bytes, 8-aligned, elements
/// reached through raw pointers.
#[test]
fn variable_length_arguments() {
    const N: usize = 3;

    let map_len =
        size_of::<ioctl_gntdev_map_grant_ref>() + (N - 1) * size_of::<ioctl_gntdev_grant_ref>();
    assert_eq!(map_len, 16 + 8 * N);
    let alloc_len = size_of::<ioctl_gntalloc_alloc_gref>() + (N - 1) * size_of::<u32>();
    // 4 bytes more than offset_of!(gref_ids) + 4 * N because of the struct's tail padding;
    // the kernel copies the whole struct in before it looks at `count`, so never go
    // below size_of::<T>().
    assert_eq!(alloc_len, 24 + 4 * (N - 1));
    assert!(alloc_len >= offset_of!(ioctl_gntalloc_alloc_gref, gref_ids) + 4 * N);

    // A u64 buffer gives the 8-byte alignment both structs need.
    let mut buf = [0u64; 8];
    assert!(size_of_val(&buf) >= map_len);
    let p = buf.as_mut_ptr().cast::<ioctl_gntdev_map_grant_ref>();
    // SAFETY: `buf` is 64 bytes, 8-aligned and zeroed, which is a valid
    // `ioctl_gntdev_map_grant_ref` header followed by room for N refs (map_len <= 64);
    // every write stays inside `buf`, and the refs are reached through a pointer derived
    // from the whole buffer, not from the one-element array.
    unsafe {
        (*p).count = N as u32;
        let refs = core::ptr::addr_of_mut!((*p).refs).cast::<ioctl_gntdev_grant_ref>();
        for i in 0..N {
            refs.add(i).write(ioctl_gntdev_grant_ref {
                domid: 7,
                ref_: 100 + i as u32,
            });
        }
    }
    // Element i is at byte 16 + 8 * i: domid in the low half, ref in the high half of a
    // little-endian u64 (both x86_64 and aarch64 Linux are little-endian).
    assert_eq!(buf[0] & 0xffff_ffff, N as u64);
    for i in 0..N {
        assert_eq!(buf[2 + i], ((100 + i as u64) << 32) | 7);
    }
}
