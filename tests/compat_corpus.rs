//! Debian's own programs, shells and interpreters (tests/corpus.rs) give in
//! a job exactly what they give natively: output, status and files.

use mosvm_tests::corpus::{cases, run_case};
use mosvm_tests::{require_kvm, scratch_dir};

#[test]
fn debian_programs_behave_as_natively() {
    if !require_kvm("debian_programs_behave_as_natively") {
        return;
    }
    let work = scratch_dir("corpus");
    let (mut passed, mut failed, mut gaps) = (0, Vec::new(), Vec::new());
    for c in cases() {
        let o = run_case(&c, &work.join(c.name.replace(['/', ' '], "_")), &[]);
        match (o.same(), c.gap) {
            (true, None) => passed += 1,
            (true, Some(why)) => {
                eprintln!("{}: passes now, though marked as a gap ({why}): remove the mark", c.name);
                passed += 1;
            }
            (false, Some(why)) => gaps.push(format!("{}: {why}", c.name)),
            (false, None) => failed.push(format!(
                "{} {:?}:\n  native {:?}\n  job    {:?}\n  files differ: {:?}",
                c.name, c.argv, o.native, o.job, o.files_differ
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("{passed} cases identical; known gaps: {gaps:#?}");
    assert!(failed.is_empty(), "{} cases differ from their native runs:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn extended_attributes_behave_as_natively() {
    if !require_kvm("extended_attributes_behave_as_natively") {
        return;
    }
    use mosvm_tests::{image, native, vm, Opts};
    let p = image("tests/xattrs");
    let (dn, dv) = (scratch_dir("xattrs-native"), scratch_dir("xattrs-job"));
    let n = native(&p, &[], &Opts { cwd: Some(&dn), ..Opts::default() });
    let v = vm(&p, &[], &Opts { cwd: Some(&dv), ..Opts::default() });
    let _ = (std::fs::remove_dir_all(&dn), std::fs::remove_dir_all(&dv));
    assert!(n.stdout.contains("value alpha"), "{n:?}");
    assert_eq!(v, n);
}
