//! Image inputs, counted by OpenAI's detail and tile rule.
//!
//! `low` detail costs 85 tokens whatever the size. `high` and `auto` (counted as `high`, the larger) scale
//! the image to fit in 2048 x 2048, then so that its shortest side is at most 768, and cost 85 plus 170 for
//! each 512-pixel tile that covers it. The size of a `data:` URL image is read from the first bytes of its
//! base64 payload (PNG, GIF, WebP; JPEG by walking its segment headers, decoding only those bytes); for an
//! `http(s)` URL, or a payload that cannot be read, the image is assumed to be 1024 x 1024 (765 tokens) and
//! the count is an estimate. A long image can cost more than that assumption: 768 x 2048 is 1445 tokens.

use sluice_api::ImageUrl;

use crate::encoding::Exactness;

/// Tokens of a `low` detail image, and the base of a `high` detail one.
pub const BASE_TOKENS: u64 = 85;
/// Tokens of each 512-pixel tile of a `high` detail image.
pub const TILE_TOKENS: u64 = 170;
/// The size assumed for an image whose size cannot be read.
pub const ASSUMED_SIZE: (u32, u32) = (1024, 1024);

/// Tokens of an image of `width` x `height` pixels at `high` detail.
pub fn high_detail_tokens(width: u32, height: u32) -> u64 {
    let (mut w, mut h) = (f64::from(width), f64::from(height));
    let longest = w.max(h);
    if longest > 2048.0 {
        w *= 2048.0 / longest;
        h *= 2048.0 / longest;
    }
    let shortest = w.min(h);
    if shortest > 768.0 {
        w *= 768.0 / shortest;
        h *= 768.0 / shortest;
    }
    // A hair below a whole tile stays one tile despite rounding in the scaling above.
    let tiles = |side: f64| (side / 512.0 - 1e-9).ceil().max(0.0) as u64;
    BASE_TOKENS + TILE_TOKENS * tiles(w) * tiles(h)
}

/// Tokens of one `image_url` part and whether its size was known.
pub(crate) fn image_tokens(image: &ImageUrl) -> (u64, Exactness) {
    if image.detail.as_deref() == Some("low") {
        return (BASE_TOKENS, Exactness::Exact);
    }
    match data_url_size(&image.url) {
        Some((width, height)) => (high_detail_tokens(width, height), Exactness::Exact),
        None => (high_detail_tokens(ASSUMED_SIZE.0, ASSUMED_SIZE.1), Exactness::Estimate),
    }
}

/// The pixel size of the image in a base64 `data:` URL, read from its header bytes.
pub(crate) fn data_url_size(url: &str) -> Option<(u32, u32)> {
    let rest = url.strip_prefix("data:")?;
    let (header, payload) = rest.split_once(',')?;
    if !header.ends_with(";base64") {
        return None;
    }
    image_size(&Base64(payload.as_bytes()))
}

/// Random access to the bytes a base64 payload decodes to, four characters per three bytes.
struct Base64<'a>(&'a [u8]);

impl Base64<'_> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    }

    /// The decoded byte at `offset`.
    fn byte(&self, offset: usize) -> Option<u8> {
        let group = self.0.get(offset / 3 * 4..offset / 3 * 4 + 4)?;
        let mut bits = 0u32;
        // Padding only ends a group, after the bytes it encodes: a byte that needs it is past the end.
        let needed = offset % 3 + 2;
        for &c in &group[..needed] {
            bits = bits << 6 | Self::sextet(c)?;
        }
        bits <<= 6 * (4 - needed) as u32;
        Some((bits >> (16 - 8 * (offset % 3))) as u8)
    }

    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(offset + i)?;
        }
        Some(out)
    }

    fn u16_be(&self, offset: usize) -> Option<u32> {
        self.bytes::<2>(offset).map(|b| u32::from(u16::from_be_bytes(b)))
    }

    fn u16_le(&self, offset: usize) -> Option<u32> {
        self.bytes::<2>(offset).map(|b| u32::from(u16::from_le_bytes(b)))
    }

    fn u24_le(&self, offset: usize) -> Option<u32> {
        self.bytes::<3>(offset)
            .map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
    }

    fn u32_be(&self, offset: usize) -> Option<u32> {
        self.bytes::<4>(offset).map(u32::from_be_bytes)
    }
}

/// The size of a PNG, GIF, WebP or JPEG image from its header.
fn image_size(data: &Base64<'_>) -> Option<(u32, u32)> {
    let magic = data.bytes::<4>(0)?;
    match magic {
        [0x89, b'P', b'N', b'G'] => (data.bytes::<4>(12)? == *b"IHDR").then_some((data.u32_be(16)?, data.u32_be(20)?)),
        [b'G', b'I', b'F', b'8'] => Some((data.u16_le(6)?, data.u16_le(8)?)),
        [b'R', b'I', b'F', b'F'] if data.bytes::<4>(8)? == *b"WEBP" => webp_size(data),
        [0xFF, 0xD8, ..] => jpeg_size(data),
        _ => None,
    }
}

fn webp_size(data: &Base64<'_>) -> Option<(u32, u32)> {
    match &data.bytes::<4>(12)? {
        // Lossy: a key frame's start code, then 14-bit width and height.
        b"VP8 " => Some((data.u16_le(26)? & 0x3FFF, data.u16_le(28)? & 0x3FFF)),
        // Lossless: a signature byte, then width - 1 and height - 1 in 14 bits each.
        b"VP8L" => {
            let bits = u32::from_le_bytes(data.bytes::<4>(21)?);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        // Extended: canvas width - 1 and height - 1 in 24 bits each.
        b"VP8X" => Some((data.u24_le(24)? + 1, data.u24_le(27)? + 1)),
        _ => None,
    }
}

/// Walks JPEG segments to the start-of-frame, reading four bytes per segment; gives up after 64.
fn jpeg_size(data: &Base64<'_>) -> Option<(u32, u32)> {
    let mut offset = 2;
    for _ in 0..64 {
        let [marker_start, marker] = data.bytes::<2>(offset)?;
        if marker_start != 0xFF {
            return None;
        }
        match marker {
            // Fill bytes before a marker.
            0xFF => offset += 1,
            // Markers without a length.
            0x01 | 0xD0..=0xD8 => offset += 2,
            // Start of frame (not DHT 0xC4, JPG 0xC8, DAC 0xCC): precision, height, width.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let height = data.u16_be(offset + 5)?;
                let width = data.u16_be(offset + 7)?;
                return Some((width, height));
            }
            // End of image or start of scan before any frame header: nothing to read.
            0xD9 | 0xDA => return None,
            _ => offset += 2 + data.u16_be(offset + 2)? as usize,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn data_url(mime: &str, bytes: &[u8]) -> String {
        format!("data:{mime};base64,{}", base64(bytes))
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        bytes.extend(width.to_be_bytes());
        bytes.extend(height.to_be_bytes());
        bytes.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    #[test]
    fn tile_rule_matches_openais_examples() {
        // OpenAI's vision guide: 1024 x 1024 high is 765; 2048 x 4096 high is 1105; low is 85.
        assert_eq!(high_detail_tokens(1024, 1024), 765);
        assert_eq!(high_detail_tokens(2048, 4096), 1105);
        assert_eq!(high_detail_tokens(512, 512), 255);
        assert_eq!(high_detail_tokens(513, 512), 425);
        assert_eq!(high_detail_tokens(100, 100), 255);
        assert_eq!(high_detail_tokens(768, 2048), 1445);
        assert_eq!(high_detail_tokens(4096, 8192), 1105);
        assert_eq!(high_detail_tokens(0, 0), 85);
        let low = ImageUrl {
            url: data_url("image/png", &png(4096, 8192)),
            detail: Some("low".into()),
            extra: Default::default(),
        };
        assert_eq!(image_tokens(&low), (85, Exactness::Exact));
    }

    #[test]
    fn sizes_are_read_from_data_url_headers() {
        assert_eq!(data_url_size(&data_url("image/png", &png(640, 480))), Some((640, 480)));
        // Every alignment of the header within base64 groups.
        for pad in 0..3 {
            let url = data_url("image/png", &png(3000 + pad, 17));
            assert_eq!(data_url_size(&url), Some((3000 + pad, 17)));
        }

        let mut gif = b"GIF89a".to_vec();
        gif.extend(300u16.to_le_bytes());
        gif.extend(200u16.to_le_bytes());
        gif.extend([0, 0, 0]);
        assert_eq!(data_url_size(&data_url("image/gif", &gif)), Some((300, 200)));

        let webp = |chunk: &[u8; 4], body: &[u8]| {
            let mut bytes = b"RIFF\0\0\0\0WEBP".to_vec();
            bytes.extend(chunk);
            bytes.extend([0, 0, 0, 0]);
            bytes.extend(body);
            bytes
        };
        let mut lossy = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        lossy.extend(1920u16.to_le_bytes());
        lossy.extend(1080u16.to_le_bytes());
        assert_eq!(
            data_url_size(&data_url("image/webp", &webp(b"VP8 ", &lossy))),
            Some((1920, 1080))
        );
        let bits: u32 = (800 - 1) | (600 - 1) << 14;
        let mut lossless = vec![0x2f];
        lossless.extend(bits.to_le_bytes());
        assert_eq!(
            data_url_size(&data_url("image/webp", &webp(b"VP8L", &lossless))),
            Some((800, 600))
        );
        let mut extended = vec![0, 0, 0, 0];
        extended.extend(&(5000u32 - 1).to_le_bytes()[..3]);
        extended.extend(&(70u32 - 1).to_le_bytes()[..3]);
        assert_eq!(
            data_url_size(&data_url("image/webp", &webp(b"VP8X", &extended))),
            Some((5000, 70))
        );

        // A JPEG with an APP0 and a large APP1 (EXIF) segment before its frame header.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        jpeg.extend([0u8; 14]);
        jpeg.extend([0xFF, 0xE1, 0x40, 0x00]);
        jpeg.extend(vec![0u8; 0x4000 - 2]);
        jpeg.extend([0xFF, 0xFF, 0xC2, 0x00, 0x11, 0x08]);
        jpeg.extend(1536u16.to_be_bytes());
        jpeg.extend(2048u16.to_be_bytes());
        jpeg.extend([3, 0, 0, 0]);
        assert_eq!(data_url_size(&data_url("image/jpeg", &jpeg)), Some((2048, 1536)));
    }

    #[test]
    fn unreadable_images_assume_the_documented_size() {
        let cases = [
            "https://example.com/cat.png".to_owned(),
            "data:image/png,rawbytes".to_owned(),
            "data:image/png;base64,!!!!".to_owned(),
            data_url("image/png", &png(10, 10)[..20]),
            data_url("image/jpeg", &[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]),
            data_url("image/bmp", b"BM\0\0\0\0\0\0\0\0"),
            "data:;base64,".to_owned(),
        ];
        for url in cases {
            let image = ImageUrl {
                url: url.clone(),
                detail: None,
                extra: Default::default(),
            };
            assert_eq!(image_tokens(&image), (765, Exactness::Estimate), "{url}");
        }
    }
}
