//! Reason phrases and status lines.

/// One table, two functions: the reason phrases, and for the same codes the
/// whole status line as one string, so that encoding a response head writes
/// it in one copy instead of formatting the code and reason each time.
macro_rules! statuses {
    ($($code:literal => $reason:literal,)*) => {
        /// The canonical reason phrase of `code` (RFC 9110 §15), or "" for
        /// codes without one: the reason phrase is optional on the wire
        /// (RFC 9112 §4).
        pub fn reason(code: u16) -> &'static str {
            match code {
                $($code => $reason,)*
                _ => "",
            }
        }

        /// `HTTP/1.1 <code> <reason>\r\n` for the codes [`reason`] knows.
        pub fn status_line(code: u16) -> Option<&'static str> {
            match code {
                $($code => Some(concat!("HTTP/1.1 ", stringify!($code), " ", $reason, "\r\n")),)*
                _ => None,
            }
        }
    };
}

statuses! {
    100 => "Continue",
    101 => "Switching Protocols",
    200 => "OK",
    201 => "Created",
    202 => "Accepted",
    203 => "Non-Authoritative Information",
    204 => "No Content",
    205 => "Reset Content",
    206 => "Partial Content",
    300 => "Multiple Choices",
    301 => "Moved Permanently",
    302 => "Found",
    303 => "See Other",
    304 => "Not Modified",
    307 => "Temporary Redirect",
    308 => "Permanent Redirect",
    400 => "Bad Request",
    401 => "Unauthorized",
    403 => "Forbidden",
    404 => "Not Found",
    405 => "Method Not Allowed",
    406 => "Not Acceptable",
    408 => "Request Timeout",
    409 => "Conflict",
    410 => "Gone",
    411 => "Length Required",
    412 => "Precondition Failed",
    413 => "Content Too Large",
    414 => "URI Too Long",
    415 => "Unsupported Media Type",
    416 => "Range Not Satisfiable",
    417 => "Expectation Failed",
    422 => "Unprocessable Content",
    426 => "Upgrade Required",
    429 => "Too Many Requests",
    431 => "Request Header Fields Too Large",
    500 => "Internal Server Error",
    501 => "Not Implemented",
    502 => "Bad Gateway",
    503 => "Service Unavailable",
    504 => "Gateway Timeout",
    505 => "HTTP Version Not Supported",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_match_the_reasons() {
        for code in 100..1000 {
            match status_line(code) {
                Some(line) => assert_eq!(line, format!("HTTP/1.1 {code} {}\r\n", reason(code))),
                None => assert_eq!(reason(code), ""),
            }
        }
        assert_eq!(status_line(200), Some("HTTP/1.1 200 OK\r\n"));
    }
}
