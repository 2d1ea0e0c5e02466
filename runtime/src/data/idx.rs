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

/// Read and, if gzip-compressed, inflate; at most `limit` bytes.
fn read_maybe_gz(path: &Path, limit: u64) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(limit)
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX file of u8 as (dims, bytes).
fn read_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>), IdxError> {
    let bytes = read_maybe_gz(path, 1 << 32)?;
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
    let (dims, bytes) = read_u8(path)?;
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
    let (dims, bytes) = read_u8(path)?;
    if dims.len() != 1 {
        return Err(IdxError::Format {
            path: path.to_path_buf(),
            message: format!("labels have rank 1, found rank {}", dims.len()),
        });
    }
    Ok(bytes)
}
