//! Programs users run, as they run them: Debian's own tools, shells,
//! interpreters and pipelines, each run natively and in a job in a fresh
//! copy of the same small working tree. A case passes when stdout, stderr,
//! the exit status and every file left in the tree are identical.
//!
//! `tests/compat_corpus.rs` runs every case (a case that is a known gap
//! says why, and is reported rather than failed); `make bench` reports the
//! fraction that pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{mosvm_bin, run_command, Opts, Run};

/// One program run.
pub struct Case {
    pub name: &'static str,
    pub argv: &'static [&'static str],
    pub stdin: &'static [u8],
    /// Why this case is not expected to pass yet, if it is not.
    pub gap: Option<&'static str>,
}

const fn case(name: &'static str, argv: &'static [&'static str]) -> Case {
    Case { name, argv, stdin: b"", gap: None }
}

const fn with_stdin(name: &'static str, argv: &'static [&'static str], stdin: &'static [u8]) -> Case {
    Case { name, argv, stdin, gap: None }
}

const SCRIPT_PY: &str = "import json, os, sys\n\
words = open('words.txt').read().split()\n\
counts = {}\n\
for w in words:\n    counts[w] = counts.get(w, 0) + 1\n\
with open('counts.json', 'w') as f:\n    json.dump(dict(sorted(counts.items())), f, indent=1)\n\
os.makedirs('py/out', exist_ok=True)\n\
for i in range(5):\n    open(f'py/out/{i}.txt', 'w').write(str(i * i) + '\\n')\n\
print(len(words), len(counts), sorted(os.listdir('py/out')))\n\
print('stderr line', file=sys.stderr)\n\
sys.exit(3)\n";

const SCRIPT_SH: &str = "set -u\n\
f() { local n=$1; echo \"f $n: $(( n * n ))\"; }\n\
for i in 1 2 3; do f $i; done\n\
cat <<EOF > here.txt\n\
a here-doc with $((6 * 7)) and $(echo substituted)\n\
EOF\n\
cat here.txt\n\
sort -r words.txt | uniq -c | sort -k1,1nr -k2 | head -n 3\n\
x=$(wc -l < nums.txt); echo \"nums: $x\"\n\
case \"$x\" in 100) echo hundred;; *) echo other;; esac\n\
echo to-stderr >&2\n\
exit 4\n";

/// The cases. Inputs are in the tree `prepare` makes.
pub fn cases() -> Vec<Case> {
    vec![
        case("true", &["/bin/true"]),
        case("false", &["/bin/false"]),
        case("sort -n", &["/usr/bin/sort", "-n", "nums.txt"]),
        case("sort -u words", &["/usr/bin/sort", "-u", "words.txt"]),
        case("sort -o", &["/usr/bin/sort", "-r", "-o", "sorted.txt", "words.txt"]),
        case("uniq -c", &["/usr/bin/uniq", "-c", "sorted-words.txt"]),
        case("wc", &["/usr/bin/wc", "nums.txt", "words.txt"]),
        case("md5sum", &["/usr/bin/md5sum", "nums.txt", "words.txt"]),
        case("sha256sum", &["/usr/bin/sha256sum", "words.txt"]),
        case("head", &["/usr/bin/head", "-n", "5", "words.txt"]),
        case("tail", &["/usr/bin/tail", "-n", "3", "nums.txt"]),
        case("cut", &["/usr/bin/cut", "-c", "1-3", "words.txt"]),
        with_stdin("tr", &["/usr/bin/tr", "a-z", "A-Z"], b"hello, world\n"),
        case("cat -n", &["/bin/cat", "-n", "words.txt"]),
        case("tac", &["/usr/bin/tac", "nums.txt"]),
        case("od", &["/usr/bin/od", "-c", "small.bin"]),
        case("base64", &["/usr/bin/base64", "small.bin"]),
        case("seq", &["/usr/bin/seq", "1", "7", "100"]),
        case("printf", &["/usr/bin/printf", "%05d|%-6s|%x\\n", "42", "ab", "255"]),
        case("cmp differ", &["/usr/bin/cmp", "nums.txt", "words.txt"]),
        case("diff", &["/usr/bin/diff", "words.txt", "sorted-words.txt"]),
        case("grep -n", &["/bin/grep", "-n", "an", "words.txt"]),
        case("grep miss", &["/bin/grep", "-c", "zzz", "words.txt"]),
        case("sed", &["/bin/sed", "-e", "s/a/A/g", "-e", "3q", "words.txt"]),
        case("awk", &["/usr/bin/awk", "{ s += $1 } END { print s, NR }", "nums.txt"]),
        case("find", &["/usr/bin/find", "tree", "-name", "*.txt"]),
        case("ls -l", &["/bin/ls", "-l", "--time-style=+", "tree/a"]),
        case("stat", &["/usr/bin/stat", "-c", "%s %F %n", "nums.txt", "tree"]),
        case("missing file", &["/bin/cat", "no-such-file"]),
        case("tar c", &["/bin/tar", "-cf", "tree.tar", "--sort=name", "--mtime=@0", "tree"]),
        case("tar t", &["/bin/tar", "-tvf", "fixture.tar"]),
        case("gzip", &["/bin/gzip", "-k", "-n", "words.txt"]),
        case("gunzip", &["/bin/gzip", "-d", "-c", "fixture.gz"]),
        case("dd", &["/bin/dd", "if=nums.txt", "of=dd.out", "bs=7", "count=5", "status=none"]),
        case("cp -r", &["/bin/cp", "-r", "tree", "tree-copy"]),
        case("mkdir, mv, rm", &["/bin/sh", "-c", "mkdir -p m/n && mv words.txt m/n/ && rm nums.txt && ls -R m"]),
        case("ln -s, readlink", &["/bin/sh", "-c", "ln -s nums.txt link && readlink link && cat link | wc -l"]),
        case("date -d", &["/bin/date", "-u", "-d", "@86400", "+%F %T"]),
        case("expr", &["/usr/bin/expr", "6", "*", "7"]),
        case("basename", &["/usr/bin/basename", "/a/b/c.txt", ".txt"]),
        case("env -i", &["/usr/bin/env", "-i", "A=1", "B=2", "/usr/bin/env"]),
        case("xargs", &["/bin/sh", "-c", "head -n 4 words.txt | xargs -n 2 echo"]),
        case("bash script", &["/bin/bash", "script.sh"]),
        case("bash -c pipeline", &["/bin/bash", "-c", "sort words.txt | uniq | wc -l; echo ${PIPESTATUS[@]}"]),
        case("bash process substitution", &["/bin/bash", "-c", "diff <(sort words.txt) <(sort -r words.txt | sort)"]),
        case("bash fd 3", &["/bin/bash", "-c", "exec 3<nums.txt; read -u 3 a; read -u 3 b; echo $a $b"]),
        case("bash swap fds", &["/bin/bash", "-c", "{ echo out; echo err >&2; } 3>&1 1>&2 2>&3"]),
        case("mkfifo", &["/bin/bash", "-c", "mkfifo p && { echo through-fifo > p & } && cat p && wait"]),
        case("/dev/stdin", &["/bin/bash", "-c", "cat /dev/stdin < nums.txt | wc -l"]),
        case("ls /proc/self/fd", &["/bin/ls", "/proc/self/fd"]),
        case("dash", &["/bin/sh", "-c", "i=0; while [ $i -lt 5 ]; do i=$((i+1)); printf '%s ' $i; done; echo"]),
        case("busybox sh", &["/bin/busybox", "sh", "-c", "for f in tree/*; do echo $f; done | sort; echo $((1<<10))"]),
        case("busybox tools", &["/bin/busybox", "sh", "-c", "busybox sort -n nums.txt | busybox tail -n 2"]),
        case("python3 -c", &["/usr/bin/python3", "-c", "import sys; print(sum(range(10**6)), sys.version_info[0])"]),
        case("python3 script", &["/usr/bin/python3", "script.py"]),
        case("python3 stdlib", &["/usr/bin/python3", "-c", "import hashlib, zlib, re; print(hashlib.sha1(zlib.compress(b'x'*999)).hexdigest(), re.sub('a+', '-', 'baaad'))"]),
        case("perl -e", &["/usr/bin/perl", "-e", "my %h; $h{$_}++ for split /\\s+/, `cat words.txt`; print join(',', map {\"$_=$h{$_}\"} sort keys %h), \"\\n\""]),
        case("perl -ne", &["/usr/bin/perl", "-ne", "print if /an/", "words.txt"]),
        case("python3 subprocess", &["/usr/bin/python3", "-c", "import subprocess as s; print(s.run(['sort', '-n', 'nums.txt'], capture_output=True, text=True).stdout.split()[:3], s.call(['false']))"]),
        case("python3 threads", &["/usr/bin/python3", "-c", "import threading, queue; q = queue.Queue(); t = [threading.Thread(target=lambda i=i: q.put(i * i)) for i in range(8)]; [x.start() for x in t]; [x.join() for x in t]; print(sorted(q.queue))"]),
        Case {
            name: "python3 multiprocessing",
            argv: &["/usr/bin/python3", "-c", "import multiprocessing as m\nif __name__ == '__main__':\n    print(m.Pool(2).map(abs, [-1, -2, -3]))"],
            stdin: b"",
            gap: Some("its semaphores are futexes in memory shared between processes; each of a job's processes is its own VM, whose futexes do not wake the others' yet: it hangs"),
        },
        case("xz", &["/usr/bin/xz", "-k", "words.txt"]),
        case("bzip2", &["/bin/bzip2", "-c", "nums.txt"]),
        case("file", &["/usr/bin/file", "nums.txt", "small.bin", "tree", "fixture.gz"]),
        case("sqlite3", &["/usr/bin/sqlite3", "db.sqlite", "create table t(x); insert into t values (1), (2), (40); select sum(x), count(*) from t;"]),
        with_stdin("jq", &["/usr/bin/jq", "-c", "[.[] | . * 2]"], b"[1, 2, 3]"),
        case("gcc, then the program", &["/bin/sh", "-c", "printf '#include <stdio.h>\\nint main(void) { puts(\"compiled\"); return 5; }\\n' > c.c && gcc -O2 -o c c.c && ./c"]),
        case("make", &["/usr/bin/make", "-s", "-f", "Makefile.test"]),
    ]
}

const WORDS: &str = "banana apple cherry banana date apple fig grape banana kiwi lemon mango nectarine orange\n\
apple pear quince raspberry strawberry tangerine banana\n";

/// A fresh working tree for the cases in `dir`.
pub fn prepare(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("tree/a/b")).unwrap();
    let nums: String = (1..=100).map(|i| format!("{}\n", (i * 7919) % 1000)).collect();
    std::fs::write(dir.join("nums.txt"), nums).unwrap();
    let words: String = WORDS.split_whitespace().map(|w| format!("{w}\n")).collect();
    std::fs::write(dir.join("words.txt"), &words).unwrap();
    let mut sorted: Vec<&str> = WORDS.split_whitespace().collect();
    sorted.sort();
    std::fs::write(dir.join("sorted-words.txt"), sorted.iter().map(|w| format!("{w}\n")).collect::<String>()).unwrap();
    std::fs::write(dir.join("small.bin"), (0u8..=40).collect::<Vec<u8>>()).unwrap();
    std::fs::write(dir.join("script.py"), SCRIPT_PY).unwrap();
    std::fs::write(dir.join("script.sh"), SCRIPT_SH).unwrap();
    std::fs::write(
        dir.join("Makefile.test"),
        "all: out.txt\n\t@cat out.txt\nout.txt: nums.txt\n\tsort -n nums.txt | tail -n 2 > $@\n",
    )
    .unwrap();
    for (p, c) in
        [("tree/one.txt", "1\n"), ("tree/a/two.txt", "22\n"), ("tree/a/b/three.txt", "333\n"), ("tree/a/x.dat", "x")]
    {
        std::fs::write(dir.join(p), c).unwrap();
    }
    // Archives made natively once, so both runs read the same bytes.
    let ok = |c: &mut Command| assert!(c.current_dir(dir).status().unwrap().success(), "{c:?}");
    ok(Command::new("tar").args(["-cf", "fixture.tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "tree"]));
    ok(Command::new("sh").args(["-c", "gzip -n -c words.txt > fixture.gz"]));
    // The same times everywhere, so listings that show them agree.
    ok(Command::new("sh").args(["-c", "find . -exec touch -h -d @1000000000 {} +"]));
}

/// Every file under `dir` (relative path -> contents; directories and
/// symlinks by kind), to compare what two runs left.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_symlink() {
                out.insert(rel, format!("-> {:?}", std::fs::read_link(&p).ok()).into_bytes());
            } else if ft.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                walk(base, &p, out);
            } else if ft.is_file() {
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            } else {
                out.insert(rel, b"<special>".to_vec());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The longest a case may run (timeout(1)'s duration).
const CASE_LIMIT: &str = "30";

/// What one case did natively and in a job.
pub struct Outcome {
    pub native: Run,
    pub job: Run,
    /// Files that differ between the two trees.
    pub files_differ: Vec<PathBuf>,
}

impl Outcome {
    pub fn same(&self) -> bool {
        self.native == self.job && self.files_differ.is_empty()
    }
}

/// Runs `c` natively and with `mosvm run` (plus `vm_args`), each in its
/// own fresh tree under `work`.
pub fn run_case(c: &Case, work: &Path, vm_args: &[&str]) -> Outcome {
    let (dn, dv) = (work.join("native"), work.join("job"));
    prepare(&dn);
    prepare(&dv);
    let env = vec![("LC_ALL", "C"), ("TZ", "UTC"), ("PATH", "/usr/local/bin:/usr/bin:/bin")];
    let opts = |d| Opts { cwd: Some(d), stdin: Some(c.stdin), env: env.clone(), vm_args: Vec::new() };
    // A case that hangs is killed (status 137) rather than stop the suite.
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", CASE_LIMIT]).args(c.argv).env_clear();
    let native = run_command(cmd, &opts(&dn));
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", CASE_LIMIT]).arg(mosvm_bin()).arg("run").args(vm_args).arg("--").args(c.argv).env_clear();
    let job = run_command(cmd, &opts(&dv));
    let (tn, tv) = (tree(&dn), tree(&dv));
    let mut files_differ: Vec<PathBuf> =
        tn.iter().filter(|(p, c)| tv.get(*p) != Some(*c)).map(|(p, _)| p.clone()).collect();
    files_differ.extend(tv.keys().filter(|p| !tn.contains_key(*p)).cloned());
    Outcome { native, job, files_differ }
}
