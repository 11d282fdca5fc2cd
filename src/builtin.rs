//! The built-in app that `cargo run --release` serves: `GET /` says hello,
//! `/echo` streams the request body back, everything else is 404.

use std::io;

use crate::{Requests, Response, Responses};

/// Request bodies up to this size are echoed with a Content-Length (and a
/// broken body is still answered 400); larger ones stream back chunked.
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
    if let Some(len) = req.content_length() {
        // The length is known: stream it straight back.
        write.head(head.content_length(len))?;
        for chunk in read.body() {
            write.body(&chunk?)?;
        }
        return write.end();
    }
    // Chunked upload: hold the first bytes back, so a small body is answered
    // with a length, and a malformed one with a 400 instead of a torn 200.
    let mut held = Vec::new();
    let mut body = read.body();
    for chunk in body.by_ref() {
        held.extend_from_slice(&chunk?);
        if held.len() > ECHO_BUFFERED {
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
