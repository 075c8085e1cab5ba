//! Short stable runs of the fuzz targets' harnesses (`fuzz/`; `make
//! fuzz` runs them under libFuzzer for ten minutes each): well-formed
//! seeds, mutated the ways libFuzzer mutates (bit flips, byte and length
//! changes, insertions, deletions, splices), every input must be
//! refused or taken without a panic. Inputs that once found a bug live
//! in fuzz/regressions/TARGET/ and run here every time.

use std::path::{Path, PathBuf};

/// A reproducible generator (xorshift64*), so a failure names its input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Interesting values for lengths and counts, as libFuzzer's dictionary
/// of magic numbers has them.
const MAGIC: [u64; 10] = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len >= 8 => {
                // A little-endian number, often a length or a count.
                let i = rng.below(len - 7);
                let v = MAGIC[rng.below(MAGIC.len())].wrapping_add(rng.below(3) as u64).wrapping_sub(1);
                let w = [1, 2, 4, 8][rng.below(4)];
                input[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            3 => input.truncate(rng.below(len + 1)),
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            6 if !other.is_empty() => {
                // Splice: our head, another seed's tail.
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ if len > 1 => {
                // Repeat a stretch (a record twice, a frame twice).
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(256));
                let copy = input[at..at + n].to_vec();
                input.splice(at..at, copy);
            }
            _ => input.push(rng.next() as u8),
        }
    }
}

/// The kept regression inputs of `target`, then `iters` mutants of `seeds`.
/// Every seed must get past the first check (a harness refusing all is a
/// broken harness), and so must some mutants, and some not.
fn run(target: &str, seeds: &[Vec<u8>], iters: usize, harness: fn(&[u8]) -> usize) {
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    if let Ok(dir) = std::fs::read_dir(&kept) {
        for f in dir.flatten() {
            harness(&std::fs::read(f.path()).unwrap());
        }
    }
    for (i, s) in seeds.iter().enumerate() {
        assert!(harness(s) >= 1, "{target}: seed {i} is refused");
    }
    let (mut deep, mut refused) = (0, 0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for i in 0..iters {
        let seed = &seeds[i % seeds.len()];
        let other = &seeds[rng.below(seeds.len())];
        let mut input = seed.clone();
        mutate(&mut rng, &mut input, other);
        let r = std::panic::catch_unwind(|| harness(&input));
        match r {
            Ok(0) => refused += 1,
            Ok(_) => deep += 1,
            Err(_) => {}
        }
        if r.is_err() {
            let path = std::env::temp_dir().join(format!("mosvm-fuzz-{target}-{i}.bin"));
            std::fs::write(&path, &input).unwrap();
            panic!("{target}: input {i} panicked; kept in {} (add it to fuzz/regressions/{target}/)", path.display());
        }
    }
    assert!(deep > iters / 100 && refused > 0, "{target}: {deep} mutants taken, {refused} refused");
}

fn seeds_dir(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().filter_map(|f| std::fs::read(f.path()).ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn migration_stream() {
    let mut seeds = seeds_dir("migration_stream");
    seeds.push(std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/v3-cpu.snap")).unwrap());
    run("migration_stream", &seeds, 3000, vmm::fuzz::migration_stream);
}

#[test]
fn deputy_proto() {
    run("deputy_proto", &vmm::fuzz::deputy_seeds(), 50_000, vmm::fuzz::deputy_proto);
}

#[test]
fn peer_wire() {
    run("peer_wire", &mosvm_host::fuzz::seeds(), 50_000, mosvm_host::fuzz::peer_wire);
}

#[test]
fn balancer_wire() {
    let seeds: Vec<Vec<u8>> = balancer::wire::samples().iter().map(balancer::wire::encode).collect();
    run("balancer_wire", &seeds, 50_000, |b| balancer::wire::decode(b).is_ok() as usize);
}

#[test]
fn elf_loader() {
    let mut seeds = Vec::new();
    for p in ["hello", "tests/homework", "cpu"] {
        if let Ok(b) = std::fs::read(mosvm_tests::image(p)) {
            // The headers and the first pages are where a loader looks.
            seeds.push(b[..b.len().min(64 << 10)].to_vec());
        }
    }
    assert!(!seeds.is_empty(), "no images: run `make images`");
    run("elf_loader", &seeds, 5000, vmm::fuzz::elf);
}

/// The system-call interface: a real job (tests/guest/fuzzsys.c) makes
/// random calls of every family with hostile arguments (wild and kernel
/// pointers, huge lengths, bad descriptors, random flags). Each call must
/// get an answer, the VMM must neither panic nor write outside the guest
/// (the job's own pages, checked by its end), and the job ends normally.
/// At home with its files local, and once moved, with its files served by
/// its deputy. `make fuzz` runs it with new seeds for MOSVM_FUZZ_SECONDS.
#[test]
fn system_calls() {
    use mosvm_tests::*;
    use std::time::{Duration, Instant};
    if !require_kvm("system_calls") {
        return;
    }
    let prog = image("tests/fuzzsys");
    let dir = scratch_dir("fuzzsys");
    // The job's calls reach only its own directory: the host's stay as
    // they were (modes of every directory above it, what "/" holds).
    let host_view = || {
        use std::os::unix::fs::MetadataExt;
        let modes: Vec<(PathBuf, u32)> =
            dir.ancestors().skip(1).map(|d| (d.to_path_buf(), std::fs::metadata(d).map_or(0, |m| m.mode()))).collect();
        let mut root: Vec<String> =
            std::fs::read_dir("/").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        root.sort();
        (modes, root)
    };
    let before = host_view();
    let budget = std::env::var("MOSVM_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs);
    let t = Instant::now();
    let (mut seed, mut calls) = (1u64, 0u64);
    loop {
        let cwd = dir.join(seed.to_string());
        std::fs::create_dir_all(&cwd).unwrap();
        let mut cmd = std::process::Command::new(mosvm_bin());
        cmd.args(["run", "--", prog.to_str().unwrap(), &seed.to_string(), "20000"]).current_dir(&cwd);
        let r = Proc::spawn(cmd).finish(Duration::from_secs(60));
        assert_eq!((r.status, r.stdout.as_str()), (0, "made 20000 calls\n"), "seed {seed}: {r:?}");
        calls += 20_000;
        let _ = std::fs::remove_dir_all(&cwd);
        seed += 1;
        match budget {
            None if seed > 3 => break,
            Some(b) if t.elapsed() >= b => break,
            _ => {}
        }
    }
    eprintln!("system_calls: {} seeds, {calls} calls in {:.0?}, no finding", seed - 1, t.elapsed());
    assert_eq!(host_view(), before, "the fuzzer reached outside its directory");

    // Away from home: the same calls served by the deputy.
    let _l = migration_lock();
    let sock = sock_path("fuzzsys-move");
    let (recv, addr) = receiver(&[], None);
    let job = source(&prog, &["99", "400000"], &[], &sock, Some(&dir));
    std::thread::sleep(Duration::from_millis(300));
    let (m, _) = migrate(&sock, &addr, &[]);
    let r = job.finish(Duration::from_secs(120));
    let _ = recv.finish(Duration::from_secs(120));
    assert_eq!(m.status, 0, "the move failed: {m:?}");
    assert_eq!((r.status, r.stdout.as_str()), (0, "made 400000 calls\n"), "{r:?}");
    assert_eq!(host_view(), before, "the fuzzer reached outside its directory");
}

/// `make fuzz`: writes each target's seeds into MOSVM_FUZZ_CORPUS/TARGET
/// for libFuzzer to start from (the same seeds the stable runs mutate).
#[test]
#[ignore = "run by make fuzz"]
fn write_corpus() {
    let Some(root) = std::env::var_os("MOSVM_FUZZ_CORPUS") else {
        panic!("set MOSVM_FUZZ_CORPUS to the corpus directory");
    };
    let root = Path::new(&root);
    let mut stream = seeds_dir("migration_stream");
    stream.push(std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/v3-cpu.snap")).unwrap());
    let elf: Vec<Vec<u8>> = ["hello", "tests/homework", "cpu"]
        .iter()
        .map(|p| std::fs::read(mosvm_tests::image(p)).unwrap())
        .map(|b| b[..b.len().min(64 << 10)].to_vec())
        .collect();
    let sets = [
        ("migration_stream", stream),
        ("deputy_proto", vmm::fuzz::deputy_seeds()),
        ("peer_wire", mosvm_host::fuzz::seeds()),
        ("balancer_wire", balancer::wire::samples().iter().map(balancer::wire::encode).collect()),
        ("elf_loader", elf),
    ];
    for (target, seeds) in sets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
