//! The bench's speed limit (`scripts/limit.c`, a C loop answering canned
//! responses) is only a fair ceiling while its answers cost a client what
//! http-cluster's do: the same bytes, the same connection handling. This
//! builds it with the machine's C compiler, runs it beside the real master
//! with `workers/hello`, and compares their answers on real sockets.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use util::*;

struct Limit(Child, String);

impl Drop for Limit {
    /// Kills its process group: the loop runs in a child of the process
    /// started.
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of ours. The group is the one spawned below.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn start_limit() -> Limit {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = temp_path("limit");
    // The bench builds it with `cc` or, failing that, `gcc`; so does this.
    let build = |compiler: &str| {
        Command::new(compiler).arg("-O2").arg("-o").arg(&exe).arg(root.join("scripts/limit.c")).status()
    };
    let built = match build("cc") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => build("gcc"),
        other => other,
    };
    assert!(built.is_ok_and(|s| s.success()), "scripts/limit.c does not build with cc or gcc");
    let mut child = Command::new(&exe)
        .args(["0", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start limit");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("bad line {line:?}")).to_string();
    Limit(child, addr)
}

/// Sends `request` and reads until the peer closes or `responses` whole
/// answers have come (each ends with the 13-byte body); and whether the
/// peer closed.
fn exchange(addr: &str, request: &[u8], responses: usize) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.windows(13).filter(|w| w == b"Hello, world!").count() < responses {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading from {addr}: {e}"),
        }
    }
    (out, false)
}

/// The answer's lines (Date's value masked), sorted: header order is free.
fn lines(raw: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = without_date(raw).split('\n').map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn the_speed_limit_answers_like_hello() {
    let server = Server::start(&["--workers", "1", "--", bin("hello").to_str().unwrap()]);
    let ours = server.addr.to_string();
    let limit = start_limit();
    // (what, request, answers to wait for, whether the server then closes)
    let cases: [(&str, &[u8], usize, bool); 3] = [
        ("keep-alive, pipelined", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 2, false),
        ("HTTP/1.0 keep-alive (ab -k)", b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\n\r\n", 1, false),
        ("Connection: close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", usize::MAX, true),
    ];
    for (what, request, responses, closes) in cases {
        let (a, a_closed) = exchange(&ours, request, responses);
        let (b, b_closed) = exchange(&limit.1, request, responses);
        assert_eq!((a_closed, b_closed), (closes, closes), "{what}: (hello, limit) closed");
        assert!(a.starts_with(b"HTTP/1.1 200 OK\r\n"), "{what}: hello answered {:?}", String::from_utf8_lossy(&a));
        assert_eq!(a.len(), b.len(), "{what}: sizes differ\nhello: {a:?}\nlimit: {b:?}");
        assert_eq!(lines(&a), lines(&b), "{what}: headers differ");
    }
}
