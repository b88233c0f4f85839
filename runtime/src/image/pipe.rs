//! An in-process pipe between two threads of one pipeline stage and the next: a bounded
//! channel of byte chunks with a `Write` end and a `Read` end.
//!
//! Why not an OS pipe: a chunk is handed over, not copied through the kernel twice, and
//! neither side pays a syscall per 64 KiB. The bound keeps memory at a few chunks whatever the
//! layer size (streaming, never a whole layer in memory). When either end is dropped the other
//! sees it: the reader gets end of file, the writer a `BrokenPipe` error — so a failing stage
//! stops its neighbour instead of blocking it.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes per chunk.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the two ends.
const DEPTH: usize = 8;

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
            chunk: Vec::new(),
            pos: 0,
        },
    )
}

pub(crate) struct PipeWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    /// Sends a whole chunk as it is (no copy), after what is buffered.
    pub(crate) fn send_chunk(&mut self, chunk: Vec<u8>) -> io::Result<()> {
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
        self.tx.send(full).map_err(|_| closed())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        // What is buffered still reaches the reader (a receiver gone is no error here).
        let _ = self.flush();
    }
}

pub(crate) struct PipeReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
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
            w.send_chunk(data[1000..CHUNK + 5].to_vec()).unwrap();
            w.write_all(&data[CHUNK + 5..]).unwrap();
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
