//! A worker whose handlers misbehave on request, for the tests of fault
//! isolation and supervision:
//! - `/panic` panics in the handler (only that connection may suffer);
//! - `/panic-late` sends a head declaring 10 body bytes and 5 of them,
//!   then panics (too late for a 500);
//! - `/sleep?MS` answers after MS milliseconds (a slow in-flight request);
//! - `/block?MS` blocks the worker's OS thread for MS milliseconds (what a
//!   handler calling a blocking API does: heartbeats stop);
//! - `/exit` exits the process with code 1 (a crash);
//! - `/status?N` answers status N with a 5-byte body (dropped for 204/304);
//! - `/short` declares 10 body bytes and writes 5 (a broken handler);
//! - `/chunked` answers a chunked `hello` without ending it and without
//!   reading the request body (both are left to the server);
//! - `/peer` answers the client address the handler sees (`-` if none);
//! - `/nth` answers how many requests this call of the handler has seen
//!   (a parked idle connection resumes on a new call: 1 again);
//! - anything else: `ok` and the worker's pid.

use std::time::Duration;

use http_cluster::{Requests, Response, Responses};

fn app(read: &Requests, write: &Responses) -> std::io::Result<()> {
    let mut nth = 0u64;
    for req in read {
        nth += 1;
        let ms: u64 = req.query().and_then(|q| q.parse().ok()).unwrap_or(0);
        match req.path() {
            "/panic" => panic!("handler panicked on purpose"),
            "/panic-late" => {
                write.head(Response::new(200).content_length(10))?;
                write.body(b"12345")?;
                write.flush()?;
                panic!("handler panicked on purpose, mid-body");
            }
            "/sleep" => may::coroutine::sleep(Duration::from_millis(ms)),
            "/block" => std::thread::sleep(Duration::from_millis(ms)),
            "/exit" => std::process::exit(1),
            "/status" => {
                write.head(Response::new(ms as u16).content_length(5))?;
                write.body(b"hello")?;
                continue;
            }
            "/peer" => {
                let peer = read.peer_addr().map_or_else(|| "-".to_string(), |a| a.to_string());
                write.respond(Response::new(200), peer.as_bytes())?;
                continue;
            }
            "/nth" => {
                write.respond(Response::new(200), nth.to_string().as_bytes())?;
                continue;
            }
            "/chunked" => {
                write.head(Response::new(200))?;
                write.body(b"hello")?;
                continue;
            }
            "/short" => {
                write.head(Response::new(200).content_length(10))?;
                write.body(b"12345")?;
                return Ok(());
            }
            _ => {}
        }
        let body = format!("ok {}\n", std::process::id());
        write.respond(Response::new(200).content_type("text/plain"), body.as_bytes())?;
    }
    Ok(())
}

fn main() {
    http_cluster::worker::run(app)
}
