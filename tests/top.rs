//! `mosvm top` against three emulated hosts: the plain snapshot (stdout
//! not a terminal, and `--once`) names every host and every job and shows
//! the move made; `--json` is a `ClusterView`; on a terminal (in tmux, if
//! installed) it draws the hosts, sorts on `s`, quits on `q` or SIGTERM
//! and leaves the terminal as it found it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mosvm_host::api::{ClusterView, EventKind, JobState};
use mosvm_tests::emulated::{wait_until, Cluster, Host};
use mosvm_tests::{image, mosvm_bin, require_kvm, run_command, Opts, Run};

/// `mosvm ARGS --sock SOCK` at host `h`.
fn at(h: &Host, args: &[&str]) -> Run {
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(args).arg("--sock").arg(&h.sock);
    run_command(cmd, &Opts::default())
}

/// A detached CPU-bound job at `h` that ends by itself within `secs`
/// (should the test fail before it kills it); returns its id.
fn submit(h: &Host, secs: u32) -> u64 {
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(["run", "-d", "--mem", "64M", "--"]).arg(image("cpu")).args(["--seconds", &secs.to_string()]);
    let sock = h.sock.to_str().unwrap();
    let r = run_command(cmd, &Opts { env: vec![("MOSVM_SOCK", sock)], cwd: Some(Path::new("/")), ..Opts::default() });
    assert_eq!(r.status, 0, "run -d at {}: {r:?}", h.name);
    r.stdout.trim().parse().unwrap_or_else(|_| panic!("run -d prints the job id: {:?}", r.stdout))
}

/// Kills the jobs it holds when dropped, failed test or not: detached
/// jobs outlive their daemons.
struct Jobs<'a>(Vec<(&'a Host, u64)>);

impl Drop for Jobs<'_> {
    fn drop(&mut self) {
        for (h, id) in &self.0 {
            let _ = at(h, &["kill", "-s", "KILL", &id.to_string()]);
        }
    }
}

fn cluster_json(h: &Host) -> ClusterView {
    let r = at(h, &["top", "--json"]);
    assert_eq!(r.status, 0, "top --json: {r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "one JSON object: {:?}", r.stdout);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("top --json {:?}: {e}", r.stdout))
}

/// The lines of a snapshot's section, after its title, up to a blank line.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    let start = text.lines().position(|l| l.starts_with(title)).unwrap_or_else(|| panic!("no {title} in:\n{text}"));
    text.lines().skip(start + 1).take_while(|l| !l.is_empty()).collect()
}

fn first_words<'a>(lines: &[&'a str]) -> BTreeSet<&'a str> {
    lines.iter().skip(1).filter_map(|l| l.split_whitespace().next()).collect()
}

#[test]
fn top_shows_every_host_job_and_move() {
    if !require_kvm("top_shows_every_host_job_and_move") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let c = Cluster::start("top", 3);
    c.wait_all_alive(Duration::from_secs(10));
    let (h2, h3) = (&c.hosts[0], &c.hosts[1]);
    let mut jobs = Jobs(Vec::new());
    let a = submit(h2, 120);
    jobs.0.push((h2, a));
    let b = submit(h3, 120);
    jobs.0.push((h3, b));
    // A job can move once its deputy has filled in its record.
    h2.wait_started(a);
    let r = at(h2, &["migrate", &a.to_string(), "--to", "h4", "--json"]);
    assert_eq!(r.status, 0, "migrate {a} to h4: {r:?}\n{}", c.dump());
    let want: BTreeSet<String> = [format!("h2-{a}"), format!("h3-{b}")].into();

    // h3's jobs come from h3's answer: wait until it is in.
    let mut view = None;
    wait_until("the cluster view at h2 to hold both jobs and the move", Duration::from_secs(10), || {
        let v = cluster_json(h2);
        let have: BTreeSet<String> = v.jobs.iter().map(|j| format!("{}-{}", j.home, j.id)).collect();
        let ok = have == want && v.unanswered.is_empty() && !v.moves.is_empty();
        view = Some(v);
        ok
    });
    let v = view.unwrap();
    let names: BTreeSet<&str> = v.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["h2", "h3", "h4"].into(), "{v:?}");
    assert_eq!(v.hosts.iter().filter(|h| h.local).map(|h| h.name.as_str()).collect::<Vec<_>>(), ["h2"]);
    let moved = v.jobs.iter().find(|j| j.home == "h2").unwrap();
    assert_eq!((moved.host.as_str(), moved.state, moved.moves), ("h4", JobState::Running, 1), "{moved:?}");
    let m = &v.moves[0];
    assert_eq!((m.kind, m.job.as_deref()), (EventKind::Moved, Some(format!("h2-{a}").as_str())), "{:?}", v.moves);

    // Not a terminal: one plain snapshot, with or without --once.
    for args in [&["top"][..], &["top", "--once", "--sort", "memory"]] {
        let r = at(h2, args);
        assert_eq!(r.status, 0, "{args:?}: {r:?}");
        let text = &r.stdout;
        eprintln!("mosvm {}:\n{text}", args.join(" "));
        assert!(text.starts_with("mosvm top at h2: 3 hosts (3 alive), 2 jobs"), "{text}");
        let hosts = section(text, "HOSTS");
        assert_eq!(first_words(&hosts), ["h2", "h3", "h4"].into(), "{text}");
        let local = hosts.iter().find(|l| l.starts_with("h2 *")).unwrap_or_else(|| panic!("h2 starred:\n{text}"));
        assert!(local.contains("alive") && local.contains("] "), "a load bar at h2: {local}");
        let job_lines = section(text, "JOBS");
        let shown: BTreeSet<String> = first_words(&job_lines).into_iter().map(String::from).collect();
        assert_eq!(shown, want, "{text}");
        let line = job_lines.iter().find(|l| l.starts_with(&format!("h2-{a} "))).unwrap();
        assert_eq!(
            line.split_whitespace().take(5).collect::<Vec<_>>(),
            [&format!("h2-{a}"), "cpu", "h2", "h4", "running"]
        );
        let moves = section(text, "MOVES");
        assert!(
            moves.iter().any(|l| l.contains(&format!("h2-{a}")) && l.contains("h2 -> h4") && l.contains("moved")),
            "{text}"
        );
    }

    // Exit statuses: the daemon unreachable, bad usage.
    let gone = c.base.join("no-daemon.sock");
    let r = run_command(
        {
            let mut cmd = Command::new(mosvm_bin());
            cmd.args(["top", "--once", "--sock"]).arg(&gone);
            cmd
        },
        &Opts::default(),
    );
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("cannot reach the mosvm host daemon"), "{}", r.stderr);
    for bad in [&["top", "--interval", "0"][..], &["top", "--sort", "size"], &["top", "--bogus"]] {
        assert_eq!(at(h2, bad).status, 2, "{bad:?}");
    }

    if let Some(tmux) = Tmux::new(&c.base) {
        on_a_terminal(&tmux, h2, &format!("h2-{a}"));
    } else {
        eprintln!("*** SKIPPED the terminal part of top_shows_every_host_job_and_move: tmux is not installed ***");
    }
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Option<Tmux> {
        let found = Command::new("sh").args(["-c", "command -v tmux"]).output().ok()?;
        found.status.success().then(|| Tmux { socket: dir.join("tmux.sock") })
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(args);
        run_command(cmd, &Opts::default())
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.status, 0, "tmux {args:?}: {r:?}");
        r.stdout
    }

    fn screen(&self, pane: &str) -> String {
        self.ok(&["capture-pane", "-p", "-t", pane])
    }

    fn alternate(&self, pane: &str) -> bool {
        self.ok(&["display-message", "-p", "-t", pane, "#{alternate_on}"]).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

fn on_a_terminal(tmux: &Tmux, h: &Host, moved: &str) {
    let dir = h.state_dir.parent().unwrap();
    let sock = h.sock.to_str().unwrap();
    let bin = mosvm_bin();
    // A shell that notes the terminal's settings before and after top and
    // top's exit status, then stays so the pane can be read.
    for (pane, quit) in [("keys", "q"), ("term", "SIGTERM")] {
        let (before, after, rc) =
            (dir.join(format!("{pane}.before")), dir.join(format!("{pane}.after")), dir.join(format!("{pane}.rc")));
        let script = format!(
            "stty -g > {before}; {bin} top --sock {sock}; echo $? > {rc}; stty -g > {after}; sleep 600",
            before = before.display(),
            after = after.display(),
            rc = rc.display(),
            bin = bin.display(),
        );
        tmux.ok(&["new-session", "-d", "-s", pane, "-x", "150", "-y", "40", "sh", "-c", &script]);
        let mut screen = String::new();
        wait_until(&format!("top to draw in tmux ({pane})"), Duration::from_secs(10), || {
            screen = tmux.screen(pane);
            screen.contains("Hosts (3)") && screen.contains(moved)
        });
        for name in ["h2 *", "h3", "h4", "Jobs (2, by home)", "Latest moves", "q quit"] {
            assert!(screen.contains(name), "{name:?} not on the screen:\n{screen}");
        }
        assert!(tmux.alternate(pane), "top draws on the alternate screen");
        // Refreshed: the clock in the corner moves on.
        std::thread::sleep(Duration::from_millis(2000));
        let later = tmux.screen(pane);
        eprintln!("top in tmux ({pane}):\n{later}");
        assert_ne!(later.lines().next(), screen.lines().next(), "not refreshed:\n{later}");

        if quit == "q" {
            tmux.ok(&["send-keys", "-t", pane, "s"]);
            wait_until("s to sort by host", Duration::from_secs(5), || tmux.screen(pane).contains("Jobs (2, by host)"));
            tmux.ok(&["send-keys", "-t", pane, "q"]);
        } else {
            let shell: u32 = tmux.ok(&["display-message", "-p", "-t", pane, "#{pane_pid}"]).trim().parse().unwrap();
            let top = children(shell);
            assert_eq!(top.len(), 1, "the pane's shell runs top alone: {top:?}");
            // SAFETY: plain kill(2) of the top process this test started.
            unsafe { libc::kill(top[0] as i32, libc::SIGTERM) };
        }
        // The shell creates the file before stty writes it.
        wait_until(&format!("top to exit on {quit}"), Duration::from_secs(5), || {
            std::fs::read_to_string(&after).is_ok_and(|s| s.ends_with('\n'))
        });
        assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0", "top's exit status on {quit}");
        assert_eq!(
            std::fs::read_to_string(&before).unwrap(),
            std::fs::read_to_string(&after).unwrap(),
            "the terminal's settings after {quit} (raw mode left)"
        );
        assert!(!tmux.alternate(pane), "the alternate screen left after {quit}");
        tmux.ok(&["kill-session", "-t", pane]);
    }
}
