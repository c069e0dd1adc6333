//! The trusted directory: which domain owns an IP address, published by dom0.
//!
//! Before a client grants pages to a server's domain it must learn that domain's id from a
//! source the server cannot forge (invariant I3). The directory is that source: one node per
//! guest address, `/xway/directory/<ip with dashes>`, whose value is the guest's decimal domain
//! id. Dom0 writes it from the toolstack's own data and sets permissions `r0` (owner dom0,
//! every other domain read-only) on every entry and on `/xway/directory` itself (XenStore
//! checks only a node's own permissions, never its parents': `xenstore-perms.md`, test 1c).
//! A guest can read and list it but cannot create, change or remove anything in it.
//!
//! XenStore node names allow only `[A-Za-z0-9_@/-]`, so the address is encoded: IPv4
//! `192.0.2.11` is `192-0-2-11`; IPv6 uses its canonical text (RFC 5952, as `Ipv6Addr`
//! prints it) with `:` replaced by `-`, so `2001:db8::11` is `2001-db8--11`. An IPv4-mapped
//! IPv6 address is the IPv4 address. The two forms cannot collide: an IPv4 name has three
//! dashes and no `--`; an IPv6 name has seven dashes or a `--`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The directory node: one child per guest address, all with permissions `r0`.
pub(crate) const DIRECTORY: &str = "/xway/directory";

/// The directory node for `ip`: `/xway/directory/192-0-2-11`.
pub(crate) fn entry_path(ip: IpAddr) -> String {
    format!("{DIRECTORY}/{}", entry_name(ip))
}

/// The child name for `ip` under [`DIRECTORY`]: `192-0-2-11`, `2001-db8--11`.
pub(crate) fn entry_name(ip: IpAddr) -> String {
    // `::ffff:a.b.c.d` is the IPv4 host a dual-stack socket reports; it prints with dots.
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address an entry name stands for; `None` unless `name` is exactly what
/// [`entry_name`] gives for that address (so each address has one name, and a stray node in
/// the directory is recognised as stray).
pub(crate) fn parse_entry_name(name: &str) -> Option<IpAddr> {
    if name.is_empty() || name.len() > 39 {
        return None;
    }
    let ip = if name.contains("--") || name.matches('-').count() != 3 {
        IpAddr::V6(name.replace('-', ":").parse::<Ipv6Addr>().ok()?)
    } else {
        IpAddr::V4(name.replace('-', ".").parse::<Ipv4Addr>().ok()?)
    };
    (entry_name(ip) == name).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_entries_use_dashes() {
        assert_eq!(entry_path(ip("192.0.2.11")), "/xway/directory/192-0-2-11");
        assert_eq!(entry_path(ip("10.0.0.1")), "/xway/directory/10-0-0-1");
        assert_eq!(entry_path(ip("0.0.0.0")), "/xway/directory/0-0-0-0");
    }

    #[test]
    fn ipv6_entries_use_the_canonical_text_with_dashes() {
        assert_eq!(
            entry_path(ip("2001:db8::11")),
            "/xway/directory/2001-db8--11"
        );
        // Canonical text: lower case, leading zeros dropped, the longest zero run compressed.
        assert_eq!(
            entry_path(ip("2001:0DB8:0000:0000:0001:0000:0000:0011")),
            "/xway/directory/2001-db8--1-0-0-11"
        );
        assert_eq!(entry_path(ip("::1")), "/xway/directory/--1");
        assert_eq!(entry_path(ip("fe80::1")), "/xway/directory/fe80--1");
        assert_eq!(
            entry_path(ip("1:2:3:4:5:6:7:8")),
            "/xway/directory/1-2-3-4-5-6-7-8"
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_entry() {
        assert_eq!(
            entry_path(ip("::ffff:192.0.2.11")),
            "/xway/directory/192-0-2-11"
        );
    }

    #[test]
    fn every_entry_is_a_valid_xenstore_path() {
        for s in [
            "192.0.2.11",
            "255.255.255.255",
            "2001:db8::11",
            "::",
            "::ffff:1.2.3.4",
            "fe80::1:2",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let p = entry_path(ip(s));
            assert!(
                super::super::xenstore::wire::check_path(&p).is_ok(),
                "{s} -> {p}"
            );
        }
    }

    #[test]
    fn entry_names_round_trip_and_nothing_else_parses() {
        for s in [
            "192.0.2.11",
            "10.1.2.3",
            "2001:db8::11",
            "::",
            "::1",
            "1:2:3:4:5:6:7:8",
            "fe80::1",
        ] {
            let a = ip(s);
            assert_eq!(parse_entry_name(&entry_name(a)), Some(a), "{s}");
        }
        for bad in [
            "",
            "192.0.2.11",
            "192-0-2",
            "192-0-2-256",
            "192-000-2-11",
            "2001-DB8--11",
            "2001-0db8--11",
            "x",
            "192-0-2-11-",
            // The IPv4-mapped form of 192.0.2.11: its name is `192-0-2-11`.
            "--ffff-c000-20b",
            "ffff-ffff-ffff-ffff-ffff-ffff-ffff-ffff-1",
        ] {
            assert_eq!(parse_entry_name(bad), None, "{bad:?}");
        }
        // Four groups and a `--` are an IPv6 name, never an IPv4 one.
        assert_eq!(parse_entry_name("1-2-3-4--"), Some(ip("1:2:3:4::")));
    }
}
