//! Codec costs in ns per request, so regressions show without a network:
//! parsing a typical browser request head, encoding a response head, the
//! Date header, and decoding a chunked body. Run: `cargo bench --bench codec`.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use http_cluster::Limits;
use http_cluster::Response;
use http_cluster::proto::decode::{BodyDecoder, BodyLimits, Chunk};
use http_cluster::proto::encode::{HeadMemo, RequestInfo, encode_head};
use http_cluster::proto::head::{self, BodyKind};

const BROWSER_GET: &[u8] = b"GET /static/app.js?v=1712 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; _ga=GA1.2.1234567890.1712345678\r\n\
Connection: keep-alive\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n";

fn parse_head(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("head");
    g.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    g.bench_function("parse browser GET", |b| {
        b.iter(|| head::parse(black_box(BROWSER_GET), &limits).unwrap().unwrap().1)
    });
    g.bench_function("parse wrk GET", |b| {
        b.iter(|| {
            head::parse(black_box(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"), &limits).unwrap().unwrap().1
        })
    });
    g.finish();
}

fn encode_response(c: &mut Criterion) {
    let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
    let info = RequestInfo { is_head: false, minor: 1, keep_alive: true };
    let mut out = Vec::with_capacity(256);
    c.bench_function("encode hello head", |b| {
        b.iter(|| {
            out.clear();
            let resp = Response::new(200).content_type("text/plain").content_length(13);
            encode_head(black_box(&resp), info, &date, &mut out).unwrap();
            out.len()
        })
    });
    // What a keep-alive connection does from its second response on: the
    // head's start and end are copied from the previous one's.
    let mut memo = HeadMemo::default();
    let second = http_cluster::proto::date::second();
    c.bench_function("encode hello head (memo)", |b| {
        b.iter(|| {
            out.clear();
            let resp = Response::new(200).content_type("text/plain").content_length(13);
            memo.encode_head(black_box(&resp), info, second, &mut out).unwrap();
            out.len()
        })
    });
}

/// Every response reads the clock for its Date header.
fn date_header(c: &mut Criterion) {
    c.bench_function("date header (cached)", |b| b.iter(http_cluster::proto::date::now));
}

fn decode_chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let limits = BodyLimits { max_body_bytes: u64::MAX, max_chunk_ext_bytes: 1024, max_trailer_bytes: 1024 };
    let mut g = c.benchmark_group("body");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode 64 KiB chunked", |b| {
        b.iter(|| {
            let mut d = BodyDecoder::new(BodyKind::Chunked, limits);
            let mut input = black_box(&body[..]);
            let mut data = 0;
            loop {
                match d.decode(input).unwrap() {
                    (n, Chunk::Data(r)) => {
                        data += r.len();
                        input = &input[n..];
                    }
                    (_, Chunk::End) => break data,
                    (n, Chunk::NeedMore) => input = &input[n..],
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, parse_head, encode_response, date_header, decode_chunked);
criterion_main!(benches);
