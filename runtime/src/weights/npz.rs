//! NumPy `.npz`: a zip archive of `.npy` files (stored or deflated).

use super::Numbers;
use super::{npy, WeightError};
use crate::tensor::Tensor;
use std::io::{Cursor, Read};
use std::path::Path;

fn corrupt(path: &Path, offset: u64, message: impl Into<String>) -> WeightError {
    WeightError::Corrupt {
        path: path.to_path_buf(),
        format: "npz",
        offset,
        message: message.into(),
    }
}

pub(crate) fn read(
    path: &Path,
    bytes: &[u8],
    numbers: Numbers,
) -> Result<Vec<(String, Tensor)>, WeightError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt(path, 0, format!("not a readable zip archive: {e}")))?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| corrupt(path, 0, format!("entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| corrupt(path, 0, format!("entry {i}: {e}")))?
            .to_string();
        let offset = entry.header_start();
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        // A compressed entry can claim any size; never inflate more than the
        // archive could plausibly hold (deflate's best ratio is ~1032:1).
        let limit = (bytes.len() as u64).saturating_mul(1100).min(64 << 30);
        if entry.size() > limit {
            return Err(corrupt(
                path,
                offset,
                format!("entry `{name}` claims {} bytes uncompressed", entry.size()),
            ));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        (&mut entry)
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| corrupt(path, offset, format!("entry `{name}`: {e}")))?;
        out.push((key.clone(), npy::parse(path, &key, &data, numbers)?));
    }
    Ok(out)
}

/// An `.npz` archive (stored, as `numpy.savez` writes it) holding each
/// tensor as `<name>.npy`, in the order given.
pub fn write(entries: &[(&str, &Tensor)]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, tensor) in entries {
        zip.start_file(format!("{name}.npy"), options)
            .map_err(std::io::Error::other)?;
        zip.write_all(&npy::write_npy(tensor))?;
    }
    Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `write` stores, `read` gives back, names and values.
    #[test]
    fn written_archives_read_back() {
        let a = Tensor::new(vec![2, 3], (0..6).map(|i| i as f32).collect()).unwrap();
        let b = Tensor::new(vec![1], vec![-1.5]).unwrap();
        let bytes = write(&[("out", &a), ("aux", &b)]).unwrap();
        let back = read(Path::new("t.npz"), &bytes, Numbers::Floats).unwrap();
        let names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["out", "aux"]);
        assert_eq!(back[0].1, a);
        assert_eq!(back[1].1, b);
    }
}
