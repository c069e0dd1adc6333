//! Operating-system probes (CPU time, context switches, affinity, limits) and statistics.

use std::mem::MaybeUninit;

/// Whose counters to read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Who {
    /// This process (the measuring client).
    Me,
    /// The server child.
    Pid(u32),
}

/// CPU time (user + system, all threads) in nanoseconds, from the process's CPU-time clock
/// (`clock_getcpuclockid` for the child); `/proc/<pid>/stat` ticks as a fallback.
pub(crate) fn cpu_ns(who: Who) -> Option<u64> {
    let clock = match who {
        Who::Me => libc::CLOCK_PROCESS_CPUTIME_ID,
        Who::Pid(pid) => {
            let mut id: libc::clockid_t = 0;
            // SAFETY: `id` is a valid out-pointer for the duration of the call.
            if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) } != 0 {
                return cpu_ns_from_proc(pid);
            }
            id
        }
    };
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is a valid out-pointer; it is read only if the call succeeded.
    if unsafe { libc::clock_gettime(clock, ts.as_mut_ptr()) } != 0 {
        return match who {
            Who::Pid(pid) => cpu_ns_from_proc(pid),
            Who::Me => None,
        };
    }
    // SAFETY: `clock_gettime` returned 0, so it filled `ts`.
    let ts = unsafe { ts.assume_init() };
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn cpu_ns_from_proc(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// Voluntary + involuntary context switches of the process's main thread (where both
/// current-thread runtimes do all their work).
pub(crate) fn ctxsw(who: Who) -> Option<u64> {
    let path = match who {
        Who::Me => "/proc/thread-self/status".to_owned(),
        Who::Pid(pid) => format!("/proc/{pid}/status"),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let mut sum = 0;
    for line in status.lines() {
        if let Some(v) = line
            .strip_prefix("voluntary_ctxt_switches:")
            .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        {
            sum += v.trim().parse::<u64>().ok()?;
        }
    }
    Some(sum)
}

/// A before/after snapshot of both processes' CPU time and context switches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    pub(crate) cpu_me: Option<u64>,
    pub(crate) cpu_child: Option<u64>,
    pub(crate) cs_me: Option<u64>,
    pub(crate) cs_child: Option<u64>,
}

impl Usage {
    pub(crate) fn now(child: u32) -> Usage {
        Usage {
            cpu_me: cpu_ns(Who::Me),
            cpu_child: cpu_ns(Who::Pid(child)),
            cs_me: ctxsw(Who::Me),
            cs_child: ctxsw(Who::Pid(child)),
        }
    }

    /// `later - self`, per field.
    pub(crate) fn delta(&self, later: &Usage) -> Usage {
        let d = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        Usage {
            cpu_me: d(self.cpu_me, later.cpu_me),
            cpu_child: d(self.cpu_child, later.cpu_child),
            cs_me: d(self.cs_me, later.cs_me),
            cs_child: d(self.cs_child, later.cs_child),
        }
    }

    /// `self + other`, per field: the usage of several timed blocks added up.
    pub(crate) fn plus(&self, other: &Usage) -> Usage {
        let s = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        Usage {
            cpu_me: s(self.cpu_me, other.cpu_me),
            cpu_child: s(self.cpu_child, other.cpu_child),
            cs_me: s(self.cs_me, other.cs_me),
            cs_child: s(self.cs_child, other.cs_child),
        }
    }

    pub(crate) fn cpu_secs(&self) -> Option<(f64, f64)> {
        Some((self.cpu_me? as f64 / 1e9, self.cpu_child? as f64 / 1e9))
    }

    pub(crate) fn ctxsw_total(&self) -> Option<f64> {
        Some((self.cs_me? + self.cs_child?) as f64)
    }
}

// ---- placement and limits ---------------------------------------------------------------------

/// The CPU a process last ran on (`/proc/<pid>/stat`, field 39), or this thread's.
pub(crate) fn last_cpu(who: Who) -> Option<usize> {
    match who {
        Who::Me => {
            // SAFETY: sched_getcpu has no preconditions.
            usize::try_from(unsafe { libc::sched_getcpu() }).ok()
        }
        Who::Pid(pid) => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command name start with field 3.
            stat[stat.rfind(')')? + 2..]
                .split_whitespace()
                .nth(36)?
                .parse()
                .ok()
        }
    }
}

/// The CPUs this thread may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match get_affinity() {
        Some(set) => (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `i` is below CPU_SETSIZE, the size of `set`.
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
            .collect(),
        None => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// The calling thread's affinity mask.
pub(crate) fn get_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (rc == 0).then_some(set)
}

/// Sets the calling thread's affinity mask.
pub(crate) fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if rc != 0 {
        eprintln!(
            "xway-bench: sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Pins the calling thread (the runtime's only thread) to one CPU.
pub(crate) fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu < libc::CPU_SETSIZE as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set_affinity(&set);
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (1,000 connections need a few thousand
/// descriptors per process).
pub(crate) fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---- statistics -------------------------------------------------------------------------------

/// The `q` quantile (nearest rank) of sorted samples.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of the finite values, if any.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

// ---- the machine ------------------------------------------------------------------------------

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` prints them.
pub(crate) fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// One line describing this machine, for the report.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / (1024.0 * 1024.0))
        })
        .unwrap_or(0.0);
    let idle = std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver")
        .map(|s| format!(", cpuidle {}", s.trim()))
        .unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {mem_gib:.0} GiB, Linux {}{idle}",
        kernel.trim()
    )
}
