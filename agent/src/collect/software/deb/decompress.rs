//! The compressions apt keeps its lists in (`Acquire::GzipIndexes`, `KeepCompressedAs`): none,
//! gzip, xz, lzma and lz4 (the lz4 *frame* format, which is what apt writes and what this very
//! machine uses). The extension says which one; the magic number is checked so that a file whose
//! name lies gets a clear error instead of garbage.

use std::io::{BufRead, BufReader, Read};

/// How a list file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Lzma,
    Lz4,
}

/// A compression apt can produce but this reader does not handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression .{0} is not supported")]
pub struct Unsupported(pub String);

/// The memory a single xz/lzma stream may claim for its dictionary; apt's lists use a few MB.
#[cfg(target_os = "linux")]
const LZMA_MEMLIMIT: u64 = 512 << 20;

impl Compression {
    /// The extensions apt may append to a list name, in the order a reader prefers them when
    /// several copies exist.
    pub const EXTENSIONS: [&'static str; 7] = ["", ".lz4", ".gz", ".xz", ".lzma", ".zst", ".bz2"];

    /// The compression of a list called `…_Packages{ext}`.
    pub fn from_extension(ext: &str) -> Result<Self, Unsupported> {
        match ext {
            "" => Ok(Self::None),
            ".gz" => Ok(Self::Gzip),
            ".xz" => Ok(Self::Xz),
            ".lzma" => Ok(Self::Lzma),
            ".lz4" => Ok(Self::Lz4),
            other => Err(Unsupported(other.trim_start_matches('.').to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "plain",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Lz4 => "lz4",
        }
    }

    /// Whether `head` (the first bytes of the file) looks like this compression. Plain text and
    /// the headerless lzma format accept anything; an empty file is an empty list.
    pub fn matches_magic(self, head: &[u8]) -> bool {
        if head.is_empty() {
            return true;
        }
        match self {
            Self::None | Self::Lzma => true,
            Self::Gzip => head.starts_with(&[0x1f, 0x8b]),
            Self::Xz => head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Self::Lz4 => head.starts_with(&[0x04, 0x22, 0x4d, 0x18]),
        }
    }

    /// Wraps `input` in the matching decoder. Concatenated gzip members, xz streams and lz4
    /// frames are all read, as the command-line tools do.
    pub fn reader<'a, R: Read + 'a>(self, input: R) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::None => Box::new(input),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Self::Xz | Self::Lzma => lzma_reader(self, input)?,
            Self::Lz4 => Box::new(Lz4Frames(lz4_flex::frame::FrameDecoder::new(
                BufReader::new(input),
            ))),
        })
    }
}

/// An xz (concatenated streams) or legacy lzma decoder.
#[cfg(target_os = "linux")]
fn lzma_reader<'a, R: Read + 'a>(c: Compression, input: R) -> std::io::Result<Box<dyn Read + 'a>> {
    use liblzma::stream::{CONCATENATED, Stream};
    let stream = match c {
        Compression::Lzma => Stream::new_lzma_decoder(LZMA_MEMLIMIT),
        _ => Stream::new_stream_decoder(LZMA_MEMLIMIT, CONCATENATED),
    }
    .map_err(std::io::Error::other)?;
    Ok(Box::new(liblzma::read::XzDecoder::new_stream(
        input, stream,
    )))
}

/// apt lists live on Linux; elsewhere the C library behind xz is not built (see Cargo.toml).
#[cfg(not(target_os = "linux"))]
fn lzma_reader<'a, R: Read + 'a>(c: Compression, _input: R) -> std::io::Result<Box<dyn Read + 'a>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("{} lists are only read on Linux", c.name()),
    ))
}

/// lz4 frames one after another, as `lz4 -d` reads them: lz4_flex's decoder reports the end of
/// each frame as the end of the data, so reading resumes while input remains.
struct Lz4Frames<R: Read>(lz4_flex::frame::FrameDecoder<BufReader<R>>);

impl<R: Read> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.0.read(buf)?;
            // Each retry consumes input (a frame header at least) or fails, so this ends.
            if n > 0 || buf.is_empty() || self.0.get_mut().fill_buf()?.is_empty() {
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
pub(super) mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"Package: a\nVersion: 1\n\nPackage: b\nVersion: 2\n";

    fn decode(c: Compression, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        c.reader(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    pub(crate) fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Lzma => {
                let opts = liblzma::stream::LzmaOptions::new_preset(1).unwrap();
                let s = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
                let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Lzma,
        Compression::Lz4,
    ];

    #[test]
    fn round_trips_every_format() {
        for c in ALL {
            let packed = compress(c, TEXT);
            assert!(c.matches_magic(&packed), "{c:?}");
            assert_eq!(decode(c, &packed).unwrap(), TEXT, "{c:?}");
        }
    }

    #[test]
    fn concatenated_members_are_all_read() {
        for c in [Compression::Gzip, Compression::Xz, Compression::Lz4] {
            let mut two = compress(c, b"Package: a\n\n");
            two.extend(compress(c, b"Package: b\n"));
            assert_eq!(
                decode(c, &two).unwrap(),
                b"Package: a\n\nPackage: b\n",
                "{c:?}"
            );
        }
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        for c in [
            Compression::Gzip,
            Compression::Xz,
            Compression::Lzma,
            Compression::Lz4,
        ] {
            let mut packed = compress(c, &TEXT.repeat(50));
            let mid = packed.len() / 2;
            for b in &mut packed[mid..mid + 8] {
                *b ^= 0x5a;
            }
            assert!(decode(c, &packed).is_err(), "{c:?} accepted corrupt data");
            // Truncated streams fail too.
            let cut = compress(c, &TEXT.repeat(50));
            assert!(
                decode(c, &cut[..cut.len() - 5]).is_err(),
                "{c:?} accepted truncation"
            );
        }
    }

    #[test]
    fn names_and_magic() {
        assert_eq!(Compression::from_extension(".lz4"), Ok(Compression::Lz4));
        assert_eq!(
            Compression::from_extension(".zst"),
            Err(Unsupported("zst".into()))
        );
        assert!(!Compression::Lz4.matches_magic(b"Package: a"));
        assert!(!Compression::Gzip.matches_magic(&compress(Compression::Xz, TEXT)));
        assert!(Compression::Lz4.matches_magic(b""));
    }
}
