//! An in-process pipe between two threads of one pipeline stage and the next: a bounded
//! channel of byte chunks with a `Write` end and a `Read` end.
//!
//! Why not an OS pipe: a chunk is handed over, not copied through the kernel twice, and
//! neither side pays a syscall per 64 KiB. Chunks are shared (`Arc`), so one chunk can go to
//! two consumers (the blob file and the unpacker) without a copy. The bound keeps memory at a
//! few chunks whatever the layer size (streaming, never a whole layer in memory). When either
//! end is dropped the other sees it: the reader gets end of file, the writer a `BrokenPipe`
//! error — so a failing stage stops its neighbour instead of blocking it.
//!
//! Chunk buffers come from a [`Pool`] and go back to it when the last stage drops them.

use std::io::{self, Read, Write};
use std::ops::Deref;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::tar_writer::Sink;

/// Bytes per chunk.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the two ends.
pub(crate) const DEPTH: usize = 32;

/// A piece of a stream, shared by the stages that consume it.
pub(crate) type Chunk = Arc<Buf>;

type FreeList = Mutex<Vec<Vec<u8>>>;

/// Chunk-sized buffers that return for reuse once every stage is done with them.
///
/// Why: a fresh 256 KiB allocation per chunk is mostly fresh memory (the allocator hands such
/// blocks back to the kernel and asks again), which the kernel zeroes page by page on first
/// touch — an import of 200 MiB took 10,000–12,000 page faults. A reused buffer is initialised
/// memory, so a chunk is filled by plain `read` calls of up to a whole chunk; filling spare
/// capacity with `read_to_end` instead starts at 8 KiB a call and only then grows (about six
/// reads per chunk). The pool holds at most what was in flight at once (the channels' bound).
#[derive(Default)]
pub(crate) struct Pool(Arc<FreeList>);

impl Pool {
    /// An empty buffer of a chunk's capacity: a returned one when there is one.
    fn take(&self) -> Buf {
        let reused = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        Buf {
            bytes: reused.unwrap_or_else(|| vec![0; CHUNK]),
            len: 0,
            home: Arc::downgrade(&self.0),
        }
    }
}

/// A chunk's bytes: the first `len` bytes of its buffer.
pub(crate) struct Buf {
    bytes: Vec<u8>,
    len: usize,
    /// The pool the buffer returns to; gone once its owner is (the buffer is then freed).
    home: Weak<FreeList>,
}

impl Buf {
    /// Bytes of no pool (a copy of what is left of a chunk, a test's data).
    pub(crate) fn from_vec(bytes: Vec<u8>) -> Buf {
        Buf {
            len: bytes.len(),
            bytes,
            home: Weak::new(),
        }
    }

    fn room(&self) -> usize {
        self.bytes.len() - self.len
    }

    /// One `read` from `input` into the free part, at most `max` bytes: what it read, 0 at
    /// the end of input (or when there is no room).
    fn read_once(&mut self, input: &mut (impl Read + ?Sized), max: usize) -> io::Result<usize> {
        let end = self.len + max.min(self.room());
        loop {
            match input.read(&mut self.bytes[self.len..end]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.bytes[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }
}

impl Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let bytes = std::mem::take(&mut self.bytes);
            home.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(bytes);
        }
    }
}

/// Where a stage takes its input from, chunk by chunk.
pub(crate) trait ChunkSource {
    /// The next chunk, `None` at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>>;
}

/// Any reader, read into whole chunks (fewer bytes only at the end of input).
pub(crate) struct Chunked<R> {
    input: R,
    pool: Pool,
}

impl<R: Read> Chunked<R> {
    pub(crate) fn new(input: R) -> Self {
        Chunked {
            input,
            pool: Pool::default(),
        }
    }
}

impl<R: Read> ChunkSource for Chunked<R> {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let mut buf = self.pool.take();
        while buf.room() > 0 && buf.read_once(&mut self.input, CHUNK)? > 0 {}
        Ok((!buf.is_empty()).then(|| Arc::new(buf)))
    }
}

/// A connected pair.
pub(crate) fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(DEPTH);
    let pool = Pool::default();
    (
        PipeWriter {
            tx,
            buf: pool.take(),
            pool,
        },
        PipeReader {
            rx,
            chunk: Arc::new(Buf::from_vec(Vec::new())),
            pos: 0,
        },
    )
}

pub(crate) struct PipeWriter {
    tx: SyncSender<Chunk>,
    /// The chunk being filled.
    buf: Buf,
    pool: Pool,
}

impl PipeWriter {
    /// Sends a whole chunk as it is (no copy), after what is buffered.
    pub(crate) fn send_chunk(&mut self, chunk: Chunk) -> io::Result<()> {
        self.flush()?;
        if chunk.is_empty() {
            return Ok(());
        }
        self.tx.send(chunk).map_err(|_| closed())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.buf.extend_from_slice(data);
        if self.buf.room() == 0 {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, self.pool.take());
        self.tx.send(Arc::new(full)).map_err(|_| closed())
    }
}

impl Sink for PipeWriter {
    /// Reads `data` straight into the chunk being filled: no intermediate buffer.
    fn copy_from(&mut self, data: &mut dyn Read, limit: u64) -> io::Result<u64> {
        let mut copied = 0;
        while copied < limit {
            let want = usize::try_from(limit - copied).unwrap_or(usize::MAX);
            let n = self.buf.read_once(data, want)?;
            // As `write`: a full chunk goes at once, so none is full between calls.
            if self.buf.room() == 0 {
                self.flush()?;
            }
            if n == 0 {
                break;
            }
            copied += n as u64;
        }
        Ok(copied)
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        // What is buffered still reaches the reader (a receiver gone is no error here).
        let _ = self.flush();
    }
}

pub(crate) struct PipeReader {
    rx: Receiver<Chunk>,
    chunk: Chunk,
    pos: usize,
}

impl ChunkSource for PipeReader {
    /// The chunks as the writer sent them (what `read` left of the current one first).
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.pos < self.chunk.len() {
            let rest = match self.pos {
                0 => self.chunk.clone(),
                pos => Arc::new(Buf::from_vec(self.chunk[pos..].to_vec())),
            };
            self.pos = self.chunk.len();
            return Ok(Some(rest));
        }
        Ok(self.rx.recv().ok())
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                // The writer is gone: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the next pipeline stage stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_end_with_the_writer() {
        let (mut w, mut r) = pipe();
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&data[..1000]).unwrap();
            w.send_chunk(Arc::new(Buf::from_vec(data[1000..CHUNK + 5].to_vec())))
                .unwrap();
            w.write_all(&data[CHUNK + 5..]).unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn chunks_come_out_as_sent_after_what_was_read() {
        let (mut w, mut r) = pipe();
        let sent: Chunk = Arc::new(Buf::from_vec((0..100u8).collect()));
        w.send_chunk(sent.clone()).unwrap();
        w.write_all(b"tail").unwrap();
        drop(w);
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        assert_eq!(r.next_chunk().unwrap().unwrap()[..], sent[10..]);
        assert_eq!(r.next_chunk().unwrap().unwrap()[..], b"tail"[..]);
        assert!(r.next_chunk().unwrap().is_none());
        let whole = r.next_chunk().unwrap();
        assert!(whole.is_none(), "the end stays the end");
    }

    #[test]
    fn a_whole_chunk_is_shared_not_copied() {
        let (mut w, mut r) = pipe();
        let sent: Chunk = Arc::new(Buf::from_vec(vec![7; 1000]));
        w.send_chunk(sent.clone()).unwrap();
        let got = r.next_chunk().unwrap().unwrap();
        assert!(Arc::ptr_eq(&sent, &got));
    }

    #[test]
    fn data_copied_up_to_a_chunk_boundary_is_followed_by_more_writes() {
        let (mut w, mut r) = pipe();
        let file: Vec<u8> = (0..CHUNK).map(|i| (i % 253) as u8).collect();
        let expected = [&b"header"[..], &file[..CHUNK - 6], b"trailer"].concat();
        let writer = std::thread::spawn(move || {
            w.write_all(b"header").unwrap();
            let copied = w.copy_from(&mut &file[..], (CHUNK - 6) as u64).unwrap();
            assert_eq!(copied, (CHUNK - 6) as u64);
            w.write_all(b"trailer").unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_gone_reader_stops_the_writer() {
        let (mut w, r) = pipe();
        drop(r);
        let err = w.write_all(&vec![0u8; 2 * CHUNK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn chunks_are_filled_from_short_reads() {
        struct Dribble(usize);
        impl Read for Dribble {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.min(3).min(buf.len());
                self.0 -= n;
                buf[..n].fill(1);
                Ok(n)
            }
        }
        let mut short = Chunked::new(Dribble(10));
        assert_eq!(short.next_chunk().unwrap().unwrap().len(), 10);
        assert!(short.next_chunk().unwrap().is_none());
        let mut long = Chunked::new(Dribble(CHUNK * 2));
        assert_eq!(long.next_chunk().unwrap().unwrap().len(), CHUNK);
        assert_eq!(long.next_chunk().unwrap().unwrap().len(), CHUNK);
        assert!(long.next_chunk().unwrap().is_none());
    }

    #[test]
    fn a_buffer_returns_once_every_holder_dropped_it_and_shows_only_new_bytes() {
        let mut source = Chunked::new(&[1u8; CHUNK + 3][..]);
        let first = source.next_chunk().unwrap().unwrap();
        let first_bytes = first.as_ptr();
        let second_holder = Arc::clone(&first);
        drop(first);
        // Still held by one stage: not back yet, so the next chunk gets another buffer.
        let rest = source.next_chunk().unwrap().unwrap();
        assert_ne!(rest.as_ptr(), first_bytes);
        assert_eq!(rest[..], [1, 1, 1]);
        let rest_bytes = rest.as_ptr();
        drop(second_holder);
        drop(rest);
        assert_eq!(source.pool.0.lock().unwrap().len(), 2);
        // Both back; the next chunk reuses one, and shows none of its old content.
        let mut again = Chunked {
            input: &[2u8; 5][..],
            pool: source.pool,
        };
        let reused = again.next_chunk().unwrap().unwrap();
        assert!([first_bytes, rest_bytes].contains(&reused.as_ptr()));
        assert_eq!(reused[..], [2; 5]);
    }

    #[test]
    fn buffers_outliving_their_pool_are_freed_not_returned() {
        let mut source = Chunked::new(&[3u8; 10][..]);
        let chunk = source.next_chunk().unwrap().unwrap();
        let pool = Arc::downgrade(&source.pool.0);
        drop(source);
        assert!(pool.upgrade().is_none());
        assert_eq!(chunk[..], [3; 10]);
        drop(chunk);
    }
}
