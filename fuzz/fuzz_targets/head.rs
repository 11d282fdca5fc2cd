//! The head parser on arbitrary bytes: never panics, and what it accepts
//! obeys the limits.
#![no_main]

use http_cluster::Limits;
use http_cluster::proto::head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_request_line: 256, max_head_bytes: 1024, max_headers: 16, ..Limits::default() };
    if let Ok(Some((req, n))) = head::parse(data, &limits) {
        assert!(n <= data.len() && n <= limits.max_head_bytes);
        assert!(req.headers().count() <= 16);
        let _ = (req.method(), req.path(), req.query(), req.header("host"), req.keep_alive());
    }
});
