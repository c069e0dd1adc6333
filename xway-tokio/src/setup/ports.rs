//! The client's source port, chosen before the SYN.
//!
//! An offer names its connection's 4-tuple, so a ring client binds its socket before
//! connecting. `bind(ip, 0)` lets the kernel choose, and it looks for a port that no socket
//! holds, connections in `TIME_WAIT` included, by scanning the ephemeral range. A process that
//! made thousands of short connections leaves as many in `TIME_WAIT` for a minute, and that scan
//! then took milliseconds: 10,000 ring connects took 24.7 s right after 10,000 others, against
//! 2.4 s on a quiet machine. So the client first tries a few random ports of the range itself
//! (a refused one costs one `bind` of about a microsecond) and leaves the scan to the kernel
//! only if they are all taken. A port we bind explicitly is held like any other, so the
//! kernel's own choices (and other processes') never collide with it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// Random ports tried before `bind(ip, 0)`. With half the range taken, all eight are taken
/// one time in 256.
const RANDOM_TRIES: usize = 8;

/// The ephemeral port range and the ports reserved out of it, as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortRange {
    low: u16,
    high: u16,
    /// Inclusive ranges the kernel never picks on its own (`ip_local_reserved_ports`).
    reserved: Vec<(u16, u16)>,
}

impl PortRange {
    /// Read once per process: a range changed at run time applies to the next process.
    fn of_this_host() -> &'static PortRange {
        static RANGE: OnceLock<PortRange> = OnceLock::new();
        RANGE.get_or_init(|| {
            let read = |name| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"));
            let (low, high) = read("ip_local_port_range")
                .ok()
                .and_then(|s| parse_range(&s))
                .unwrap_or((32768, 60999));
            let reserved = read("ip_local_reserved_ports")
                .map(|s| parse_reserved(&s))
                .unwrap_or_default();
            PortRange {
                low,
                high,
                reserved,
            }
        })
    }

    /// A random port of the range that is not reserved, or `None` for a reserved one.
    fn pick(&self, random: u64) -> Option<u16> {
        let span = u64::from(self.high - self.low) + 1;
        let port = self.low + (random % span) as u16;
        let reserved = self.reserved.iter().any(|&(a, b)| (a..=b).contains(&port));
        (!reserved).then_some(port)
    }
}

/// `"32768\t60999\n"` -> `(32768, 60999)`.
fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
    (low > 0 && low <= high).then_some((low, high))
}

/// `"8080,9000-9010\n"` -> `[(8080, 8080), (9000, 9010)]`; malformed entries are skipped.
fn parse_reserved(s: &str) -> Vec<(u16, u16)> {
    s.trim()
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => part.parse().ok().map(|p| (p, p)),
            }
        })
        .collect()
}

/// A random number that needs no system call: the std hasher's per-instance random keys.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Binds `socket` to `ip` and a free port of the ephemeral range (see the module docs).
pub(crate) fn bind_ephemeral(socket: &socket2::Socket, ip: IpAddr) -> io::Result<()> {
    let range = PortRange::of_this_host();
    for _ in 0..RANDOM_TRIES {
        let Some(port) = range.pick(random_u64()) else {
            continue;
        };
        match socket.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    socket.bind(&SocketAddr::new(ip, 0).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_range_and_reserved_list_are_parsed() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("garbage"), None);
        assert_eq!(parse_reserved("\n"), vec![]);
        assert_eq!(
            parse_reserved("8080,9000-9010, x,40000\n"),
            vec![(8080, 8080), (9000, 9010), (40000, 40000)]
        );
    }

    #[test]
    fn picked_ports_stay_in_the_range_and_out_of_reserved_ones() {
        let range = PortRange {
            low: 40000,
            high: 40009,
            reserved: vec![(40002, 40004)],
        };
        let picked: Vec<Option<u16>> = (0..10).map(|r| range.pick(r)).collect();
        let expected: Vec<Option<u16>> = (40000..=40009)
            .map(|p| (!(40002..=40004).contains(&p)).then_some(p))
            .collect();
        assert_eq!(picked, expected);
    }

    #[test]
    fn bound_sockets_get_distinct_ports_of_the_range() {
        let range = PortRange::of_this_host();
        let sockets: Vec<socket2::Socket> = (0..200)
            .map(|_| {
                let s = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )
                .unwrap();
                bind_ephemeral(&s, IpAddr::from([127, 0, 0, 1])).unwrap();
                s
            })
            .collect();
        let mut ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().as_socket().unwrap().port())
            .collect();
        assert!(ports.iter().all(|p| (range.low..=range.high).contains(p)));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 200, "no port handed out twice");
    }
}
