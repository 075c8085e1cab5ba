//! What the daemon reads about its jobs' deputy processes from /proc.

/// Fields of /proc/PID/stat after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

// Indices into `stat_fields` (field 3 of proc(5) is index 0).
const UTIME: usize = 11;
const STIME: usize = 12;
const STARTTIME: usize = 19;

/// When the process started, in clock ticks after boot: with the pid it
/// names one process, never a later one that reused the pid.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(STARTTIME)?.parse().ok()
}

/// User plus system CPU time of the whole process, in milliseconds.
pub fn cpu_ms(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    let ticks: u64 = f.get(UTIME)?.parse::<u64>().ok()? + f.get(STIME)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks * 1000 / hz as u64)
}

/// True if the process `pid` exists and, when `start` is known, is the one
/// that started then.
pub fn alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else { return false };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists =
        unsafe { libc::kill(p, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match (start, start_time(pid)) {
        (Some(want), Some(now)) => want == now,
        // /proc hidden from us: the pid exists, which is all we can tell.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(alive(me, Some(start)));
        assert!(!alive(me, Some(start + 1)));
        assert!(cpu_ms(me).is_some());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid, None));
        assert!(!alive(0, None));
        assert!(!alive(u32::MAX, None));
    }
}
