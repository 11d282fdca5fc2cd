//! Passing file descriptors over a Unix socket with `SCM_RIGHTS`, the way
//! libuv's `uv_write2(pipe, ".", handle)` does: a one-byte payload carrying
//! one descriptor. All fd-level `unsafe` of the crate lives here.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The payload byte the master sends with the listening socket (libuv's
/// convention).
pub const LISTENER_PAYLOAD: u8 = b'.';

#[derive(Debug)]
pub enum RecvFdError {
    /// The other side closed the channel.
    Closed,
    /// A message arrived without a descriptor, or with a truncated control
    /// buffer.
    NoDescriptor,
    Os(nix::Error),
}

impl std::fmt::Display for RecvFdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvFdError::Closed => write!(f, "channel closed before a socket arrived"),
            RecvFdError::NoDescriptor => write!(f, "message carried no socket"),
            RecvFdError::Os(e) => write!(f, "recvmsg: {e}"),
        }
    }
}

impl std::error::Error for RecvFdError {}

/// Sends `fd` with the one-byte `payload` over the Unix stream `channel`.
pub fn send_fd(channel: BorrowedFd<'_>, payload: u8, fd: BorrowedFd<'_>) -> nix::Result<()> {
    send_with_fd(channel, &[payload], fd)
}

/// Sends `data` with `fd` attached to its first byte. On a non-blocking
/// channel that is full this fails with EAGAIN and sends nothing (short
/// messages go whole or not at all on a Unix stream socket).
pub fn send_with_fd(channel: BorrowedFd<'_>, data: &[u8], fd: BorrowedFd<'_>) -> nix::Result<()> {
    let iov = [IoSlice::new(data)];
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(channel.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one payload byte and the descriptor sent with it (blocking).
/// The descriptor is close-on-exec.
pub fn recv_fd(channel: BorrowedFd<'_>) -> Result<(u8, OwnedFd), RecvFdError> {
    let mut data = [0u8; 1];
    let (_, mut received, truncated) = recv(channel, &mut data)?;
    if truncated || received.is_empty() {
        return Err(RecvFdError::NoDescriptor);
    }
    // Extra descriptors (none are ever sent) are closed by dropping them.
    let fd = received.swap_remove(0);
    Ok((data[0], fd))
}

/// Reads what the channel has (up to `buf.len()` bytes) and the descriptors
/// that came with it, in order. `Closed` at end of stream.
pub fn recv_with_fds(channel: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), RecvFdError> {
    recv(channel, buf).map(|(n, fds, _)| (n, fds))
}

/// One recvmsg: bytes read, the descriptors received, and whether the
/// kernel had to drop descriptors (MSG_CTRUNC: no room in our buffer or
/// our descriptor table).
fn recv(channel: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>, bool), RecvFdError> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let msg = loop {
        match recvmsg::<()>(channel.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(m) => break m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(RecvFdError::Os(e)),
        }
    };
    if msg.bytes == 0 {
        return Err(RecvFdError::Closed);
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let mut received = Vec::new();
    for cmsg in msg.cmsgs().map_err(RecvFdError::Os)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in our descriptor
                // table for this message; nothing else refers to it, so we
                // are its only owner and OwnedFd closes it exactly once.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, received, truncated))
}

/// Takes ownership of a descriptor this process inherited at a well-known
/// number (the worker's fd 3), after checking it is open.
pub fn inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    nix::fcntl::fcntl(
        // SAFETY: only used for the F_GETFD probe below; borrowing a number
        // that may be closed is harmless for fcntl, which reports EBADF.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .ok()?;
    // SAFETY: the fd is open (F_GETFD succeeded) and was inherited for us
    // alone: by contract nothing else in this process uses fd 3.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not for our own children: a subprocess a handler starts must not hold
    // the master's channel open.
    nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
    Some(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_crosses_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send_fd(a.as_fd(), LISTENER_PAYLOAD, listener.as_fd()).unwrap();
        let (payload, fd) = recv_fd(b.as_fd()).unwrap();
        assert_eq!(payload, b'.');
        let got = std::net::TcpListener::from(fd);
        assert_eq!(got.local_addr().unwrap(), listener.local_addr().unwrap());
    }

    #[test]
    fn lines_and_descriptors_arrive_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send_with_fd(a.as_fd(), b"conn\n", l1.as_fd()).unwrap();
        send_with_fd(a.as_fd(), b"conn\n", l2.as_fd()).unwrap();
        let mut got = Vec::new();
        let mut text = Vec::new();
        while got.len() < 2 {
            let mut buf = [0u8; 64];
            let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
            text.extend_from_slice(&buf[..n]);
            got.extend(fds);
        }
        assert_eq!(text, b"conn\nconn\n");
        let addrs: Vec<_> = got.into_iter().map(|fd| std::net::TcpListener::from(fd).local_addr().unwrap()).collect();
        assert_eq!(addrs, vec![l1.local_addr().unwrap(), l2.local_addr().unwrap()]);
    }

    #[test]
    fn a_plain_byte_is_not_a_descriptor() {
        use std::io::Write;
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b".").unwrap();
        assert!(matches!(recv_fd(b.as_fd()), Err(RecvFdError::NoDescriptor)));
        drop(a);
        assert!(matches!(recv_fd(b.as_fd()), Err(RecvFdError::Closed)));
    }
}
