//! CPU time and memory of a child process, read from `/proc` while it runs.

use std::time::Duration;

/// Resource usage of a live process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU time of all its threads.
    pub cpu: Duration,
    /// Current resident set (`VmRSS`), bytes.
    pub rss: u64,
    /// Peak resident set so far (`VmHWM`), bytes.
    pub peak_rss: u64,
    /// Voluntary + involuntary context switches of all its threads still alive.
    pub context_switches: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t: &u64| *t > 0)
        .unwrap_or(100)
}

/// Usage of `pid`, or `None` when it has exited or `/proc` is unreadable.
pub fn usage(pid: u32, ticks_per_second: u64) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 of proc(5) is fields[0]; utime is field 14 and stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let cpu =
        Duration::from_nanos((utime + stime).saturating_mul(1_000_000_000) / ticks_per_second);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Usage {
        cpu,
        rss: kib("VmRSS:")? * 1024,
        peak_rss: kib("VmHWM:")? * 1024,
        context_switches: context_switches(pid),
    })
}

fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let u = usage(std::process::id(), clock_ticks()).unwrap_or_else(|| unreachable!());
        assert!(u.rss > 0 && u.peak_rss >= u.rss);
    }
}
