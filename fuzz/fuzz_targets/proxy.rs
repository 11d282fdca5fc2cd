//! See `http_cluster::proto::fuzzing::proxy` for the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| http_cluster::proto::fuzzing::proxy(data));
