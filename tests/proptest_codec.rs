//! Property: any valid request stream, split anywhere, decodes to the
//! requests and bodies that were encoded, and each head to the header
//! fields that were sent.

use http_cluster::Limits;
use http_cluster::proto::head;
use http_cluster::proto::stream::{Event, decode_pieces};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Chunk sizes for a chunked body; None: Content-Length.
    chunks: Option<Vec<usize>>,
    close: bool,
}

fn req_strategy() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        "/[a-zA-Z0-9._~%!$&'()*+,;=:@/-]{0,40}(\\?[a-z0-9=&]{0,20})?",
        prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..6),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::option::of(prop::collection::vec(1usize..64, 1..8)),
        any::<bool>(),
    )
        .prop_map(|(method, path, headers, body, chunks, close)| {
            // Framing and connection headers are the encoder's, not random.
            let headers = headers
                .into_iter()
                .filter(|(n, _)| {
                    let n = n.to_ascii_lowercase();
                    !["host", "content-length", "transfer-encoding", "connection", "expect"].contains(&n.as_str())
                })
                .map(|(n, v)| (n, v.trim().to_string()))
                .collect();
            Req { method, path, headers, body, chunks, close }
        })
}

fn encode(r: &Req) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\nHost: example\r\n", r.method, r.path).into_bytes();
    for (n, v) in &r.headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if r.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    match &r.chunks {
        None => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", r.body.len()).as_bytes());
            out.extend_from_slice(&r.body);
        }
        Some(sizes) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &r.body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    out
}

fn expected_fields(r: &Req) -> Vec<(String, Vec<u8>)> {
    let mut fields = vec![("Host".to_string(), b"example".to_vec())];
    fields.extend(r.headers.iter().map(|(n, v)| (n.clone(), v.as_bytes().to_vec())));
    if r.close {
        fields.push(("Connection".to_string(), b"close".to_vec()));
    }
    fields.push(match &r.chunks {
        None => ("Content-Length".to_string(), r.body.len().to_string().into_bytes()),
        Some(_) => ("Transfer-Encoding".to_string(), b"chunked".to_vec()),
    });
    fields
}

fn expected(reqs: &[Req]) -> Vec<Event> {
    let mut ev = Vec::new();
    for r in reqs {
        ev.push(Event::Head { method: r.method.into(), target: r.path.clone(), minor: 1, keep_alive: !r.close });
        if !r.body.is_empty() {
            ev.push(Event::Data(r.body.clone()));
        }
        ev.push(Event::End);
    }
    ev
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn random_requests_round_trip_at_random_splits(
        reqs in prop::collection::vec(req_strategy(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let wire: Vec<u8> = reqs.iter().flat_map(encode).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort();
        points.dedup();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in points {
            pieces.push(&wire[last..p]);
            last = p;
        }
        pieces.push(&wire[last..]);
        let got = decode_pieces(pieces.iter().copied(), &Limits::default());
        prop_assert_eq!(got, expected(&reqs));
        // The head's fields, in order, names as sent, values without the
        // whitespace around them.
        for r in &reqs {
            let (req, _) = head::parse(&encode(r), &Limits::default()).unwrap().expect("a whole head");
            let fields: Vec<(String, Vec<u8>)> =
                req.headers().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
            prop_assert_eq!(fields, expected_fields(r));
        }
    }
}
