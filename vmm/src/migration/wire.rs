//! The migration stream: versioned, length-prefixed, checksummed records.
//!
//! ```text
//! stream := header record*
//! header := "MOSVMIG\0" version:u32 kind:u32                 (16 bytes)
//! record := tag:u8 0 0 0 len:u32 payload[len] crc32c:u32     (crc over tag..payload)
//! ```
//! All integers are little-endian. A reader refuses an unknown version, an
//! unknown tag, an oversized record or a bad checksum, with an error that
//! says which. The same format is used for snapshots (kind = snapshot).

use std::io::{self, IoSlice, Read, Write};

use thiserror::Error;

use crate::layout::PAGE_SIZE;
use crate::memory::GuestRam;

pub const MAGIC: [u8; 8] = *b"MOSVMIG\0";
pub const VERSION: u32 = 1;

pub const KIND_LIVE: u32 = 1;
pub const KIND_SNAPSHOT: u32 = 2;

/// Sender to receiver.
pub const TAG_HELLO: u8 = 1;
pub const TAG_PAGES: u8 = 2;
pub const TAG_ZEROS: u8 = 3;
pub const TAG_STATE: u8 = 4;
pub const TAG_END: u8 = 5;
/// "Tell me when you have taken everything before this": ends a round.
pub const TAG_SYNC: u8 = 6;
/// A checksum of every page, sent while the job is stopped (`migrate
/// --verify`); the receiver refuses the job if its copy differs.
pub const TAG_VERIFY: u8 = 7;
/// Where the job's deputy waits for the new body (a `HomeLink`), sent
/// early so the destination opens its links while the pages come.
pub const TAG_HOME: u8 = 8;
/// The move's ticket (`trust::Ticket`), before HELLO, when the receiver
/// was prepared for one move (by its daemon): it takes no other stream.
/// Sent only to receivers that asked for it, so older ones never see it.
pub const TAG_TICKET: u8 = 9;
/// Receiver to sender.
pub const TAG_ACCEPT: u8 = 16;
pub const TAG_REFUSE: u8 = 17;
pub const TAG_ACK: u8 = 18;
pub const TAG_SYNCED: u8 = 19;

/// Pages per PAGES record.
pub const MAX_BATCH: usize = 64;
/// Largest payload of any other record.
pub const MAX_RECORD: u32 = 64 << 20;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection {0}")]
    Closed(&'static str),
    #[error("not a mosvm migration stream")]
    BadMagic,
    #[error("stream version {0} is not supported (this build speaks version {VERSION})")]
    Version(u32),
    #[error("unexpected stream kind {0}")]
    Kind(u32),
    #[error("unknown record type {0}")]
    UnknownTag(u8),
    #[error("unexpected record type {got} (expected {want})")]
    Unexpected { got: u8, want: &'static str },
    #[error("record of {0} bytes is larger than allowed")]
    TooLarge(u32),
    #[error("checksum mismatch in a record of type {0}: the stream is corrupt")]
    Checksum(u8),
    #[error("bad page record: {0}")]
    BadPages(String),
    #[error("the peer refused: {0}")]
    Refused(String),
}

fn closed_to(e: io::Error, when: &'static str) -> WireError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        WireError::Closed(when)
    } else {
        WireError::Io(e)
    }
}

pub fn write_header(w: &mut impl Write, kind: u32) -> io::Result<()> {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&kind.to_le_bytes());
    w.write_all(&h)
}

/// Reads the header; returns the stream kind.
pub fn read_header(r: &mut impl Read) -> Result<u32, WireError> {
    let mut h = [0u8; 16];
    r.read_exact(&mut h).map_err(|e| closed_to(e, "before the stream header"))?;
    if h[..8] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = u32::from_le_bytes(h[12..16].try_into().unwrap());
    if kind != KIND_LIVE && kind != KIND_SNAPSHOT {
        return Err(WireError::Kind(kind));
    }
    Ok(kind)
}

fn record_header(tag: u8, len: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = tag;
    h[4..].copy_from_slice(&len.to_le_bytes());
    h
}

/// Writes one small record.
pub fn write_record(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let h = record_header(tag, payload.len() as u32);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h), payload);
    write_all_vectored(w, &mut [IoSlice::new(&h), IoSlice::new(payload), IoSlice::new(&crc.to_le_bytes())])
}

fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Batches pages into PAGES records. Each page is copied out of guest
/// memory first (it may change while the vCPU runs; the checksum must match
/// what is sent), zero pages are reported instead of sent.
pub struct PageWriter {
    gpas: Vec<u64>,
    data: Vec<u8>,
    zeros: Vec<u64>,
    pub pages_sent: u64,
    pub zero_pages: u64,
    pub bytes_sent: u64,
    /// Bytes per second not to exceed, and when pacing started.
    pub max_bandwidth: Option<u64>,
    paced_since: Option<std::time::Instant>,
}

impl Default for PageWriter {
    fn default() -> Self {
        PageWriter {
            gpas: Vec::with_capacity(MAX_BATCH),
            data: vec![0u8; MAX_BATCH * PAGE_SIZE as usize],
            zeros: Vec::with_capacity(MAX_BATCH),
            pages_sent: 0,
            zero_pages: 0,
            bytes_sent: 0,
            max_bandwidth: None,
            paced_since: None,
        }
    }
}

#[inline]
fn is_zero(page: &[u8]) -> bool {
    let (pre, words, post) = unsafe { page.align_to::<u64>() };
    pre.iter().all(|&b| b == 0) && words.iter().fold(0, |acc, &w| acc | w) == 0 && post.iter().all(|&b| b == 0)
}

impl PageWriter {
    /// Queues page `gpa`. `send_zeros`: report a zero page (it may hold
    /// data on the receiver from an earlier round) instead of dropping it.
    pub fn push(&mut self, w: &mut impl Write, ram: &GuestRam, gpa: u64, send_zeros: bool) -> io::Result<()> {
        let i = self.gpas.len();
        let slot = &mut self.data[i * PAGE_SIZE as usize..(i + 1) * PAGE_SIZE as usize];
        slot.copy_from_slice(ram.slice(gpa, PAGE_SIZE).map_err(|e| io::Error::other(e.to_string()))?);
        if is_zero(slot) {
            self.zero_pages += 1;
            if send_zeros {
                self.zeros.push(gpa);
                if self.zeros.len() == MAX_BATCH {
                    self.flush_zeros(w)?;
                }
            }
            return Ok(());
        }
        self.gpas.push(gpa);
        if self.gpas.len() == MAX_BATCH {
            self.flush_pages(w)?;
        }
        Ok(())
    }

    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<()> {
        self.flush_pages(w)?;
        self.flush_zeros(w)
    }

    fn flush_pages(&mut self, w: &mut impl Write) -> io::Result<()> {
        let n = self.gpas.len();
        if n == 0 {
            return Ok(());
        }
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&(n as u32).to_le_bytes());
        let gpa_bytes: &[u8] = unsafe { std::slice::from_raw_parts(self.gpas.as_ptr().cast(), n * 8) };
        let data = &self.data[..n * PAGE_SIZE as usize];
        let len = (8 + n * 8 + data.len()) as u32;
        let h = record_header(TAG_PAGES, len);
        let mut crc = crc32c::crc32c(&h);
        crc = crc32c::crc32c_append(crc, &head);
        crc = crc32c::crc32c_append(crc, gpa_bytes);
        crc = crc32c::crc32c_append(crc, data);
        let crc = crc.to_le_bytes();
        write_all_vectored(
            w,
            &mut [
                IoSlice::new(&h),
                IoSlice::new(&head),
                IoSlice::new(gpa_bytes),
                IoSlice::new(data),
                IoSlice::new(&crc),
            ],
        )?;
        self.pages_sent += n as u64;
        self.bytes_sent += len as u64 + 12;
        self.gpas.clear();
        self.pace();
        Ok(())
    }

    /// Sleeps as needed to stay under `max_bandwidth`.
    fn pace(&mut self) {
        let Some(limit) = self.max_bandwidth.filter(|&l| l > 0) else { return };
        let since = *self.paced_since.get_or_insert_with(std::time::Instant::now);
        let due = std::time::Duration::from_secs_f64(self.bytes_sent as f64 / limit as f64);
        if let Some(wait) = due.checked_sub(since.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    fn flush_zeros(&mut self, w: &mut impl Write) -> io::Result<()> {
        if self.zeros.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = self.zeros.iter().flat_map(|g| g.to_le_bytes()).collect();
        write_record(w, TAG_ZEROS, &bytes)?;
        self.bytes_sent += bytes.len() as u64 + 12;
        self.zeros.clear();
        Ok(())
    }
}

/// Backs runs of adjacent pages with host memory in one call each, rather
/// than one page fault per page as the socket copy touches them.
fn populate(pages: &[&mut [u8]]) {
    let mut i = 0;
    while i < pages.len() {
        let start = pages[i].as_ptr();
        let mut j = i + 1;
        while j < pages.len() && pages[j].as_ptr() == pages[j - 1].as_ptr().wrapping_add(PAGE_SIZE as usize) {
            j += 1;
        }
        // SAFETY: a range of guest pages we own; advice only (failure is harmless).
        unsafe { libc::madvise(start as *mut libc::c_void, (j - i) * PAGE_SIZE as usize, libc::MADV_POPULATE_WRITE) };
        i = j;
    }
}

/// Reads records, checking length and checksum.
pub struct RecordReader<R> {
    pub inner: R,
    pub bytes: u64,
    /// Back the pages of PAGES records before reading into them: worth it
    /// while they are fresh (the first round), not for pages sent again.
    pub populate: bool,
}

/// One record read: its tag and (for all but PAGES) its payload.
pub enum Record {
    Small(u8, Vec<u8>),
    /// A PAGES record, already written into guest memory.
    Pages(usize),
}

impl<R: Read> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader { inner, bytes: 0, populate: true }
    }

    fn read_exact(&mut self, buf: &mut [u8], when: &'static str) -> Result<(), WireError> {
        self.inner.read_exact(buf).map_err(|e| closed_to(e, when))?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn read_pages(&mut self, pages: &mut [&mut [u8]]) -> Result<(), WireError> {
        let n = pages.len();
        let mut all: [io::IoSliceMut<'_>; MAX_BATCH] = std::array::from_fn(|_| io::IoSliceMut::new(&mut []));
        for (b, p) in all.iter_mut().zip(pages.iter_mut()) {
            *b = io::IoSliceMut::new(p);
        }
        let mut bufs = &mut all[..n];
        while !bufs.is_empty() {
            let n = self.inner.read_vectored(bufs).map_err(|e| closed_to(e, "in a page record"))?;
            if n == 0 {
                return Err(WireError::Closed("in a page record"));
            }
            self.bytes += n as u64;
            io::IoSliceMut::advance_slices(&mut bufs, n);
        }
        Ok(())
    }

    /// The next record. PAGES records are read straight into `ram` (the
    /// checksum is verified after; a bad one fails the whole stream).
    pub fn next(&mut self, ram: Option<&GuestRam>) -> Result<Record, WireError> {
        let mut h = [0u8; 8];
        self.read_exact(&mut h, "in the middle of the stream")?;
        let tag = h[0];
        let len = u32::from_le_bytes(h[4..].try_into().unwrap());
        let known = matches!(
            tag,
            TAG_HELLO
                | TAG_TICKET
                | TAG_VERIFY
                | TAG_HOME
                | TAG_PAGES
                | TAG_ZEROS
                | TAG_STATE
                | TAG_END
                | TAG_SYNC
                | TAG_ACCEPT
                | TAG_REFUSE
                | TAG_ACK
                | TAG_SYNCED
        );

        if !known {
            return Err(WireError::UnknownTag(tag));
        }
        let mut crc = crc32c::crc32c(&h);
        let record = if tag == TAG_PAGES {
            let ram = ram.ok_or(WireError::Unexpected { got: tag, want: "a control record" })?;
            let mut head = [0u8; 8];
            self.read_exact(&mut head, "in a page record")?;
            let n = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
            if n == 0 || n > MAX_BATCH || len as usize != 8 + n * 8 + n * PAGE_SIZE as usize {
                return Err(WireError::BadPages(format!("{n} pages in a {len}-byte record")));
            }
            let mut gpa_bytes = [0u8; MAX_BATCH * 8];
            self.read_exact(&mut gpa_bytes[..n * 8], "in a page record")?;
            crc = crc32c::crc32c_append(crc, &head);
            crc = crc32c::crc32c_append(crc, &gpa_bytes[..n * 8]);
            // Check every address first, then read all pages in place with
            // one vectored read per batch.
            let mut slices: [&mut [u8]; MAX_BATCH] = std::array::from_fn(|_| &mut [][..]);
            let mut prev = None;
            for (i, chunk) in gpa_bytes[..n * 8].chunks_exact(8).enumerate() {
                let gpa = u64::from_le_bytes(chunk.try_into().unwrap());
                if gpa % PAGE_SIZE != 0 || gpa.checked_add(PAGE_SIZE).is_none_or(|e| e > ram.size()) {
                    return Err(WireError::BadPages(format!("page address {gpa:#x} is outside guest memory")));
                }
                // Ascending addresses: no page twice (each gets its own buffer).
                if prev.is_some_and(|p| gpa <= p) {
                    return Err(WireError::BadPages("page addresses out of order".into()));
                }
                prev = Some(gpa);
                slices[i] = ram.page_mut(gpa);
            }
            if self.populate {
                populate(&slices[..n]);
            }
            self.read_pages(&mut slices[..n])?;
            // Not marked in the VMM's write log: a later move starts by clearing it.
            for page in &slices[..n] {
                crc = crc32c::crc32c_append(crc, page);
            }
            Record::Pages(n)
        } else {
            if len > MAX_RECORD {
                return Err(WireError::TooLarge(len));
            }
            let mut payload = vec![0u8; len as usize];
            self.read_exact(&mut payload, "in the middle of a record")?;
            crc = crc32c::crc32c_append(crc, &payload);
            Record::Small(tag, payload)
        };
        let mut want = [0u8; 4];
        self.read_exact(&mut want, "in the middle of a record")?;
        if u32::from_le_bytes(want) != crc {
            return Err(WireError::Checksum(tag));
        }
        Ok(record)
    }

    /// The next record, which must be a small one of type `tag` (a
    /// REFUSE is the peer's reason, as `WireError::Refused`).
    pub fn expect(&mut self, tag: u8, name: &'static str) -> Result<Vec<u8>, WireError> {
        match self.next(None)? {
            Record::Small(t, p) if t == tag => Ok(p),
            Record::Small(TAG_REFUSE, why) => Err(WireError::Refused(String::from_utf8_lossy(&why).into())),
            Record::Small(t, _) => Err(WireError::Unexpected { got: t, want: name }),
            Record::Pages(_) => Err(WireError::Unexpected { got: TAG_PAGES, want: name }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> GuestRam {
        GuestRam::new(32 << 20).unwrap()
    }

    #[test]
    fn pages_round_trip_and_zeros_are_skipped() {
        let src = ram();
        src.write(0x20_0000, &[7u8; 4096]).unwrap();
        src.write(0x30_1000, b"hello").unwrap();
        let mut out = Vec::new();
        write_header(&mut out, KIND_LIVE).unwrap();
        let mut pw = PageWriter::default();
        for gpa in [0x20_0000, 0x30_0000, 0x30_1000] {
            pw.push(&mut out, &src, gpa, true).unwrap();
        }
        pw.flush(&mut out).unwrap();
        write_record(&mut out, TAG_END, &[]).unwrap();
        assert_eq!((pw.pages_sent, pw.zero_pages), (2, 1));

        let dst = ram();
        let mut r = std::io::Cursor::new(out);
        assert_eq!(read_header(&mut r).unwrap(), KIND_LIVE);
        let mut rr = RecordReader::new(r);
        assert!(matches!(rr.next(Some(&dst)).unwrap(), Record::Pages(2)));
        assert!(matches!(rr.next(Some(&dst)).unwrap(), Record::Small(TAG_ZEROS, _)));
        assert!(matches!(rr.next(Some(&dst)).unwrap(), Record::Small(TAG_END, _)));
        assert_eq!(dst.slice(0x20_0000, 4096).unwrap(), &[7u8; 4096][..]);
        assert_eq!(dst.slice(0x30_1000, 5).unwrap(), b"hello");
    }

    #[test]
    fn corruption_truncation_and_versions_are_refused() {
        let src = ram();
        src.write(0x20_0000, &[9u8; 4096]).unwrap();
        let mut out = Vec::new();
        write_header(&mut out, KIND_LIVE).unwrap();
        let mut pw = PageWriter::default();
        pw.push(&mut out, &src, 0x20_0000, false).unwrap();
        pw.flush(&mut out).unwrap();

        let dst = ram();
        let mut bad = out.clone();
        bad[16 + 8 + 8 + 8 + 100] ^= 1; // a byte of page data
        let mut rr = RecordReader::new(&bad[16..]);
        assert!(matches!(rr.next(Some(&dst)), Err(WireError::Checksum(TAG_PAGES))));

        let mut rr = RecordReader::new(&out[16..out.len() - 10]);
        assert!(matches!(rr.next(Some(&dst)), Err(WireError::Closed(_))));

        let mut v2 = out.clone();
        v2[8] = 2;
        assert!(matches!(read_header(&mut &v2[..]), Err(WireError::Version(2))));
        assert!(matches!(read_header(&mut &b"GARBAGE!GARBAGE!"[..]), Err(WireError::BadMagic)));

        let mut unknown = Vec::new();
        write_record(&mut unknown, 99, b"x").unwrap();
        assert!(matches!(RecordReader::new(&unknown[..]).next(None), Err(WireError::UnknownTag(99))));

        let mut huge = record_header(TAG_STATE, u32::MAX).to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(RecordReader::new(&huge[..]).next(None), Err(WireError::TooLarge(_))));

        // a page address beyond memory
        let mut wild = Vec::new();
        let mut pw = PageWriter::default();
        pw.push(&mut wild, &src, 0x20_0000, false).unwrap();
        pw.flush(&mut wild).unwrap();
        wild[16..24].copy_from_slice(&(64u64 << 20).to_le_bytes());
        assert!(matches!(RecordReader::new(&wild[..]).next(Some(&dst)), Err(WireError::BadPages(_))));
    }
}
