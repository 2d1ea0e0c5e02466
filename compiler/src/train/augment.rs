//! Data augmentation, deterministic per seed: one random affine warp per
//! image (shift, rotation, zoom, horizontal flip, crop from a padded
//! image) sampled bilinearly with zeros outside, then brightness and
//! contrast.

use netc_runtime::init::SplitMix64;
use std::fmt;

/// What to vary and by how much (`--augment shift=2,rotate=10,…`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augment {
    /// Largest shift along each axis, in pixels (uniform, sub-pixel).
    pub shift: f64,
    /// Largest rotation either way, in degrees.
    pub rotate: f64,
    /// Zoom factor range (1 keeps the size; >1 magnifies).
    pub zoom: Option<(f64, f64)>,
    /// Largest brightness offset either way (images in [0, 1]).
    pub brightness: f64,
    /// Largest relative contrast change either way.
    pub contrast: f64,
    /// Mirror left–right with probability ½.
    pub flip: bool,
    /// Random crop of the image padded by this many zero pixels per side:
    /// a whole-pixel shift in [−pad, pad].
    pub crop: usize,
}

impl std::str::FromStr for Augment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut a = Augment::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let number = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("`{part}`: `{v}` is not a non-negative number"))
            };
            match key {
                "shift" => a.shift = number(value)?,
                "rotate" => a.rotate = number(value)?,
                "brightness" => a.brightness = number(value)?,
                "contrast" => a.contrast = number(value)?,
                "flip" if value.is_empty() => a.flip = true,
                "crop" => a.crop = number(value)? as usize,
                "zoom" => {
                    let (lo, hi) = value
                        .split_once(':')
                        .ok_or_else(|| format!("`{part}`: zoom is a range like 0.9:1.1"))?;
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo <= 0.0 || hi < lo {
                        return Err(format!("`{part}`: zoom needs 0 < low ≤ high"));
                    }
                    a.zoom = Some((lo, hi));
                }
                _ => {
                    return Err(format!(
                        "unknown augmentation `{key}` (known: shift=PX, rotate=DEG, zoom=LO:HI, \
                         brightness=X, contrast=X, flip, crop=PAD)"
                    ))
                }
            }
        }
        Ok(a)
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.shift > 0.0 {
            parts.push(format!("shift={}", self.shift));
        }
        if self.rotate > 0.0 {
            parts.push(format!("rotate={}", self.rotate));
        }
        if let Some((lo, hi)) = self.zoom {
            parts.push(format!("zoom={lo}:{hi}"));
        }
        if self.brightness > 0.0 {
            parts.push(format!("brightness={}", self.brightness));
        }
        if self.contrast > 0.0 {
            parts.push(format!("contrast={}", self.contrast));
        }
        if self.flip {
            parts.push("flip".into());
        }
        if self.crop > 0 {
            parts.push(format!("crop={}", self.crop));
        }
        write!(f, "{}", parts.join(","))
    }
}

impl Augment {
    fn geometric(&self) -> bool {
        self.shift > 0.0 || self.rotate > 0.0 || self.zoom.is_some() || self.flip || self.crop > 0
    }

    /// Augment one `[C, H, W]` image in place with draws from `rng`.
    pub fn apply(&self, img: &mut [f32], [c, h, w]: [usize; 3], rng: &mut SplitMix64) {
        let sym = |rng: &mut SplitMix64, range: f64| (rng.uniform() * 2.0 - 1.0) * range;
        let angle = sym(rng, self.rotate).to_radians();
        let (mut dx, mut dy) = (sym(rng, self.shift), sym(rng, self.shift));
        if self.crop > 0 {
            let span = 2 * self.crop as u64 + 1;
            dx += (rng.next_u64() % span) as f64 - self.crop as f64;
            dy += (rng.next_u64() % span) as f64 - self.crop as f64;
        }
        let zoom = match self.zoom {
            Some((lo, hi)) => lo + rng.uniform() * (hi - lo),
            None => 1.0,
        };
        let flip = self.flip && rng.uniform() < 0.5;
        let offset = sym(rng, self.brightness);
        let contrast = 1.0 + sym(rng, self.contrast);

        if self.geometric() {
            let src = img.to_vec();
            let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
            let (sin, cos) = angle.sin_cos();
            for y in 0..h {
                for x in 0..w {
                    // Output pixel → source: undo the shift, the zoom and
                    // the rotation about the centre, then the flip.
                    let (u, v) = (x as f64 - cx - dx, y as f64 - cy - dy);
                    let (u, v) = ((cos * u + sin * v) / zoom, (-sin * u + cos * v) / zoom);
                    let u = if flip { -u } else { u };
                    let (sx, sy) = (u + cx, v + cy);
                    for ch in 0..c {
                        let plane = &src[ch * h * w..][..h * w];
                        img[(ch * h + y) * w + x] = bilinear(plane, h, w, sy, sx);
                    }
                }
            }
        }
        if self.brightness > 0.0 || self.contrast > 0.0 {
            for plane in img.chunks_mut(h * w) {
                let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
                for v in plane {
                    let out = (*v as f64 - mean) * contrast + mean + offset;
                    *v = out.clamp(0.0, 1.0) as f32;
                }
            }
        }
    }
}

/// The plane sampled at (y, x), zeros outside.
fn bilinear(plane: &[f32], h: usize, w: usize, y: f64, x: f64) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let at = |yy: f64, xx: f64| {
        if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
            0.0
        } else {
            plane[yy as usize * w + xx as usize] as f64
        }
    };
    let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1.0))
        + fy * ((1.0 - fx) * at(y0 + 1.0, x0) + fx * at(y0 + 1.0, x0 + 1.0));
    v as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let a: Augment = "shift=2,rotate=10,zoom=0.9:1.1,brightness=0.2,flip,crop=4"
            .parse()
            .unwrap();
        assert_eq!(a.zoom, Some((0.9, 1.1)));
        assert_eq!(a.to_string().parse::<Augment>().unwrap(), a);
        assert!("wobble=3"
            .parse::<Augment>()
            .unwrap_err()
            .contains("unknown"));
        assert!("zoom=1.2:0.8".parse::<Augment>().is_err());
    }

    #[test]
    fn whole_pixel_crop_moves_the_image() {
        // crop=1 with no other change shifts by −1, 0 or +1 pixels; a
        // single bright pixel lands on one of the nine neighbours.
        let a = Augment {
            crop: 1,
            ..Augment::default()
        };
        for seed in 0..20 {
            let mut img = vec![0.0f32; 25];
            img[12] = 1.0;
            a.apply(&mut img, [1, 5, 5], &mut SplitMix64::new(seed));
            let lit: Vec<usize> = (0..25).filter(|&i| img[i] > 0.5).collect();
            assert_eq!(lit.len(), 1, "seed {seed}: {img:?}");
            let (y, x) = (lit[0] / 5, lit[0] % 5);
            assert!((1..=3).contains(&y) && (1..=3).contains(&x));
        }
    }

    #[test]
    fn same_seed_same_image_and_flip_mirrors() {
        let a = Augment {
            rotate: 15.0,
            zoom: Some((0.9, 1.1)),
            brightness: 0.1,
            ..Augment::default()
        };
        let base: Vec<f32> = (0..64).map(|i| (i % 7) as f32 / 7.0).collect();
        let run = |seed| {
            let mut img = base.clone();
            a.apply(&mut img, [1, 8, 8], &mut SplitMix64::new(seed));
            img
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        let flip = Augment {
            flip: true,
            ..Augment::default()
        };
        let mirrored = (0..20).find_map(|seed| {
            let mut img = base.clone();
            flip.apply(&mut img, [1, 8, 8], &mut SplitMix64::new(seed));
            (img != base).then_some(img)
        });
        let img = mirrored.expect("no flip in 20 draws");
        for y in 0..8 {
            for x in 0..8 {
                assert!((img[y * 8 + x] - base[y * 8 + 7 - x]).abs() < 1e-6);
            }
        }
    }
}
