//! Prometheus metrics of the daemons (`mosvm host --metrics`): the
//! exposition parses, its job counts match `ps`, a move shows in the move
//! counters and histograms, a body away from home reports its site calls,
//! and a job's control socket tells how its move is going (`/progress`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mosvm_host::api::{JobView, MovePhase, MoveProgress, SiteStats};
use mosvm_tests::emulated::{wait_until, Cluster, Host, Options};
use mosvm_tests::{image, mosvm_bin, require_kvm, run_command, Opts};

// ---- the exposition, parsed ----

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name -> (type, help).
    families: HashMap<String, (String, Option<String>)>,
    samples: Vec<Sample>,
}

/// Reads a label block `{k="v",...}` from the start of `s`; the labels
/// and what follows it.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let key = &rest[..eq];
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut chars = rest[eq + 1..].strip_prefix('"').ok_or("an unquoted label value")?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &rest[eq + 1..][1 + end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|e| format!("value {v:?}: {e}")),
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &str, families: &'a HashMap<String, (String, Option<String>)>) -> Option<&'a str> {
    let suffixes: &[&str] = &["", "_total", "_created", "_bucket", "_count", "_sum", "_info"];
    suffixes.iter().find_map(|s| {
        let base = name.strip_suffix(s)?;
        let (fam, (ty, _)) = families.get_key_value(base)?;
        let fits = match ty.as_str() {
            "counter" => ["_total", "_created"].contains(s),
            "histogram" => ["_bucket", "_count", "_sum", "_created"].contains(s),
            "info" => *s == "_info",
            _ => s.is_empty(),
        };
        fits.then_some(fam.as_str())
    })
}

fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if eof {
            return Err(at("after # EOF".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (word, rest) = rest.split_once(' ').ok_or_else(|| at("a bare comment".into()))?;
            let (name, arg) = rest.split_once(' ').ok_or_else(|| at("no argument".into()))?;
            if !valid_name(name) {
                return Err(at(format!("bad name {name:?}")));
            }
            match word {
                "HELP" => {
                    helps.insert(name.into(), arg.into());
                }
                "TYPE" => {
                    let known = ["counter", "gauge", "histogram", "summary", "info", "stateset", "unknown"];
                    if !known.contains(&arg) {
                        return Err(at(format!("unknown type {arg:?}")));
                    }
                    if e.families.insert(name.into(), (arg.into(), None)).is_some() {
                        return Err(at("a family declared twice".into()));
                    }
                }
                "UNIT" => {
                    if !name.ends_with(&format!("_{arg}")) {
                        return Err(at("a unit not in the name".into()));
                    }
                }
                _ => return Err(at(format!("unknown comment {word:?}"))),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut parts = rest.strip_prefix(' ').ok_or_else(|| at("no space before the value".into()))?.split(' ');
        let value = parse_value(parts.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = parts.next() {
            ts.parse::<f64>().map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if parts.next().is_some() {
            return Err(at("more after the timestamp".into()));
        }
        if family_of(name, &e.families).is_none() {
            return Err(at(format!("{name} has no TYPE before it")));
        }
        e.samples.push(Sample { name: name.into(), labels, value });
    }
    if !eof {
        return Err("no # EOF at the end".into());
    }
    for (name, (_, help)) in e.families.iter_mut() {
        *help = helps.remove(name);
        if help.as_deref().is_none_or(str::is_empty) {
            return Err(format!("{name} has no HELP"));
        }
    }
    Ok(e)
}

impl Exposition {
    /// The one sample `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in the exposition"))
    }

    fn with_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

#[test]
fn the_parser_reads_what_it_should_and_refuses_the_rest() {
    let ok = "# HELP a things\n# TYPE a counter\na_total{x=\"q\\\"\\\\\",y=\"\"} 3\n# HELP h_seconds t\n# TYPE h_seconds histogram\n# UNIT h_seconds seconds\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_count 1\nh_seconds_sum 0.5\n# EOF\n";
    let e = parse(ok).unwrap();
    assert_eq!(e.value("a_total", &[("x", "q\"\\"), ("y", "")]), 3.0);
    assert_eq!(e.value("h_seconds_sum", &[]), 0.5);
    for bad in [
        "a 1\n# EOF\n",                                  // no TYPE
        "# TYPE a gauge\na 1\n# EOF\n",                  // no HELP
        "# HELP a x\n# TYPE a gauge\na one\n# EOF\n",    // bad value
        "# HELP a x\n# TYPE a gauge\na{b=c} 1\n# EOF\n", // unquoted
        "# HELP a x\n# TYPE a gauge\na 1\n",             // no EOF
        "# HELP a x\n# TYPE a counter\na 1\n# EOF\n",    // counter sample without _total
    ] {
        assert!(parse(bad).is_err(), "{bad:?} parsed");
    }
}

// ---- talking to the daemons and jobs ----

/// A plain HTTP/1.0 GET; the status and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    split_response(&raw)
}

fn split_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// The job's control socket, asked `GET path`.
fn control_get(sock: &Path, path: &str) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: mosvm\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Some(split_response(&raw))
}

fn metrics_addr(h: &Host) -> String {
    h.ready.as_ref().and_then(|r| r.metrics.clone()).expect("--metrics gives the bound address in the ready line")
}

fn scrape(h: &Host) -> Exposition {
    let t = Instant::now();
    let (status, body) = http_get(&metrics_addr(h), "/metrics");
    assert_eq!(status, 200, "GET /metrics at {}: {body}", h.name);
    assert!(t.elapsed() < Duration::from_secs(5), "a scrape took {:?}", t.elapsed());
    parse(&body).unwrap_or_else(|e| panic!("the exposition of {} does not parse: {e}\n{body}", h.name))
}

/// `mosvm ARGS --sock SOCK` at host `h`.
fn at(h: &Host, args: &[&str]) -> mosvm_tests::Run {
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(args).arg("--sock").arg(&h.sock);
    run_command(cmd, &Opts::default())
}

/// Starts a detached job at `h` in `cwd`: `mosvm run -d --stay [flags] -- PROG ARGS`.
fn submit(h: &Host, cwd: &Path, flags: &[&str], prog: &str, args: &[&str]) -> u64 {
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(["run", "-d", "--stay"]).args(flags).arg("--").arg(image(prog)).args(args);
    let sock = h.sock.to_str().unwrap();
    let r = run_command(cmd, &Opts { env: vec![("MOSVM_SOCK", sock)], cwd: Some(cwd), ..Opts::default() });
    assert_eq!(r.status, 0, "run -d at {}: {r:?}", h.name);
    r.stdout.trim().parse().unwrap_or_else(|_| panic!("run -d prints the job id: {:?}", r.stdout))
}

fn job(h: &Host, id: u64) -> JobView {
    h.ps(true).into_iter().find(|j| j.id == id).unwrap_or_else(|| panic!("no job {id} at {}", h.name))
}

fn control_sock(h: &Host, id: u64) -> PathBuf {
    let mut sock = None;
    wait_until(&format!("job {id}'s control socket"), Duration::from_secs(10), || {
        sock = job(h, id).control_sock.map(PathBuf::from).filter(|p| p.exists());
        sock.is_some()
    });
    sock.unwrap()
}

fn migrate(h: &Host, id: u64, to: &str) -> serde_json::Value {
    let r = at(h, &["migrate", &id.to_string(), "--to", to, "--json"]);
    assert_eq!(r.status, 0, "migrate {id} --to {to}: {r:?}");
    serde_json::from_str(r.stdout.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("migrate --json: {e}; {r:?}"))
}

/// Job counts by state, as `ps --all --json` says.
fn counts(jobs: &[JobView]) -> BTreeMap<&'static str, f64> {
    let mut n: BTreeMap<&'static str, f64> =
        ["running", "moving", "exited", "lost"].into_iter().map(|s| (s, 0.0)).collect();
    for j in jobs {
        *n.get_mut(j.state.as_str()).unwrap() += 1.0;
    }
    n
}

fn jobs_by_state(e: &Exposition) -> BTreeMap<&'static str, f64> {
    ["running", "moving", "exited", "lost"].into_iter().map(|s| (s, e.value("mosvm_jobs", &[("state", s)]))).collect()
}

/// What a move adds to, at the home that moved it (`why` operator).
fn move_figures(e: &Exposition) -> [f64; 5] {
    let op = [("why", "operator")];
    [
        e.value("mosvm_moves_out_total", &op),
        e.value("mosvm_home_moves_total", &[("why", "operator"), ("result", "done")]),
        e.value("mosvm_move_duration_seconds_count", &[]),
        e.value("mosvm_move_downtime_seconds_count", &[]),
        e.value("mosvm_move_pages_sent_total", &[]),
    ]
}

/// The histogram `name` with labels `labels`: its buckets rise to +Inf,
/// which is its count.
fn check_histogram(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    let count = e.value(&format!("{name}_count"), labels);
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut buckets: Vec<(f64, f64)> = e
        .with_name(&format!("{name}_bucket"))
        .filter(|s| {
            s.labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>()
                == want
        })
        .map(|s| (parse_value(&s.labels["le"]).unwrap(), s.value))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 2, "{name}{labels:?} has buckets");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{name}{labels:?}: buckets go down: {buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count), "{name}{labels:?}: +Inf is the count");
    assert!(e.value(&format!("{name}_sum"), labels) >= 0.0);
    count
}

const FOREVER: &str = "100000000";

#[test]
fn metrics_follow_jobs_moves_and_site_calls() {
    if !require_kvm("metrics_follow_jobs_moves_and_site_calls") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let c = Cluster::start_with("metrics", 2, &Options { metrics: true, ..Options::default() });
    c.wait_all_alive(Duration::from_secs(10));
    let (a, b) = (&c.hosts[0], &c.hosts[1]);

    // Only /metrics is served.
    let (status, _) = http_get(&metrics_addr(a), "/nothing");
    assert_eq!(status, 404);

    // The balancer publishes its view within about a second.
    let mut e = scrape(a);
    wait_until("the load to show", Duration::from_secs(10), || {
        e = scrape(a);
        e.get("mosvm_capacity_cpus", &[]).is_some()
    });
    assert!(e.value("mosvm_capacity_cpus", &[]) > 0.0);
    assert!(e.get("mosvm_load_exported", &[]).is_some() && e.get("mosvm_runnable_threads", &[]).is_some());
    assert!(e.get("mosvm_load_raw", &[]).is_some(), "the raw load");
    assert_eq!(e.value("mosvm_hosts", &[("state", "alive")]), 2.0);
    assert_eq!(e.value("mosvm_host_mode", &[("mode", "normal")]), 1.0);
    assert_eq!(e.value("mosvm_host_mode", &[("mode", "draining")]), 0.0);
    assert_eq!(e.value("mosvm_bodies", &[]), 0.0);
    assert!(e.get("mosvm_balancer_gossip_sent_total", &[]).is_some(), "balancer counters");
    assert!(e.get("mosvm_host_failures_total", &[]) == Some(0.0));

    // Jobs: two that end, three that run (pinned: the balancer leaves
    // them where the test puts them).
    let dir = c.base.join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let input: String = (1..=2000).map(|i| format!("input line {i}\n")).collect();
    std::fs::write(dir.join("in.txt"), input).unwrap();
    let ended = [submit(a, &dir, &[], "hello", &[]), submit(a, &dir, &[], "crash", &[])];
    let homework = submit(a, &dir, &["--mem", "64M"], "tests/homework", &["in.txt", "out.txt", FOREVER]);
    let mem = submit(a, &dir, &["--mem", "256M"], "mem", &["128", "1", "--seconds", "600"]);
    let cpu = submit(a, &dir, &["--mem", "64M"], "cpu", &["--seconds", "600"]);
    wait_until("two jobs to end", Duration::from_secs(20), || ended.iter().all(|&id| job(a, id).state.ended()));

    // The job counts are the records': scrape and ps agree (again if a
    // job changed state in between).
    let mut tries = 0;
    loop {
        let e = scrape(a);
        let ps = a.ps(true);
        let (m, p) = (jobs_by_state(&e), counts(&ps));
        if m == p {
            assert_eq!((p["running"], p["exited"]), (3.0, 2.0), "{ps:?}");
            break;
        }
        tries += 1;
        assert!(tries < 5, "metrics say {m:?}, ps says {p:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The mem job's control socket: no move, no remote calls at home.
    let mem_sock = control_sock(a, mem);
    let _ = control_sock(a, homework);
    let (status, body) = control_get(&mem_sock, "/progress").expect("the control socket answers");
    assert_eq!((status, serde_json::from_str::<Option<MoveProgress>>(&body).unwrap()), (200, None), "{body}");
    let (status, body) = control_get(&mem_sock, "/stats").unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<SiteStats>(&body).unwrap(), SiteStats::default(), "{body}");
    // It has touched its 128 MiB before it moves.
    wait_until("mem to fill its memory", Duration::from_secs(30), || {
        at(a, &["logs", &mem.to_string()]).stdout.contains("allocated")
    });
    std::thread::sleep(Duration::from_millis(500));

    let before_a = move_figures(&scrape(a));
    let moved_in = |e: &Exposition| e.value("mosvm_moves_in_total", &[("why", "operator")]);
    let before_b = moved_in(&scrape(b));

    // A move capped at 100 MB/s takes over a second: its progress shows.
    let mover = {
        let (sock, id) = (a.sock.clone(), mem.to_string());
        std::thread::spawn(move || {
            let mut cmd = Command::new(mosvm_bin());
            cmd.args(["migrate", &id, "--to", "h3", "--json", "--max-bandwidth", "100", "--sock"]).arg(sock);
            run_command(cmd, &Opts::default())
        })
    };
    let mut seen: Vec<MoveProgress> = Vec::new();
    while !mover.is_finished() {
        if let Some((200, body)) = control_get(&mem_sock, "/progress") {
            let p: Option<MoveProgress> =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("/progress {body:?}: {e}"));
            seen.extend(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = mover.join().unwrap();
    assert_eq!(r.status, 0, "{r:?}\n{}", c.dump());
    let figures: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    let copying: Vec<&MoveProgress> = seen.iter().filter(|p| p.phase == MovePhase::Copying && p.round == 1).collect();
    assert!(copying.len() >= 3, "the first round seen a few times: {seen:?}");
    for p in &seen {
        assert!(p.round_sent <= p.round_pages && !p.to.is_empty() && p.elapsed_ms >= 0.0, "{p:?}");
    }
    let first = copying[0];
    assert!(first.resident_pages >= (128 << 20) / 4096, "128 MiB resident: {first:?}");
    assert_eq!(first.round_pages, first.resident_pages, "round 1 carries the resident pages");
    assert!(seen.windows(2).all(|w| w[0].bytes_sent <= w[1].bytes_sent && w[0].pages_sent <= w[1].pages_sent));
    let last = seen.last().unwrap();
    assert!(last.bytes_sent > 0 && last.rate_mbps > 0.0 && last.rate_mbps < 250.0, "{last:?}");
    assert!(last.bytes_sent as f64 <= figures["bytes_sent"].as_f64().unwrap(), "{last:?} vs {figures}");

    // The homework job moves too, and does its file I/O from over there.
    let v = migrate(a, homework, "h3");
    assert_eq!(v["result"], "ok", "{v}");
    assert_eq!(job(a, homework).host, "h3");

    let after_a = move_figures(&scrape(a));
    for (i, what) in ["moves out", "home moves done", "duration count", "downtime count"].iter().enumerate() {
        assert_eq!(after_a[i], before_a[i] + 2.0, "{what}: {before_a:?} -> {after_a:?}");
    }
    assert!(after_a[4] >= before_a[4] + (128 << 20) as f64 / 4096.0, "pages sent: {before_a:?} -> {after_a:?}");
    let e = scrape(a);
    check_histogram(&e, "mosvm_move_duration_seconds", &[]);
    check_histogram(&e, "mosvm_move_downtime_seconds", &[]);

    // At h3: the arrivals, the bodies, their site calls.
    let mut eb = scrape(b);
    wait_until("h3 to count the arrivals and the site calls", Duration::from_secs(20), || {
        eb = scrape(b);
        moved_in(&eb) >= before_b + 2.0
            && eb.get("mosvm_site_calls_total", &[("kind", "write")]).is_some_and(|n| n > 0.0)
    });
    assert_eq!(moved_in(&eb), before_b + 2.0);
    assert_eq!(eb.value("mosvm_bodies", &[]), 2.0);
    assert_eq!(eb.value("mosvm_scrape_bodies_unanswered", &[]), 0.0);
    let writes = eb.value("mosvm_site_calls_total", &[("kind", "write")]);
    assert_eq!(check_histogram(&eb, "mosvm_site_call_duration_seconds", &[("kind", "write")]), writes);
    for s in eb.with_name("mosvm_site_calls_total") {
        let kind = s.labels["kind"].as_str();
        assert_eq!(check_histogram(&eb, "mosvm_site_call_duration_seconds", &[("kind", kind)]), s.value, "{kind}");
    }
    // The home serves nothing remotely.
    assert_eq!(scrape(a).with_name("mosvm_site_calls_total").count(), 0);

    // A body that goes leaves its calls counted.
    wait_until("more writes from h3", Duration::from_secs(10), || {
        scrape(b).value("mosvm_site_calls_total", &[("kind", "write")]) > writes
    });
    let r = at(a, &["kill", "-s", "KILL", &homework.to_string()]);
    assert_eq!(r.status, 0, "{r:?}");
    wait_until("the homework job to end", Duration::from_secs(20), || job(a, homework).state.ended());
    let mut e = scrape(b);
    wait_until("its body to go from h3", Duration::from_secs(20), || {
        e = scrape(b);
        e.value("mosvm_bodies", &[]) == 1.0
    });
    assert!(e.value("mosvm_site_calls_total", &[("kind", "write")]) > writes, "the counter went down");

    for id in [mem, cpu] {
        let _ = at(a, &["kill", "-s", "KILL", &id.to_string()]);
    }
    assert_eq!(job(a, cpu).host, "h2");
}
