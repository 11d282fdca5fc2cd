//! The example workers end to end: the real master runs `files`, `stream`
//! and `json` as its worker program, and clients talk to it over real
//! sockets (raw requests, curl, Python's http.client).

mod util;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use util::*;

fn program(name: &str) -> String {
    let path = match name {
        "files" => env!("CARGO_BIN_EXE_files"),
        other => panic!("unknown example {other}"),
    };
    path.to_string()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hc-examples-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes that differ at every offset modulo 251, so a shifted or repeated
/// piece shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// One request on a fresh connection; the response (no body for HEAD).
fn ask(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: a\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut reader = Reader::new(server.connect());
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    reader.response(method == "HEAD").unwrap()
}

// ---------------------------------------------------------------- files

const DATA_LEN: usize = 1_500_000;

/// base/secret.txt and base/outside/ are outside the served root,
/// base/root/ is served.
fn site(test: &str) -> Scratch {
    let base = Scratch::new(test);
    base.write("secret.txt", b"top secret\n");
    base.write("outside/secret.txt", b"top secret too\n");
    base.write("root/index.html", b"<h1>home</h1>\n");
    base.write("root/style.css", b"body { color: red }\n");
    base.write("root/notes.txt", b"0123456789abcdefghij");
    base.write("root/data.bin", &pattern(DATA_LEN));
    base.write("root/sub/index.html", b"<h1>sub</h1>\n");
    base.write("root/sub/page.html", b"<p>page</p>\n");
    std::fs::create_dir_all(base.path("root/empty")).unwrap();
    let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, base.path(name)).unwrap();
    link("style.css", "root/in.css");
    link("sub", "root/in-dir");
    link("../secret.txt", "root/out.txt");
    link(&base.path("secret.txt").display().to_string(), "root/out-absolute.txt");
    link("../outside", "root/out-dir");
    base
}

fn files_server(site: &Scratch) -> Server {
    Server::start(&["--workers", "1", "--", &program("files"), &site.path("root").display().to_string()])
}

#[test]
fn files_refuses_to_boot_without_a_directory() {
    let site = site("files_refuses_to_boot_without_a_directory");
    for (root, why) in
        [(site.path("nope"), "No such file or directory"), (site.path("root/style.css"), "not a directory")]
    {
        let out = Command::new(bin("http-cluster"))
            .args(["--bind", "127.0.0.1:0", "--workers", "1", "--", &program("files")])
            .arg(&root)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&format!("files: cannot serve {}: {why}", root.display())), "{err}");
        assert!(err.contains("failed to boot (exit code 4)"), "EXIT_APP_ERROR, no respawn loop: {err}");
    }
}

#[test]
fn files_content_types_validators_head_and_directories() {
    let site = site("files_content_types_validators_head_and_directories");
    let server = files_server(&site);

    let css = ask(&server, "GET", "/style.css", &[]);
    assert_eq!(css.status, 200);
    assert_eq!(css.body, b"body { color: red }\n");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("content-length"), Some("20"));
    assert_eq!(css.header("accept-ranges"), Some("bytes"));
    let etag = css.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 4, "{etag}");
    let modified = std::fs::metadata(site.path("root/style.css")).unwrap().modified().unwrap();
    assert_eq!(css.header("last-modified"), Some(httpdate::fmt_http_date(modified).as_str()));

    // HEAD: the same head, and not one body byte on the wire.
    let raw = exchange_raw(&server, b"HEAD /style.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let head = String::from_utf8(raw).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    for line in ["Content-Length: 20", "Content-Type: text/css; charset=utf-8", "Accept-Ranges: bytes"] {
        assert!(head.contains(&format!("{line}\r\n")), "{head}");
    }
    assert!(head.contains(&format!("ETag: {etag}\r\n")), "{head}");

    for (path, want) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/notes.txt", "text/plain; charset=utf-8"),
        ("/data.bin", "application/octet-stream"),
    ] {
        assert_eq!(ask(&server, "GET", path, &[]).header("content-type"), Some(want), "{path}");
    }

    // Directories: index.html with the slash, a redirect without, 404 if
    // there is no index; missing files 404; only GET and HEAD.
    assert_eq!(ask(&server, "GET", "/", &[]).body, b"<h1>home</h1>\n");
    assert_eq!(ask(&server, "GET", "/sub/", &[]).body, b"<h1>sub</h1>\n");
    let moved = ask(&server, "GET", "/sub?x=1", &[]);
    assert_eq!((moved.status, moved.header("location")), (301, Some("/sub/?x=1")));
    let moved = ask(&server, "GET", "//sub", &[]);
    assert_eq!(moved.header("location"), Some("/sub/"), "never a protocol-relative //host redirect");
    assert_eq!(ask(&server, "GET", "/empty/", &[]).status, 404);
    assert_eq!(ask(&server, "GET", "/missing.txt", &[]).status, 404);
    assert_eq!(ask(&server, "GET", "/style.css/x", &[]).status, 404);
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let refused = ask(&server, method, "/style.css", &[]);
        assert_eq!((refused.status, refused.header("allow")), (405, Some("GET, HEAD")), "{method}");
    }

    // A file larger than a read buffer, through curl, byte for byte.
    let (ok, out) = run(Command::new("curl").args(["-sS", "--fail"]).arg(server.url("/data.bin")));
    assert!(ok);
    assert!(out == pattern(DATA_LEN), "1.5 MB streamed intact");
}

#[test]
fn files_conditional_requests_answer_304() {
    let site = site("files_conditional_requests_answer_304");
    let server = files_server(&site);
    let full = ask(&server, "GET", "/notes.txt", &[]);
    let etag = full.header("etag").unwrap().to_string();
    let modified = full.header("last-modified").unwrap().to_string();
    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {etag}");
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    let earlier = "Thu, 01 Jan 1998 00:00:00 GMT";

    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[("If-None-Match", &etag)], 304),
        (&[("If-None-Match", &weak)], 304),
        (&[("If-None-Match", &listed)], 304),
        (&[("If-None-Match", "*")], 304),
        (&[("If-None-Match", "\"stale\"")], 200),
        (&[("If-Modified-Since", &modified)], 304),
        (&[("If-Modified-Since", &later)], 304),
        (&[("If-Modified-Since", earlier)], 200),
        (&[("If-Modified-Since", "not a date")], 200),
        // If-None-Match decides alone when present (RFC 9110 §13.2.2).
        (&[("If-None-Match", "\"stale\""), ("If-Modified-Since", &modified)], 200),
        (&[("If-None-Match", &etag), ("If-Modified-Since", earlier)], 304),
    ];
    for (headers, status) in cases {
        let resp = ask(&server, "GET", "/notes.txt", headers);
        assert_eq!(resp.status, *status, "{headers:?}");
        assert_eq!(resp.header("etag"), Some(etag.as_str()), "{headers:?}");
        if *status == 304 {
            assert!(resp.body.is_empty());
        } else {
            assert_eq!(resp.body, b"0123456789abcdefghij");
        }
    }
    let raw = exchange_raw(
        &server,
        format!("GET /notes.txt HTTP/1.1\r\nHost: a\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 304 Not Modified\r\n") && raw.ends_with("\r\n\r\n"), "no body: {raw}");
    assert!(raw.contains(&format!("Last-Modified: {modified}\r\n")), "{raw}");

    // Changing the file changes the ETag: the old one no longer matches.
    std::thread::sleep(std::time::Duration::from_millis(20));
    site.write("root/notes.txt", b"0123456789abcdefghij!");
    let changed = ask(&server, "GET", "/notes.txt", &[("If-None-Match", &etag)]);
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.body, b"0123456789abcdefghij!");
}

#[test]
fn files_single_ranges_206_416_and_if_range() {
    let site = site("files_single_ranges_206_416_and_if_range");
    let server = files_server(&site);
    let etag = ask(&server, "HEAD", "/notes.txt", &[]).header("etag").unwrap().to_string();
    let body = b"0123456789abcdefghij";
    let partial: &[(&str, &str, &str)] = &[
        ("bytes=0-9", "bytes 0-9/20", "0123456789"),
        ("bytes=10-", "bytes 10-19/20", "abcdefghij"),
        ("bytes=-5", "bytes 15-19/20", "fghij"),
        ("bytes=-50", "bytes 0-19/20", "0123456789abcdefghij"),
        ("bytes=18-1000", "bytes 18-19/20", "ij"),
        ("bytes=3-3", "bytes 3-3/20", "3"),
    ];
    for (range, content_range, want) in partial {
        let resp = ask(&server, "GET", "/notes.txt", &[("Range", range)]);
        assert_eq!(resp.status, 206, "{range}");
        assert_eq!(resp.header("content-range"), Some(*content_range), "{range}");
        assert_eq!(resp.header("content-length"), Some(want.len().to_string().as_str()), "{range}");
        assert_eq!(resp.body, want.as_bytes(), "{range}");
        assert_eq!(resp.header("etag"), Some(etag.as_str()));
    }
    for range in ["bytes=20-", "bytes=25-30", "bytes=-0"] {
        let resp = ask(&server, "GET", "/notes.txt", &[("Range", range)]);
        assert_eq!((resp.status, resp.header("content-range")), (416, Some("bytes */20")), "{range}");
    }
    // Several ranges, nonsense and foreign units: the whole file.
    for range in ["bytes=0-1,5-6", "bytes=abc", "bytes=5-1", "lines=1-2"] {
        let resp = ask(&server, "GET", "/notes.txt", &[("Range", range)]);
        assert_eq!((resp.status, resp.body.as_slice()), (200, &body[..]), "{range}");
    }
    // HEAD ignores Range (ranges are defined for GET).
    let head = ask(&server, "HEAD", "/notes.txt", &[("Range", "bytes=0-1")]);
    assert_eq!((head.status, head.header("content-length")), (200, Some("20")));
    // If-Range: the current ETag keeps the range, a stale one or a weak
    // one gets the whole (new) file.
    let weak = format!("W/{etag}");
    for (if_range, status) in [(etag.as_str(), 206), ("\"stale\"", 200), (weak.as_str(), 200)] {
        let resp = ask(&server, "GET", "/notes.txt", &[("Range", "bytes=0-1"), ("If-Range", if_range)]);
        assert_eq!(resp.status, status, "If-Range {if_range}");
    }
    let modified = ask(&server, "HEAD", "/notes.txt", &[]).header("last-modified").unwrap().to_string();
    let resp = ask(&server, "GET", "/notes.txt", &[("Range", "bytes=0-1"), ("If-Range", &modified)]);
    assert_eq!(resp.status, 206);

    // A range deep inside a file larger than the read buffer, with curl.
    let (ok, out) =
        run(Command::new("curl").args(["-sS", "--fail", "-r", "1000000-1299999"]).arg(server.url("/data.bin")));
    assert!(ok);
    assert!(out == pattern(DATA_LEN)[1_000_000..1_300_000], "range bytes match the file");
}

#[test]
fn files_never_serve_outside_the_root() {
    let site = site("files_never_serve_outside_the_root");
    let server = files_server(&site);
    let secret = |resp: &Resp| String::from_utf8_lossy(&resp.body).contains("top secret");
    // Raw sockets: clients like curl would normalize `..` away.
    let traversal = [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub%2F..%2F..%2Fsecret.txt",
        "/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/..%5Csecret.txt",
        "/sub\\..\\..\\secret.txt",
        "/notes.txt%00.html",
    ];
    for path in traversal {
        let resp = ask(&server, "GET", path, &[]);
        assert_eq!(resp.status, 400, "{path}");
        assert!(!secret(&resp), "{path}");
    }
    // Symlinks out of the root look like missing files.
    for path in ["/out.txt", "/out-absolute.txt", "/out-dir/secret.txt", "/out-dir/"] {
        let resp = ask(&server, "GET", path, &[]);
        assert_eq!(resp.status, 404, "{path}");
        assert!(!secret(&resp), "{path}");
    }
    // Symlinks within the root are followed; %2F is a separator.
    let linked = ask(&server, "GET", "/in.css", &[]);
    assert_eq!((linked.status, linked.body.as_slice()), (200, &b"body { color: red }\n"[..]));
    assert_eq!(ask(&server, "GET", "/in-dir/page.html", &[]).body, b"<p>page</p>\n");
    assert_eq!(ask(&server, "GET", "/sub%2Fpage.html", &[]).body, b"<p>page</p>\n");
    assert_eq!(ask(&server, "GET", "/%73tyle.css", &[]).body, b"body { color: red }\n");
    // The worker is fine after all that.
    assert_eq!(ask(&server, "GET", "/", &[]).status, 200);
}
