//! Text shared by the commands that print tables: sizes, times, columns.

/// Bytes as a short size: 512M, 1.5G.
pub fn size(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, n) in UNITS {
        if b >= n {
            let v = b as f64 / n as f64;
            return if v >= 10.0 || b & (n - 1) == 0 { format!("{v:.0}{u}") } else { format!("{v:.1}{u}") };
        }
    }
    format!("{b}B")
}

/// Rows as columns, each as wide as its widest cell.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, s)| format!("{s:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// How long ago, shortly: 42s, 5m, 3h, 2d.
pub fn ago(ms_then: u64, ms_now: u64) -> String {
    let s = ms_now.saturating_sub(ms_then) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A moment as `2026-12-01 23:40:12.345` (UTC).
pub fn utc_ms(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{milli:03}")
}

/// A moment as `2026-12-01 23:40:12` (UTC).
pub fn utc(ms: u64) -> String {
    let mut s = utc_ms(ms);
    s.truncate(s.len() - 4);
    s
}

/// A host's state, with its mode when it is not normal: "alive, draining".
pub fn host_state(h: &mosvm_host::api::HostView) -> String {
    match h.mode {
        mosvm_host::api::HostMode::Normal => h.state.as_str().into(),
        m => format!("{}, {}", h.state.as_str(), m.as_str()),
    }
}

/// An event's move: "a -> b", "a ->", "-> b" or "-".
pub fn route(e: &mosvm_host::api::Event) -> String {
    match (&e.from, &e.to) {
        (Some(f), Some(t)) => format!("{f} -> {t}"),
        (Some(f), None) => format!("{f} ->"),
        (None, Some(t)) => format!("-> {t}"),
        (None, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(utc_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_ms(951_782_400_000 + 1), "2000-02-29 00:00:00.001");
        assert_eq!(utc_ms(1_796_168_412_345), "2026-12-01 23:40:12.345");
        assert_eq!(utc_ms(4_107_542_399_999), "2100-02-28 23:59:59.999");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59");
        assert_eq!(ago(0, 5_000), "5s");
        assert_eq!(ago(0, 7_200_000), "2h");
    }

    #[test]
    fn sizes_and_tables() {
        assert_eq!(size(256 << 20), "256M");
        assert_eq!(size(3 << 29), "1.5G");
        assert_eq!(size(512), "512B");
        assert_eq!(table(&[vec!["A".into(), "BB".into()], vec!["CCC".into(), "D".into()]]), "A    BB\nCCC  D\n");
    }
}
