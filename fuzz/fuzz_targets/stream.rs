//! Differential: a request stream decodes to the same events whether it
//! arrives whole or in the pieces the fuzzer chooses.
#![no_main]

use http_cluster::Limits;
use http_cluster::proto::stream::decode_pieces;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, input)) = data.split_first() else { return };
    let limits = Limits { max_request_line: 128, max_head_bytes: 512, max_headers: 8, max_body_bytes: 1024, ..Limits::default() };
    let whole = decode_pieces([input], &limits);
    // Split every `cuts`-th byte (at least 1).
    let pieces = input.chunks(usize::from(cuts).max(1));
    assert_eq!(decode_pieces(pieces, &limits), whole);
});
