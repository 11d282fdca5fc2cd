//! Replays every input of the fuzz corpus (fuzz/corpus/<target>/) and the
//! crash regressions (fuzz/regressions/<target>/) through the fuzz targets'
//! checks, on the stable toolchain, as a normal test.

use http_cluster::proto::fuzzing;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn head_corpus() {
    assert!(replay("head", fuzzing::head) > 0, "the head corpus is empty");
}

#[test]
fn body_corpus() {
    assert!(replay("body", fuzzing::body) > 0, "the body corpus is empty");
}

#[test]
fn stream_corpus() {
    assert!(replay("stream", fuzzing::stream) > 0, "the stream corpus is empty");
}

#[test]
fn proxy_corpus() {
    assert!(replay("proxy", fuzzing::proxy) > 0, "the proxy corpus is empty");
}
