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
//!
//! # Where the map comes from
//!
//! The publisher ([`run`], the `xway xen-directory` command) runs in dom0 and reads only nodes
//! that dom0's toolstack writes and guests cannot: for each virtual interface,
//! `/local/domain/0/backend/vif/<domid>/<devid>/` holds `ip` (the space-separated addresses of
//! the vif's `ip=` setting in the `xl` configuration), `frontend-id` (the guest's domain id) and
//! more; backend nodes are owned by dom0 and at most readable by the guest. The guest's own
//! side (`/local/domain/<domid>/device/vif/...`) is guest-writable and is never read. An
//! address is published when:
//!
//! - a vif of a live domain (its `/local/domain/<domid>/domid` says so) lists it in `ip`, and
//!   the vif's `frontend-id` agrees with the domain id in its path;
//! - no other domain lists the same address (two claims publish neither: an ambiguous entry
//!   would send grants to the wrong domain).
//!
//! A vif without `ip=` publishes nothing (the guest may use any address, so the toolstack does
//! not know it). The publisher removes every other child of the directory, rewrites entries
//! whose value or permissions differ, and writes nothing when nothing changed. It re-syncs on
//! every XenStore event under the vif backends, the directory itself and `@releaseDomain`
//! (debounced), and every [`RESYNC_EVERY`] in case an event was lost. A pass that fails (a slow
//! xenstored, a node removed while it reads) is retried a second later, at most
//! [`PASS_ATTEMPTS`] times in a row; a lost connection ends the publisher at once.
//!
//! # Operator configuration
//!
//! Without dom0's help, [`PEERS_ENV`] (`XWAY_XEN_PEERS="192.0.2.11=1 192.0.2.12=2"`) names the
//! peers directly; [`parse_peers`] reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::task::Poll;
use std::time::Duration;

use super::xenstore::{xs_errno, Access, Perm, Tx, Watch, WatchEvent, XenStore};
use super::{truncate, DomId};

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

/// Where dom0's toolstack describes every guest's virtual network interfaces.
pub(crate) const VIF_BACKENDS: &str = "/local/domain/0/backend/vif";

/// Operator-configured peers, the alternative to the directory: whitespace- or
/// comma-separated `<ip>=<domid>` pairs.
pub(crate) const PEERS_ENV: &str = "XWAY_XEN_PEERS";

/// The publisher's quiet period: events closer together than this are handled by one re-sync.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(250);
/// The longest the publisher postpones a re-sync while events keep coming.
pub(crate) const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// A re-sync happens at least this often, events or not.
pub(crate) const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// The permissions of the directory node and of every entry: owner dom0, read-only for the
/// other domains.
pub(crate) fn published_perms() -> [Perm; 1] {
    [Perm::new(Access::Read, DomId::DOM0)]
}

/// True if a node with these permissions can only have been written by dom0 and nobody else
/// may change it: owner dom0, and no other entry grants write access.
pub(crate) fn perms_trusted(perms: &[Perm]) -> bool {
    match perms.split_first() {
        Some((owner, rest)) => {
            owner.domid == DomId::DOM0
                && matches!(owner.access, Access::None | Access::Read)
                && rest
                    .iter()
                    .all(|p| matches!(p.access, Access::None | Access::Read))
        }
        None => false,
    }
}

/// Reads the directory entry for `ip` as a client does: the domain id, if the entry exists,
/// is dom0's (see [`perms_trusted`]) and holds a domain id.
///
/// # Errors
///
/// - `NotFound`: no entry for `ip` (or no directory at all).
/// - `PermissionDenied`: the directory is not readable by this domain.
/// - `InvalidData`: the entry is not dom0's alone, or its value is not a domain id.
/// - the XenStore client's errors (`TimedOut`, a lost connection).
pub(crate) async fn lookup(xs: &XenStore, ip: IpAddr) -> io::Result<DomId> {
    let path = entry_path(ip);
    let perms = xs.get_perms(Tx::NONE, &path).await?;
    if !perms_trusted(&perms) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "xway: {path} has permissions {} (want owner dom0, nobody else writing): not trusted",
                perms_text(&perms)
            ),
        ));
    }
    let value = xs.read(Tx::NONE, &path).await?;
    parse_domid_value(&value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("xway: {path}: {e}")))
}

/// A domain id as a XenStore value (a trailing NUL tolerated).
fn parse_domid_value(value: &[u8]) -> io::Result<DomId> {
    let text = std::str::from_utf8(value)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))?;
    text.trim_end_matches('\0').parse()
}

fn perms_text(perms: &[Perm]) -> String {
    let v: Vec<String> = perms.iter().map(Perm::to_string).collect();
    v.join(",")
}

/// Parses [`PEERS_ENV`]: `192.0.2.11=1 2001:db8::12=2`, pairs separated by spaces or commas.
/// A repeated address must name the same domain.
///
/// # Errors
///
/// The first malformed pair, or an address given two different domains.
pub(crate) fn parse_peers(text: &str) -> Result<BTreeMap<IpAddr, DomId>, String> {
    let mut peers = BTreeMap::new();
    for pair in text
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|p| !p.is_empty())
    {
        let shown = truncate(pair, 64);
        let (ip, dom) = pair
            .split_once('=')
            .ok_or_else(|| format!("{PEERS_ENV}: {shown:?} is not <ip>=<domid>"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{PEERS_ENV}: {shown:?}: not an IP address"))?;
        let dom: DomId = dom
            .parse()
            .map_err(|_| format!("{PEERS_ENV}: {shown:?}: not a domain id"))?;
        let ip = ip.to_canonical();
        if let Some(old) = peers.insert(ip, dom) {
            if old != dom {
                return Err(format!(
                    "{PEERS_ENV}: {ip} is given both dom{old} and dom{dom}"
                ));
            }
        }
    }
    Ok(peers)
}

// ---- the publisher: pure part -----------------------------------------------------------------

/// What the toolstack says about one vif (`VIF_BACKENDS/<domid>/<devid>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VifInfo {
    /// The `<domid>` path component as listed.
    pub(crate) domid: String,
    /// The `<devid>` path component.
    pub(crate) devid: String,
    /// The `ip` node, if present.
    pub(crate) ip: Option<String>,
    /// The `frontend-id` node, if present.
    pub(crate) frontend_id: Option<String>,
    /// Whether `/local/domain/<domid>/domid` names that domain (it is not dead or dying).
    pub(crate) alive: bool,
}

/// The map the toolstack's data gives, and a note for every vif or address left out.
pub(crate) fn desired_map(vifs: &[VifInfo]) -> (BTreeMap<IpAddr, DomId>, Vec<String>) {
    let mut notes = Vec::new();
    let mut claims: BTreeMap<IpAddr, BTreeSet<DomId>> = BTreeMap::new();
    for v in vifs {
        let at = format!("vif {}/{}", truncate(&v.domid, 8), truncate(&v.devid, 8));
        let Ok(dom) = v.domid.parse::<DomId>() else {
            notes.push(format!(
                "{at}: {:?} is not a domain id",
                truncate(&v.domid, 16)
            ));
            continue;
        };
        if !v.alive {
            notes.push(format!("{at}: domain {dom} is gone or dying"));
            continue;
        }
        match v.frontend_id.as_deref().map(str::parse::<DomId>) {
            Some(Ok(f)) if f == dom => {}
            Some(Ok(f)) => {
                notes.push(format!(
                    "{at}: frontend-id {f} differs from the path's domain"
                ));
                continue;
            }
            Some(Err(_)) => {
                notes.push(format!("{at}: frontend-id is not a domain id"));
                continue;
            }
            None => {
                notes.push(format!("{at}: no frontend-id yet"));
                continue;
            }
        }
        let Some(ips) = v.ip.as_deref().filter(|s| !s.trim().is_empty()) else {
            notes.push(format!(
                "{at}: no ip= in the vif's configuration, nothing to publish for dom{dom}"
            ));
            continue;
        };
        for word in ips.split_ascii_whitespace() {
            // `ip=` may carry a prefix length for vif-route; the address is what matters.
            let addr = word.split_once('/').map_or(word, |(a, _)| a);
            match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    claims.entry(ip.to_canonical()).or_default().insert(dom);
                }
                Err(_) => notes.push(format!(
                    "{at}: {:?} in ip is not an address",
                    truncate(word, 48)
                )),
            }
        }
    }
    let mut map = BTreeMap::new();
    for (ip, doms) in claims {
        if doms.len() == 1 {
            map.extend(doms.into_iter().map(|d| (ip, d)));
        } else {
            let list: Vec<String> = doms.iter().map(|d| format!("dom{d}")).collect();
            notes.push(format!(
                "{ip} is claimed by {}: not published",
                list.join(" and ")
            ));
        }
    }
    (map, notes)
}

/// One node under the directory as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Existing {
    pub(crate) name: String,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) perms: Option<Vec<Perm>>,
}

/// A change the publisher makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Create the directory node (it is missing).
    CreateDirectory,
    /// Set the directory node's permissions to [`published_perms`].
    FixDirectoryPerms,
    /// Remove a child that is not (or no longer) in the map.
    Remove(String),
    /// Write an entry's value (new or changed).
    Write(IpAddr, DomId),
    /// Set an entry's permissions to [`published_perms`].
    FixPerms(IpAddr),
}

/// The changes that turn the directory into `desired`; empty when it already is.
/// `dir_perms` is `None` when the directory node does not exist.
pub(crate) fn plan(
    dir_perms: Option<&[Perm]>,
    existing: &[Existing],
    desired: &BTreeMap<IpAddr, DomId>,
) -> Vec<Action> {
    let want = published_perms();
    let mut actions = Vec::new();
    match dir_perms {
        // A new directory node gets `want` before any entry is written below it (entries
        // inherit it).
        None => actions.extend([Action::CreateDirectory, Action::FixDirectoryPerms]),
        Some(p) if p != want => actions.push(Action::FixDirectoryPerms),
        Some(_) => {}
    }
    let mut seen = BTreeSet::new();
    for e in existing {
        match parse_entry_name(&e.name).filter(|ip| desired.contains_key(ip)) {
            Some(ip) => {
                seen.insert(ip);
                let dom = desired[&ip];
                if e.value.as_deref() != Some(dom.to_string().as_bytes()) {
                    actions.push(Action::Write(ip, dom));
                }
                if e.perms.as_deref() != Some(&want[..]) {
                    actions.push(Action::FixPerms(ip));
                }
            }
            None => actions.push(Action::Remove(e.name.clone())),
        }
    }
    for (&ip, &dom) in desired {
        if !seen.contains(&ip) {
            actions.push(Action::Write(ip, dom));
            actions.push(Action::FixPerms(ip));
        }
    }
    actions
}

// ---- the publisher: XenStore glue -------------------------------------------------------------

/// The subset of the XenStore client the publisher uses (a fake implements it in tests).
pub(crate) trait Store {
    async fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    async fn write(&self, path: &str, value: &[u8]) -> io::Result<()>;
    async fn mkdir(&self, path: &str) -> io::Result<()>;
    async fn rm(&self, path: &str) -> io::Result<()>;
    async fn directory(&self, path: &str) -> io::Result<Vec<String>>;
    async fn get_perms(&self, path: &str) -> io::Result<Vec<Perm>>;
    async fn set_perms(&self, path: &str, perms: &[Perm]) -> io::Result<()>;
}

impl Store for XenStore {
    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        XenStore::read(self, Tx::NONE, path).await
    }
    async fn write(&self, path: &str, value: &[u8]) -> io::Result<()> {
        XenStore::write(self, Tx::NONE, path, value).await
    }
    async fn mkdir(&self, path: &str) -> io::Result<()> {
        XenStore::mkdir(self, Tx::NONE, path).await
    }
    async fn rm(&self, path: &str) -> io::Result<()> {
        XenStore::rm(self, Tx::NONE, path).await
    }
    async fn directory(&self, path: &str) -> io::Result<Vec<String>> {
        XenStore::directory(self, Tx::NONE, path).await
    }
    async fn get_perms(&self, path: &str) -> io::Result<Vec<Perm>> {
        XenStore::get_perms(self, Tx::NONE, path).await
    }
    async fn set_perms(&self, path: &str, perms: &[Perm]) -> io::Result<()> {
        XenStore::set_perms(self, Tx::NONE, path, perms).await
    }
}

fn is_enoent(e: &io::Error) -> bool {
    xs_errno(e) == Some(libc::ENOENT)
}

/// `Ok(None)` for a missing node.
async fn optional<T>(r: impl std::future::Future<Output = io::Result<T>>) -> io::Result<Option<T>> {
    match r.await {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_enoent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| {
        String::from_utf8_lossy(&b)
            .trim_end_matches('\0')
            .to_owned()
    })
}

/// Reads every vif backend the toolstack wrote.
pub(crate) async fn read_toolstack<S: Store>(s: &S) -> io::Result<Vec<VifInfo>> {
    let mut vifs = Vec::new();
    let doms = optional(s.directory(VIF_BACKENDS))
        .await?
        .unwrap_or_default();
    for domid in doms {
        let base = format!("{VIF_BACKENDS}/{domid}");
        // A domain being destroyed loses its nodes while we read: missing means skip.
        let Some(devs) = optional(s.directory(&base)).await? else {
            continue;
        };
        let home = text(optional(s.read(&format!("/local/domain/{domid}/domid"))).await?);
        let alive = home.as_deref() == Some(domid.as_str());
        for devid in devs {
            let vif = format!("{base}/{devid}");
            vifs.push(VifInfo {
                ip: text(optional(s.read(&format!("{vif}/ip"))).await?),
                frontend_id: text(optional(s.read(&format!("{vif}/frontend-id"))).await?),
                domid: domid.clone(),
                devid,
                alive,
            });
        }
    }
    Ok(vifs)
}

/// Reads the directory as it is: its node's permissions (`None`: no node) and its children.
async fn read_directory<S: Store>(s: &S) -> io::Result<(Option<Vec<Perm>>, Vec<Existing>)> {
    let Some(dir_perms) = optional(s.get_perms(DIRECTORY)).await? else {
        return Ok((None, Vec::new()));
    };
    let mut existing = Vec::new();
    for name in optional(s.directory(DIRECTORY)).await?.unwrap_or_default() {
        let path = format!("{DIRECTORY}/{name}");
        existing.push(Existing {
            value: optional(s.read(&path)).await?,
            perms: optional(s.get_perms(&path)).await?,
            name,
        });
    }
    Ok((Some(dir_perms), existing))
}

/// What one pass of the publisher found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Update {
    /// The directory after the pass.
    pub(crate) entries: BTreeMap<IpAddr, DomId>,
    /// Entries written (new, changed, or with their permissions repaired).
    pub(crate) written: BTreeSet<IpAddr>,
    /// Children removed (stale or stray).
    pub(crate) removed: Vec<String>,
    /// Why some vifs or addresses were not published.
    pub(crate) notes: Vec<String>,
}

impl Update {
    /// True if the pass changed XenStore.
    pub(crate) fn changed(&self) -> bool {
        !self.written.is_empty() || !self.removed.is_empty()
    }
}

impl fmt::Display for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DIRECTORY}: {} entr", self.entries.len())?;
        f.write_str(if self.entries.len() == 1 { "y" } else { "ies" })?;
        for (i, (ip, dom)) in self.entries.iter().enumerate() {
            write!(f, "{}{ip} -> dom{dom}", if i == 0 { " (" } else { ", " })?;
        }
        if !self.entries.is_empty() {
            f.write_str(")")?;
        }
        write!(
            f,
            "; {} written, {} removed",
            self.written.len(),
            self.removed.len()
        )?;
        for r in &self.removed {
            write!(f, " [{}]", truncate(r, 40))?;
        }
        for n in &self.notes {
            write!(f, "; note: {n}")?;
        }
        Ok(())
    }
}

/// One pass: reads the toolstack's data and makes the directory match it.
pub(crate) async fn sync<S: Store>(s: &S) -> io::Result<Update> {
    let (desired, notes) = desired_map(&read_toolstack(s).await?);
    let (dir_perms, existing) = read_directory(s).await?;
    let mut update = Update {
        entries: desired.clone(),
        notes,
        ..Update::default()
    };
    let want = published_perms();
    for action in plan(dir_perms.as_deref(), &existing, &desired) {
        match action {
            Action::CreateDirectory => s.mkdir(DIRECTORY).await?,
            Action::FixDirectoryPerms => s.set_perms(DIRECTORY, &want).await?,
            Action::Remove(name) => {
                match s.rm(&format!("{DIRECTORY}/{name}")).await {
                    Err(e) if !is_enoent(&e) => return Err(e),
                    _ => {}
                }
                update.removed.push(name);
            }
            Action::Write(ip, dom) => {
                s.write(&entry_path(ip), dom.to_string().as_bytes()).await?;
                update.written.insert(ip);
            }
            Action::FixPerms(ip) => {
                s.set_perms(&entry_path(ip), &want).await?;
                update.written.insert(ip);
            }
        }
    }
    Ok(update)
}

/// Checks that this process talks to XenStore as dom0, with a clear error otherwise.
pub(crate) async fn check_dom0(xs: &XenStore) -> io::Result<()> {
    let not_dom0 = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "xway: the Xen directory is published from dom0 (the toolstack's domain), and {why}; \
                 guests only read {DIRECTORY}"
            ),
        )
    };
    match xs.own_domid().await {
        Ok(d) if d == DomId::DOM0 => {}
        Ok(d) => return Err(not_dom0(format!("this is dom{d}"))),
        Err(e) if xs_errno(&e).is_some() => {
            return Err(not_dom0(format!(
                "this domain cannot read its own domid ({e})"
            )))
        }
        Err(e) => return Err(e),
    }
    // dom0 may list every domain; a guest may not.
    match xs.directory(Tx::NONE, "/local/domain").await {
        Ok(_) => Ok(()),
        Err(e) if xs_errno(&e) == Some(libc::EACCES) => {
            Err(not_dom0(format!("this connection is not privileged ({e})")))
        }
        Err(e) => Err(e),
    }
}

/// The publisher: checks it runs in dom0, syncs once, then (with `keep_current`) re-syncs on
/// every change until an error. `on_update` gets the first pass and every pass that changed
/// something or whose notes differ from the previous pass.
///
/// # Errors
///
/// Not dom0 (`PermissionDenied`, saying so), XenStore unreachable, or a XenStore error during
/// a pass (the connection lost, a timeout); the operator's service manager restarts it.
pub(crate) async fn run(keep_current: bool, on_update: &mut dyn FnMut(&Update)) -> io::Result<()> {
    let xs = XenStore::open()?;
    check_dom0(&xs).await?;
    let mut last = sync(&xs).await?;
    on_update(&last);
    if !keep_current {
        return Ok(());
    }
    let mut watches = Vec::new();
    for path in [VIF_BACKENDS, DIRECTORY, "@releaseDomain"] {
        watches.push(xs.watch(path).await?);
    }
    loop {
        let first = tokio::time::timeout(RESYNC_EVERY, next_event(&mut watches)).await;
        if let Ok(r) = first {
            r?;
            debounce(&mut watches).await?;
        }
        let mut update = sync_retrying(&xs).await?;
        if update.changed() || update.notes != last.notes {
            on_update(&update);
        }
        // Notes about failed attempts are reported once, not compared with the next pass.
        update.notes.retain(|n| !n.starts_with(RETRY_NOTE));
        last = update;
    }
}

const RETRY_NOTE: &str = "a pass failed and was retried";
/// Passes tried in a row before the publisher gives up.
const PASS_ATTEMPTS: usize = 3;

/// [`sync`], retried after a second when a pass fails with anything but a lost connection
/// (a slow xenstored, a node removed under our feet); the failures become notes of the pass
/// that succeeds.
async fn sync_retrying<S: Store>(s: &S) -> io::Result<Update> {
    let mut failures = Vec::new();
    loop {
        match sync(s).await {
            Ok(mut u) => {
                if !failures.is_empty() {
                    u.notes
                        .push(format!("{RETRY_NOTE}: {}", failures.join("; ")));
                }
                return Ok(u);
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(e),
            Err(e) if failures.len() + 1 >= PASS_ATTEMPTS => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{PASS_ATTEMPTS} passes failed in a row; the last: {e}"),
                ))
            }
            Err(e) => {
                failures.push(e.to_string());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The next event of any watch.
async fn next_event(watches: &mut [Watch]) -> io::Result<WatchEvent> {
    poll_fn(|cx| {
        for w in watches.iter_mut() {
            if let Poll::Ready(r) = w.poll_event(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// Swallows further events until [`DEBOUNCE`] passes without one (at most [`DEBOUNCE_MAX`]).
async fn debounce(watches: &mut [Watch]) -> io::Result<()> {
    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = tokio::time::Instant::now() + DEBOUNCE;
        match tokio::time::timeout_at(quiet.min(until), next_event(watches)).await {
            Ok(r) => {
                r?;
            }
            Err(_) => return Ok(()),
        }
        if tokio::time::Instant::now() >= until {
            return Ok(());
        }
    }
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

    // ---- peers, perms, the map ----------------------------------------------------------------

    fn dom(n: u16) -> DomId {
        DomId::new(n).unwrap()
    }

    #[test]
    fn operator_peers_parse_strictly() {
        let p = parse_peers("192.0.2.11=1, 2001:db8::12=2\t::ffff:192.0.2.13=3 ").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&ip("192.0.2.11")], dom(1));
        assert_eq!(p[&ip("2001:db8::12")], dom(2));
        assert_eq!(p[&ip("192.0.2.13")], dom(3));
        assert_eq!(parse_peers("").unwrap().len(), 0);
        assert_eq!(parse_peers("10.0.0.1=4 10.0.0.1=4").unwrap().len(), 1);
        for bad in [
            "10.0.0.1",
            "10.0.0.1=",
            "x=1",
            "10.0.0.1=-1",
            "10.0.0.1=65535",
            "10.0.0.1=1 10.0.0.1=2",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_dom0_owned_unwritable_nodes_are_trusted() {
        let p = |s: &str| -> Vec<Perm> { s.split(',').map(|x| x.parse().unwrap()).collect() };
        assert!(perms_trusted(&p("r0")));
        assert!(perms_trusted(&p("n0,r1")));
        assert!(!perms_trusted(&p("r1")), "owned by a guest");
        assert!(!perms_trusted(&p("b0")), "everybody may write");
        assert!(!perms_trusted(&p("w0")));
        assert!(!perms_trusted(&p("r0,w3")), "dom3 may write");
        assert!(!perms_trusted(&[]));
    }

    fn vif(domid: &str, ip: Option<&str>) -> VifInfo {
        VifInfo {
            domid: domid.into(),
            devid: "0".into(),
            ip: ip.map(Into::into),
            frontend_id: Some(domid.into()),
            alive: true,
        }
    }

    #[test]
    fn the_map_comes_from_live_consistent_vifs_and_drops_ambiguity() {
        let mut dead = vif("7", Some("192.0.2.17"));
        dead.alive = false;
        let mut liar = vif("8", Some("192.0.2.18"));
        liar.frontend_id = Some("9".into());
        let mut early = vif("10", Some("192.0.2.20"));
        early.frontend_id = None;
        let vifs = [
            vif("1", Some("192.0.2.11")),
            vif("2", Some("192.0.2.12 2001:db8::12 192.0.2.22/24")),
            vif("3", None),
            vif("4", Some("192.0.2.30")),
            vif("5", Some("192.0.2.30 junk")),
            dead,
            liar,
            early,
            vif("bogus", Some("192.0.2.40")),
        ];
        let (map, notes) = desired_map(&vifs);
        let want: BTreeMap<IpAddr, DomId> = [
            ("192.0.2.11", 1),
            ("192.0.2.12", 2),
            ("2001:db8::12", 2),
            ("192.0.2.22", 2),
        ]
        .into_iter()
        .map(|(a, d)| (ip(a), dom(d)))
        .collect();
        assert_eq!(map, want);
        let all = notes.join("\n");
        for expected in [
            "vif 3/0: no ip=",
            "vif 5/0: \"junk\" in ip is not an address",
            "vif 7/0: domain 7 is gone or dying",
            "vif 8/0: frontend-id 9 differs",
            "vif 10/0: no frontend-id yet",
            "vif bogus/0: \"bogus\" is not a domain id",
            "192.0.2.30 is claimed by dom4 and dom5: not published",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in\n{all}");
        }
    }

    #[test]
    fn the_plan_is_empty_when_the_directory_is_current() {
        let desired: BTreeMap<IpAddr, DomId> = [(ip("192.0.2.11"), dom(1))].into();
        let existing = [Existing {
            name: "192-0-2-11".into(),
            value: Some(b"1".to_vec()),
            perms: Some(published_perms().to_vec()),
        }];
        assert_eq!(plan(Some(&published_perms()), &existing, &desired), []);
    }

    #[test]
    fn the_plan_creates_fixes_and_removes() {
        let desired: BTreeMap<IpAddr, DomId> =
            [(ip("192.0.2.11"), dom(1)), (ip("192.0.2.12"), dom(2))].into();
        assert_eq!(
            plan(None, &[], &desired),
            [
                Action::CreateDirectory,
                Action::FixDirectoryPerms,
                Action::Write(ip("192.0.2.11"), dom(1)),
                Action::FixPerms(ip("192.0.2.11")),
                Action::Write(ip("192.0.2.12"), dom(2)),
                Action::FixPerms(ip("192.0.2.12")),
            ]
        );
        let open: Vec<Perm> = vec!["b0".parse().unwrap()];
        let existing = [
            Existing {
                name: "192-0-2-11".into(),
                value: Some(b"3".to_vec()),
                perms: Some(published_perms().to_vec()),
            },
            Existing {
                name: "192-0-2-12".into(),
                value: Some(b"2".to_vec()),
                perms: Some(open.clone()),
            },
            Existing {
                name: "192-0-2-99".into(),
                value: Some(b"9".to_vec()),
                perms: Some(published_perms().to_vec()),
            },
            Existing {
                name: "junk".into(),
                value: None,
                perms: None,
            },
        ];
        assert_eq!(
            plan(Some(&open), &existing, &desired),
            [
                Action::FixDirectoryPerms,
                Action::Write(ip("192.0.2.11"), dom(1)),
                Action::FixPerms(ip("192.0.2.12")),
                Action::Remove("192-0-2-99".into()),
                Action::Remove("junk".into()),
            ]
        );
    }

    // ---- the publisher against an in-memory XenStore ------------------------------------------

    /// Nodes with values and permissions, dom0's view: writes create missing parents, which
    /// inherit their parent's permissions (owner dom0), as xenstored does.
    type Nodes = BTreeMap<String, (Vec<u8>, Vec<Perm>)>;

    #[derive(Default)]
    struct Fake {
        nodes: std::sync::Mutex<Nodes>,
        writes: std::sync::atomic::AtomicUsize,
    }

    fn enoent(path: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            super::super::xenstore::XsError {
                op: super::super::xenstore::Op::Read,
                path: path.into(),
                name: "ENOENT".into(),
                errno: libc::ENOENT,
            },
        )
    }

    impl Fake {
        fn set(&self, path: &str, value: &str) {
            self.create(path, value.as_bytes());
        }
        fn create(&self, path: &str, value: &[u8]) {
            let mut n = self.nodes.lock().unwrap();
            let mut at = String::new();
            let mut inherited = vec![Perm::new(Access::None, DomId::DOM0)];
            for part in path.trim_start_matches('/').split('/') {
                at = format!("{at}/{part}");
                let e = n
                    .entry(at.clone())
                    .or_insert_with(|| (Vec::new(), inherited.clone()));
                inherited = e.1.clone();
            }
            n.get_mut(path).unwrap().0 = value.to_vec();
        }
        fn perms(&self, path: &str) -> String {
            let n = self.nodes.lock().unwrap();
            n.get(path).map(|(_, p)| perms_text(p)).unwrap_or_default()
        }
        fn children(&self, path: &str) -> Vec<String> {
            let n = self.nodes.lock().unwrap();
            let prefix = format!("{path}/");
            n.keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|k| !k.contains('/'))
                .map(String::from)
                .collect()
        }
        fn mutations(&self) -> usize {
            self.writes.load(std::sync::atomic::Ordering::Relaxed)
        }
        fn bump(&self) {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl Store for Fake {
        async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
            let n = self.nodes.lock().unwrap();
            n.get(path)
                .map(|(v, _)| v.clone())
                .ok_or_else(|| enoent(path))
        }
        async fn write(&self, path: &str, value: &[u8]) -> io::Result<()> {
            self.bump();
            self.create(path, value);
            Ok(())
        }
        async fn mkdir(&self, path: &str) -> io::Result<()> {
            self.bump();
            if !self.nodes.lock().unwrap().contains_key(path) {
                self.create(path, b"");
            }
            Ok(())
        }
        async fn rm(&self, path: &str) -> io::Result<()> {
            self.bump();
            let mut n = self.nodes.lock().unwrap();
            let prefix = format!("{path}/");
            let before = n.len();
            n.retain(|k, _| k != path && !k.starts_with(&prefix));
            if n.len() == before {
                return Err(enoent(path));
            }
            Ok(())
        }
        async fn directory(&self, path: &str) -> io::Result<Vec<String>> {
            if !self.nodes.lock().unwrap().contains_key(path) {
                return Err(enoent(path));
            }
            Ok(self.children(path))
        }
        async fn get_perms(&self, path: &str) -> io::Result<Vec<Perm>> {
            let n = self.nodes.lock().unwrap();
            n.get(path)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| enoent(path))
        }
        async fn set_perms(&self, path: &str, perms: &[Perm]) -> io::Result<()> {
            self.bump();
            let mut n = self.nodes.lock().unwrap();
            let e = n.get_mut(path).ok_or_else(|| enoent(path))?;
            e.1 = perms.to_vec();
            Ok(())
        }
    }

    fn guest(f: &Fake, domid: u16, ip: Option<&str>) {
        let vif = format!("{VIF_BACKENDS}/{domid}/0");
        f.set(&format!("/local/domain/{domid}/domid"), &domid.to_string());
        f.set(&format!("{vif}/frontend-id"), &domid.to_string());
        f.set(&format!("{vif}/mac"), "00:16:3e:00:00:0a");
        if let Some(ip) = ip {
            f.set(&format!("{vif}/ip"), ip);
        }
    }

    fn destroy(f: &Fake, domid: u16) {
        let mut n = f.nodes.lock().unwrap();
        let home = format!("/local/domain/{domid}");
        let vifs = format!("{VIF_BACKENDS}/{domid}");
        n.retain(|k, _| !k.starts_with(&home) && !k.starts_with(&vifs));
    }

    #[tokio::test]
    async fn the_publisher_publishes_read_only_entries_and_is_idempotent() {
        let f = Fake::default();
        guest(&f, 1, Some("192.0.2.11"));
        guest(&f, 2, Some("192.0.2.12"));
        guest(&f, 3, None);
        let u = sync(&f).await.unwrap();
        assert!(u.changed());
        assert_eq!(u.entries.len(), 2, "{u}");
        assert_eq!(f.read("/xway/directory/192-0-2-11").await.unwrap(), b"1");
        assert_eq!(f.read("/xway/directory/192-0-2-12").await.unwrap(), b"2");
        assert_eq!(f.perms(DIRECTORY), "r0");
        assert_eq!(f.perms("/xway/directory/192-0-2-11"), "r0");
        assert_eq!(f.perms("/xway/directory/192-0-2-12"), "r0");
        assert!(u.to_string().contains("192.0.2.11 -> dom1"), "{u}");
        assert!(u.to_string().contains("vif 3/0: no ip="), "{u}");

        let before = f.mutations();
        let again = sync(&f).await.unwrap();
        assert!(!again.changed(), "{again}");
        assert_eq!(f.mutations(), before, "a second pass writes nothing");
    }

    #[tokio::test]
    async fn the_publisher_follows_domains_and_repairs_tampering() {
        let f = Fake::default();
        guest(&f, 1, Some("192.0.2.11"));
        guest(&f, 2, Some("192.0.2.12"));
        sync(&f).await.unwrap();

        destroy(&f, 1);
        guest(&f, 4, Some("192.0.2.11"));
        f.set("/xway/directory/192-0-2-12", "9");
        f.set("/xway/directory/stray", "x");
        f.nodes.lock().unwrap().get_mut(DIRECTORY).unwrap().1 = vec!["b0".parse().unwrap()];
        let u = sync(&f).await.unwrap();
        assert_eq!(f.read("/xway/directory/192-0-2-11").await.unwrap(), b"4");
        assert_eq!(f.read("/xway/directory/192-0-2-12").await.unwrap(), b"2");
        assert_eq!(f.children(DIRECTORY), ["192-0-2-11", "192-0-2-12"]);
        assert_eq!(f.perms(DIRECTORY), "r0");
        assert_eq!(u.removed, ["stray"]);

        destroy(&f, 2);
        destroy(&f, 4);
        let u = sync(&f).await.unwrap();
        assert!(u.entries.is_empty());
        assert!(f.children(DIRECTORY).is_empty(), "stale entries removed");
        assert_eq!(
            f.perms(DIRECTORY),
            "r0",
            "the empty directory stays readable"
        );
    }

    /// A [`Fake`] whose directory listing of the vif backends fails `fail` times first.
    struct Flaky {
        inner: Fake,
        fail: std::sync::atomic::AtomicUsize,
        kind: io::ErrorKind,
    }

    impl Store for Flaky {
        async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
            self.inner.read(path).await
        }
        async fn write(&self, path: &str, value: &[u8]) -> io::Result<()> {
            self.inner.write(path, value).await
        }
        async fn mkdir(&self, path: &str) -> io::Result<()> {
            self.inner.mkdir(path).await
        }
        async fn rm(&self, path: &str) -> io::Result<()> {
            self.inner.rm(path).await
        }
        async fn directory(&self, path: &str) -> io::Result<Vec<String>> {
            use std::sync::atomic::Ordering::Relaxed;
            if path == VIF_BACKENDS
                && self
                    .fail
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(io::Error::new(self.kind, "injected"));
            }
            self.inner.directory(path).await
        }
        async fn get_perms(&self, path: &str) -> io::Result<Vec<Perm>> {
            self.inner.get_perms(path).await
        }
        async fn set_perms(&self, path: &str, perms: &[Perm]) -> io::Result<()> {
            self.inner.set_perms(path, perms).await
        }
    }

    fn flaky(fail: usize, kind: io::ErrorKind) -> Flaky {
        let inner = Fake::default();
        guest(&inner, 1, Some("192.0.2.11"));
        Flaky {
            inner,
            fail: fail.into(),
            kind,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_pass_is_retried_and_reported_but_not_forever() {
        let u = sync_retrying(&flaky(2, io::ErrorKind::TimedOut))
            .await
            .unwrap();
        assert_eq!(u.entries.len(), 1);
        assert!(u.notes.iter().any(|n| n.starts_with(RETRY_NOTE)), "{u}");

        let e = sync_retrying(&flaky(3, io::ErrorKind::TimedOut))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("3 passes failed in a row"), "{e}");

        // A lost connection is final at once.
        let lost = flaky(1, io::ErrorKind::BrokenPipe);
        assert_eq!(
            sync_retrying(&lost).await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[tokio::test]
    async fn without_xen_the_publisher_says_what_is_missing() {
        let e = run(false, &mut |_| {}).await.unwrap_err();
        assert!(e.to_string().contains("xenbus"), "{e}");
    }
}
