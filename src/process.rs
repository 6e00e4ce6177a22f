//! The process's CPU time and memory, read from `/proc` (and the cgroup filesystem) when the metrics page is
//! rendered. The module runs inside FreeSWITCH, so these are FreeSWITCH's figures, the module's share included:
//! what an operator needs to know before the box runs out. Linux only; elsewhere there are none.

/// CPU and memory of the whole process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time since the process started, in seconds.
    pub cpu_seconds: f64,
    /// CPUs the process may use: its affinity and its cgroup's CPU quota (as std's `available_parallelism` reads them).
    pub cpu_cores: u64,
    /// Resident memory (`VmRSS`), bytes.
    pub resident_bytes: u64,
    /// What the process may use: the tightest cgroup memory limit on its path (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`), else the machine's memory (`MemTotal`); never more than `MemTotal`.
    pub memory_limit_bytes: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times. `USER_HZ` is 100 on every Linux architecture that
/// FreeSWITCH runs on (it is part of the kernel's ABI; Prometheus's procfs library assumes the same), and reading it
/// with `sysconf` would need `unsafe` for no gain.
const USER_HZ: f64 = 100.0;

/// This process's figures, or `None` off Linux or when `/proc` cannot be read.
pub fn read() -> Option<ProcessFigures> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let total = kib_field(&meminfo, "MemTotal:")? * 1024;
    let limit = cgroup_memory_limit(&cgroups, |path| std::fs::read_to_string(path).ok());
    Some(ProcessFigures {
        cpu_seconds: cpu_ticks(&stat)? as f64 / USER_HZ,
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        resident_bytes: kib_field(&status, "VmRSS:")? * 1024,
        memory_limit_bytes: limit.map_or(total, |l| l.min(total)),
    })
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`, in clock ticks. The command name (field 2) may hold
/// spaces and parentheses: the fields are counted from its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Name:   1234 kB` line's number.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The tightest memory limit on this process's cgroup path and its ancestors (limits nest), `None` when none is
/// set. `read` reads a file of the cgroup filesystem.
fn cgroup_memory_limit(cgroups: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut tightest: Option<u64> = None;
    for line in cgroups.lines() {
        // `hierarchy-id:controllers:path`; v2 is `0::path`, v1's memory controller `N:memory:path`.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // v2 is mounted at /sys/fs/cgroup, or at /sys/fs/cgroup/unified beside v1 (hybrid systems).
        let (roots, file): (&[&str], _) = if controllers.is_empty() {
            (&["/sys/fs/cgroup", "/sys/fs/cgroup/unified"], "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (&["/sys/fs/cgroup/memory"], "memory.limit_in_bytes")
        } else {
            continue;
        };
        for root in roots {
            let mut dir = path.trim_end_matches('/');
            loop {
                let value = read(&format!("{root}{dir}/{file}"));
                // "max" (v2) is no limit; v1 says so with a huge number, which `MemTotal` caps anyway.
                if let Some(limit) = value.and_then(|v| v.trim().parse::<u64>().ok()) {
                    tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
                }
                match dir.rfind('/') {
                    Some(i) => dir = &dir[..i],
                    None => break,
                }
            }
        }
    }
    tightest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cpu_time_is_counted_after_the_command_name() {
        let stat = "4242 (free switch (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 40 0 1000 \
                    2000000 500 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn memory_fields_are_read_in_kib() {
        assert_eq!(
            kib_field("Name:\tx\nVmRSS:\t  123456 kB\n", "VmRSS:"),
            Some(123456)
        );
        assert_eq!(kib_field("VmSize: 1 kB\n", "VmRSS:"), None);
    }

    #[test]
    fn the_tightest_cgroup_limit_on_the_path_counts() {
        let files: HashMap<&str, &str> = [
            (
                "/sys/fs/cgroup/system.slice/freeswitch.service/memory.max",
                "max\n",
            ),
            ("/sys/fs/cgroup/system.slice/memory.max", "2147483648\n"),
            ("/sys/fs/cgroup/memory.max", "max\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        assert_eq!(
            cgroup_memory_limit("0::/system.slice/freeswitch.service\n", read),
            Some(2_147_483_648)
        );
        assert_eq!(cgroup_memory_limit("0::/\n", read), None);
        let v1: HashMap<&str, &str> = [(
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
            "1073741824",
        )]
        .into_iter()
        .collect();
        assert_eq!(
            cgroup_memory_limit("5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n", |p| {
                v1.get(p).map(|s| s.to_string())
            }),
            Some(1_073_741_824)
        );
    }

    #[test]
    fn this_process_is_read_on_linux() {
        let read = read();
        if !cfg!(target_os = "linux") {
            assert_eq!(read, None);
            return;
        }
        let p = read.expect("/proc is readable on Linux");
        assert!(
            p.resident_bytes > 0 && p.resident_bytes <= p.memory_limit_bytes,
            "{p:?}"
        );
        assert!(p.cpu_cores >= 1 && p.cpu_seconds >= 0.0, "{p:?}");
    }
}
