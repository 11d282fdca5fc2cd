//! The example workers end to end: the real master runs `files`, `stream`
//! and `json` as its worker program, and clients talk to it over real
//! sockets (raw requests, curl, Python's http.client).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use util::*;

fn program(name: &str) -> String {
    let path = match name {
        "files" => env!("CARGO_BIN_EXE_files"),
        "stream" => env!("CARGO_BIN_EXE_stream"),
        "json" => env!("CARGO_BIN_EXE_json"),
        other => panic!("unknown example {other}"),
    };
    path.to_string()
}

/// A scratch directory, removed on drop (it is a [`temp_path`]).
struct Scratch(TempPath);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = temp_path(&format!("examples-{name}"));
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

/// Bytes that differ at every offset modulo 251, so a shifted or repeated
/// piece shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Runs a Python script; its stdout, or why it failed (stderr included).
fn python(script: &str) -> Result<String, String> {
    let out = Command::new("python3").arg("-c").arg(script).output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() { Ok(stdout) } else { Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))) }
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
    base.write("root/.env", b"top secret=1\n");
    base.write("root/.git/config", b"top secret config\n");
    base.write("root/sub/.htpasswd", b"top secret:hash\n");
    base.write("root/.well-known/security.txt", b"Contact: a@b\n");
    std::fs::create_dir_all(base.path("root/empty")).unwrap();
    let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, base.path(name)).unwrap();
    link("style.css", "root/in.css");
    link("sub", "root/in-dir");
    link("../secret.txt", "root/out.txt");
    link(&base.path("secret.txt").display().to_string(), "root/out-absolute.txt");
    link("../outside", "root/out-dir");
    std::fs::create_dir_all(base.path("root/leaky")).unwrap();
    link("../../secret.txt", "root/leaky/index.html");
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
        let (status, err) = master_exit(
            Command::new(bin("http-cluster"))
                .args(["--bind", "127.0.0.1:0", "--workers", "1", "--control-socket", "none", "--"])
                .arg(program("files"))
                .arg(&root),
            Duration::from_secs(10),
        );
        assert!(!status.success(), "{err}");
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
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
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
        // A field on two lines is one list (RFC 9110 §5.3).
        (&[("If-None-Match", "\"stale\""), ("If-None-Match", &etag)], 304),
        // Preconditions come first (§13.2.2): If-Match compares strongly,
        // If-Unmodified-Since only counts without it.
        (&[("If-Match", &etag)], 200),
        (&[("If-Match", "*")], 200),
        (&[("If-Match", "\"stale\"")], 412),
        (&[("If-Match", &weak)], 412),
        (&[("If-Match", "\"stale\""), ("If-Match", &etag)], 200),
        (&[("If-Unmodified-Since", &modified)], 200),
        (&[("If-Unmodified-Since", earlier)], 412),
        (&[("If-Unmodified-Since", "not a date")], 200),
        (&[("If-Match", &etag), ("If-Unmodified-Since", earlier)], 200),
        (&[("If-Match", "\"stale\""), ("If-None-Match", &etag)], 412),
    ];
    for (headers, status) in cases {
        let resp = ask(&server, "GET", "/notes.txt", headers);
        assert_eq!(resp.status, *status, "{headers:?}");
        if *status != 412 {
            assert_eq!(resp.header("etag"), Some(etag.as_str()), "{headers:?}");
        }
        match status {
            304 => assert!(resp.body.is_empty()),
            412 => assert_eq!(resp.body, b"precondition failed: the file has changed\n"),
            _ => assert_eq!(resp.body, b"0123456789abcdefghij"),
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
    std::thread::sleep(Duration::from_millis(20));
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
    // Two Range lines are two ranges: the whole file too.
    let two = ask(&server, "GET", "/notes.txt", &[("Range", "bytes=0-1"), ("Range", "bytes=5-6")]);
    assert_eq!((two.status, two.body.as_slice()), (200, &body[..]));
    // HEAD ignores Range (ranges are defined for GET).
    let head = ask(&server, "HEAD", "/notes.txt", &[("Range", "bytes=0-1")]);
    assert_eq!((head.status, head.header("content-length")), (200, Some("20")));
    // If-Range: the current ETag keeps the range, a stale one or a weak
    // one gets the whole (new) file.
    let weak = format!("W/{etag}");
    // If-Range holds one tag, not a list.
    let listed = format!("\"stale\", {etag}");
    for (if_range, status) in [(etag.as_str(), 206), ("\"stale\"", 200), (weak.as_str(), 200), (listed.as_str(), 200)] {
        let resp = ask(&server, "GET", "/notes.txt", &[("Range", "bytes=0-1"), ("If-Range", if_range)]);
        assert_eq!(resp.status, status, "If-Range {if_range}");
    }
    // Its Last-Modified date keeps the range only once the file is a second
    // old, by its modification time and by its inode change time (it was
    // written moments ago: its time is set back here, which changes the
    // latter). A version of the last second shares its date with any other
    // of that second.
    let notes = std::fs::File::options().write(true).open(site.path("root/notes.txt")).unwrap();
    let if_range = |server: &Server| {
        let modified = ask(server, "HEAD", "/notes.txt", &[]).header("last-modified").unwrap().to_string();
        let resp = ask(server, "GET", "/notes.txt", &[("Range", "bytes=0-1"), ("If-Range", &modified)]);
        (modified, resp.status)
    };
    let set_back = std::time::SystemTime::now() - Duration::from_secs(10);
    notes.set_modified(set_back).unwrap();
    assert_eq!(if_range(&server).1, 200, "inode changed just now (as by touch -d)");
    std::thread::sleep(Duration::from_millis(1100));
    let (modified, status) = if_range(&server);
    assert_eq!(status, 206, "a second later, Last-Modified {modified}");
    // A modification time ahead of the clock: sent as now, and weak (5 s
    // ahead gives the check 5 s instead of one).
    notes.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    let (modified, status) = if_range(&server);
    assert_eq!(status, 200, "Last-Modified {modified}");
    let sent = httpdate::parse_http_date(&modified).unwrap();
    assert!(sent <= std::time::SystemTime::now(), "Last-Modified {modified} is in the future");

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
    for path in ["/out.txt", "/out-absolute.txt", "/out-dir/secret.txt", "/out-dir/", "/leaky/", "/leaky/index.html"] {
        let resp = ask(&server, "GET", path, &[]);
        assert_eq!(resp.status, 404, "{path}");
        assert!(!secret(&resp), "{path}");
    }
    // Hidden names are not published, but for .well-known.
    for path in ["/.env", "/.git/config", "/sub/.htpasswd", "/%2eenv"] {
        let resp = ask(&server, "GET", path, &[]);
        assert_eq!(resp.status, 404, "{path}");
        assert!(!secret(&resp), "{path}");
    }
    assert_eq!(ask(&server, "GET", "/.well-known/security.txt", &[]).body, b"Contact: a@b\n");
    // A FIFO is not a file: opening it for reading would wait for a writer
    // on the worker's only thread. Not found, and the worker serves on.
    let fifo = std::ffi::CString::new(site.path("root/pipe").display().to_string()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert_eq!(ask(&server, "GET", "/pipe", &[]).status, 404);
    // Symlinks within the root are followed; %2F is a separator.
    let linked = ask(&server, "GET", "/in.css", &[]);
    assert_eq!((linked.status, linked.body.as_slice()), (200, &b"body { color: red }\n"[..]));
    assert_eq!(ask(&server, "GET", "/in-dir/page.html", &[]).body, b"<p>page</p>\n");
    assert_eq!(ask(&server, "GET", "/sub%2Fpage.html", &[]).body, b"<p>page</p>\n");
    assert_eq!(ask(&server, "GET", "/%73tyle.css", &[]).body, b"body { color: red }\n");
    // The worker is fine after all that.
    assert_eq!(ask(&server, "GET", "/", &[]).status, 200);
}

// ---------------------------------------------------------------- stream

fn stream_server() -> Server {
    Server::start(&["--workers", "1", "--", &program("stream")])
}

/// The one worker's pid.
fn only_worker(server: &Server) -> i32 {
    let pids = server.worker_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0]
}

/// Resident memory of `pid` in bytes, from /proc.
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Sockets `pid` has open (its listener and channel, plus one per
/// connection).
fn open_sockets(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| t.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Reads a chunked `/bytes` response head and body from `stream` without
/// keeping the body: checks each byte against the pattern and returns how
/// many there were.
fn count_pattern_body(stream: impl Read) -> u64 {
    let period = 251;
    let reference: Vec<u8> = (0..64 * 1024 + period).map(|i| (i % period) as u8).collect();
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    let mut head = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "eof in head: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    let mut total = 0u64;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let size = u64::from_str_radix(line.trim_end(), 16).unwrap_or_else(|_| panic!("chunk size {line:?}"));
        if size == 0 {
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "\r\n");
            return total;
        }
        let mut left = size;
        while left > 0 {
            let data = r.fill_buf().unwrap();
            assert!(!data.is_empty(), "eof inside a chunk after {total} bytes");
            let take = data.len().min(left as usize).min(64 * 1024);
            let phase = (total % period as u64) as usize;
            assert!(data[..take] == reference[phase..phase + take], "wrong bytes at offset {total}");
            r.consume(take);
            total += take as u64;
            left -= take as u64;
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).unwrap();
        assert_eq!(&crlf, b"\r\n");
    }
}

#[test]
fn stream_bytes_backpressure_keeps_worker_memory_flat() {
    let server = stream_server();
    let worker = only_worker(&server);
    let before = rss_bytes(worker);
    const N: u64 = 256 << 20;
    let mut conn = server.connect();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    conn.write_all(format!("GET /bytes?n={N} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
    // The client reads nothing: a worker that buffered instead of waiting
    // would grow towards 256 MiB in this second.
    std::thread::sleep(Duration::from_secs(1));
    let stalled = rss_bytes(worker);
    eprintln!("worker RSS: {} KiB before, {} KiB while the client does not read", before >> 10, stalled >> 10);
    assert!(stalled < 64 << 20, "worker RSS {stalled} bytes while a 256 MiB stream is blocked");
    // Other connections are served meanwhile.
    let t = Instant::now();
    assert_eq!(get(&server, "/bytes?n=5").body, [0, 1, 2, 3, 4]);
    assert!(t.elapsed() < Duration::from_secs(2), "a blocked stream holds up nobody else");
    // Then every byte arrives, in order.
    let t = Instant::now();
    assert_eq!(count_pattern_body(&conn), N);
    eprintln!("256 MiB read in {:?}", t.elapsed());
    assert!(rss_bytes(worker) < 64 << 20);
}

#[test]
fn stream_events_have_the_sse_format_and_arrive_one_by_one() {
    let server = stream_server();
    // curl -N: the exact event bytes.
    let (ok, out) =
        run(Command::new("curl").args(["-sSN", "--fail"]).arg(server.url("/events?count=3&interval_ms=50")));
    assert!(ok);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "id: 0\ndata: tick 0\n\nid: 1\ndata: tick 1\n\nid: 2\ndata: tick 2\n\n"
    );

    // Python http.client: headers, and each event arriving on its own
    // (flushed when written, not with the end of the stream).
    let script = format!(
        r#"
import http.client, time
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
t0 = time.monotonic()
c.request("GET", "/events?count=4&interval_ms=300")
r = c.getresponse()
assert r.status == 200, r.status
assert r.getheader("Content-Type") == "text/event-stream", r.getheaders()
assert r.getheader("Transfer-Encoding") == "chunked", r.getheaders()
assert r.getheader("Cache-Control") == "no-cache", r.getheaders()
events, arrivals, buf = [], [], b""
while True:
    data = r.read1(65536)
    if not data:
        break
    buf += data
    while b"\n\n" in buf:
        event, buf = buf.split(b"\n\n", 1)
        events.append(event.decode())
        arrivals.append(time.monotonic() - t0)
assert buf == b"", buf
assert events == ["id: %d\ndata: tick %d" % (i, i) for i in range(4)], events
# Each event left when written: the first arrived long before the last
# (0.9 s apart on the server; a buffered stream would arrive all at once).
assert arrivals[-1] - arrivals[0] >= 0.6, arrivals
# Resuming after event 1, and after the last one (204: stop reconnecting).
c.request("GET", "/events?count=4&interval_ms=0", headers={{"Last-Event-ID": "1"}})
r = c.getresponse()
assert r.read() == b"id: 2\ndata: tick 2\n\nid: 3\ndata: tick 3\n\n"
c.request("GET", "/events?count=4&interval_ms=0", headers={{"Last-Event-ID": "3"}})
r = c.getresponse()
assert r.status == 204 and r.read() == b"", r.status
# Ids this server never sent start the stream over: one past the last,
# the largest number there is (no overflow), and not a number.
everything = b"".join(b"id: %d\ndata: tick %d\n\n" % (i, i) for i in range(4))
for bogus in ["4", "18446744073709551615", "x"]:
    c.request("GET", "/events?count=4&interval_ms=0", headers={{"Last-Event-ID": bogus}})
    r = c.getresponse()
    assert r.status == 200 and r.read() == everything, bogus
print("ok")
"#,
        port = server.addr.port()
    );
    assert_eq!(python(&script).as_deref(), Ok("ok\n"), "python SSE client");
}

#[test]
fn stream_sleeping_events_do_not_hold_up_other_connections() {
    let server = stream_server();
    let mut events = Reader::new(server.connect());
    events.get_mut().write_all(b"GET /events?count=2&interval_ms=10000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    // Wait for the first event: the handler is now sleeping for 10 s on
    // the worker's only thread.
    let mut first = [0u8; 1];
    events.get_mut().read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(get(&server, "/bytes?n=3").body, [0, 1, 2]);
        assert!(t.elapsed() < Duration::from_secs(3), "answered in {:?} while an SSE stream sleeps", t.elapsed());
    }
}

#[test]
fn stream_clients_that_leave_mid_stream_do_not_hurt_the_worker() {
    let server = stream_server();
    let worker = only_worker(&server);
    let idle_sockets = open_sockets(worker);
    // Leave a 1 GiB byte stream after 1 MiB, and an event stream after one
    // event.
    let mut bytes = server.connect();
    bytes.write_all(b"GET /bytes?n=1073741824 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut got = vec![0u8; 1 << 20];
    bytes.read_exact(&mut got).unwrap();
    let mut events = server.connect();
    events.write_all(b"GET /events?count=1000&interval_ms=20 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    let n = events.read(&mut first).unwrap();
    assert!(n > 0);
    assert_eq!(open_sockets(worker), idle_sockets + 2);
    drop(bytes);
    drop(events);
    // Both handlers notice on their next write and end their connection.
    assert!(
        wait_until(Duration::from_secs(5), || open_sockets(worker) == idle_sockets),
        "connections closed: {} sockets open, {idle_sockets} when idle",
        open_sockets(worker)
    );
    assert_eq!(only_worker(&server), worker, "the same worker lives on");
    assert_eq!(get(&server, "/bytes?n=4").body, [0, 1, 2, 3]);
}

#[test]
fn stream_heads_and_refusals() {
    let server = stream_server();
    let head = exchange_raw(&server, b"HEAD /bytes?n=100 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "no body: {head}");
    assert!(head.contains("Content-Type: application/octet-stream\r\n"), "{head}");
    let head = ask(&server, "HEAD", "/events", &[]);
    assert_eq!((head.status, head.header("content-type")), (200, Some("text/event-stream")));
    let empty = get(&server, "/bytes?n=0");
    assert_eq!((empty.status, empty.body.len()), (200, 0));
    for (path, status, text) in [
        ("/bytes?n=lots", 400, "n must be a whole number\n"),
        ("/bytes?n=-1", 400, "n must be a whole number\n"),
        ("/events?count=x", 400, "count must be a whole number\n"),
        ("/events?count=10000000", 400, "count must be at most 1000000\n"),
        ("/events?interval_ms=99999999", 400, "interval_ms must be at most 60000\n"),
        ("/nothing", 404, "not found: try /events or /bytes\n"),
    ] {
        let resp = get(&server, path);
        assert_eq!((resp.status, String::from_utf8_lossy(&resp.body).as_ref()), (status, text), "{path}");
    }
    let refused = ask(&server, "POST", "/bytes", &[("Content-Length", "0")]);
    assert_eq!((refused.status, refused.header("allow")), (405, Some("GET, HEAD")));
}

// ---------------------------------------------------------------- json

fn json_server() -> Server {
    Server::start(&["--workers", "1", "--", &program("json")])
}

/// `POST path` with `body` (Content-Length framed) on a fresh connection.
fn post(server: &Server, path: &str, content_type: Option<&str>, body: &[u8]) -> Resp {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n", body.len()).into_bytes();
    if let Some(t) = content_type {
        request.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    let mut reader = Reader::new(server.connect());
    let mut writer = reader.get_mut().try_clone().unwrap();
    // From a thread: the server may answer (413) before reading it all.
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let resp = reader.response(false).unwrap();
    drop(reader);
    sending.join().unwrap();
    resp
}

/// The `error` text of a JSON error body (which must be exactly that).
fn error_text(resp: &Resp) -> String {
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let value: serde_json::Value = serde_json::from_slice(&resp.body).expect("error bodies are JSON");
    let object = value.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{value}");
    object["error"].as_str().expect("error is a string").to_string()
}

const JSON: Option<&str> = Some("application/json");

#[test]
fn json_good_requests_from_python_and_curl() {
    let server = json_server();
    let script = format!(
        r#"
import http.client, json
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
H = {{"Content-Type": "application/json"}}
def call(method, path, body=None, headers={{}}, **kw):
    c.request(method, path, body=body, headers=headers, **kw)
    r = c.getresponse()
    return r.status, r.getheader("Content-Type"), r.read()
assert call("GET", "/api/health") == (200, "application/json", b'{{"status":"ok"}}')
s, t, b = call("HEAD", "/api/health")
assert (s, t, b) == (200, "application/json", b""), (s, t, b)
assert call("POST", "/api/greet", json.dumps({{"name": "Ada"}}), H) == (200, "application/json", b'{{"greeting":"Hello, Ada!"}}')
s, _, b = call("POST", "/api/greet", json.dumps({{"name": "Zo\u00eb \U0001F680"}}), {{"Content-Type": "application/json; charset=utf-8"}})
assert s == 200 and json.loads(b) == {{"greeting": "Hello, Zo\u00eb \U0001F680!"}}, b
assert call("POST", "/api/sum", b'{{"numbers": [1, 2, 3]}}', H)[2] == b'{{"sum":6}}'
assert call("POST", "/api/sum", b'{{"numbers": [0.5, 2, -1.25]}}', H)[2] == b'{{"sum":1.25}}'
assert call("POST", "/api/sum", b'{{"numbers": []}}', H)[2] == b'{{"sum":0}}'
# A chunked upload, in pieces that split the JSON anywhere.
pieces = iter([b'{{"num', b'bers": [1', b'0, 20', b', 12]}}'])
assert call("POST", "/api/sum", pieces, H, encode_chunked=True) == (200, "application/json", b'{{"sum":42}}')
print("ok")
"#,
        port = server.addr.port()
    );
    assert_eq!(python(&script).as_deref(), Ok("ok\n"), "python JSON client");

    // curl with Expect: 100-continue: reading the body asks for it at once
    // (told to wait 10 s for it, curl would otherwise send the body then).
    let t = Instant::now();
    let (ok, out) = run(Command::new("curl")
        .args(["-sS", "--fail", "--expect100-timeout", "10"])
        .args(["-H", "Content-Type: application/json", "-H", "Expect: 100-continue"])
        .args(["--data-binary", r#"{"name":"curl"}"#])
        .arg(server.url("/api/greet")));
    assert!(ok);
    assert_eq!(out, br#"{"greeting":"Hello, curl!"}"#);
    assert!(t.elapsed() < Duration::from_secs(5), "100 Continue was sent: {:?}", t.elapsed());
}

/// Path, Content-Type, body; status and the start of the error message.
type ErrorCase<'a> = (&'a str, Option<&'a str>, &'a [u8], u16, &'a str);

#[test]
fn json_errors_have_a_status_and_a_json_message() {
    let server = json_server();
    let cases: &[ErrorCase] = &[
        ("/api/greet", JSON, b"{\"name\": ", 400, "invalid JSON: EOF while parsing a value"),
        ("/api/greet", JSON, b"{\"name\": \"a\"} x", 400, "invalid JSON: trailing characters"),
        ("/api/greet", JSON, b"", 400, "invalid JSON: EOF while parsing a value"),
        ("/api/greet", JSON, b"{\"name\": 5}", 400, "wrong shape: invalid type: integer `5`, expected a string"),
        ("/api/greet", JSON, b"{}", 400, "wrong shape: missing field `name`"),
        ("/api/greet", JSON, b"{\"nmae\": \"a\"}", 400, "wrong shape: unknown field `nmae`, expected `name`"),
        (
            "/api/sum",
            JSON,
            b"{\"numbers\": [1, \"2\"]}",
            400,
            "wrong shape: invalid type: string \"2\", expected a JSON number",
        ),
        ("/api/sum", JSON, b"{\"numbers\": 3}", 400, "wrong shape: invalid type: integer `3`, expected a sequence"),
        ("/api/greet", JSON, b"{\"name\": \"  \"}", 422, "name must not be empty"),
        ("/api/sum", JSON, b"{\"numbers\": [1e308, 1e308]}", 422, "the sum is not a finite number"),
        ("/api/greet", None, b"{\"name\": \"a\"}", 415, "the body must be Content-Type: application/json"),
        (
            "/api/greet",
            Some("text/plain"),
            b"{\"name\": \"a\"}",
            415,
            "the body must be Content-Type: application/json",
        ),
        ("/api/health", JSON, b"{}", 405, "method not allowed: use GET, HEAD"),
        ("/api/nope", JSON, b"{}", 404, "no such endpoint: try /api/health, /api/greet or /api/sum"),
    ];
    for (path, content_type, body, status, error) in cases {
        let resp = post(&server, path, *content_type, body);
        let body = String::from_utf8_lossy(body);
        assert_eq!(resp.status, *status, "{path} {body}");
        if *status != 200 {
            // serde's messages go on with the position (`at line 1 column
            // 9`), which is serde_json's business.
            let text = error_text(&resp);
            assert!(text.starts_with(error), "{path} {body}: {text}");
        }
    }
    let refused = get(&server, "/api/greet");
    assert_eq!((refused.status, refused.header("allow")), (405, Some("POST")));
    assert_eq!(error_text(&refused), "method not allowed: use POST");
    assert_eq!(post(&server, "/api/health", None, b"").header("allow"), Some("GET, HEAD"));

    // Nesting far deeper than any stack: refused at the first wrong token,
    // never recursed into; the worker lives on.
    let worker = only_worker(&server);
    for deep in ["{\"numbers\": ", "{\"name\": ", "{\"extra\": ", ""] {
        let body = format!("{deep}{}", "[".repeat(100_000));
        assert_eq!(post(&server, "/api/sum", JSON, body.as_bytes()).status, 400, "{deep}");
    }
    assert_eq!(only_worker(&server), worker);
    assert_eq!(get(&server, "/api/health").body, br#"{"status":"ok"}"#);
}

#[test]
fn json_body_size_cap_for_length_and_chunked_bodies() {
    let server = json_server();
    const MAX: usize = 1 << 20;
    // Exactly the cap is accepted.
    let padding = MAX - r#"{"name":""}"#.len();
    let name = "a".repeat(padding);
    let resp = post(&server, "/api/greet", JSON, format!(r#"{{"name":"{name}"}}"#).as_bytes());
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), r#"{"greeting":"Hello, !"}"#.len() + padding);

    // One byte more, declared: refused before reading (and the connection
    // closes, since the body is too big to drain).
    let resp = post(&server, "/api/greet", JSON, &vec![b' '; MAX + 1]);
    assert_eq!(resp.status, 413);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(error_text(&resp), "the body must be at most 1048576 bytes");

    // Declared too big with `Expect: 100-continue`: the client is told 413
    // at once and never asked for the body.
    let mut reader = Reader::new(server.connect());
    reader
        .get_mut()
        .write_all(b"POST /api/greet HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    reader.get_mut().read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 413 "), "no 100 Continue first: {raw}");
    assert!(!raw.contains("100 Continue"), "{raw}");

    // Chunked: counted while reading.
    let mut reader = Reader::new(server.connect());
    let mut writer = reader.get_mut().try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let head =
            "POST /api/sum HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let _ = writer.write_all(head.as_bytes());
        let piece = vec![b' '; 64 * 1024];
        for _ in 0..20 {
            if writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).is_err()
                || writer.write_all(&piece).is_err()
                || writer.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let resp = reader.response(false).unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(error_text(&resp), "the body must be at most 1048576 bytes");
    drop(reader);
    sending.join().unwrap();

    // A chunked body under the cap is fine.
    let mut reader = Reader::new(server.connect());
    reader
        .get_mut()
        .write_all(b"POST /api/sum HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"numb\r\n9\r\ners\": [7]\r\n1\r\n}\r\n0\r\n\r\n")
        .unwrap();
    let resp = reader.response(false).unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &br#"{"sum":7}"#[..]));
}
