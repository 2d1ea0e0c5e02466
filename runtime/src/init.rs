//! Deterministic random weights: any model runs with no weight file.
//!
//! The generator is SplitMix64, seeded from the user's seed and the
//! parameter's name, so a tensor's values do not change when other layers
//! are added or removed, and are identical on every machine and version
//! (a general-purpose RNG crate does not promise stable streams).

use crate::tensor::Tensor;

pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// FNV-1a, to mix a parameter name into the seed.
fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How a parameter tensor should be initialised.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// He (Kaiming) normal: N(0, 2 / fan_in).
    He { fan_in: usize },
    /// Uniform in [lo, hi).
    Uniform { lo: f32, hi: f32 },
    /// Normal with the given standard deviation.
    Normal { std: f32 },
}

pub fn random_tensor(seed: u64, name: &str, shape: Vec<usize>, init: Init) -> Tensor {
    let mut rng = SplitMix64::new(seed ^ hash_name(name));
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| match init {
            Init::He { fan_in } => (rng.normal() * (2.0 / fan_in.max(1) as f64).sqrt()) as f32,
            Init::Uniform { lo, hi } => lo + (hi - lo) * rng.uniform() as f32,
            Init::Normal { std } => std * rng.normal() as f32,
        })
        .collect();
    match Tensor::new(shape, data) {
        Ok(t) => t,
        // The data was generated from the shape, so lengths always agree.
        Err(e) => unreachable!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_name_dependent() {
        let a = random_tensor(7, "conv1.weight", vec![4, 3], Init::He { fan_in: 3 });
        let b = random_tensor(7, "conv1.weight", vec![4, 3], Init::He { fan_in: 3 });
        let c = random_tensor(7, "conv2.weight", vec![4, 3], Init::He { fan_in: 3 });
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn he_has_the_right_spread() {
        let t = random_tensor(1, "w", vec![100_000], Init::He { fan_in: 50 });
        let var: f64 = t.data().iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 100_000.0;
        assert!((var - 2.0 / 50.0).abs() < 0.002, "{var}");
    }
}
