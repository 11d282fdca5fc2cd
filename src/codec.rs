//! The `read`/`write` pair a handler sees, and `chain`, which wires any
//! stream decoder and encoder around an app — luvit's
//! `chain(decoder, app, encoder)(read, write)` in Rust.
//!
//! A [`Read`] yields decoded items (`for item in read`); a [`Write`] takes
//! items to encode. Both share the connection's [`Io`]; reading flushes
//! pending output first, so everything the app wrote while input was
//! buffered leaves in one write. The app runs on the connection's own
//! coroutine: no extra coroutine per stage.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::time::Duration;

use crate::clock::Moment;
use crate::io::{Io, ReadBuf};

/// What a decoder found in the buffered input.
#[derive(Debug)]
pub enum Decoded<T> {
    /// One complete item; the decoder consumed its bytes.
    Item(T),
    /// Not enough input yet: read more and call again.
    NeedMore,
    /// The stream is over (e.g. the connection is not kept alive): stop
    /// reading.
    End,
}

/// Turns bytes into items, without doing I/O.
pub trait Decoder {
    type Item;
    type Error: fmt::Debug;

    /// Decodes the next item from `input`, consuming its bytes. Protocol
    /// output the decoder itself must send before reading on (an interim
    /// response, finishing a previous message) goes to `output`.
    fn decode(&mut self, input: &mut ReadBuf, output: &mut Vec<u8>) -> Result<Decoded<Self::Item>, Self::Error>;

    /// The peer closed the stream. `Ok(None)` is a clean end; leftover
    /// partial input is an error by default.
    fn decode_eof(&mut self, input: &mut ReadBuf) -> Result<Option<Self::Item>, StreamError<Self::Error>> {
        if input.is_empty() { Ok(None) } else { Err(StreamError::Truncated) }
    }

    /// How long to wait for more input in the decoder's current state,
    /// for a wait that starts `now`.
    fn read_deadline(&self, now: Moment) -> Option<Moment> {
        let _ = now;
        None
    }

    /// How long the stream may stay quiet, with nothing buffered, before
    /// the [`Read`] ends as parked (see [`Read::is_parked`]); `None`: never.
    /// Only between items: the owner of the stream can then set it aside
    /// cheaply and resume it with a fresh decoder later.
    fn park_after(&self) -> Option<Duration> {
        None
    }
}

/// Turns items into bytes, without doing I/O.
pub trait Encoder<Item> {
    type Error;
    fn encode(&mut self, item: Item, output: &mut Vec<u8>) -> Result<(), Self::Error>;
}

/// Why a [`Read`] stopped yielding items.
#[derive(Debug)]
pub enum StreamError<E> {
    /// The decoder rejected the input.
    Decode(E),
    /// The socket failed or a deadline passed.
    Io(io::Error),
    /// The peer closed in the middle of an item.
    Truncated,
}

/// The read side: an iterator of decoded items. Iterate with
/// `for item in read`; after the loop, [`Read::take_error`] says whether it
/// ended cleanly.
pub struct Read<'io, D: Decoder> {
    pub(crate) io: &'io RefCell<Io>,
    pub(crate) decoder: RefCell<D>,
    error: RefCell<Option<StreamError<D::Error>>>,
    ended: Cell<bool>,
    parked: Cell<bool>,
}

/// What waiting for input brought.
pub(crate) enum Filled {
    More,
    /// The peer closed its side.
    Closed,
    /// Nothing for [`Decoder::park_after`].
    Quiet,
}

impl<'io, D: Decoder> Read<'io, D> {
    pub fn new(io: &'io RefCell<Io>, decoder: D) -> Self {
        Read {
            io,
            decoder: RefCell::new(decoder),
            error: RefCell::new(None),
            ended: Cell::new(false),
            parked: Cell::new(false),
        }
    }

    /// The next item, or `None` when the stream ended or failed (Lua's
    /// `read()`).
    pub fn read(&self) -> Option<D::Item> {
        if self.ended.get() {
            return None;
        }
        loop {
            let step = {
                let mut io = self.io.borrow_mut();
                let io = &mut *io;
                self.decoder.borrow_mut().decode(&mut io.rbuf, &mut io.wbuf)
            };
            match step {
                Ok(Decoded::Item(item)) => return Some(item),
                Ok(Decoded::End) => return self.end(None),
                Err(e) => return self.end(Some(StreamError::Decode(e))),
                Ok(Decoded::NeedMore) => {}
            }
            match self.fill() {
                Ok(Filled::More) => {}
                Ok(Filled::Quiet) => {
                    self.parked.set(true);
                    return self.end(None);
                }
                Ok(Filled::Closed) => {
                    let eof = {
                        let mut io = self.io.borrow_mut();
                        self.decoder.borrow_mut().decode_eof(&mut io.rbuf)
                    };
                    return match eof {
                        Ok(Some(item)) => Some(item),
                        Ok(None) => self.end(None),
                        Err(e) => self.end(Some(e)),
                    };
                }
                Err(e) => return self.end(Some(StreamError::Io(e))),
            }
        }
    }

    /// Reads more input into the buffer (flushing output first), waiting
    /// until the decoder's deadline.
    pub(crate) fn fill(&self) -> io::Result<Filled> {
        let mut io = self.io.borrow_mut();
        // Flushed first, so that the clock is read once for the deadline
        // and the wait that follows.
        io.flush()?;
        let now = Moment::now();
        let (deadline, park_after) = {
            let decoder = self.decoder.borrow();
            (decoder.read_deadline(now), decoder.park_after())
        };
        Ok(match io.fill_or_quiet(deadline, park_after, now)? {
            None => Filled::Quiet,
            Some(0) => Filled::Closed,
            Some(_) => Filled::More,
        })
    }

    fn end(&self, error: Option<StreamError<D::Error>>) -> Option<D::Item> {
        self.ended.set(true);
        if error.is_some() {
            *self.error.borrow_mut() = error;
        }
        None
    }

    /// Marks the stream as failed (used by protocol extensions that decode
    /// sub-streams, such as HTTP bodies).
    pub(crate) fn fail(&self, error: StreamError<D::Error>) {
        self.end(Some(error));
    }

    /// Why the stream ended, if it ended abnormally (taken once).
    pub fn take_error(&self) -> Option<StreamError<D::Error>> {
        self.error.borrow_mut().take()
    }

    pub fn is_ended(&self) -> bool {
        self.ended.get()
    }

    /// Whether the stream ended because it sat quiet between items (see
    /// [`Decoder::park_after`]) rather than because it is over: the
    /// connection is still open and may be resumed.
    pub fn is_parked(&self) -> bool {
        self.parked.get()
    }
}

impl<D: Decoder> Iterator for &Read<'_, D> {
    type Item = D::Item;
    fn next(&mut self) -> Option<D::Item> {
        self.read()
    }
}

/// The write side: takes items for the encoder (Lua's `write(item)`).
pub struct Write<'io, E> {
    pub(crate) io: &'io RefCell<Io>,
    pub(crate) encoder: RefCell<E>,
}

impl<'io, E> Write<'io, E> {
    pub fn new(io: &'io RefCell<Io>, encoder: E) -> Self {
        Write { io, encoder: RefCell::new(encoder) }
    }

    /// Encodes `item` into the output buffer. Output leaves when the reader
    /// next waits for input, when the buffer is full, or on [`Write::flush`].
    pub fn write<I>(&self, item: I) -> Result<(), E::Error>
    where
        E: Encoder<I>,
        E::Error: From<io::Error>,
    {
        let mut io = self.io.borrow_mut();
        self.encoder.borrow_mut().encode(item, io.out())?;
        Ok(io.flush_if_full()?)
    }

    /// Sends buffered output now (for streaming responses that must reach
    /// the client before the handler produces more).
    pub fn flush(&self) -> io::Result<()> {
        self.io.borrow_mut().flush()
    }
}

/// Wires `decoder` and `encoder` around `app`: the result runs the app on a
/// connection's [`Io`], reading items through the decoder and writing items
/// through the encoder.
///
/// `'io` is one lifetime, not one per call: a decoder or encoder may
/// borrow from the caller's frame for as long as the connection's `Io`
/// is lent (the server's share one `Exchange` on the stack that way).
pub fn chain<'io, D, E, A, R>(decoder: D, app: A, encoder: E) -> impl FnOnce(&'io RefCell<Io>) -> R
where
    D: Decoder,
    A: FnOnce(&Read<'io, D>, &Write<'io, E>) -> R,
{
    move |io| {
        let read = Read::new(io, decoder);
        let write = Write::new(io, encoder);
        app(&read, &write)
    }
}
