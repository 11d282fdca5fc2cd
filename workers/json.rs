//! A small stateless JSON API with serde: typed requests in, typed
//! responses out, and every failure a JSON error whose status says what
//! went wrong.
//!
//! Run it under the master: `http-cluster -- target/release/json`, then
//! `curl -H 'Content-Type: application/json' -d '{"name":"Ada"}' http://127.0.0.1:8080/api/greet`.
//!
//! | Request | Answer |
//! | --- | --- |
//! | `GET /api/health` (or HEAD) | `{"status":"ok"}` |
//! | `POST /api/greet` `{"name":"Ada"}` | `{"greeting":"Hello, Ada!"}` |
//! | `POST /api/sum` `{"numbers":[1,2,3.5]}` | `{"sum":6.5}` (integers alone are summed exactly: `{"sum":6}`) |
//!
//! Errors are `{"error":"…"}` with: `400` for a body that is not JSON or
//! not the expected shape (wrong type, missing or unknown field: serde's
//! message says which); `404` for an unknown path; `405` with `Allow` for a
//! wrong method; `413` for a body over 1 MiB (refused from its
//! Content-Length before any of it is read; a chunked body is counted as it
//! arrives); `415` unless `Content-Type` is `application/json`; `422` for
//! well-formed input that makes no sense (an empty name, a sum too large
//! for a JSON number).
//!
//! The body is read through `read.body()` (a `std::io::Read`) capped with
//! `take`, so a client cannot make the worker buffer more than the cap,
//! whatever the framing. An unread remainder is the server's business: it
//! drains a little or closes the connection.

use std::io::{self, Read as _};

use http_cluster::{Request, Requests, Response, Responses};
use serde::{Deserialize, Serialize};

/// Largest request body accepted. Far below the server's own limit (1 GiB
/// by default, sized for streaming uploads): these bodies are parsed whole.
const MAX_BODY: u64 = 1 << 20;

fn main() {
    http_cluster::worker::run(app)
}

fn app(read: &Requests, write: &Responses) -> io::Result<()> {
    for req in read {
        match handle(&req, read) {
            Ok(json) => send(write, Response::new(200), &json)?,
            // The connection itself failed (client gone, broken framing):
            // the server answers framing errors itself and closes.
            Err(ApiError::Io(e)) => return Err(e),
            Err(e) => send_error(write, &e)?,
        }
    }
    Ok(())
}

/// The JSON answer to one request.
fn handle(req: &Request, read: &Requests) -> Result<Vec<u8>, ApiError> {
    let route = Route::of(req.path()).ok_or(ApiError::NotFound)?;
    if !route.allows(req.method()) {
        return Err(ApiError::MethodNotAllowed(route));
    }
    match route {
        Route::Health => encode(&Health { status: "ok" }),
        Route::Greet => {
            let GreetRequest { name } = parse(&read_json_body(req, read)?)?;
            if name.trim().is_empty() {
                return Err(ApiError::Unprocessable("name must not be empty"));
            }
            encode(&Greeting { greeting: format!("Hello, {name}!") })
        }
        Route::Sum => {
            let SumRequest { numbers } = parse(&read_json_body(req, read)?)?;
            encode(&SumReply { sum: sum(&numbers)? })
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Health,
    Greet,
    Sum,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/api/health" => Some(Route::Health),
            "/api/greet" => Some(Route::Greet),
            "/api/sum" => Some(Route::Sum),
            _ => None,
        }
    }

    /// The `Allow` header of a 405.
    fn allow(self) -> &'static str {
        match self {
            Route::Health => "GET, HEAD",
            Route::Greet | Route::Sum => "POST",
        }
    }

    fn allows(self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

// Unknown fields are refused: a typo (`"nmae"`) gets a 400 that names the
// field instead of a confusing "missing field". (Deeply nested input is
// no danger to the 64 KiB coroutine stack either way: these types nest one
// level, a wrong token fails at once, and serde_json skips ignored values
// without recursing.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetRequest {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SumRequest {
    /// `Number`, not `f64`: integers keep their exact value.
    numbers: Vec<serde_json::Number>,
}

#[derive(Serialize)]
struct SumReply {
    sum: Sum,
}

/// Serialized as a bare JSON number either way.
#[derive(Serialize)]
#[serde(untagged)]
enum Sum {
    /// Every input was an integer. `i128` holds any sum of the at most
    /// 2^19 integers (each under 2^64 in magnitude) that fit in 1 MiB.
    Exact(i128),
    Approximate(f64),
}

fn sum(numbers: &[serde_json::Number]) -> Result<Sum, ApiError> {
    let integer = |n: &serde_json::Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    let exact = numbers.iter().try_fold(0i128, |acc, n| acc.checked_add(integer(n)?));
    if let Some(total) = exact {
        return Ok(Sum::Exact(total));
    }
    // Without serde_json's arbitrary_precision feature every number has an
    // f64 value.
    let total: f64 = numbers.iter().filter_map(serde_json::Number::as_f64).sum();
    if total.is_finite() {
        Ok(Sum::Approximate(total))
    } else {
        Err(ApiError::Unprocessable("the sum is not a finite number"))
    }
}

/// Why a request gets no 200.
#[derive(Debug)]
enum ApiError {
    NotFound,
    MethodNotAllowed(Route),
    UnsupportedMediaType,
    TooLarge,
    /// Not JSON, or not the shape the route takes.
    BadJson(serde_json::Error),
    /// Valid JSON of the right shape that cannot be answered.
    Unprocessable(&'static str),
    /// Reading the body failed: no answer is possible.
    Io(io::Error),
    /// Our own reply could not be serialized (a bug).
    Encode(serde_json::Error),
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType => 415,
            ApiError::TooLarge => 413,
            ApiError::BadJson(_) => 400,
            ApiError::Unprocessable(_) => 422,
            ApiError::Io(_) | ApiError::Encode(_) => 500,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::NotFound => "no such endpoint: try /api/health, /api/greet or /api/sum".into(),
            ApiError::MethodNotAllowed(route) => format!("method not allowed: use {}", route.allow()),
            ApiError::UnsupportedMediaType => "the body must be Content-Type: application/json".into(),
            ApiError::TooLarge => format!("the body must be at most {MAX_BODY} bytes"),
            ApiError::BadJson(e) => match e.classify() {
                serde_json::error::Category::Data => format!("wrong shape: {e}"),
                _ => format!("invalid JSON: {e}"),
            },
            ApiError::Unprocessable(why) => (*why).into(),
            ApiError::Io(e) => format!("reading the body: {e}"),
            ApiError::Encode(_) => "internal error".into(),
        }
    }
}

/// The request body, if it is JSON and not over [`MAX_BODY`].
fn read_json_body(req: &Request, read: &Requests) -> Result<Vec<u8>, ApiError> {
    if !is_json(req.header("content-type")) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req.content_length();
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::TooLarge);
    }
    // `declared` is at most MAX_BODY here; a chunked body grows the buffer.
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    // One byte over the cap tells "too large" from "exactly the cap".
    // (`Body` is also an Iterator, which has a `take` of its own.)
    io::Read::take(read.body(), MAX_BODY + 1).read_to_end(&mut body).map_err(ApiError::Io)?;
    if body.len() as u64 > MAX_BODY {
        return Err(ApiError::TooLarge);
    }
    Ok(body)
}

/// `application/json`, parameters (`; charset=utf-8`) allowed, any case.
fn is_json(content_type: Option<&str>) -> bool {
    content_type.and_then(|v| v.split(';').next()).is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::BadJson)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(ApiError::Encode)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn send_error(write: &Responses, e: &ApiError) -> io::Result<()> {
    if let ApiError::Encode(cause) = e {
        log::error!("serializing a reply failed: {cause}");
    }
    let mut head = Response::new(e.status());
    if let ApiError::MethodNotAllowed(route) = e {
        head = head.header("Allow", route.allow());
    }
    // An error body always serializes: a struct of one string.
    let body = serde_json::to_vec(&ErrorBody { error: e.message() }).unwrap_or_default();
    send(write, head, &body)
}

fn send(write: &Responses, head: Response<'_>, json: &[u8]) -> io::Result<()> {
    write.respond(head.content_type("application/json"), json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(json: &str) -> Vec<serde_json::Number> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn sums() {
        let reply = |json: &str| serde_json::to_string(&SumReply { sum: sum(&numbers(json)).unwrap() }).unwrap();
        assert_eq!(reply("[]"), r#"{"sum":0}"#);
        assert_eq!(reply("[1, 2, 3]"), r#"{"sum":6}"#);
        assert_eq!(reply("[1, 2, 3.5]"), r#"{"sum":6.5}"#);
        assert_eq!(reply("[-5, 2]"), r#"{"sum":-3}"#);
        assert_eq!(reply("[18446744073709551615, 18446744073709551615]"), r#"{"sum":36893488147419103230}"#);
        assert!(matches!(sum(&numbers("[1e308, 1e308]")), Err(ApiError::Unprocessable(_))));
    }

    #[test]
    fn json_media_types() {
        for (value, want) in [
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some(" application/json ;x=y"), true),
            (Some("text/plain"), false),
            (Some("application/jsonx"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(is_json(value), want, "{value:?}");
        }
    }
}
