#![no_main]
// The harness is shared with the stable run in tests/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmm::fuzz::migration_stream(data);
});
