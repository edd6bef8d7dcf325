//! A session driven by any sequence of events and received messages; what it sends and
//! the states it reports are checked (`calico_bgp::fuzzing::check_session`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = calico_bgp::fuzzing::check_session(bytes);
});
