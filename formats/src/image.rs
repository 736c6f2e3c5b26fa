//! Images as planar f32 tensors in [0, 1] (CHW, as everywhere in lrf-flow), read from PNG or JPEG
//! and written as PNG.

use std::path::Path;

use crate::atomic::write_atomic;
use crate::{FormatError, Result};

/// A planar (CHW) f32 image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageF32 {
    pub channels: usize,
    pub width: u32,
    pub height: u32,
    /// `channels × height × width` values, channel-major.
    pub data: Vec<f32>,
}

impl ImageF32 {
    pub fn new(channels: usize, width: u32, height: u32) -> Self {
        ImageF32 {
            channels,
            width,
            height,
            data: vec![0.0; channels * width as usize * height as usize],
        }
    }

    fn plane_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    pub fn plane(&self, channel: usize) -> &[f32] {
        let n = self.plane_len();
        &self.data[channel * n..(channel + 1) * n]
    }

    pub fn get(&self, channel: usize, x: u32, y: u32) -> f32 {
        self.data[channel * self.plane_len() + y as usize * self.width as usize + x as usize]
    }

    pub fn set(&mut self, channel: usize, x: u32, y: u32, value: f32) {
        let n = self.plane_len();
        self.data[channel * n + y as usize * self.width as usize + x as usize] = value;
    }

    /// Bilinear sample at a continuous position (pixel centres at +0.5), clamped at the borders.
    pub fn sample_bilinear(&self, channel: usize, x: f64, y: f64) -> f32 {
        let max_x = self.width as f64 - 1.0;
        let max_y = self.height as f64 - 1.0;
        let fx = (x - 0.5).clamp(0.0, max_x);
        let fy = (y - 0.5).clamp(0.0, max_y);
        let (x0, y0) = (fx.floor(), fy.floor());
        let (x1, y1) = ((x0 + 1.0).min(max_x), (y0 + 1.0).min(max_y));
        let (tx, ty) = ((fx - x0) as f32, (fy - y0) as f32);
        let at = |x: f64, y: f64| self.get(channel, x as u32, y as u32);
        let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
        let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
        top * (1.0 - ty) + bottom * ty
    }

    /// The `width × height` window whose top-left pixel is (`left`, `top`).
    pub fn crop(&self, left: u32, top: u32, width: u32, height: u32) -> ImageF32 {
        assert!(
            left + width <= self.width && top + height <= self.height,
            "crop window outside the image"
        );
        let mut out = ImageF32::new(self.channels, width, height);
        for c in 0..self.channels {
            for y in 0..height {
                for x in 0..width {
                    out.set(c, x, y, self.get(c, left + x, top + y));
                }
            }
        }
        out
    }
}

/// Width and height from the file header, without decoding the pixels.
pub fn image_size(path: &Path) -> Result<(u32, u32)> {
    image::image_dimensions(path).map_err(|e| image_error(path, e))
}

/// Reads a PNG or JPEG as RGB in [0, 1]. Grey images are repeated to three channels; an alpha
/// channel is dropped (lrf-flow's scenes are opaque photographs).
pub fn read_rgb(path: &Path) -> Result<ImageF32> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    let format = image::guess_format(&bytes).map_err(|e| image_error(path, e))?;
    // The JPEG decoder fills a truncated file's missing rows with grey instead of failing; a
    // complete JPEG ends with the end-of-image marker (possibly followed by padding).
    if format == image::ImageFormat::Jpeg
        && !bytes.trim_ascii_end().ends_with(&[0xFF, 0xD9])
        && !bytes.ends_with(&[0xFF, 0xD9, 0])
    {
        return Err(FormatError::invalid(
            path,
            "image",
            "JPEG is truncated: no end-of-image marker",
        ));
    }
    let decoded = image::load_from_memory_with_format(&bytes, format).map_err(|e| image_error(path, e))?;
    let rgb = decoded.into_rgb32f();
    let (width, height) = rgb.dimensions();
    let mut out = ImageF32::new(3, width, height);
    let n = out.plane_len();
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out.data[c * n + i] = pixel.0[c];
        }
    }
    Ok(out)
}

/// Writes a 1- or 3-channel image as an 8-bit PNG (values clamped to [0, 1], rounded), atomically.
pub fn write_png(path: &Path, image: &ImageF32) -> Result<()> {
    write_atomic(path, &encode_png(path, image)?)
}

/// A 1- or 3-channel image as 8-bit PNG bytes; `path` names the image in errors.
pub fn encode_png(path: &Path, image: &ImageF32) -> Result<Vec<u8>> {
    let to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let n = image.plane_len();
    let (color, bytes): (image::ExtendedColorType, Vec<u8>) = match image.channels {
        1 => (
            image::ExtendedColorType::L8,
            image.data.iter().map(|&v| to_u8(v)).collect(),
        ),
        3 => (
            image::ExtendedColorType::Rgb8,
            (0..n)
                .flat_map(|i| (0..3).map(move |c| (c, i)))
                .map(|(c, i)| to_u8(image.data[c * n + i]))
                .collect(),
        ),
        other => {
            return Err(FormatError::invalid(
                path,
                "image",
                format!("PNG needs 1 or 3 channels, this image has {other}"),
            ));
        }
    };
    let mut encoded = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut encoded),
        &bytes,
        image.width,
        image.height,
        color,
    )
    .map_err(|e| image_error(path, e))?;
    Ok(encoded)
}

fn image_error(path: &Path, error: image::ImageError) -> FormatError {
    match error {
        image::ImageError::IoError(e) => FormatError::io(path, e),
        other => FormatError::invalid(path, "image", format!("cannot decode: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_is_exact_at_8_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let mut image = ImageF32::new(3, 5, 4);
        for (i, v) in image.data.iter_mut().enumerate() {
            *v = (i * 7 % 256) as f32 / 255.0;
        }
        write_png(&path, &image).unwrap();
        assert_eq!(image_size(&path).unwrap(), (5, 4));
        let back = read_rgb(&path).unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn unreadable_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.jpg");
        std::fs::write(&path, b"\xff\xd8\xff not really a jpeg").unwrap();
        let message = read_rgb(&path)
            .err()
            .expect("a broken JPEG must not decode")
            .to_string();
        assert!(message.contains("broken.jpg"), "{message}");
        // Truncated after a valid start: the decoder alone would fill the rest with grey.
        let mut image = ImageF32::new(3, 64, 64);
        image
            .data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i % 7) as f32 / 7.0);
        let png = dir.path().join("whole.png");
        write_png(&png, &image).unwrap();
        let jpeg = dir.path().join("cut.jpg");
        read_rgb(&png).unwrap();
        let encoded = {
            let rgb = ::image::open(&png).unwrap().to_rgb8();
            let mut out = Vec::new();
            rgb.write_to(&mut std::io::Cursor::new(&mut out), ::image::ImageFormat::Jpeg)
                .unwrap();
            out
        };
        std::fs::write(&jpeg, &encoded).unwrap();
        read_rgb(&jpeg).expect("the whole JPEG decodes");
        std::fs::write(&jpeg, &encoded[..encoded.len() / 2]).unwrap();
        let message = read_rgb(&jpeg)
            .err()
            .expect("a truncated JPEG must not decode")
            .to_string();
        assert!(
            message.contains("cut.jpg") && message.contains("truncated"),
            "{message}"
        );
    }

    #[test]
    fn bilinear_sample_at_pixel_center_is_the_pixel() {
        let mut image = ImageF32::new(1, 2, 1);
        image.set(0, 1, 0, 1.0);
        assert_eq!(image.sample_bilinear(0, 1.5, 0.5), 1.0);
        assert_eq!(image.sample_bilinear(0, 1.0, 0.5), 0.5);
    }
}
