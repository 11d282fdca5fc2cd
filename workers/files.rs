//! Static files from a directory, with the validators, conditional requests
//! and byte ranges that browsers, caches and download tools rely on.
//!
//! Run it under the master with the directory to serve as its argument:
//! `http-cluster -- target/release/files ./public`. A root that is missing
//! or not a directory stops the worker at boot with
//! [`EXIT_APP_ERROR`](http_cluster::control::EXIT_APP_ERROR), which the
//! master reports instead of respawning the worker in a loop.
//!
//! What it shows:
//! - **Streaming**: a file is sent in 64 KiB reads, never read whole, so a
//!   download of any size costs one buffer; a client that reads slowly
//!   parks only its own coroutine (the write waits for the socket).
//! - **Validators**: `ETag` (from size and modification time) and
//!   `Last-Modified`. First the preconditions of a write-safe client:
//!   `If-Match` (strong comparison, `*` too) or, only when it is absent,
//!   `If-Unmodified-Since` answer `412 Precondition Failed` for another
//!   version. Then `If-None-Match` (weak comparison, `*` too) or, only
//!   when it is absent, `If-Modified-Since` answer `304 Not Modified`
//!   (RFC 9110 §13.2.2 order). A field sent on several lines is one list
//!   (§5.3).
//! - **Ranges** (GET only, RFC 9110 §14): one range `bytes=a-b`, `a-` or
//!   `-n` answers `206` with `Content-Range`; a range past the end answers
//!   `416` with `Content-Range: bytes */len`. A request for several ranges
//!   gets the whole file with `200`, which the RFC allows, instead of a
//!   `multipart/byteranges` body (so do several `Range` lines). `If-Range`
//!   (one ETag, compared strongly, or the exact `Last-Modified` date of a
//!   file last changed over a second ago) turns a stale range request
//!   into a full `200`. Every file response
//!   says `Accept-Ranges: bytes`.
//! - **Methods**: GET and HEAD (same headers, no body); anything else is
//!   `405` with `Allow: GET, HEAD`.
//! - **Directories**: `/dir` redirects (`301`) to `/dir/`, so relative
//!   links in its page resolve; `/dir/` serves `dir/index.html`, or `404`
//!   (there are no listings).
//! - **Paths stay under the root**: the path is percent-decoded first and
//!   then split at `/` (so `%2F` is a separator and `%2e%2e` is `..`); a
//!   `..` segment, a NUL or a backslash is refused with `400`. The joined
//!   path is then canonicalized and must still lie under the canonical
//!   root: a symlink inside the root that points outside it is answered
//!   `404`, as if it did not exist (whatever the reason it cannot be
//!   resolved, so nothing is learnt about paths outside); symlinks within
//!   the root are followed. Only regular files are opened (a FIFO would
//!   block the worker). Hidden names (a segment starting with `.`, like
//!   `.env` or `.git/`) are `404` too, but for `.well-known/` (RFC 8615).
//!
//! Limits, on purpose for an example: file system calls are blocking
//! system calls on the worker's one thread (may has no asynchronous file
//! I/O). Reads from the page cache return at once; a slow disk would stall
//! the worker's other connections for the length of each read. And the
//! root's contents are trusted: a directory swapped for a symlink between
//! the check and the open is not detected (only the last component is
//! opened with `O_NOFOLLOW`); `openat2(RESOLVE_BENEATH)` would close that.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use http_cluster::control::EXIT_APP_ERROR;
use http_cluster::{Request, Requests, Response, Responses};

/// Bytes read from a file per write: large enough that a write goes
/// straight from the buffer to the socket (the server copies only writes
/// under 16 KiB), small enough to be one allocation per download.
const READ_CHUNK: usize = 64 * 1024;

/// Chunks sent between voluntary yields. A fast client on a fast link never
/// makes a write wait, and a coroutine that never waits would keep the
/// worker's other connections from running (may schedules cooperatively).
const CHUNKS_PER_YIELD: u32 = 16;

/// The file a directory URL serves.
const INDEX: &str = "index.html";

fn main() {
    // Logging first so a bad root is reported like every boot error; neither
    // this nor the checks below open a descriptor, so fd 3 is still the
    // master's channel when `worker::run` claims it.
    http_cluster::logging::init("worker", None);
    let root = match Root::from_arg(std::env::args_os().nth(1)) {
        Ok(root) => root,
        Err(e) => {
            log::error!("files: {e}");
            std::process::exit(EXIT_APP_ERROR);
        }
    };
    log::info!("files: serving {}", root.dir.display());
    http_cluster::worker::run(move |read: &Requests<'_>, write: &Responses<'_>| app(&root, read, write))
}

fn app(root: &Root, read: &Requests, write: &Responses) -> io::Result<()> {
    for req in read {
        // GET and HEAD bodies mean nothing here; the server drains them.
        serve(root, &req, write)?;
    }
    Ok(())
}

/// Answers one request.
fn serve(root: &Root, req: &Request, write: &Responses) -> io::Result<()> {
    if !matches!(req.method(), "GET" | "HEAD") {
        let head = Response::new(405).header("Allow", "GET, HEAD");
        return refuse(write, head, "only GET and HEAD are allowed\n");
    }
    let rel = match paths::relative(req.path()) {
        Ok(rel) => rel,
        Err(why) => return refuse(write, Response::new(400), &format!("bad path: {why}\n")),
    };
    if paths::hidden(&rel) {
        return not_found(write);
    }
    let file = match root.locate(&rel) {
        Ok(Found::File(path)) => path,
        Ok(Found::Dir) => {
            if !req.path().ends_with('/') {
                return redirect_to_slash(req, write);
            }
            // Located like any file: an index.html symlink must not leave
            // the root either.
            match root.locate(&rel.join(INDEX)) {
                Ok(Found::File(path)) => path,
                Ok(Found::Dir) | Err(Miss::NotFound) => return not_found(write),
                Err(Miss::Forbidden) => return forbidden(write),
            }
        }
        Err(Miss::NotFound) => return not_found(write),
        Err(Miss::Forbidden) => return forbidden(write),
    };
    send_file(req, write, &file)
}

/// Sends `path`: 304, 206, 416 or 200, as the request's conditions and
/// range decide.
fn send_file(req: &Request, write: &Responses, path: &Path) -> io::Result<()> {
    let file = match open_regular(path) {
        Ok(file) => file,
        Err(Miss::NotFound) => return not_found(write),
        Err(Miss::Forbidden) => return forbidden(write),
    };
    let meta = file.metadata()?;
    let validators = Validators::of(&meta);
    if conditions::precondition_failed(req, &validators) {
        return refuse(write, Response::new(412), "precondition failed: the file has changed\n");
    }
    if conditions::not_modified(req, &validators) {
        // RFC 9110 §15.4.5: a 304 repeats the validators a 200 would carry.
        return write.head(validators.add_to(Response::new(304))).and_then(|()| write.end());
    }
    let len = meta.len();
    let range = match conditions::field(req, "range") {
        // RFC 9110 §14.2: ranges are defined for GET only. Several lines
        // are several ranges: the whole file, like a multiple range set.
        Some(value) if req.method() == "GET" && conditions::range_applies(req, &validators) => {
            ranges::parse(&value, len)
        }
        _ => ranges::Range::Whole,
    };
    let (status, first, count) = match range {
        ranges::Range::Whole => (200, 0, len),
        ranges::Range::Part { first, last } => (206, first, last - first + 1),
        ranges::Range::Unsatisfiable => {
            let head = Response::new(416).header("Content-Range", format!("bytes */{len}"));
            return refuse(write, head, "range not satisfiable\n");
        }
    };
    let mut head = validators
        .add_to(Response::new(status))
        .content_type(content_type(path))
        .header("Accept-Ranges", "bytes")
        .content_length(count);
    if status == 206 {
        head = head.header("Content-Range", format!("bytes {first}-{}/{len}", first + count - 1));
    }
    write.head(head)?;
    if req.is_head() {
        return write.end();
    }
    stream(write, &file, first, count)
}

/// Writes `count` bytes of `file` from offset `start`, one read buffer at a
/// time. A write blocks this coroutine while the client's socket is full,
/// so a slow reader holds back the reads too: memory stays one buffer.
fn stream(write: &Responses, file: &File, start: u64, count: u64) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK.min(count as usize)];
    let mut offset = start;
    let end = start + count;
    let mut chunks = 0u32;
    while offset < end {
        let want = (end - offset).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            // The file shrank after its length went out in Content-Length:
            // the response cannot be completed, only cut (the connection
            // closes, and the client sees a short body, not wrong bytes).
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
        }
        write.body(&buf[..n])?;
        offset += n as u64;
        chunks += 1;
        if chunks.is_multiple_of(CHUNKS_PER_YIELD) {
            may::coroutine::yield_now();
        }
    }
    write.end()
}

fn content_type(path: &Path) -> Cow<'static, str> {
    let mime = mime_guess::from_path(path).first_raw().unwrap_or("application/octet-stream");
    // Without a charset, browsers guess one (often windows-1252) for text;
    // a site served from a directory today is UTF-8.
    if mime.starts_with("text/") { Cow::Owned(format!("{mime}; charset=utf-8")) } else { Cow::Borrowed(mime) }
}

/// Opens a regular file without following a symlink in its last component
/// and without blocking (a FIFO opened for reading waits for a writer).
fn open_regular(path: &Path) -> Result<File, Miss> {
    let flags = (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits();
    let file = fs::OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(Miss::from)?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(file),
        _ => Err(Miss::NotFound),
    }
}

/// `/dir` → `301 Location: /dir/` (the query kept).
fn redirect_to_slash(req: &Request, write: &Responses) -> io::Result<()> {
    // Leading slashes collapse to one: `//host/dir` must not become a
    // protocol-relative Location pointing at another site.
    let path = req.path().trim_start_matches('/');
    let location = match req.query() {
        Some(query) => format!("/{path}/?{query}"),
        None => format!("/{path}/"),
    };
    let head = Response::new(301).header("Location", location);
    refuse(write, head, "moved: add a trailing slash\n")
}

fn not_found(write: &Responses) -> io::Result<()> {
    refuse(write, Response::new(404), "not found\n")
}

fn forbidden(write: &Responses) -> io::Result<()> {
    refuse(write, Response::new(403), "forbidden\n")
}

/// A short plain-text answer that is not the file.
fn refuse(write: &Responses, head: Response<'_>, text: &str) -> io::Result<()> {
    write.respond(head.content_type("text/plain; charset=utf-8"), text.as_bytes())
}

/// The canonical directory files are served from.
struct Root {
    dir: PathBuf,
}

/// Why the worker cannot serve the root it was given.
#[derive(Debug)]
enum RootError {
    Missing,
    Unusable(PathBuf, io::Error),
    NotADirectory(PathBuf),
}

impl fmt::Display for RootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootError::Missing => write!(f, "usage: files DIRECTORY (the directory to serve)"),
            RootError::Unusable(p, e) => write!(f, "cannot serve {}: {e}", p.display()),
            RootError::NotADirectory(p) => write!(f, "cannot serve {}: not a directory", p.display()),
        }
    }
}

/// Where a request path leads under the root.
enum Found {
    /// A regular file, by its canonical path.
    File(PathBuf),
    Dir,
}

/// Why a path is not served.
#[derive(Debug, PartialEq, Eq)]
enum Miss {
    /// Missing, outside the root, or not a regular file or directory.
    NotFound,
    /// The server may not read it.
    Forbidden,
}

impl From<io::Error> for Miss {
    fn from(e: io::Error) -> Miss {
        if e.kind() == io::ErrorKind::PermissionDenied { Miss::Forbidden } else { Miss::NotFound }
    }
}

impl Root {
    fn from_arg(arg: Option<OsString>) -> Result<Root, RootError> {
        let given = PathBuf::from(arg.ok_or(RootError::Missing)?);
        let dir = fs::canonicalize(&given).map_err(|e| RootError::Unusable(given.clone(), e))?;
        if !dir.is_dir() {
            return Err(RootError::NotADirectory(given));
        }
        Ok(Root { dir })
    }

    /// Resolves `rel` (already free of `..`) under the root. The canonical
    /// path has no symlinks and no `.`/`..` left, so "under the root" is a
    /// component-wise prefix test; a symlink that leaves the root fails it.
    fn locate(&self, rel: &Path) -> Result<Found, Miss> {
        // Any failure is "not found": a path through a symlink leading
        // outside must not tell an unreadable directory there (403) from a
        // missing one (404). Inside the root, opening the file says 403.
        let canonical = fs::canonicalize(self.dir.join(rel)).map_err(|_| Miss::NotFound)?;
        if !canonical.starts_with(&self.dir) {
            return Err(Miss::NotFound);
        }
        let meta = fs::metadata(&canonical)?;
        if meta.is_dir() {
            Ok(Found::Dir)
        } else if meta.is_file() {
            Ok(Found::File(canonical))
        } else {
            Err(Miss::NotFound)
        }
    }
}

/// What identifies a version of a file: `ETag` and `Last-Modified`.
struct Validators {
    /// Strong: size and modification time to the nanosecond (what nginx
    /// uses too); quoted, as sent.
    etag: String,
    /// Whole seconds, as HTTP dates carry them, and never later than now
    /// (RFC 9110 §8.8.2.1: a modification time ahead of the clock is sent
    /// as the time of the response); `None` before 1970.
    modified: Option<SystemTime>,
    /// The file's modification time and its inode change time (which
    /// `touch -d`, `rsync -t` or `tar` setting an old modification time
    /// cannot move back) are both at least a second old. Only then may a
    /// date equal to `modified` stand for this version in `If-Range` (RFC
    /// 9110 §8.8.2.2, the rule Apache applies): a version written in the
    /// last second shares its date with any other of that second. This
    /// protects requests that come within a second of a change; a client
    /// holding an earlier version of the same second is itself bound
    /// (§13.1.5) not to send that date, whose response `Date` was not a
    /// second after it.
    modified_is_strong: bool,
}

impl Validators {
    fn of(meta: &fs::Metadata) -> Validators {
        let since_epoch = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map_or(0, |d| d.as_nanos());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let changed = std::time::Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        );
        let a_second_ago = |t: std::time::Duration| now.saturating_sub(t) >= std::time::Duration::from_secs(1);
        Validators {
            etag: format!("\"{:x}-{:x}\"", meta.len(), nanos),
            modified: since_epoch.map(|d| UNIX_EPOCH + std::time::Duration::from_secs(d.min(now).as_secs())),
            modified_is_strong: since_epoch.is_some_and(a_second_ago) && a_second_ago(changed),
        }
    }

    fn add_to(&self, head: Response<'static>) -> Response<'static> {
        let head = head.header("ETag", self.etag.clone());
        match self.modified {
            Some(t) => head.header("Last-Modified", httpdate::fmt_http_date(t)),
            None => head,
        }
    }
}

/// Conditional requests (RFC 9110 §13).
mod conditions {
    use super::Validators;
    use http_cluster::Request;

    /// A field's value, its lines joined into one list (RFC 9110 §5.3);
    /// `None` if absent or not text.
    pub fn field(req: &Request, name: &str) -> Option<String> {
        let mut lines =
            req.headers().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| std::str::from_utf8(v));
        let mut joined = lines.next()?.ok()?.to_string();
        for line in lines {
            joined.push_str(", ");
            joined.push_str(line.ok()?);
        }
        Some(joined)
    }

    /// Whether the client asked for the version it knows and this is
    /// another: `If-Match` when present (§13.1.1, strong comparison), else
    /// `If-Unmodified-Since` (§13.1.4; an invalid date is ignored).
    pub fn precondition_failed(req: &Request, v: &Validators) -> bool {
        if let Some(tags) = field(req, "if-match") {
            return !any_tag_matches(&tags, &v.etag, Comparison::Strong);
        }
        match (req.header("if-unmodified-since").map(httpdate::parse_http_date), v.modified) {
            (Some(Ok(since)), Some(modified)) => modified > since,
            _ => false,
        }
    }

    /// Whether the client's copy is current: `If-None-Match` when present
    /// (§13.1.2, weak comparison), else `If-Modified-Since` (§13.1.3). An
    /// invalid date is ignored, as the RFC requires.
    pub fn not_modified(req: &Request, v: &Validators) -> bool {
        if let Some(tags) = field(req, "if-none-match") {
            return any_tag_matches(&tags, &v.etag, Comparison::Weak);
        }
        match (req.header("if-modified-since").map(httpdate::parse_http_date), v.modified) {
            (Some(Ok(since)), Some(modified)) => modified <= since,
            _ => false,
        }
    }

    /// Whether a `Range` header is honoured: always without `If-Range`;
    /// with it, only if it names the current version (§13.1.5: an ETag
    /// compared strongly, or a date equal to `Last-Modified` when that is
    /// strong). A file changed within the last second gets the whole
    /// file: a client that fetched an earlier version in that same second
    /// holds the same date, and a range of this version spliced onto it
    /// would corrupt its copy.
    pub fn range_applies(req: &Request, v: &Validators) -> bool {
        let Some(value) = field(req, "if-range") else { return true };
        let value = value.trim();
        if value.starts_with('"') || value.starts_with("W/") {
            // One entity-tag, not a list; a weak one never matches.
            return single_tag(value).is_some_and(|tag| tag == v.etag);
        }
        v.modified_is_strong
            && matches!((httpdate::parse_http_date(value), v.modified), (Ok(date), Some(modified)) if date == modified)
    }

    /// `value` if it is exactly one strong entity-tag (`"…"`, no `"`
    /// inside).
    pub fn single_tag(value: &str) -> Option<&str> {
        let body = value.strip_prefix('"')?.strip_suffix('"')?;
        (!body.contains('"')).then_some(value)
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Comparison {
        /// Weak tags never match (If-Range).
        Strong,
        /// `W/` is ignored (If-None-Match).
        Weak,
    }

    /// Whether the list `tags` (`*` or comma-separated entity-tags) holds
    /// `ours`. A malformed list matches nothing from the bad tag on.
    pub fn any_tag_matches(tags: &str, ours: &str, how: Comparison) -> bool {
        if tags.trim() == "*" {
            return true;
        }
        let mut rest = tags;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return false;
            }
            let weak = rest.starts_with("W/");
            if weak {
                rest = &rest[2..];
            }
            // entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE: commas may sit
            // inside the quotes, so the list is scanned, not split.
            let Some(body) = rest.strip_prefix('"') else { return false };
            let Some(close) = body.find('"') else { return false };
            let tag = &rest[..close + 2];
            rest = &body[close + 1..];
            if tag == ours && !(weak && how == Comparison::Strong) {
                return true;
            }
        }
    }
}

/// The `Range` header (RFC 9110 §14.1.2), for one range.
mod ranges {
    /// What to send of a representation of a known length.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Range {
        /// All of it (no range, an unknown unit, an invalid or a multiple
        /// range set: §14.2 lets a server ignore Range).
        Whole,
        /// Bytes `first..=last`, both within the length.
        Part { first: u64, last: u64 },
        /// The one range starts past the end (or is an empty suffix): 416.
        Unsatisfiable,
    }

    pub fn parse(value: &str, len: u64) -> Range {
        let Some((unit, set)) = value.split_once('=') else { return Range::Whole };
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return Range::Whole;
        }
        let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
        let (Some(spec), None) = (specs.next(), specs.next()) else { return Range::Whole };
        let Some((first, last)) = spec.split_once('-') else { return Range::Whole };
        match (number(first.trim()), number(last.trim())) {
            // `-n`: the last n bytes.
            (Number::Absent, Number::Digits(n)) => {
                if n == 0 || len == 0 {
                    Range::Unsatisfiable
                } else {
                    Range::Part { first: len - n.min(len), last: len - 1 }
                }
            }
            // `a-`: from a to the end.
            (Number::Digits(first), Number::Absent) if first < len => Range::Part { first, last: len - 1 },
            (Number::Digits(_), Number::Absent) => Range::Unsatisfiable,
            // `a-b`: a last position before the first makes the header
            // invalid (ignored), not unsatisfiable.
            (Number::Digits(first), Number::Digits(last)) if last < first => Range::Whole,
            (Number::Digits(first), Number::Digits(last)) if first < len => {
                Range::Part { first, last: last.min(len - 1) }
            }
            (Number::Digits(_), Number::Digits(_)) => Range::Unsatisfiable,
            _ => Range::Whole,
        }
    }

    enum Number {
        Absent,
        /// Saturating: a position beyond u64 is past any file's end.
        Digits(u64),
        Invalid,
    }

    fn number(s: &str) -> Number {
        if s.is_empty() {
            return Number::Absent;
        }
        // Digits only: `u64::from_str` would also take a leading `+`.
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Number::Invalid;
        }
        Number::Digits(s.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
    }

    #[cfg(test)]
    mod tests {
        use super::Range::*;
        use super::*;

        #[test]
        fn single_ranges() {
            let cases: &[(&str, u64, Range)] = &[
                ("bytes=0-9", 100, Part { first: 0, last: 9 }),
                ("bytes=10-", 100, Part { first: 10, last: 99 }),
                ("bytes=-5", 100, Part { first: 95, last: 99 }),
                ("bytes=-500", 100, Part { first: 0, last: 99 }),
                ("bytes=90-1000", 100, Part { first: 90, last: 99 }),
                ("bytes=99-99", 100, Part { first: 99, last: 99 }),
                ("BYTES = 1-2 ", 100, Part { first: 1, last: 2 }),
                ("bytes=0-0,", 100, Part { first: 0, last: 0 }),
                ("bytes=100-", 100, Unsatisfiable),
                ("bytes=100-200", 100, Unsatisfiable),
                ("bytes=-0", 100, Unsatisfiable),
                ("bytes=0-", 0, Unsatisfiable),
                ("bytes=-1", 0, Unsatisfiable),
                ("bytes=99999999999999999999999-", 100, Unsatisfiable),
                ("bytes=0-99999999999999999999999", 100, Part { first: 0, last: 99 }),
                ("bytes=5-1", 100, Whole),
                ("bytes=0-1,5-6", 100, Whole),
                ("bytes=abc", 100, Whole),
                ("bytes=+1-2", 100, Whole),
                ("bytes=-", 100, Whole),
                ("bytes=", 100, Whole),
                ("items=0-1", 100, Whole),
                ("0-1", 100, Whole),
            ];
            for (value, len, want) in cases {
                assert_eq!(parse(value, *len), *want, "{value} of {len}");
            }
        }
    }
}

/// Request paths to relative file system paths, refusing what could leave
/// the root before the file system is asked anything.
mod paths {
    use std::ffi::OsStr;
    use std::fmt;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    use percent_encoding::percent_decode_str;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Refused {
        /// Not `/…` (e.g. `*`).
        NotAPath,
        ParentSegment,
        Nul,
        Backslash,
    }

    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Refused::NotAPath => "not an absolute path",
                Refused::ParentSegment => "`..` segment",
                Refused::Nul => "NUL byte",
                Refused::Backslash => "backslash",
            })
        }
    }

    /// The path under the root that `request_path` names. Decoding comes
    /// first so that every check sees what the file system will see:
    /// `%2e%2e` is `..` and `%2F` separates segments. Backslashes are
    /// refused because other layers (proxies, Windows tools) treat them as
    /// separators; a NUL would cut the path short in C.
    pub fn relative(request_path: &str) -> Result<PathBuf, Refused> {
        if !request_path.starts_with('/') {
            return Err(Refused::NotAPath);
        }
        let decoded: Vec<u8> = percent_decode_str(request_path).collect();
        if decoded.contains(&0) {
            return Err(Refused::Nul);
        }
        if decoded.contains(&b'\\') {
            return Err(Refused::Backslash);
        }
        let mut rel = PathBuf::new();
        for segment in decoded.split(|&b| b == b'/') {
            match segment {
                b"" | b"." => {}
                b".." => return Err(Refused::ParentSegment),
                name => rel.push(OsStr::from_bytes(name)),
            }
        }
        Ok(rel)
    }

    /// Whether `rel` names something hidden: a segment starting with `.`
    /// (`.env`, `.git/config`, `.htpasswd`), which a site directory holds
    /// by accident, not to publish. `.well-known/` is published by design
    /// (RFC 8615: ACME challenges, security.txt).
    pub fn hidden(rel: &std::path::Path) -> bool {
        rel.components().enumerate().any(|(i, c)| {
            let name = c.as_os_str().as_bytes();
            name.starts_with(b".") && !(i == 0 && name == b".well-known")
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn hidden_names() {
            for (path, want) in [
                ("/.env", true),
                ("/.git/config", true),
                ("/a/.htpasswd", true),
                ("/a/.well-known/x", true),
                ("/.well-known/acme-challenge/t", false),
                ("/a.b/c.txt", false),
                ("/..a", true),
                ("/", false),
            ] {
                assert_eq!(hidden(&relative(path).unwrap()), want, "{path}");
            }
        }

        #[test]
        fn decoded_then_checked() {
            let ok: &[(&str, &str)] = &[
                ("/", ""),
                ("/a/b.txt", "a/b.txt"),
                ("//a/./b/", "a/b"),
                ("/a%2Fb", "a/b"),
                ("/with%20space", "with space"),
                ("/%252e%252e", "%2e%2e"),
                ("/..a/b..", "..a/b.."),
            ];
            for (path, want) in ok {
                assert_eq!(relative(path), Ok(PathBuf::from(want)), "{path}");
            }
            let refused: &[(&str, Refused)] = &[
                ("*", Refused::NotAPath),
                ("%2Fa", Refused::NotAPath),
                ("/..", Refused::ParentSegment),
                ("/a/../b", Refused::ParentSegment),
                ("/%2e%2e/x", Refused::ParentSegment),
                ("/%2E%2E%2Fx", Refused::ParentSegment),
                ("/a%2F..%2F..%2Fx", Refused::ParentSegment),
                ("/.%2e/x", Refused::ParentSegment),
                ("/a%00.txt", Refused::Nul),
                ("/..%5Cx", Refused::Backslash),
                ("/a\\b", Refused::Backslash),
            ];
            for (path, want) in refused {
                assert_eq!(relative(path), Err(*want), "{path}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::conditions::{Comparison, any_tag_matches, single_tag};

    #[test]
    fn if_range_takes_one_strong_tag() {
        assert_eq!(single_tag("\"1f-abc\""), Some("\"1f-abc\""));
        for value in ["W/\"1f-abc\"", "\"x\", \"1f-abc\"", "\"1f-abc", "1f-abc", "\"a\"b\""] {
            assert_eq!(single_tag(value), None, "{value}");
        }
    }

    #[test]
    fn entity_tag_lists() {
        let ours = "\"1f-abc\"";
        let cases: &[(&str, Comparison, bool)] = &[
            ("\"1f-abc\"", Comparison::Weak, true),
            ("W/\"1f-abc\"", Comparison::Weak, true),
            ("W/\"1f-abc\"", Comparison::Strong, false),
            ("\"1f-abc\"", Comparison::Strong, true),
            ("\"x\", \"1f-abc\"", Comparison::Weak, true),
            ("\"a,b\",\"1f-abc\"", Comparison::Weak, true),
            (" * ", Comparison::Weak, true),
            ("\"1f-abd\"", Comparison::Weak, false),
            ("1f-abc", Comparison::Weak, false),
            ("\"1f-abc", Comparison::Weak, false),
            ("", Comparison::Weak, false),
        ];
        for (tags, how, want) in cases {
            assert_eq!(any_tag_matches(tags, ours, *how), *want, "{tags}");
        }
    }
}
