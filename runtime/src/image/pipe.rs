//! An in-process pipe between two threads of one pipeline stage and the next: a bounded
//! channel of byte chunks with a `Write` end and a `Read` end.
//!
//! Why not an OS pipe: a chunk is handed over, not copied through the kernel twice, and
//! neither side pays a syscall per 64 KiB. Chunks are shared (`Arc`), so one chunk can go to
//! two consumers (the blob file and the unpacker) without a copy. The bound keeps memory at a
//! few chunks whatever the layer size (streaming, never a whole layer in memory). When either
//! end is dropped the other sees it: the reader gets end of file, the writer a `BrokenPipe`
//! error — so a failing stage stops its neighbour instead of blocking it.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::tar_writer::Sink;

/// Bytes per chunk.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the two ends.
pub(crate) const DEPTH: usize = 32;

/// A piece of a stream, shared by the stages that consume it.
pub(crate) type Chunk = Arc<Vec<u8>>;

/// Where a stage takes its input from, chunk by chunk.
pub(crate) trait ChunkSource {
    /// The next chunk, `None` at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>>;
}

/// Any reader, read into fresh chunks.
pub(crate) struct Chunked<R>(pub(crate) R);

impl<R: Read> ChunkSource for Chunked<R> {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let chunk = read_chunk(&mut self.0)?;
        Ok((!chunk.is_empty()).then(|| Arc::new(chunk)))
    }
}

/// A connected pair.
pub(crate) fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(DEPTH);
    (
        PipeWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        },
        PipeReader {
            rx,
            chunk: Arc::new(Vec::new()),
            pos: 0,
        },
    )
}

pub(crate) struct PipeWriter {
    tx: SyncSender<Chunk>,
    buf: Vec<u8>,
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
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Arc::new(full)).map_err(|_| closed())
    }
}

impl Sink for PipeWriter {
    /// Reads `data` straight into the chunk being filled: no intermediate buffer.
    fn copy_from(&mut self, data: &mut dyn Read, limit: u64) -> io::Result<u64> {
        let mut copied = 0;
        while copied < limit {
            let room = (CHUNK - self.buf.len()) as u64;
            // Fills the spare capacity without zeroing it first.
            let n = data
                .take(room.min(limit - copied))
                .read_to_end(&mut self.buf)?;
            // As `write`: a full chunk goes at once, so none is full between calls.
            if self.buf.len() == CHUNK {
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
                pos => Arc::new(self.chunk[pos..].to_vec()),
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

/// Reads into a fresh chunk-sized buffer: up to CHUNK bytes, fewer only at the end of input.
/// `read_to_end` fills the vector's spare capacity without zeroing it first (zeroing a fresh
/// 256 KiB buffer per chunk was a tenth of an import's CPU time).
pub(crate) fn read_chunk(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(CHUNK);
    input.take(CHUNK as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
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
            w.send_chunk(Arc::new(data[1000..CHUNK + 5].to_vec()))
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
        let sent: Chunk = Arc::new((0..100u8).collect());
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
        let sent: Chunk = Arc::new(vec![7; 1000]);
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
        assert_eq!(read_chunk(&mut Dribble(10)).unwrap().len(), 10);
        assert_eq!(read_chunk(&mut Dribble(CHUNK * 2)).unwrap().len(), CHUNK);
    }
}
