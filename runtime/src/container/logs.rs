//! Container logs in docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-11-30T12:00:00.000000000Z"}`. The
//! supervisor writes them; `logs` reads them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{OutputSink, Stream};
use crate::state::Timestamp;

/// The log of a container, in its directory.
pub fn log_path(bundle: &Path) -> PathBuf {
    bundle.join("container.log")
}

/// docker splits lines longer than this into several entries.
const MAX_ENTRY: usize = 16 * 1024;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Writes output as json-file entries, a line at a time per stream.
#[derive(Debug)]
pub struct JsonLogWriter {
    file: File,
    /// Unterminated line of stdout, stderr.
    partial: [Vec<u8>; 2],
}

impl JsonLogWriter {
    pub fn create(path: &Path) -> io::Result<JsonLogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn emit(&mut self, stream: Stream, bytes: &[u8]) {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream_name(stream).to_string(),
            time: Timestamp::now().to_rfc3339(),
        };
        if let Ok(mut line) = serde_json::to_vec(&entry) {
            line.push(b'\n');
            // A full disk loses log lines, never the container: nothing to do but go on.
            let _ = self.file.write_all(&line);
        }
    }
}

fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

impl OutputSink for JsonLogWriter {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let index = stream as usize;
        let mut pending = std::mem::take(&mut self.partial[index]);
        pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(newline) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline + 1;
            self.emit(stream, &pending[start..end]);
            start = end;
        }
        let mut rest = pending.split_off(start);
        while rest.len() >= MAX_ENTRY {
            let tail = rest.split_off(MAX_ENTRY);
            self.emit(stream, &rest);
            rest = tail;
        }
        self.partial[index] = rest;
    }

    fn finish(&mut self) {
        for (index, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[index]);
            if !rest.is_empty() {
                self.emit(stream, &rest);
            }
        }
        let _ = self.file.flush();
    }
}

/// How `logs` prints.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    pub timestamps: bool,
    /// Only the last N entries.
    pub tail: Option<usize>,
}

/// Prints the entries of `path` to `out`/`err`; returns the byte offset read up to (for
/// following).
pub fn print(path: &Path, show: Show, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u64> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            // A line still being written is left for the next read.
            break;
        }
        offset += n as u64;
        lines.push(line);
    }
    let skip = show.tail.map_or(0, |t| lines.len().saturating_sub(t));
    for line in &lines[skip..] {
        write_entry(line, show, out, err)?;
    }
    Ok(offset)
}

/// Prints entries appended after `offset` until `done()` says the writer has finished and
/// everything written has been printed.
pub fn follow(
    path: &Path,
    mut offset: u64,
    show: Show,
    out: &mut dyn Write,
    err: &mut dyn Write,
    done: &mut dyn FnMut() -> bool,
) -> io::Result<()> {
    let mut pending = String::new();
    loop {
        // Checked before reading, so that what was written before the end is always printed.
        let finished = done();
        if let Ok(mut file) = File::open(path) {
            file.seek(SeekFrom::Start(offset))?;
            let mut chunk = String::new();
            let n = file.read_to_string(&mut chunk)?;
            offset += n as u64;
            pending.push_str(&chunk);
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                write_entry(&line, Show { tail: None, ..show }, out, err)?;
            }
            out.flush()?;
            err.flush()?;
        }
        if finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_entry(line: &str, show: Show, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
    let Ok(entry) = serde_json::from_str::<Entry>(line) else {
        return Ok(());
    };
    let sink: &mut dyn Write = if entry.stream == "stderr" { err } else { out };
    if show.timestamps {
        write!(sink, "{} ", entry.time)?;
    }
    sink.write_all(entry.log.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<Entry> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_split_per_stream_and_partials_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let mut w = JsonLogWriter::create(&path).unwrap();
        w.write(Stream::Stdout, b"one\ntw");
        w.write(Stream::Stderr, b"oops\n");
        w.write(Stream::Stdout, b"o\nthree");
        w.finish();
        let got: Vec<(String, String)> = entries(&path)
            .into_iter()
            .map(|e| (e.stream, e.log))
            .collect();
        assert_eq!(
            got,
            [
                ("stdout".to_string(), "one\n".to_string()),
                ("stderr".into(), "oops\n".into()),
                ("stdout".into(), "two\n".into()),
                ("stdout".into(), "three".into()),
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let mut w = JsonLogWriter::create(&path).unwrap();
        w.write(Stream::Stdout, &vec![b'x'; MAX_ENTRY + 10]);
        w.write(Stream::Stdout, b"\n");
        w.finish();
        let e = entries(&path);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].log.len(), MAX_ENTRY);
        assert_eq!(e[1].log, format!("{}\n", "x".repeat(10)));
    }

    #[test]
    fn print_routes_streams_and_honours_tail_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let mut w = JsonLogWriter::create(&path).unwrap();
        w.write(Stream::Stdout, b"a\nb\n");
        w.write(Stream::Stderr, b"c\n");
        w.finish();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print(
            &path,
            Show {
                timestamps: false,
                tail: Some(2),
            },
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!((out.as_slice(), err.as_slice()), (&b"b\n"[..], &b"c\n"[..]));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print(
            &path,
            Show {
                timestamps: true,
                tail: None,
            },
            &mut out,
            &mut err,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let first = out.lines().next().unwrap();
        let (time, text) = first.split_once(' ').unwrap();
        assert!(Timestamp::parse_rfc3339(time).is_some(), "{first}");
        assert_eq!(text, "a");
    }
}
