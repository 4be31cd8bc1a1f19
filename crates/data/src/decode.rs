//! Robust image decoding to RGB8 (`image` 0.25).
//!
//! What happens to a file, in order:
//! 1. The format is sniffed from the magic bytes, never from the extension (a PNG named `.jpg`
//!    decodes as PNG). Supported: JPEG, PNG, WebP, GIF, BMP, TIFF.
//! 2. JPEGs get a structural pre-check ([`check_jpeg`]): the marker segments are walked up to
//!    the end-of-image marker `FF D9`. A file that ends before it is rejected as truncated,
//!    because `image` would otherwise return a mostly flat-gray picture without an error (a
//!    silent bad sample). Codings the decoder cannot read (arithmetic, lossless, 12-bit) are
//!    rejected here with a clear message instead of the decoder's misleading one.
//! 3. The header's width × height is checked against a pixel limit *before* any pixel buffer is
//!    allocated (decompression bombs; default: Pillow's `DecompressionBombError` limit).
//! 4. The first frame is decoded (animated GIF/WebP).
//! 5. **EXIF orientation is applied**, so the image is upright as a viewer shows it. The official
//!    DINO loader (torchvision `ImageFolder` + Pillow) does *not* do this; we differ knowingly,
//!    since a camera's sensor orientation is not a property of the scene and rotated training
//!    views would only add an augmentation DINO does not use.
//! 6. Conversion to RGB8: gray is replicated, palettes are expanded, 16-bit samples are scaled
//!    to 8 bits (Pillow clips `I;16` instead), CMYK is converted by the JPEG decoder, and alpha
//!    is dropped without compositing — exactly what Pillow's `convert("RGB")` in the official
//!    loader does with alpha.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

// The error types live in `error` (one module for all of the crate's errors, so `error` needs
// nothing from here); DecodeError is re-exported as part of this module's API.
use crate::error::DataError;
pub use crate::error::DecodeError;

/// The formats we accept, by magic bytes; `None` for anything else.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes).ok()? {
        f @ (ImageFormat::Jpeg
        | ImageFormat::Png
        | ImageFormat::WebP
        | ImageFormat::Gif
        | ImageFormat::Bmp
        | ImageFormat::Tiff) => Some(f),
        _ => None,
    }
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

/// Decodes an encoded image to upright RGB8 (HWC, row-major), rejecting images whose header
/// declares more than `max_pixels` pixels before allocating them. See the module doc for the
/// exact conversions.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let format = sniff_format(bytes).ok_or_else(|| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02X}")).collect();
        DecodeError::UnknownFormat(head.join(" "))
    })?;
    let name = format_name(format);
    if format == ImageFormat::Jpeg {
        check_jpeg(bytes)?;
    }
    let dec_err = |source| DecodeError::Decoder {
        format: name,
        source,
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Header first with no allocation limit, so an oversized image gets our clear pixel-limit
    // error instead of the decoder's "memory limit exceeded"; the limit is set before decoding.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(dec_err)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DecodeError::ZeroSize { width, height });
    }
    if width as u64 * height as u64 > max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        });
    }
    let mut limits = Limits::default();
    // 8 bytes per pixel covers 16-bit RGBA output; never below image's own default.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(512 << 20));
    decoder.set_limits(limits).map_err(dec_err)?;
    // A broken EXIF block should not cost the image: fall back to "as stored".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(dec_err)?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Reads and decodes one file (see [`decode_image`]); errors name the path.
pub fn decode_file(path: &Path, max_pixels: u64) -> Result<RgbImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_image(&bytes, max_pixels).map_err(|cause| DataError::Decode {
        what: path.display().to_string(),
        cause,
    })
}

/// Walks a JPEG's marker segments to the end-of-image marker.
///
/// Segment lengths are followed (so an `FF D9` inside an EXIF thumbnail does not count) and the
/// entropy-coded data after each start-of-scan is skipped to the next real marker. Errors: the
/// file ends before `FF D9` ([`DecodeError::Truncated`]), or a frame header announces a coding
/// the decoder lacks: arithmetic (SOF9-11, 13-15), lossless (SOF3), hierarchical (SOF5-7), or a
/// sample precision other than 8 bits ([`DecodeError::Unsupported`]). Bytes after `FF D9` are
/// ignored, as every JPEG decoder does.
pub fn check_jpeg(bytes: &[u8]) -> Result<(), DecodeError> {
    const F: &str = "JPEG";
    let truncated = |reason: String| DecodeError::Truncated { format: F, reason };
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(truncated("no start-of-image marker".into()));
    }
    let n = bytes.len();
    let mut pos = 2;
    loop {
        // Find the next marker, skipping stray bytes and 0xFF fill bytes.
        while pos < n && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < n && bytes[pos] == 0xFF {
            pos += 1;
        }
        if pos >= n {
            return Err(truncated(format!(
                "file ends after {n} bytes without the end-of-image marker FF D9"
            )));
        }
        let marker = bytes[pos];
        pos += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if pos + 2 > n {
            return Err(truncated(format!(
                "segment FF {marker:02X} cut at byte {n}"
            )));
        }
        let len = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]) as usize;
        let end = pos + len;
        if len < 2 || end > n {
            return Err(truncated(format!(
                "segment FF {marker:02X} at byte {} declares {len} bytes, the file has {}",
                pos - 2,
                n - pos
            )));
        }
        if let Some(reason) = unsupported_sof(marker, &bytes[pos..end]) {
            return Err(DecodeError::Unsupported { format: F, reason });
        }
        pos = end;
        if marker == 0xDA {
            // Entropy-coded data: FF 00 is a stuffed byte and FF D0..D7 a restart marker.
            loop {
                while pos < n && bytes[pos] != 0xFF {
                    pos += 1;
                }
                if pos + 1 >= n {
                    return Err(truncated(format!(
                        "scan data runs to the end of the file ({n} bytes) without FF D9"
                    )));
                }
                match bytes[pos + 1] {
                    0x00 | 0xD0..=0xD7 => pos += 2,
                    0xFF => pos += 1,
                    _ => break,
                }
            }
        }
    }
}

/// The reason a start-of-frame segment cannot be decoded by zune-jpeg, if it cannot.
fn unsupported_sof(marker: u8, segment: &[u8]) -> Option<String> {
    let coding = match marker {
        0xC0..=0xC2 => None,
        0xC3 => Some("lossless coding (SOF3)"),
        0xC5..=0xC7 => Some("hierarchical coding (SOF5-7)"),
        0xC9..=0xCB | 0xCD..=0xCF => Some("arithmetic coding (SOF9-15)"),
        _ => return None,
    };
    if let Some(c) = coding {
        return Some(c.to_string());
    }
    // segment = [len_hi, len_lo, precision, ...]
    match segment.get(2) {
        Some(8) => None,
        Some(p) => Some(format!("{p}-bit sample precision (only 8-bit is decoded)")),
        None => Some("empty frame header".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_jpeg() -> Vec<u8> {
        let img = RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 16, y as u8 * 32, 7]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn jpeg_structure_accepts_whole_and_trailing_bytes_rejects_cut() {
        let j = tiny_jpeg();
        check_jpeg(&j).unwrap();
        let mut padded = j.clone();
        padded.extend_from_slice(&[0, 0, 0, 1, 2]);
        check_jpeg(&padded).unwrap();
        assert_eq!(
            decode_image(&padded, 1 << 20).unwrap().dimensions(),
            (16, 8)
        );
        for cut in [j.len() - 1, j.len() - 2, j.len() / 2, 3] {
            let e = decode_image(&j[..cut], 1 << 20).unwrap_err();
            assert!(matches!(e, DecodeError::Truncated { .. }), "cut {cut}: {e}");
        }
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let j = tiny_jpeg();
        assert!(decode_image(&j, 128).is_ok());
        let e = decode_image(&j, 127).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TooManyPixels {
                    width: 16,
                    height: 8,
                    limit: 127
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn garbage_and_empty_are_clear_errors() {
        assert!(matches!(decode_image(&[], 100), Err(DecodeError::Empty)));
        let e = decode_image(b"hello world", 100).unwrap_err();
        assert!(e.to_string().contains("68 65 6C"), "{e}");
    }
}
