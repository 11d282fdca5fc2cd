//! # http-cluster
//!
//! A pre-fork HTTP/1.1 server. The **master** (`src/master.rs`) binds the
//! listening socket and calls `listen()`, but never accepts: it starts one
//! worker process per core and hands each the socket over a Unix socket that
//! becomes the worker's fd 3 (`SCM_RIGHTS`, one `.` byte, as libuv's
//! `uv_write2` does). All workers accept from the same kernel queue; the
//! master keeps the channel open to supervise them.
//!
//! A **worker** (`src/worker.rs`) runs every connection as a `may`
//! coroutine. Handler code is straight-line and blocking-looking, like the
//! luvit original:
//!
//! ```no_run
//! use http_cluster::{Requests, Response, Responses};
//!
//! fn app(read: &Requests, write: &Responses) -> std::io::Result<()> {
//!     for req in read {
//!         for chunk in read.body() {
//!             let _bytes = chunk?; // the body streams; nothing is buffered whole
//!         }
//!         write.head(Response::new(200).content_type("text/plain"))?; // no length: chunked
//!         write.body(req.path().as_bytes())?;
//!     }
//!     Ok(())
//! }
//!
//! fn main() {
//!     http_cluster::worker::run(app)
//! }
//! ```
//!
//! Data flows one way: socket → [`io`] buffers → request decoder
//! ([`proto::head`], [`proto::decode`]) → `read` → handler → `write` →
//! encoder ([`proto::encode`]) → buffers → socket. [`codec::chain`] wires a
//! decoder and an encoder around an app; HTTP ([`conn`]) is one instance.
//! Everything in [`proto`] is free of I/O, so it is tested split at every
//! byte and fuzzed.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod access_log;
pub mod alarm;
pub mod builtin;
pub mod clock;
pub mod codec;
pub mod config;
pub mod conn;
pub mod control;
pub mod fdpass;
pub mod io;
pub mod listen;
pub mod logging;
pub mod master;
pub mod net;
pub mod park;
pub mod pool;
pub mod proto;
pub mod status;
pub mod worker;

pub use codec::{Decoded, Decoder, Encoder, chain};
pub use config::Limits;
pub use conn::{App, Body, End, Requests, Responses};
pub use proto::encode::Response;
pub use proto::head::Request;
