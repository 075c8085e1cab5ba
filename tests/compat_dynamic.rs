//! Dynamically linked programs (issue 10): small C programs built with
//! plain gcc and Debian's own programs (python3, perl, bash, coreutils,
//! gzip, find, tar) give byte-identical stdout, stderr, exit status and
//! files in a job as natively, at home and when the job is moved to
//! another host in the middle of its run (its files, libraries and
//! loader then come from home through its deputy).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mosvm_tests::*;

const LONG: Duration = Duration::from_secs(180);

fn dyn_image(name: &str) -> PathBuf {
    image(&format!("tests/dyn/{name}"))
}

/// Every file under `dir` (relative name -> bytes; symlinks by target).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let name = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                out.insert(name, std::fs::read_link(&p).unwrap().to_string_lossy().into_owned().into_bytes());
            } else if t.is_dir() {
                out.insert(format!("{name}/"), Vec::new());
                walk(base, &p, out);
            } else {
                out.insert(name, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_same_trees(vm: &Path, native: &Path, what: &str) {
    let (v, n) = (tree(vm), tree(native));
    assert_eq!(v.keys().collect::<Vec<_>>(), n.keys().collect::<Vec<_>>(), "{what}: the files written differ");
    for (k, bytes) in &n {
        assert!(v[k] == *bytes, "{what}: {k} differs ({} bytes in the job, {} natively)", v[k].len(), bytes.len());
    }
}

/// Two fresh working directories (native, job) prepared alike.
fn dirs(name: &str, setup: &dyn Fn(&Path)) -> (PathBuf, PathBuf) {
    let (n, v) = (scratch_dir(&format!("dyn-{name}-native")), scratch_dir(&format!("dyn-{name}-vm")));
    setup(&n);
    setup(&v);
    (n, v)
}

/// Runs `program args` natively and in a job, each in its own directory
/// prepared by `setup`, and checks they did the same.
fn same(name: &str, program: &Path, args: &[&str], stdin: Option<&[u8]>, setup: &dyn Fn(&Path)) -> Run {
    let (dn, dv) = dirs(name, setup);
    let env = vec![("LC_ALL", "C.UTF-8"), ("DYN_TEST", "yes")];
    let n = native(program, args, &Opts { cwd: Some(&dn), stdin, env: env.clone(), ..Default::default() });
    let v = vm(program, args, &Opts { cwd: Some(&dv), stdin, env, ..Default::default() });
    assert!(v.stdout_bytes == n.stdout_bytes, "{name}: stdout\n{}", first_difference(&v.stdout_bytes, &n.stdout_bytes));
    assert_eq!(v.stderr, n.stderr, "{name}: stderr");
    assert_eq!(v.status, n.status, "{name}: exit status");
    assert_same_trees(&dv, &dn, name);
    n
}

/// Where two outputs part: the line number and both lines.
fn first_difference(job: &[u8], native: &[u8]) -> String {
    let (j, n) = (String::from_utf8_lossy(job), String::from_utf8_lossy(native));
    let (jl, nl): (Vec<&str>, Vec<&str>) = (j.lines().collect(), n.lines().collect());
    let i = jl.iter().zip(&nl).position(|(a, b)| a != b).unwrap_or(jl.len().min(nl.len()));
    format!(
        "{} lines in the job, {} natively; line {}:\njob:    {:?}\nnative: {:?}",
        jl.len(),
        nl.len(),
        i + 1,
        jl.get(i),
        nl.get(i)
    )
}

/// A host for bodies: `mosvm receive` on 127.0.0.2 in an empty directory.
fn host(name: &str) -> (Proc, String, PathBuf) {
    let dir = scratch_dir(&format!("dyn-host-{name}"));
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(["receive", "--listen", "127.0.0.2:0"]).current_dir(&dir);
    let proc = Proc::spawn(cmd);
    proc.wait_for("the receiver to listen", Duration::from_secs(10), |_, e| e.contains("waiting for a job on "));
    let err = proc.stderr();
    let addr = err.split("waiting for a job on ").nth(1).unwrap().lines().next().unwrap().trim().to_string();
    (proc, addr, dir)
}

/// As `same`, with the job moved to another host while it runs: it gets
/// the first half of `input` on stdin at home, moves, then gets the rest
/// (so it cannot end before the move). stdout goes to a file.
fn same_when_moved(name: &str, program: &Path, args: &[&str], input: &[u8], setup: &dyn Fn(&Path)) {
    let _l = migration_lock();
    let (dn, dv) = dirs(&format!("{name}-moved"), setup);
    let env = [("LC_ALL", "C.UTF-8"), ("DYN_TEST", "yes")];
    let n =
        native(program, args, &Opts { cwd: Some(&dn), stdin: Some(input), env: env.to_vec(), ..Default::default() });
    let (recv, addr, host_dir) = host(name);
    let sock = sock_path(&format!("dyn-{name}"));
    let out_path = dv.parent().unwrap().join(format!("{name}-stdout"));
    let mut cmd = source_command(program, args, &[], &sock, Some(&dv));
    cmd.envs(env).stdin(Stdio::piped()).stdout(std::fs::File::create(&out_path).unwrap()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for_path(&sock);
    let mut stdin = child.stdin.take().unwrap();
    let half = input.len() / 2;
    stdin.write_all(&input[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (m, json) = migrate(&sock, &addr, &[]);
    assert_eq!(m.status, 0, "{name}: the move failed: {m:?}");
    assert!(json.contains("\"result\":\"ok\""), "{name}: {json}");
    // The rest is written from another thread: a job that answers on a
    // pipe must not wait for us.
    let rest = input[half..].to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&rest);
    });
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > LONG {
            let _ = child.kill();
            panic!("{name}: the moved job did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = std::fs::read(&out_path).unwrap();
    assert!(stdout == n.stdout_bytes, "{name}: stdout after a move\n{}", first_difference(&stdout, &n.stdout_bytes));
    assert_eq!(String::from_utf8_lossy(&out.stderr), n.stderr, "{name}: stderr after a move");
    assert_eq!(out.status.code(), Some(n.status), "{name}: exit status after a move");
    assert_same_trees(&dv, &dn, &format!("{name} moved"));
    eprintln!("{name}: moved and done in {:?}", t.elapsed());
    let r = recv.finish(LONG);
    assert!(r.stdout.is_empty(), "{name}: the host printed the job's output: {r:?}");
    assert!(tree(&host_dir).is_empty(), "{name}: the host kept files");
}

fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("line {i} {} the quick brown fox {}\n", (i * 7919) % 1000, i % 13))
        .collect::<String>()
        .into()
}

// ---- small C programs ----

#[test]
fn dynamic_c_programs_match_native() {
    if !require_kvm("dynamic_c_programs_match_native") {
        return;
    }
    let n = same("hello", &dyn_image("hello"), &["a b", "c"], None, &|_| {});
    assert_eq!(n.status, 3);
    assert!(n.stdout.contains("AT_BASE set: 1"), "{}", n.stdout);
    same("dlopen", &dyn_image("dlopen"), &[], None, &|_| {});
    same("threads", &dyn_image("threads"), &[], None, &|_| {});
    same("shared", &dyn_image("shared"), &[], None, &|_| {});
    let n = same("mmapfile", &dyn_image("mmapfile"), &[], None, &|_| {});
    let failed = n.stdout.lines().filter(|l| !l.starts_with("checksum") && (l.contains(" 0") || l.contains('?')));
    assert_eq!(failed.count(), 0, "a check failed natively: {}", n.stdout);
}

/// A copy of `dyn_image(name)` whose PT_INTERP names `interp` instead
/// (same length).
fn with_interp(name: &str, dir: &Path, interp: &str) -> PathBuf {
    let mut bytes = std::fs::read(dyn_image(name)).unwrap();
    let old = b"/lib64/ld-linux-x86-64.so.2";
    assert_eq!(interp.len(), old.len());
    let at = bytes.windows(old.len()).position(|w| w == old).expect("the loader's name");
    bytes[at..at + old.len()].copy_from_slice(interp.as_bytes());
    let p = dir.join(format!("{name}-interp"));
    std::fs::write(&p, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A directory for execdyn: itself, a script, words to sort and an ELF
/// whose loader is missing.
fn execdyn_setup(d: &Path) {
    std::fs::copy(dyn_image("execdyn"), d.join("execdyn")).unwrap();
    std::fs::write(d.join("script.sh"), "#!/bin/sh\necho \"script: $# args: $*\"\nexit 5\n").unwrap();
    std::fs::write(d.join("words.txt"), "pear\napple\nzebra\nmango\n").unwrap();
    // An ELF whose loader is missing: ENOENT, as Linux says.
    let bad = with_interp("hello", d, "/lib64/ld-linux-x86-64.so.9");
    std::fs::rename(bad, d.join("bad-interp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn execve_of_dynamic_programs_and_scripts() {
    if !require_kvm("execve_of_dynamic_programs_and_scripts") {
        return;
    }
    let n = same("execdyn", Path::new("./execdyn"), &[], None, &execdyn_setup);
    assert!(n.stdout.contains("LAST=1") && n.stdout.contains("script: 2 args: from execve"), "{}", n.stdout);
    assert!(n.stdout.contains("missing interpreter: 127"), "{}", n.stdout);
}

#[test]
fn a_bad_loader_is_refused_clearly() {
    if !require_kvm("a_bad_loader_is_refused_clearly") {
        return;
    }
    let d = scratch_dir("dyn-bad-loader");
    let missing = with_interp("hello", &d, "/lib64/ld-linux-x86-64.so.9");
    let r = vm(&missing, &[], &Opts::default());
    assert_eq!(r.status, 127, "{r:?}");
    assert!(r.stderr.contains("/lib64/ld-linux-x86-64.so.9"), "{}", r.stderr);
    // A loader that is no ELF, and one that is truncated (ELIBBAD on
    // Linux): the name padded with slashes to the length of the original.
    let file = format!("mosvm-badld-{}", std::process::id());
    let name = Path::new("/tmp").join(&file);
    let padded = format!("/tmp/{}{file}", "/".repeat(22 - file.len()));
    std::fs::write(&name, "not a loader\n").unwrap();
    let p = with_interp("hello", &d, &padded);
    let r = vm(&p, &[], &Opts::default());
    assert_eq!(r.status, 126, "{r:?}");
    assert!(r.stderr.contains("not an ELF"), "{}", r.stderr);
    let mut ld = std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap();
    ld.truncate(3000);
    std::fs::write(&name, ld).unwrap();
    let r = vm(&p, &[], &Opts::default());
    assert_eq!(r.status, 126, "{r:?}");
    assert!(r.stderr.contains("malformed"), "{}", r.stderr);
    let _ = std::fs::remove_file(&name);
}

/// A job that truncates its own program file (Linux says ETXTBSY) ends
/// by SIGBUS when it runs on from the lost pages; its VMM stays up and
/// says why.
#[test]
fn a_program_cut_short_under_its_job() {
    if !require_kvm("a_program_cut_short_under_its_job") {
        return;
    }
    let d = scratch_dir("dyn-truncself");
    let p = d.join("truncself");
    std::fs::copy(dyn_image("truncself"), &p).unwrap();
    let n = native(&p, &[], &Opts::default());
    assert_eq!((n.status, n.stdout.as_str()), (0, "open: Text file busy\n"), "{n:?}");
    let v = vm(&p, &[], &Opts::default());
    assert_eq!(v.signal, None, "the VMM died: {v:?}");
    assert_eq!(v.status, 128 + 7, "{v:?}");
    assert!(v.stderr.contains("SIGBUS"), "{v:?}");
}

/// A job that maps a file shared and writable stays home: its writes must
/// reach the file. The move is refused before anything is copied, and the
/// job goes on.
#[test]
fn a_shared_file_mapping_keeps_the_job_home() {
    if !require_kvm("a_shared_file_mapping_keeps_the_job_home") {
        return;
    }
    let _l = migration_lock();
    let d = scratch_dir("dyn-shared-hold");
    let (recv, addr, _) = host("shared-hold");
    let sock = sock_path("dyn-shared-hold");
    let mut cmd = source_command(&dyn_image("shared"), &["hold"], &[], &sock, Some(&d));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for_path(&sock);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "mapped\n");
    let (m, json) = migrate(&sock, &addr, &[]);
    assert_ne!(m.status, 0, "a job with a shared file mapping moved: {json}");
    assert!(format!("{m:?}").contains("MAP_SHARED"), "{m:?}");
    drop(child.stdin.take());
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "still at home\n");
    assert!(child.wait().unwrap().success());
    assert_eq!(&std::fs::read(d.join("held.bin")).unwrap()[..13], b"still at home");
    drop(recv);
}

/// Other ways a dynamic program comes: non-PIE, musl's loader, the glibc
/// loader run as the program (it loads the program itself), dash.
#[test]
fn other_loaders_and_layouts() {
    if !require_kvm("other_loaders_and_layouts") {
        return;
    }
    let d = scratch_dir("dyn-loaders");
    let src = root().join("tests/guest/dyn/hello.c");
    let build = |cc: &str, flags: &[&str], out: &str| {
        let st = Command::new(cc).args(flags).arg("-o").arg(d.join(out)).arg(&src).status();
        st.is_ok_and(|s| s.success())
    };
    assert!(build("gcc", &["-O2", "-no-pie"], "nopie"), "gcc -no-pie");
    same("nopie", &d.join("nopie"), &["x"], None, &|_| {});
    // musl's dynamic loader (musl-tools installs it); musl has no
    // dl_iterate_phdr names for the vDSO, but prints the same natively.
    if Path::new("/lib/ld-musl-x86_64.so.1").exists() && build("musl-gcc", &["-O2"], "musl") {
        same("musl", &d.join("musl"), &["y"], None, &|_| {});
    }
    let ld = Path::new("/lib64/ld-linux-x86-64.so.2");
    let hello = dyn_image("hello");
    let n = same("ld.so", ld, &[hello.to_str().unwrap(), "z"], None, &|_| {});
    assert_eq!(n.status, 3, "{n:?}");
    let script = "x=0; while [ $x -lt 5 ]; do x=$((x + 1)); done; echo \"dash $x $(echo sub)\"; ls -d /usr/bin";
    same("dash", Path::new("/bin/dash"), &["-c", script], None, &|_| {});
}

// ---- Debian's programs ----

const PY_SCRIPT: &str = r#"
import collections, hashlib, json, os, re, sys
words = collections.Counter()
n = 0
with open("log.txt", "w") as log:
    for line in sys.stdin:
        n += 1
        words.update(re.findall(r"[a-z]+", line))
        if n % 1000 == 0:
            log.write("%d lines, %s\n" % (n, hashlib.sha256(line.encode() * 50).hexdigest()[:16]))
data = open("input.txt", "rb").read()
with open("out.json", "w") as f:
    json.dump({"lines": n, "top": words.most_common(3), "sha": hashlib.sha256(data).hexdigest()}, f, sort_keys=True)
os.rename("out.json", "result.json")
os.makedirs("sub/deeper")
with open("sub/deeper/bytes.bin", "wb") as f:
    f.write(bytes(range(256)) * 64)
print(n, len(words), sorted(os.listdir(".")))
print(open("result.json").read())
import math, struct, zlib
print(math.factorial(30), struct.pack("<d", math.pi).hex(), zlib.crc32(data))
sys.stderr.write("python done\n")
sys.exit(4)
"#;

const BASH_SCRIPT: &str = r#"#!/bin/bash
set -u
greet() { local who=$1; printf '%s-%s\n' "$who" "${2:-none}"; }
n=0; sum=0
while IFS= read -r line; do
  n=$((n + 1)); sum=$((sum + ${#line}))
  if (( n % 500 == 0 )); then echo "at $n" >> progress.txt; fi
done
echo "lines $n chars $sum"
greet a b; greet c
while IFS= read -r l; do printf '%s\n' "$l"; done <<EOF > heredoc.txt
n is $n
sum is $sum
  indented	tab
EOF
while read -r w rest; do echo "heredoc: $w"; done < heredoc.txt
arr=(x y z); for i in "${!arr[@]}"; do echo "$i=${arr[$i]}"; done
declare -A m=([one]=1 [two]=2); echo "map ${m[one]} ${m[two]}"
case "$n" in *0) echo "ends in zero";; *) echo other;; esac
s="Hello World"; echo "${s,,} ${s^^} ${s/World/There} ${#s}"
if [ "${1:-}" = external ]; then
  echo "external: $(printf '%s\n' b a c | sort | tr '\n' ' ')"
  x=$(wc -l < heredoc.txt); echo "wc says $x"
  ls | sort
  /usr/bin/env true && echo "env ran"
  (cd sub 2>/dev/null || mkdir sub; echo in a subshell)
  ./child.sh one two
fi
echo to stderr >&2
exit 6
"#;

fn bash_setup(d: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(d.join("script.sh"), BASH_SCRIPT).unwrap();
    std::fs::write(d.join("child.sh"), "#!/bin/bash\necho \"child: $*\"\n").unwrap();
    for f in ["script.sh", "child.sh"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn py_setup(d: &Path) {
    std::fs::write(d.join("script.py"), PY_SCRIPT).unwrap();
    std::fs::write(d.join("input.txt"), lines(3000)).unwrap();
}

const PERL: &str = r#"my %c; my $n = 0; while (<STDIN>) { $n++; $c{$_}++ for /([a-z]+)/g; }
open(my $f, ">", "perl.out") or die; print $f map { "$_ $c{$_}\n" } sort keys %c; close $f;
printf "%d lines, %d words\n", $n, scalar keys %c; print STDERR "perl warns\n"; exit 5;"#;

/// A directory tree for find and tar, shared by the native and job runs.
fn shared_tree(name: &str) -> PathBuf {
    let d = scratch_dir(&format!("dyn-tree-{name}"));
    for i in 0..40 {
        let sub = d.join(format!("dir{i:02}/inner"));
        std::fs::create_dir_all(&sub).unwrap();
        for j in 0..25 {
            std::fs::write(sub.join(format!("f{j}.txt")), "x".repeat(i * 100 + j)).unwrap();
        }
        std::fs::write(d.join(format!("dir{i:02}/readme.md")), format!("dir {i}\n")).unwrap();
    }
    std::os::unix::fs::symlink("dir00/readme.md", d.join("link")).unwrap();
    d
}

#[test]
fn debian_programs_match_native() {
    if !require_kvm("debian_programs_match_native") {
        return;
    }
    let input = lines(5000);
    let n = same("python3", Path::new("/usr/bin/python3"), &["script.py"], Some(&input), &py_setup);
    assert_eq!(n.status, 4, "{n:?}");
    same("perl", Path::new("/usr/bin/perl"), &["-e", PERL], Some(&input), &|_| {});
    let n = same("bash", Path::new("/bin/bash"), &["./script.sh", "external"], Some(&input), &bash_setup);
    assert!(n.stdout.contains("env ran") && n.stdout.contains("child: one two"), "{}", n.stdout);
    same("sort", Path::new("/usr/bin/sort"), &["-t", " ", "-k3,3n", "-k2,2"], Some(&input), &|_| {});
    let gz = same("gzip", Path::new("/bin/gzip"), &["-c", "-n", "-6"], Some(&input), &|_| {});
    let n = same("gunzip", Path::new("/bin/gzip"), &["-d", "-c"], Some(&gz.stdout_bytes), &|_| {});
    assert!(n.stdout_bytes == input);
    same("gzip-files", Path::new("/bin/gzip"), &["-n", "-k", "data.txt"], None, &|d| {
        std::fs::write(d.join("data.txt"), &input).unwrap();
    });
    same("md5sum", Path::new("/usr/bin/md5sum"), &["-", "input.txt"], Some(&input), &py_setup);
    let t = shared_tree("here");
    let ts = t.to_str().unwrap();
    same(
        "find",
        Path::new("/usr/bin/find"),
        &[ts, "-name", "f1*", "-size", "+1k", "-printf", "%P %s %y\n"],
        None,
        &|_| {},
    );
    same("find-all", Path::new("/usr/bin/find"), &[ts, "-printf", "%P %s %y %l\n"], None, &|_| {});
    let tar_args =
        ["-cf", "out.tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-C", ts, "."];
    same("tar", Path::new("/bin/tar"), &tar_args, None, &|_| {});
    let d = scratch_dir("dyn-tar-list");
    let made = Command::new("/bin/tar").args(tar_args).current_dir(&d).status().unwrap();
    assert!(made.success());
    let tarball = d.join("out.tar");
    same("tar-list", Path::new("/bin/tar"), &["-tvf", tarball.to_str().unwrap()], None, &|_| {});
    same("tar-extract", Path::new("/bin/tar"), &["-xf", tarball.to_str().unwrap()], None, &|_| {});
}

#[test]
fn debian_programs_moved_mid_run() {
    if !require_kvm("debian_programs_moved_mid_run") {
        return;
    }
    let input = lines(60_000);
    // Libraries loaded and files mapped once away: through the deputy.
    same_when_moved("dlopen", &dyn_image("dlopen"), &["wait"], &input, &|_| {});
    same_when_moved("mmapfile", &dyn_image("mmapfile"), &["wait"], &input, &|_| {});
    same_when_moved("execdyn", Path::new("./execdyn"), &["wait-exec"], &input, &execdyn_setup);
    same_when_moved("python3", Path::new("/usr/bin/python3"), &["script.py"], &input, &py_setup);
    same_when_moved("perl", Path::new("/usr/bin/perl"), &["-e", PERL], &input, &|_| {});
    // Without external commands: a job away from home cannot fork yet.
    // bash reads a pipe a byte at a time: each a call to home once away.
    same_when_moved("bash", Path::new("/bin/bash"), &["./script.sh"], &lines(800), &bash_setup);
    same_when_moved("sort", Path::new("/usr/bin/sort"), &["-t", " ", "-k3,3n", "-k2,2"], &input, &|_| {});
    same_when_moved("gzip", Path::new("/bin/gzip"), &["-c", "-n"], &input, &|_| {});
    let gz = native(Path::new("/bin/gzip"), &["-c", "-n"], &Opts { stdin: Some(&input), ..Default::default() });
    same_when_moved("gunzip", Path::new("/bin/gzip"), &["-d", "-c"], &gz.stdout_bytes, &|_| {});
    same_when_moved("md5sum", Path::new("/usr/bin/md5sum"), &[], &input, &|_| {});
    // tar reads the names of what to archive from stdin; find's
    // expressions, as tar's names, come from the shared tree.
    let t = shared_tree("moved");
    let mut names: Vec<String> = tree(&t).keys().filter(|k| !k.ends_with('/')).cloned().collect();
    names.sort();
    let list: String = names.iter().map(|n| format!("{n}\n")).collect();
    let ts = t.to_str().unwrap();
    let args = ["-cf", "out.tar", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-C", ts, "-T", "-"];
    same_when_moved("tar", Path::new("/bin/tar"), &args, list.as_bytes(), &|_| {});
    // find has no input: it runs long enough (a stat per file, the
    // tree many times over) to be caught mid-run.
    let mut find_args: Vec<&str> = vec![ts; 12];
    find_args.extend(["-size", "+0", "-printf", "%P %s\n"]);
    same_when_moved("find", Path::new("/usr/bin/find"), &find_args, b"", &|_| {});
}
