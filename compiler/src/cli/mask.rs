//! `netc run --mask/--overlay`: a segmentation output drawn as pictures.
//! The per-pixel argmax of a `[N, classes, H, W]` output, coloured with
//! the PASCAL VOC palette, and blended over the photo the model saw.

use super::Failure;
use netc_runtime::Tensor;
use std::path::{Path, PathBuf};

/// PASCAL VOC's 21 classes, in its label order.
const VOC: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// CamVid's 11 classes and the void label, in SegNet's order.
const CAMVID: [&str; 12] = [
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "signsymbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
    "unlabelled",
];

/// How much of a pixel the class colour takes in the overlay.
const ALPHA: f32 = 0.55;

#[derive(clap::Args, Default)]
pub struct MaskArgs {
    /// Write the per-pixel class (argmax over the channels of the first
    /// [N, classes, H, W] output) as a PNG in the PASCAL VOC palette; with
    /// a batch, one file per item (`mask_1.png`, …).
    #[arg(long, value_name = "FILE.png", help_heading = "Segmentation")]
    mask: Option<PathBuf>,
    /// Write the mask blended over the --image photo as the model saw it
    /// (after resizing and cropping); class 0 (VOC's background) leaves the
    /// photo as it is.
    #[arg(long, value_name = "FILE.png", help_heading = "Segmentation")]
    overlay: Option<PathBuf>,
    /// Class names, one per line, for the printed shares (default: PASCAL
    /// VOC's for 21 classes, CamVid's for 12, else numbers).
    #[arg(long, value_name = "FILE", help_heading = "Segmentation")]
    class_names: Option<PathBuf>,
}

impl MaskArgs {
    /// Whether any segmentation output was asked for.
    pub fn wanted(&self) -> bool {
        self.mask.is_some() || self.overlay.is_some()
    }
}

/// The photo as the model saw it: the input batch with the normalisation
/// undone, values in [0, 1].
pub struct Photo<'a> {
    pub input: &'a Tensor,
    pub mean: &'a [f32],
    pub std: &'a [f32],
}

/// PASCAL VOC's colour for label `i`: the label's bits spread over the
/// high bits of R, G and B (the devkit's `labelcolormap`).
pub fn voc_colour(i: usize) -> [u8; 3] {
    let mut rgb = [0u8; 3];
    let mut c = i;
    for j in 0..8 {
        for (k, v) in rgb.iter_mut().enumerate() {
            *v |= (((c >> k) & 1) as u8) << (7 - j);
        }
        c >>= 3;
    }
    rgb
}

/// Per item, the class of every pixel (row-major `H × W`).
fn labels(out: &Tensor) -> Vec<Vec<usize>> {
    let [n, k, h, w] = out.shape()[..] else {
        return Vec::new();
    };
    let plane = h * w;
    (0..n)
        .map(|item| {
            let scores = &out.data()[item * k * plane..][..k * plane];
            (0..plane)
                .map(|p| {
                    (1..k).fold(0, |best, c| {
                        if scores[c * plane + p] > scores[best * plane + p] {
                            c
                        } else {
                            best
                        }
                    })
                })
                .collect()
        })
        .collect()
}

/// `path` for item `i` of `n`: itself for one item, `stem_i.ext` after.
fn item_path(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 || i == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("mask");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("png");
    path.with_file_name(format!("{stem}_{i}.{ext}"))
}

fn class_names(a: &MaskArgs, classes: usize) -> Result<Vec<String>, Failure> {
    if let Some(path) = &a.class_names {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.len() != classes {
            return Err(Failure::new(format!(
                "{} names {} classes, the output has {classes}",
                path.display(),
                names.len()
            )));
        }
        return Ok(names);
    }
    Ok(match classes {
        21 => VOC.iter().map(|s| s.to_string()).collect(),
        12 => CAMVID.iter().map(|s| s.to_string()).collect(),
        _ => (0..classes).map(|c| format!("class {c}")).collect(),
    })
}

fn save(img: &image::RgbImage, path: &Path) -> Result<(), Failure> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Print each class's share of the pixels and write the pictures asked
/// for, from the first output of rank 4 (`out` before `aux`).
pub fn render(a: &MaskArgs, outputs: &[Tensor], photo: Option<Photo>) -> Result<(), Failure> {
    let Some(out) = outputs.iter().find(|t| t.shape().len() == 4) else {
        return Err(Failure::new(
            "--mask and --overlay need an output of shape [N, classes, H, W]",
        ));
    };
    let [n, classes, h, w] = out.shape()[..] else {
        return Ok(());
    };
    let names = class_names(a, classes)?;
    if a.overlay.is_some() {
        let Some(p) = &photo else {
            return Err(Failure::new(
                "--overlay blends the mask over the photo: give the photo with --image",
            ));
        };
        let shape = p.input.shape();
        if shape.len() != 4 || shape[2] != h || shape[3] != w || shape[0] != n {
            return Err(Failure::new(format!(
                "--overlay needs the output's plane to be the input's: the input is {}, the output {}",
                p.input.shape_string(),
                out.shape_string()
            )));
        }
    }
    for (item, labels) in labels(out).iter().enumerate() {
        let mut counts = vec![0usize; classes];
        for &l in labels {
            counts[l] += 1;
        }
        let mut order: Vec<usize> = (0..classes).filter(|&c| counts[c] > 0).collect();
        order.sort_by(|&x, &y| counts[y].cmp(&counts[x]).then(x.cmp(&y)));
        println!("  [{item}] pixels by class:");
        for c in order {
            println!(
                "    {:<14} {:>6.2}%",
                names[c],
                100.0 * counts[c] as f64 / labels.len() as f64
            );
        }
        let colour = |x: u32, y: u32| voc_colour(labels[y as usize * w + x as usize]);
        if let Some(path) = &a.mask {
            let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| image::Rgb(colour(x, y)));
            save(&img, &item_path(path, item, n))?;
        }
        if let (Some(path), Some(p)) = (&a.overlay, &photo) {
            let c = p.input.shape()[1];
            let plane = h * w;
            let pixel = &p.input.data()[item * c * plane..][..c * plane];
            let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = y as usize * w + x as usize;
                let label = labels[at];
                let tint = voc_colour(label);
                image::Rgb(std::array::from_fn(|ch| {
                    // Greyscale photos repeat their one channel.
                    let src = ch.min(c - 1);
                    let m = p.mean.get(src).or(p.mean.first()).copied().unwrap_or(0.0);
                    let s = p.std.get(src).or(p.std.first()).copied().unwrap_or(1.0);
                    let v = (pixel[src * plane + at] * s + m).clamp(0.0, 1.0) * 255.0;
                    let v = if label == 0 {
                        v
                    } else {
                        (1.0 - ALPHA) * v + ALPHA * tint[ch] as f32
                    };
                    v.round() as u8
                }))
            });
            save(&img, &item_path(path, item, n))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The devkit's first colours: background black, aeroplane dark red,
    /// bicycle green, bird olive, ..., person (15) pinkish, tvmonitor (20).
    #[test]
    fn voc_palette_matches_the_devkit() {
        assert_eq!(voc_colour(0), [0, 0, 0]);
        assert_eq!(voc_colour(1), [128, 0, 0]);
        assert_eq!(voc_colour(2), [0, 128, 0]);
        assert_eq!(voc_colour(3), [128, 128, 0]);
        assert_eq!(voc_colour(8), [64, 0, 0]);
        assert_eq!(voc_colour(15), [192, 128, 128]);
        assert_eq!(voc_colour(20), [0, 64, 128]);
    }

    #[test]
    fn labels_take_the_first_maximum() {
        let out = Tensor::new(vec![1, 3, 1, 2], vec![0., 5., 2., 5., 2., 1.]).unwrap();
        assert_eq!(labels(&out), vec![vec![1, 0]]);
    }

    #[test]
    fn later_items_get_numbered_files() {
        let p = Path::new("out/m.png");
        assert_eq!(item_path(p, 0, 2), PathBuf::from("out/m.png"));
        assert_eq!(item_path(p, 1, 2), PathBuf::from("out/m_1.png"));
    }
}
