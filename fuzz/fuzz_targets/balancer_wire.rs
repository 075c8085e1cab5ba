#![no_main]
// The same decoding as the stable run in tests/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = balancer::wire::decode(data);
});
