//! Streams each request body back as a chunked response, chunk by chunk, so
//! memory stays flat for any body size. Run it under the master:
//! `http-cluster -- target/release/echo`.

use http_cluster::{Requests, Response, Responses};

fn app(read: &Requests, write: &Responses) -> std::io::Result<()> {
    for req in read {
        let content_type = req.header("content-type").unwrap_or("application/octet-stream");
        let mut body = read.body();
        // Read before answering: a client that sent `Expect: 100-continue`
        // sends the body only once we ask for it.
        let first = body.next().transpose()?;
        // No Content-Length: the encoder frames the body as chunked.
        write.head(Response::new(200).content_type(content_type))?;
        for chunk in first.into_iter().map(Ok).chain(body) {
            write.body(&chunk?)?;
        }
        write.end()?;
    }
    Ok(())
}

fn main() {
    http_cluster::worker::run(app)
}
