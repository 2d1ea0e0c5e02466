//! Photographs as network input: decode PNG/JPEG, resize the shorter side,
//! centre-crop, scale to [0, 1] and normalise per channel (torchvision's
//! usual ImageNet recipe by default).

use crate::tensor::Tensor;
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {message}")]
    Decode { path: PathBuf, message: String },
    #[error("{0}")]
    Options(String),
}

/// How to turn an image into a `[C, H, W]` tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// Resize so the shorter side has this many pixels (`None`: no resize).
    pub resize: Option<u32>,
    /// Centre crop to `[h, w]` (`None`: keep the whole image).
    pub crop: Option<[u32; 2]>,
    /// Per-channel mean and standard deviation applied after scaling to [0, 1].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// 1 for greyscale, 3 for RGB.
    pub channels: usize,
}

impl Preprocess {
    /// torchvision's ImageNet evaluation transform for a `size`×`size` crop:
    /// resize to 256/224 of the crop, centre-crop, normalise.
    pub fn imagenet(size: u32) -> Self {
        Preprocess {
            resize: Some(size * 256 / 224),
            crop: Some([size, size]),
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            channels: 3,
        }
    }
}

/// The most pixels a resize may produce: a 1×60000 PNG resized to a 256
/// shorter side would otherwise ask for 46 GB.
const MAX_PIXELS: u64 = 1 << 26;

/// Decode and preprocess one image into a `[C, H, W]` tensor.
pub fn load(path: &Path, p: &Preprocess) -> Result<Tensor, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    decode(path, &bytes, p)
}

/// [`load`] on bytes already in memory; `path` names them in errors. The
/// format is recognised from the bytes, not the extension.
pub fn decode(path: &Path, bytes: &[u8], p: &Preprocess) -> Result<Tensor, ImageError> {
    if !(p.channels == 1 || p.channels == 3) {
        return Err(ImageError::Options(format!(
            "images have 1 or 3 channels, the model wants {}",
            p.channels
        )));
    }
    for (name, v) in [("mean", &p.mean), ("std", &p.std)] {
        if v.len() != p.channels && v.len() != 1 {
            return Err(ImageError::Options(format!(
                "--{name} needs 1 or {} values, found {}",
                p.channels,
                v.len()
            )));
        }
    }
    if p.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(ImageError::Options(
            "--std values must be finite and non-zero".into(),
        ));
    }
    let fail = |message: String| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let mut img = reader.decode().map_err(|e| fail(e.to_string()))?;
    if let Some(short) = p.resize {
        let (w, h) = (img.width(), img.height());
        let scale = short as f64 / w.min(h).max(1) as f64;
        let (nw, nh) = (
            ((w as f64 * scale).round() as u32).max(1),
            ((h as f64 * scale).round() as u32).max(1),
        );
        if nw as u64 * nh as u64 > MAX_PIXELS {
            return Err(fail(format!(
                "resizing {w}x{h} to {nw}x{nh} would need {} pixels; the limit is {MAX_PIXELS}",
                nw as u64 * nh as u64
            )));
        }
        img = img.resize_exact(nw, nh, FilterType::Triangle);
    }
    if let Some([ch, cw]) = p.crop {
        if ch > img.height() || cw > img.width() {
            return Err(fail(format!(
                "cannot crop {cw}x{ch} from a {}x{} image (after resizing)",
                img.width(),
                img.height()
            )));
        }
        let (x, y) = ((img.width() - cw) / 2, (img.height() - ch) / 2);
        img = img.crop_imm(x, y, cw, ch);
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels: Vec<u8> = if p.channels == 3 {
        img.to_rgb8().into_raw()
    } else {
        img.to_luma8().into_raw()
    };
    let c_n = p.channels;
    let mut data = vec![0.0f32; c_n * h * w];
    for c in 0..c_n {
        let mean = p.mean[c.min(p.mean.len() - 1)];
        let std = p.std[c.min(p.std.len() - 1)];
        for i in 0..h * w {
            data[c * h * w + i] = (pixels[i * c_n + c] as f32 / 255.0 - mean) / std;
        }
    }
    Tensor::new(vec![c_n, h, w], data).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_crop_normalise() {
        let dir = std::env::temp_dir().join(format!("netc-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("red.png");
        // 40x20 image, left half red, right half blue.
        let img = image::RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        img.save(&path).unwrap();
        let p = Preprocess {
            resize: Some(10),
            crop: Some([10, 10]),
            mean: vec![0.5],
            std: vec![0.5],
            channels: 3,
        };
        let t = load(&path, &p).unwrap();
        assert_eq!(t.shape(), &[3, 10, 10]);
        // Top-left of the centre crop is red: (1 − 0.5) / 0.5 = 1 in channel 0.
        assert!((t.data()[0] - 1.0).abs() < 1e-6);
        assert!((t.data()[2 * 100] + 1.0).abs() < 1e-6);
        // Cropping more than the image is an error, not a panic.
        let p = Preprocess {
            crop: Some([50, 50]),
            ..p
        };
        assert!(load(&path, &p).is_err());
        // Not an image.
        std::fs::write(dir.join("x.png"), b"not a png").unwrap();
        assert!(load(&dir.join("x.png"), &Preprocess::imagenet(224)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
