//! The supervision channel between master and worker: the worker's fd 3.
//!
//! It starts exactly like libuv's IPC pipe: one byte (`.`) carrying a
//! listening socket, once per listener (`HTTP_CLUSTER_LISTENERS` says how
//! many) (see [`crate::fdpass`]). After that both sides exchange
//! newline-terminated ASCII messages, so the protocol can be watched with
//! strace and spoken by a worker in any language.

use std::time::Duration;

/// Exit code of a worker that could not boot (no socket on fd 3, not a
/// listening TCP socket, invalid configuration). The master does not respawn
/// a slot whose worker exits with it before becoming ready.
pub const EXIT_BOOT_ERROR: i32 = 3;
/// Exit code of a worker whose application failed to start.
pub const EXIT_APP_ERROR: i32 = 4;

/// How often a worker reports it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Longest message line accepted; longer input is a protocol violation.
pub const MAX_LINE: usize = 256;

/// Worker → master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerMsg {
    /// The worker accepts connections.
    Ready,
    /// The worker's event loop is alive; with its counters.
    Heartbeat { connections: u64, requests: u64 },
    /// The worker stopped accepting and drains, for a reason of its own
    /// (SIGTERM sent to it directly, a broken channel): the master must
    /// stop counting on it and replace it.
    Draining,
    /// It received a connection the master passed (`conn`): the master may
    /// drop its copy. Until then the master keeps it, and gives it to
    /// another worker if this one dies first.
    Took,
}

/// Master → worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterMsg {
    /// Stop accepting, finish in-flight requests, exit. Connections idle
    /// between requests are closed after `idle_grace`: zero when the server
    /// shuts down; a moment when a worker is retired while the server keeps
    /// running (reload, recycling, scaling down), so that each kept-alive
    /// connection can carry one more request, answered with
    /// `Connection: close`, instead of being closed under a request already
    /// in flight (the keep-alive race clients like wrk count as an error).
    Stop { idle_grace: Duration },
    /// Reopen log files (SIGUSR1 to the master: logrotate moved them).
    Reopen,
    /// Serve the connection whose descriptor came with this line: the
    /// master accepted it from the socket of a slot that has no live worker
    /// (`--balance reuseport`).
    Conn,
}

/// How long a retired worker keeps idle keep-alive connections open for a
/// last request.
pub const RETIRE_IDLE_GRACE: Duration = Duration::from_secs(2);

impl WorkerMsg {
    pub fn encode(self) -> String {
        match self {
            WorkerMsg::Ready => "ready\n".to_string(),
            WorkerMsg::Heartbeat { connections, requests } => format!("hb {connections} {requests}\n"),
            WorkerMsg::Draining => "draining\n".to_string(),
            WorkerMsg::Took => "took\n".to_string(),
        }
    }

    pub fn parse(line: &[u8]) -> Option<WorkerMsg> {
        let line = std::str::from_utf8(line).ok()?.trim_end();
        let mut words = line.split(' ');
        match words.next()? {
            "ready" => Some(WorkerMsg::Ready),
            "draining" => Some(WorkerMsg::Draining),
            "took" => Some(WorkerMsg::Took),
            "hb" => {
                let connections = words.next()?.parse().ok()?;
                let requests = words.next()?.parse().ok()?;
                Some(WorkerMsg::Heartbeat { connections, requests })
            }
            _ => None,
        }
    }
}

impl MasterMsg {
    pub fn encode(self) -> String {
        match self {
            MasterMsg::Stop { idle_grace } => format!("stop {}\n", idle_grace.as_millis()),
            MasterMsg::Reopen => "reopen\n".to_string(),
            MasterMsg::Conn => "conn\n".to_string(),
        }
    }

    pub fn parse(line: &[u8]) -> Option<MasterMsg> {
        let line = std::str::from_utf8(line).ok()?.trim_end();
        let mut words = line.split(' ');
        match words.next()? {
            "stop" => {
                let ms = match words.next() {
                    Some(w) => w.parse().ok()?,
                    None => 0,
                };
                Some(MasterMsg::Stop { idle_grace: Duration::from_millis(ms) })
            }
            "reopen" => Some(MasterMsg::Reopen),
            "conn" => Some(MasterMsg::Conn),
            _ => None,
        }
    }
}

/// A channel line grew past [`MAX_LINE`]: the peer does not speak the
/// protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Splits a byte stream into lines, bounded by [`MAX_LINE`].
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
}

impl LineBuffer {
    /// Appends `data` and returns the complete lines (without `\n`), or
    /// `Err` if a line grew past [`MAX_LINE`].
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        self.buf.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(i + 1);
            let mut line = std::mem::replace(&mut self.buf, rest);
            line.pop();
            lines.push(line);
        }
        if self.buf.len() > MAX_LINE { Err(LineTooLong) } else { Ok(lines) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            WorkerMsg::Ready,
            WorkerMsg::Heartbeat { connections: 3, requests: 99 },
            WorkerMsg::Draining,
            WorkerMsg::Took,
        ] {
            assert_eq!(WorkerMsg::parse(m.encode().as_bytes()), Some(m));
        }
        let stop = MasterMsg::Stop { idle_grace: Duration::from_millis(1500) };
        assert_eq!(MasterMsg::parse(stop.encode().as_bytes()), Some(stop));
        assert_eq!(MasterMsg::parse(MasterMsg::Reopen.encode().as_bytes()), Some(MasterMsg::Reopen));
        assert_eq!(MasterMsg::parse(b"stop"), Some(MasterMsg::Stop { idle_grace: Duration::ZERO }));
        assert_eq!(WorkerMsg::parse(b"hb x 1"), None);
        assert_eq!(WorkerMsg::parse(b"bogus"), None);
    }

    #[test]
    fn lines_split_across_feeds() {
        let mut lb = LineBuffer::default();
        assert_eq!(lb.feed(b"rea").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(lb.feed(b"dy\nhb 1 2\nh").unwrap(), vec![b"ready".to_vec(), b"hb 1 2".to_vec()]);
        assert_eq!(lb.feed(b"b 3 4\n").unwrap(), vec![b"hb 3 4".to_vec()]);
        assert!(lb.feed(&[b'x'; MAX_LINE + 1]).is_err());
    }
}
