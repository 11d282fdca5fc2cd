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

/// Every directory of regressions names a target replayed above: one
/// under another name would be skipped without a word.
#[test]
fn every_regression_directory_is_replayed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).expect("fuzz/regressions").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(["head", "body", "stream", "proxy"].contains(&name.as_str()), "fuzz/regressions/{name} is no target");
        seen += std::fs::read_dir(entry.path()).unwrap().count();
    }
    assert!(seen > 0, "the stored regressions are gone");
}
