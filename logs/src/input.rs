//! Inputs: files (plain or gzip, detected by magic bytes), stdin, and `--follow` readers that keep reading a
//! growing file across rotation (rename + new file) and truncation (copytruncate).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const BUF: usize = 256 * 1024;
/// Bytes looked at for format detection.
const HEAD: usize = 64 * 1024;

/// `head` cut after its last newline (the whole of it when it has none).
fn whole_lines(mut head: Vec<u8>) -> Vec<u8> {
    if let Some(p) = memchr::memrchr(b'\n', &head) {
        head.truncate(p + 1);
    }
    head
}

/// What reading a line produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read1 {
    /// A complete line is in the buffer (newline and `\r` removed).
    Line,
    /// Nothing complete yet (follow mode: try again later).
    Pending,
    /// End of input.
    Eof,
}

/// Counts bytes read from the underlying file (for progress).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn strip_eol(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
}

/// A line source.
pub struct Input {
    name: String,
    kind: InputKind,
}

enum InputKind {
    Reader(Box<dyn BufRead>),
    Follow(Follower),
}

impl Input {
    /// Opens a file; gzip is detected from its first bytes. `counter` receives bytes read from disk.
    pub fn open(path: &Path, counter: Arc<AtomicU64>) -> io::Result<Self> {
        let mut f = File::open(path)?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic)?;
        f.seek(SeekFrom::Start(0))?;
        let counted = Counting { inner: f, count: counter };
        let reader: Box<dyn BufRead> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(BufReader::with_capacity(BUF, flate2::read::MultiGzDecoder::new(BufReader::new(counted))))
        } else {
            Box::new(BufReader::with_capacity(BUF, counted))
        };
        Ok(Input { name: path.display().to_string(), kind: InputKind::Reader(reader) })
    }

    /// Standard input (gzip not detected).
    pub fn stdin(counter: Arc<AtomicU64>) -> Self {
        let counted = Counting { inner: io::stdin(), count: counter };
        Input { name: "-".into(), kind: InputKind::Reader(Box::new(BufReader::with_capacity(BUF, counted))) }
    }

    /// Any reader (tests, embedding).
    pub fn from_reader(name: &str, reader: Box<dyn BufRead>) -> Self {
        Input { name: name.into(), kind: InputKind::Reader(reader) }
    }

    /// Follows `path` from its current end (`from_start`: from its beginning), across rotation.
    pub fn follow(path: &Path, from_start: bool, counter: Arc<AtomicU64>) -> io::Result<Self> {
        Ok(Input {
            name: path.display().to_string(),
            kind: InputKind::Follow(Follower::new(path, from_start, counter)?),
        })
    }

    /// The input's name (path or `-`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the next line into `buf` (cleared first).
    pub fn read_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Read1> {
        match &mut self.kind {
            InputKind::Reader(r) => {
                buf.clear();
                if r.read_until(b'\n', buf)? == 0 {
                    return Ok(Read1::Eof);
                }
                strip_eol(buf);
                Ok(Read1::Line)
            }
            InputKind::Follow(f) => f.read_line(buf),
        }
    }

    /// Calls `f` with up to `max` lines, straight from the read buffer when a line lies within it (no copy);
    /// `carry` holds a line split across buffer refills and must be kept between calls. Returns the number
    /// of lines and what stopped the batch (`Line`: `max` reached).
    pub fn read_lines(
        &mut self,
        carry: &mut Vec<u8>,
        max: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> io::Result<(usize, Read1)> {
        let mut n = 0;
        match &mut self.kind {
            InputKind::Reader(r) => loop {
                if n >= max {
                    return Ok((n, Read1::Line));
                }
                let buf = r.fill_buf()?;
                if buf.is_empty() {
                    if !carry.is_empty() {
                        strip_eol(carry);
                        f(carry);
                        carry.clear();
                        n += 1;
                    }
                    return Ok((n, Read1::Eof));
                }
                if !carry.is_empty() {
                    match memchr::memchr(b'\n', buf) {
                        Some(p) => {
                            carry.extend_from_slice(&buf[..p]);
                            r.consume(p + 1);
                            strip_eol(carry);
                            f(carry);
                            carry.clear();
                            n += 1;
                        }
                        None => {
                            let len = buf.len();
                            carry.extend_from_slice(buf);
                            r.consume(len);
                        }
                    }
                    continue;
                }
                let mut start = 0;
                while n < max {
                    let Some(p) = memchr::memchr(b'\n', &buf[start..]) else { break };
                    let mut line = &buf[start..start + p];
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
                    f(line);
                    n += 1;
                    start += p + 1;
                }
                if n < max {
                    carry.extend_from_slice(&buf[start..]);
                    start = buf.len();
                }
                r.consume(start);
            },
            InputKind::Follow(fl) => loop {
                if n >= max {
                    return Ok((n, Read1::Line));
                }
                match fl.read_line(carry)? {
                    Read1::Line => {
                        f(carry);
                        n += 1;
                    }
                    other => return Ok((n, other)),
                }
            },
        }
    }

    /// Peeks at the start of the input (up to 64 KiB, whole lines) without consuming it, for format
    /// detection; followed files are read from their beginning.
    pub fn peek_head(&mut self) -> io::Result<Vec<u8>> {
        let head = match &mut self.kind {
            InputKind::Reader(r) => {
                let buf = r.fill_buf()?;
                buf[..buf.len().min(HEAD)].to_vec()
            }
            InputKind::Follow(f) => f.peek_head(),
        };
        Ok(whole_lines(head))
    }
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn file_id(_m: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Tail -F like reader.
struct Follower {
    path: PathBuf,
    file: Option<BufReader<File>>,
    id: (u64, u64),
    pos: u64,
    partial: Vec<u8>,
    counter: Arc<AtomicU64>,
}

impl Follower {
    fn new(path: &Path, from_start: bool, counter: Arc<AtomicU64>) -> io::Result<Self> {
        let mut fl = Follower { path: path.to_owned(), file: None, id: (0, 0), pos: 0, partial: Vec::new(), counter };
        fl.reopen(!from_start)?;
        Ok(fl)
    }

    fn reopen(&mut self, at_end: bool) -> io::Result<()> {
        match File::open(&self.path) {
            Ok(mut f) => {
                let meta = f.metadata()?;
                self.id = file_id(&meta);
                self.pos = if at_end { f.seek(SeekFrom::End(0))? } else { 0 };
                self.file = Some(BufReader::with_capacity(BUF, f));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.file = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn peek_head(&mut self) -> Vec<u8> {
        let Ok(mut f) = File::open(&self.path) else { return Vec::new() };
        let mut buf = vec![0u8; HEAD];
        let n = f.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
    }

    fn read_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Read1> {
        loop {
            let Some(file) = self.file.as_mut() else {
                self.reopen(false)?;
                if self.file.is_none() {
                    return Ok(Read1::Pending);
                }
                continue;
            };
            let n = file.read_until(b'\n', &mut self.partial)?;
            self.pos += n as u64;
            self.counter.fetch_add(n as u64, Ordering::Relaxed);
            if self.partial.last() == Some(&b'\n') {
                std::mem::swap(buf, &mut self.partial);
                self.partial.clear();
                strip_eol(buf);
                return Ok(Read1::Line);
            }
            // At the end of what was written so far: rotated or truncated?
            match std::fs::metadata(&self.path) {
                Ok(meta) if file_id(&meta) != self.id => {
                    // Rotated: drain the old file first (done: we are at its end), then the new one.
                    if !self.partial.is_empty() {
                        std::mem::swap(buf, &mut self.partial);
                        self.partial.clear();
                        strip_eol(buf);
                        self.reopen(false)?;
                        return Ok(Read1::Line);
                    }
                    self.reopen(false)?;
                    continue;
                }
                Ok(meta) if meta.len() < self.pos => {
                    // Truncated in place.
                    self.partial.clear();
                    self.reopen(false)?;
                    continue;
                }
                _ => return Ok(Read1::Pending),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn batched_lines_across_buffer_boundaries() {
        // lines longer than the read buffer, CRLF, no final newline
        let long = "x".repeat(300_000);
        let text = format!("a\r\n{long}\n\nb\nlast");
        let mut input = Input::from_reader("t", Box::new(BufReader::with_capacity(1000, std::io::Cursor::new(text))));
        let mut carry = Vec::new();
        let mut lines = Vec::new();
        loop {
            let (_, st) =
                input.read_lines(&mut carry, 2, &mut |l| lines.push(String::from_utf8(l.to_vec()).unwrap())).unwrap();
            if st == Read1::Eof {
                break;
            }
        }
        assert_eq!(lines, ["a", long.as_str(), "", "b", "last"]);
    }

    #[test]
    fn follow_across_rotation_and_truncation() {
        let dir = std::env::temp_dir().join(format!("sqlc-logs-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pg.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut input = Input::follow(&path, false, Arc::default()).unwrap();
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        let mut drain = |input: &mut Input, lines: &mut Vec<String>| {
            while let Read1::Line = input.read_line(&mut buf).unwrap() {
                lines.push(String::from_utf8(buf.clone()).unwrap());
            }
        };
        drain(&mut input, &mut lines);
        assert!(lines.is_empty(), "starts at the end");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"one\ntw").unwrap();
        drain(&mut input, &mut lines);
        f.write_all(b"o\n").unwrap();
        drain(&mut input, &mut lines);
        std::fs::rename(&path, dir.join("pg.log.1")).unwrap();
        f.write_all(b"three (late write to the rotated file)\n").unwrap();
        std::fs::write(&path, "four\n").unwrap();
        drain(&mut input, &mut lines);
        std::fs::write(&path, "").unwrap();
        drain(&mut input, &mut lines);
        std::fs::write(&path, "five\n").unwrap();
        drain(&mut input, &mut lines);
        assert_eq!(lines, ["one", "two", "three (late write to the rotated file)", "four", "five"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
