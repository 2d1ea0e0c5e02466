//! The IDX format of MNIST (optionally gzip-compressed): a magic number
//! giving the element type and rank, big-endian dimensions, then the data.

use crate::tensor::Tensor;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an IDX file of unsigned bytes: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{path}: truncated: the header promises {needed} bytes of data, the file has {available}"
    )]
    Truncated {
        path: PathBuf,
        needed: usize,
        available: usize,
    },
}

/// The most an IDX file may inflate to: MNIST's training images are 47 MB,
/// and a gzip bomb must not take the machine's memory.
const MAX_INFLATED: u64 = 1 << 30;

fn read(path: &Path) -> Result<Vec<u8>, IdxError> {
    std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Inflate gzip-compressed bytes; others are returned as they are.
fn inflate_if_gz(path: &Path, raw: &[u8]) -> Result<Vec<u8>, IdxError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|source| IdxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(IdxError::Format {
            path: path.to_path_buf(),
            message: format!("inflates to more than {MAX_INFLATED} bytes"),
        });
    }
    Ok(out)
}

/// An IDX file of u8 as (dims, bytes).
fn parse_u8(path: &Path, raw: &[u8]) -> Result<(Vec<usize>, Vec<u8>), IdxError> {
    let bytes = inflate_if_gz(path, raw)?;
    let format = |message: String| IdxError::Format {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(format("bad magic number".into()));
    }
    if bytes[2] != 0x08 {
        return Err(format(format!(
            "element type 0x{:02x}, expected 0x08 (u8)",
            bytes[2]
        )));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format("file ends inside the header".into()));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let needed = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format("dimensions overflow".into()))?;
    let available = bytes.len() - header;
    if available < needed {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            needed,
            available,
        });
    }
    Ok((dims, bytes[header..header + needed].to_vec()))
}

/// MNIST-style images as an `[N, 1, H, W]` tensor scaled to [0, 1].
pub fn read_images(path: &Path) -> Result<Tensor, IdxError> {
    parse_images(path, &read(path)?)
}

/// [`read_images`] on bytes already in memory; `path` names them in errors.
pub fn parse_images(path: &Path, raw: &[u8]) -> Result<Tensor, IdxError> {
    let (dims, bytes) = parse_u8(path, raw)?;
    let [n, h, w] = dims[..] else {
        return Err(IdxError::Format {
            path: path.to_path_buf(),
            message: format!("images have rank 3, found rank {}", dims.len()),
        });
    };
    let data = bytes.iter().map(|&b| b as f32 / 255.0).collect();
    Tensor::new(vec![n, 1, h, w], data).map_err(|e| IdxError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Labels, one byte each.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    parse_labels(path, &read(path)?)
}

/// [`read_labels`] on bytes already in memory.
pub fn parse_labels(path: &Path, raw: &[u8]) -> Result<Vec<u8>, IdxError> {
    let (dims, bytes) = parse_u8(path, raw)?;
    if dims.len() != 1 {
        return Err(IdxError::Format {
            path: path.to_path_buf(),
            message: format!("labels have rank 1, found rank {}", dims.len()),
        });
    }
    Ok(bytes)
}
