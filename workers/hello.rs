//! The benchmark worker, and the handler example in README.md: every
//! request gets `Hello, world!`. Run it under the master:
//! `http-cluster -- target/release/hello`.

use http_cluster::{Requests, Response, Responses};

fn app(read: &Requests, write: &Responses) -> std::io::Result<()> {
    // Keep processing requests on this connection until it closes.
    for req in read {
        // Consume the request body, if any (it streams in chunks).
        for chunk in read.body() {
            chunk?;
        }
        let _ = req.path();
        // Write the response head and body; the length frames it.
        write.respond(Response::new(200).content_type("text/plain"), b"Hello, world!")?;
    }
    // Returning closes the connection, unless the loop ended because the
    // connection went idle: then it parks until its next request.
    Ok(())
}

fn main() {
    http_cluster::worker::run(app)
}
