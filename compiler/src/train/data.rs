//! Training data: MNIST-format IDX files (raw or gzip), `.npy` arrays and
//! image folders (one sub-folder per class), shuffled per epoch from a
//! seed and assembled into batches — augmented — on a background thread
//! while the step runs.

use super::augment::Augment;
use netc_runtime::data::{idx, image as img};
use netc_runtime::init::SplitMix64;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Idx(#[from] idx::IdxError),
    #[error(transparent)]
    Npy(#[from] netc_runtime::weights::WeightError),
    #[error(transparent)]
    Image(#[from] img::ImageError),
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{images} images but {labels} labels")]
    Count { images: usize, labels: usize },
    #[error("the data's items are {found:?}, the model takes {expected:?}")]
    Shape {
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// Images `[N, C, H, W]` in [0, 1] (or as stored, for `.npy`) with one
/// class label each.
pub struct Dataset {
    pub images: Vec<f32>,
    /// `[C, H, W]` of one image.
    pub item: [usize; 3],
    pub labels: Vec<usize>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn item_len(&self) -> usize {
        self.item.iter().product()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.item_len()..][..self.item_len()]
    }

    /// Images from `images` (IDX, `.npy`, an `.npz` holding `images` and
    /// `labels`, or a folder of class sub-folders, whose labels come from
    /// the folder names in sorted order) and labels from `labels` (IDX or
    /// `.npy`; not for `.npz` files or folders).
    pub fn load(images: &Path, labels: Option<&Path>) -> Result<Dataset, DataError> {
        if images.is_dir() {
            return folder(images);
        }
        if images.extension().is_some_and(|e| e == "npz") {
            return npz(images);
        }
        let (shape, data) = if is_npy(images) {
            let t = netc_runtime::weights::read_npy(images)?;
            (t.shape().to_vec(), t.into_data())
        } else {
            let t = idx::read_images(images)?;
            (t.shape().to_vec(), t.into_data())
        };
        let item = image_item(images, &shape)?;
        let Some(labels_path) = labels else {
            return Err(DataError::Format {
                path: images.to_path_buf(),
                message: "a labels file is needed (only image folders carry their own)".into(),
            });
        };
        let labels = read_labels(labels_path)?;
        if labels.len() != shape[0] {
            return Err(DataError::Count {
                images: shape[0],
                labels: labels.len(),
            });
        }
        Ok(Dataset {
            images: data,
            item,
            labels,
        })
    }

    /// Check the items against a model input `[N, C, H, W]`.
    pub fn fits(&self, input: &[usize]) -> Result<(), DataError> {
        if input.len() != 4 || input[1..] != self.item {
            return Err(DataError::Shape {
                expected: input.get(1..).unwrap_or(&[]).to_vec(),
                found: self.item.to_vec(),
            });
        }
        Ok(())
    }
}

/// One image's `[C, H, W]` from an array of images `[N, H, W]` (one
/// channel) or `[N, C, H, W]`.
pub fn image_item(path: &Path, shape: &[usize]) -> Result<[usize; 3], DataError> {
    match shape[..] {
        [_, h, w] => Ok([1, h, w]),
        [_, c, h, w] => Ok([c, h, w]),
        _ => Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("images must be [N, H, W] or [N, C, H, W], found {shape:?}"),
        }),
    }
}

/// An `.npz` archive holding `images` (or `x`) and `labels` (or `y`).
fn npz(path: &Path) -> Result<Dataset, DataError> {
    let file = netc_runtime::weights::load_arrays(path)?;
    let find = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| file.get(n))
            .ok_or_else(|| DataError::Format {
                path: path.to_path_buf(),
                message: format!("no `{}` (or `{}`) array in the archive", names[0], names[1]),
            })
    };
    let images = find(["images", "x"])?;
    let labels = find(["labels", "y"])?;
    let shape = images.shape();
    let item = image_item(path, shape)?;
    let labels = class_indices(path, labels.data())?;
    if labels.len() != shape[0] {
        return Err(DataError::Count {
            images: shape[0],
            labels: labels.len(),
        });
    }
    Ok(Dataset {
        images: images.data().to_vec(),
        item,
        labels,
    })
}

/// Labels stored as numbers: each must be a whole, non-negative value.
fn class_indices(path: &Path, values: &[f32]) -> Result<Vec<usize>, DataError> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 && v.fract() == 0.0 && v < 1e9 {
                Ok(v as usize)
            } else {
                Err(DataError::Format {
                    path: path.to_path_buf(),
                    message: format!("label {i} is {v}, not a class index"),
                })
            }
        })
        .collect()
}

fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "npy")
}

fn read_labels(path: &Path) -> Result<Vec<usize>, DataError> {
    if !is_npy(path) {
        return Ok(idx::read_labels(path)?
            .into_iter()
            .map(usize::from)
            .collect());
    }
    let t = netc_runtime::weights::read_npy(path)?;
    class_indices(path, t.data())
}

/// A folder with one sub-folder of images per class, classes in sorted
/// order, every image decoded as RGB and scaled to [0, 1] at its own size
/// (all must agree).
fn folder(root: &Path) -> Result<Dataset, DataError> {
    let io = |e: std::io::Error| DataError::Format {
        path: root.to_path_buf(),
        message: e.to_string(),
    };
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let unit = img::Preprocess {
        resize: None,
        crop: None,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        channels: 3,
    };
    let (mut images, mut labels, mut item) = (Vec::new(), Vec::new(), None);
    for (label, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let t = img::load(&f, &unit)?;
            let s = [t.shape()[0], t.shape()[1], t.shape()[2]];
            match item {
                None => item = Some(s),
                Some(first) if first != s => {
                    return Err(DataError::Format {
                        path: f,
                        message: format!("image is {s:?}, earlier ones {first:?}"),
                    })
                }
                Some(_) => {}
            }
            images.extend_from_slice(t.data());
            labels.push(label);
        }
    }
    let Some(item) = item else {
        return Err(DataError::Format {
            path: root.to_path_buf(),
            message: "no images in class sub-folders".into(),
        });
    };
    Ok(Dataset {
        images,
        item,
        labels,
    })
}

/// One batch: `[B, C, H, W]` values and their labels.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// Position of this batch in its epoch.
    pub index: usize,
}

/// How an epoch is cut into batches.
#[derive(Clone, Debug)]
pub struct Order {
    pub batch: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub augment: Option<Augment>,
}

impl Order {
    /// Full batches per epoch (a last partial batch is left out: the step
    /// is compiled for one batch size).
    pub fn batches(&self, len: usize) -> usize {
        len / self.batch.max(1)
    }

    /// The epoch's item order: a Fisher–Yates shuffle seeded by
    /// `(seed, epoch)`, or the file's order.
    pub fn permutation(&self, len: usize, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        if self.shuffle {
            let mut rng = SplitMix64::new(self.seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
            for i in (1..len).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// Batches `skip ..` of `epoch`, made on a background thread at most
    /// two ahead of the consumer.
    pub fn stream(&self, data: Arc<Dataset>, epoch: u64, skip: usize) -> Receiver<Batch> {
        let (tx, rx) = sync_channel(2);
        let order = self.clone();
        std::thread::spawn(move || {
            let perm = order.permutation(data.len(), epoch);
            let size = data.item_len();
            for index in skip..order.batches(data.len()) {
                let ids = &perm[index * order.batch..][..order.batch];
                let mut images = Vec::with_capacity(size * ids.len());
                for &i in ids {
                    let start = images.len();
                    images.extend_from_slice(data.image(i));
                    if let Some(a) = &order.augment {
                        let seed = order.seed ^ epoch.wrapping_mul(0x9E37_79B9) ^ (i as u64) << 20;
                        a.apply(&mut images[start..], data.item, &mut SplitMix64::new(seed));
                    }
                }
                let labels = ids.iter().map(|&i| data.labels[i]).collect();
                if tx
                    .send(Batch {
                        images,
                        labels,
                        index,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        rx
    }
}
