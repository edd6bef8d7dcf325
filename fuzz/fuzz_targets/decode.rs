//! Any bytes, framed and decoded under every codec a session can negotiate; what decodes
//! is written back and read again (`calico_bgp::fuzzing::check_decoder`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    calico_bgp::fuzzing::check_decoder(bytes);
});
