//! The built-in app that `cargo run --release` serves: `GET /` says hello,
//! `/echo` streams the request body back, everything else is 404.

use std::io;

use crate::{Requests, Response, Responses};

/// Request bodies up to this size are echoed with a Content-Length (and a
/// broken body is still answered with a 4xx); larger ones stream back
/// chunked, so memory stays bounded for any upload.
const ECHO_BUFFERED: usize = 64 * 1024;

pub fn app(read: &Requests<'_>, write: &Responses<'_>) -> io::Result<()> {
    for req in read {
        match (req.method(), req.path()) {
            ("GET" | "HEAD", "/") => write.respond(Response::new(200).content_type("text/plain"), b"Hello, world!")?,
            (_, "/echo") => echo(&req, read, write)?,
            _ => write.respond(Response::new(404).content_type("text/plain"), b"Not Found\n")?,
        }
    }
    Ok(())
}

fn echo(req: &crate::Request, read: &Requests<'_>, write: &Responses<'_>) -> io::Result<()> {
    let content_type = req.header("content-type").unwrap_or("application/octet-stream").to_string();
    let head = Response::new(200).content_type(content_type);
    // Read before answering (a client may be waiting for 100 Continue), and
    // hold the first bytes back: a small body is answered with a length, and
    // a malformed or stalled one with a 4xx instead of a torn 200.
    let mut held = Vec::new();
    let mut body = read.body();
    for chunk in body.by_ref() {
        held.extend_from_slice(&chunk?);
        if held.len() > ECHO_BUFFERED {
            // Past the hold-back: stream, keeping the client's length if
            // it sent one, chunked otherwise.
            let head = match req.content_length() {
                Some(n) => head.content_length(n),
                None => head,
            };
            write.head(head)?;
            write.body(&held)?;
            for chunk in body {
                write.body(&chunk?)?;
            }
            return write.end();
        }
    }
    write.respond(head, &held)
}
