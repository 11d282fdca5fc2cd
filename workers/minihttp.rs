//! The speed reference: the same hello served by may_minihttp itself, one
//! process with one may thread per core. Not a cluster worker: it binds its
//! own port (`--bind ADDR`, or `MINIHTTP_BIND`, default 127.0.0.1:8081) and
//! prints `minihttp listening on http://ADDR` when it accepts.
//!
//! `--pin` keeps may's default of pinning worker thread i to core i, which
//! is how may_minihttp runs out of the box (its examples configure nothing);
//! without it, threads are not pinned, like our workers.

use std::io;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header("Content-Type: text/plain").body("Hello, world!");
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut bind = std::env::var("MINIHTTP_BIND").unwrap_or_else(|_| "127.0.0.1:8081".to_string());
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pin = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => bind = args.next().unwrap_or(bind),
            "--threads" => threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(threads),
            "--pin" => pin = true,
            other => {
                eprintln!("usage: minihttp [--bind ADDR] [--threads N] [--pin] (unknown argument {other:?})");
                std::process::exit(2);
            }
        }
    }
    may::config().set_workers(threads).set_worker_pin(pin);
    let listener = std::net::TcpListener::bind(&bind).and_then(|l| l.local_addr());
    let addr = match listener {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("minihttp: cannot bind {bind}: {e}");
            std::process::exit(1);
        }
    };
    let server = match HttpServer(Hello).start(addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("minihttp: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("minihttp listening on http://{addr}");
    let _ = server.join();
}
