//! A dense row-major f32 tensor.

use std::fmt;

#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// The data length does not match the shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("shape {shape:?} needs {expected} values, found {found}")]
pub struct ShapeDataMismatch {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub found: usize,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ShapeDataMismatch> {
        let expected = shape.iter().product();
        if data.len() != expected {
            return Err(ShapeDataMismatch {
                shape,
                expected,
                found: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The same data under another shape with as many elements.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self, ShapeDataMismatch> {
        Tensor::new(shape, self.data)
    }

    /// Largest absolute value (0 for an empty tensor).
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    /// Largest absolute elementwise difference; `None` if shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        if self.shape != other.shape {
            return None;
        }
        Some(
            self.data
                .iter()
                .zip(&other.data)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs())),
        )
    }

    /// Shape as `d0xd1x…` (`scalar` for rank 0).
    pub fn shape_string(&self) -> String {
        shape_string(&self.shape)
    }
}

pub fn shape_string(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: Vec<f32> = self.data.iter().take(8).copied().collect();
        write!(f, "Tensor({}, {:?}…)", self.shape_string(), head)
    }
}
