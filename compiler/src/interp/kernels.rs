//! Reference kernels: plain loops over NCHW data, accumulating in f64.
//! They are the oracle every optimisation and the JIT are tested against,
//! so they favour being obviously right over being fast; only the outer
//! loop of the two heavy ones (conv, dense) is spread over threads.

use crate::ir::op::{
    Activation, Conv, ConvTranspose, Dense, Pool, PoolKind, ResizeMode, Step, WeightLayout, Window,
};
use netc_runtime::Tensor;
use rayon::prelude::*;

fn dims4(t: &Tensor) -> [usize; 4] {
    let s = t.shape();
    [s[0], s[1], s[2], s[3]]
}

/// Input index along one axis for output position `o` and kernel tap `k`,
/// or `None` when it falls in the padding.
fn tap(
    o: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    let i = (o * stride + k * dilation).checked_sub(pad)?;
    (i < size).then_some(i)
}

/// Output positions `o` whose input index `o·stride + k·dilation − pad`
/// lies inside `0..size`, for kernel tap `k`.
fn valid_outputs(
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    size: usize,
    out: usize,
) -> std::ops::Range<usize> {
    let offset = k * dilation;
    // o·stride ≥ pad − offset
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // o·stride + offset − pad ≤ size − 1
    let hi = match (size + pad).checked_sub(offset + 1) {
        Some(room) => (room / stride + 1).min(out),
        None => 0,
    };
    lo.min(hi)..hi
}

/// Convolution with groups, dilation, asymmetric padding and optional bias.
///
/// For each output plane it loops over (input channel, kernel tap) and adds
/// `weight × shifted input row` into an f64 accumulator plane: the same sum
/// as the textbook seven-deep loop, in an order whose inner loop is a
/// contiguous row, so the oracle stays usable on full networks.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv,
    out_shape: &[usize],
) -> Tensor {
    let [_, in_c, h, wd] = dims4(x);
    let (oc_n, oh_n, ow_n) = (out_shape[1], out_shape[2], out_shape[3]);
    let [kh_n, kw_n] = c.window.kernel;
    let [sh, sw] = c.window.stride;
    let [dh, dw] = c.window.dilation;
    let [pt, pl, _, _] = c.window.pad;
    let in_per_group = in_c / c.groups;
    let out_per_group = oc_n / c.groups;
    let (xd, wdata) = (x.data(), w.data());
    let mut out = Tensor::zeros(out_shape.to_vec());
    out.data_mut()
        .par_chunks_mut(oh_n * ow_n)
        .enumerate()
        .for_each(|(plane, y)| {
            let (n, oc) = (plane / oc_n, plane % oc_n);
            let group = oc / out_per_group;
            let b = bias.map_or(0.0, |b| b.data()[oc] as f64);
            let mut acc = vec![b; oh_n * ow_n];
            for icg in 0..in_per_group {
                let ic = group * in_per_group + icg;
                let input = &xd[(n * in_c + ic) * h * wd..][..h * wd];
                for kh in 0..kh_n {
                    for kw in 0..kw_n {
                        let wv = wdata[((oc * in_per_group + icg) * kh_n + kh) * kw_n + kw] as f64;
                        let cols = valid_outputs(kw, sw, dw, pl, wd, ow_n);
                        if cols.is_empty() {
                            continue;
                        }
                        for oh in valid_outputs(kh, sh, dh, pt, h, oh_n) {
                            let ih = oh * sh + kh * dh - pt;
                            let row = &input[ih * wd..][..wd];
                            let acc_row = &mut acc[oh * ow_n..][cols.clone()];
                            // Input column of the first valid output, then every `sw`-th.
                            let first = cols.start * sw + kw * dw - pl;
                            if sw == 1 {
                                let inputs = &row[first..][..acc_row.len()];
                                for (a, &xv) in acc_row.iter_mut().zip(inputs) {
                                    *a += xv as f64 * wv;
                                }
                            } else {
                                let inputs = row[first..].iter().step_by(sw);
                                for (a, &xv) in acc_row.iter_mut().zip(inputs) {
                                    *a += xv as f64 * wv;
                                }
                            }
                        }
                    }
                }
            }
            for (yv, a) in y.iter_mut().zip(&acc) {
                *yv = *a as f32;
            }
        });
    out
}

/// Max or average pooling. Max ignores padding; average divides by the
/// window clipped to the padded input (`count_include_pad`) or by the
/// number of real elements, as PyTorch does.
pub fn pool2d(x: &Tensor, p: &Pool, out_shape: &[usize]) -> Tensor {
    let [n_n, c_n, h, wd] = dims4(x);
    let (oh_n, ow_n) = (out_shape[2], out_shape[3]);
    let [kh_n, kw_n] = p.window.kernel;
    let [sh, sw] = p.window.stride;
    let [dh, dw] = p.window.dilation;
    let [pt, pl, pb, pr] = p.window.pad;
    let xd = x.data();
    let mut out = Tensor::zeros(out_shape.to_vec());
    let y = out.data_mut();
    for n in 0..n_n {
        for c in 0..c_n {
            let plane = &xd[(n * c_n + c) * h * wd..][..h * wd];
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut max = f32::NEG_INFINITY;
                    let mut sum = 0.0f64;
                    let mut count = 0usize;
                    for kh in 0..kh_n {
                        let Some(ih) = tap(oh, kh, sh, dh, pt, h) else {
                            continue;
                        };
                        for kw in 0..kw_n {
                            let Some(iw) = tap(ow, kw, sw, dw, pl, wd) else {
                                continue;
                            };
                            let v = plane[ih * wd + iw];
                            max = max.max(v);
                            sum += v as f64;
                            count += 1;
                        }
                    }
                    let v = match p.kind {
                        PoolKind::Max => max,
                        PoolKind::Avg => {
                            let divisor = if p.count_include_pad {
                                let extent =
                                    |o: usize,
                                     s: usize,
                                     k: usize,
                                     pad0: usize,
                                     pad1: usize,
                                     size: usize| {
                                        let start = o * s;
                                        let end = (start + k).min(size + pad0 + pad1);
                                        end - start
                                    };
                                extent(oh, sh, kh_n, pt, pb, h) * extent(ow, sw, kw_n, pl, pr, wd)
                            } else {
                                count
                            };
                            (sum / divisor.max(1) as f64) as f32
                        }
                    };
                    y[((n * c_n + c) * oh_n + oh) * ow_n + ow] = v;
                }
            }
        }
    }
    out
}

/// ShuffleNet's shuffle: output channel `j·groups + g` is input channel
/// `g·(C / groups) + j`.
pub fn channel_shuffle(x: &Tensor, groups: usize) -> Tensor {
    let [n_n, c_n, h, w] = dims4(x);
    let (plane, per) = (h * w, c_n / groups);
    let mut out = Tensor::zeros(x.shape().to_vec());
    let (xd, y) = (x.data(), out.data_mut());
    for n in 0..n_n {
        for g in 0..groups {
            for j in 0..per {
                let (src, dst) = (n * c_n + g * per + j, n * c_n + j * groups + g);
                y[dst * plane..][..plane].copy_from_slice(&xd[src * plane..][..plane]);
            }
        }
    }
    out
}

/// PyTorch's `max_unpool2d` after `max_pool2d(return_indices=True)`:
/// `values[o]` goes to where pool window `o` over `source` found its
/// maximum — the first in scan order, or the last NaN — in an otherwise zero
/// tensor shaped like `source`. Windows are visited in order, so where
/// overlapping windows share a winner the later one's value stays.
pub fn max_unpool2d(values: &Tensor, source: &Tensor, window: &Window) -> Tensor {
    let [n_n, c_n, h, wd] = dims4(source);
    let [_, _, oh_n, ow_n] = dims4(values);
    let (vd, sd) = (values.data(), source.data());
    let mut out = Tensor::zeros(source.shape().to_vec());
    let y = out.data_mut();
    for plane in 0..n_n * c_n {
        let src = &sd[plane * h * wd..][..h * wd];
        let dst = &mut y[plane * h * wd..][..h * wd];
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                let mut best: Option<(usize, f32)> = None;
                for kh in 0..window.kernel[0] {
                    let Some(ih) = tap(
                        oh,
                        kh,
                        window.stride[0],
                        window.dilation[0],
                        window.pad[0],
                        h,
                    ) else {
                        continue;
                    };
                    for kw in 0..window.kernel[1] {
                        let Some(iw) = tap(
                            ow,
                            kw,
                            window.stride[1],
                            window.dilation[1],
                            window.pad[1],
                            wd,
                        ) else {
                            continue;
                        };
                        let v = src[ih * wd + iw];
                        let wins = match best {
                            None => true,
                            Some((_, b)) => v > b || v.is_nan(),
                        };
                        if wins {
                            best = Some((ih * wd + iw, v));
                        }
                    }
                }
                if let Some((i, _)) = best {
                    dst[i] = vd[(plane * oh_n + oh) * ow_n + ow];
                }
            }
        }
    }
    out
}

/// PyTorch's adaptive average pooling: output cell `i` averages input rows
/// `floor(i·H/OH) .. ceil((i+1)·H/OH)`. Global average pooling is `OH = OW = 1`.
pub fn adaptive_avg_pool(x: &Tensor, out_shape: &[usize]) -> Tensor {
    let [n_n, c_n, h, wd] = dims4(x);
    let (oh_n, ow_n) = (out_shape[2], out_shape[3]);
    let xd = x.data();
    let mut out = Tensor::zeros(out_shape.to_vec());
    let y = out.data_mut();
    for n in 0..n_n {
        for c in 0..c_n {
            let plane = &xd[(n * c_n + c) * h * wd..][..h * wd];
            for oh in 0..oh_n {
                let (h0, h1) = (oh * h / oh_n, ((oh + 1) * h).div_ceil(oh_n));
                for ow in 0..ow_n {
                    let (w0, w1) = (ow * wd / ow_n, ((ow + 1) * wd).div_ceil(ow_n));
                    let mut sum = 0.0f64;
                    for ih in h0..h1 {
                        for iw in w0..w1 {
                            sum += plane[ih * wd + iw] as f64;
                        }
                    }
                    y[((n * c_n + c) * oh_n + oh) * ow_n + ow] =
                        (sum / ((h1 - h0) * (w1 - w0)) as f64) as f32;
                }
            }
        }
    }
    out
}

/// Inference batch norm: `(x − mean) / sqrt(var + eps) · gamma + beta`
/// per channel (axis 1).
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f32,
) -> Tensor {
    let s = x.shape();
    let (n_n, c_n) = (s[0], s[1]);
    let inner: usize = s[2..].iter().product();
    let mut out = x.clone();
    let y = out.data_mut();
    for n in 0..n_n {
        for c in 0..c_n {
            let inv = 1.0 / (var.data()[c] as f64 + eps as f64).sqrt();
            let (g, b, m) = (
                gamma.data()[c] as f64,
                beta.data()[c] as f64,
                mean.data()[c] as f64,
            );
            for v in &mut y[(n * c_n + c) * inner..][..inner] {
                *v = ((*v as f64 - m) * inv * g + b) as f32;
            }
        }
    }
    out
}

/// Fully connected layer on `[N, in]`, weight stored `out×in` or `in×out`.
pub fn dense(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, d: &Dense) -> Tensor {
    let (n_n, in_n, out_n) = (x.shape()[0], d.in_features, d.out_features);
    let (xd, wd) = (x.data(), w.data());
    let weight = |o: usize, i: usize| match d.layout {
        WeightLayout::OutIn => wd[o * in_n + i],
        WeightLayout::InOut => wd[i * out_n + o],
    };
    let mut out = Tensor::zeros(vec![n_n, out_n]);
    out.data_mut()
        .par_chunks_mut(out_n)
        .enumerate()
        .for_each(|(n, y)| {
            for (o, yo) in y.iter_mut().enumerate() {
                let mut acc = bias.map_or(0.0, |b| b.data()[o] as f64);
                for i in 0..in_n {
                    acc += xd[n * in_n + i] as f64 * weight(o, i) as f64;
                }
                *yo = acc as f32;
            }
        });
    out
}

pub fn activation(x: &Tensor, a: Activation) -> Tensor {
    map(x, |v| a.apply(v))
}

pub fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    let mut out = x.clone();
    out.data_mut().iter_mut().for_each(|v| *v = f(*v));
    out
}

/// Softmax over axis 1 (channels), independently at every other position.
pub fn softmax(x: &Tensor) -> Tensor {
    let s = x.shape();
    let (n_n, c_n) = (s[0], s[1]);
    let inner: usize = s[2..].iter().product();
    let mut out = x.clone();
    let y = out.data_mut();
    for n in 0..n_n {
        for i in 0..inner {
            let at = |c: usize| (n * c_n + c) * inner + i;
            let max = (0..c_n).map(|c| y[at(c)]).fold(f32::NEG_INFINITY, f32::max);
            let total: f64 = (0..c_n).map(|c| ((y[at(c)] - max) as f64).exp()).sum();
            for c in 0..c_n {
                y[at(c)] = (((y[at(c)] - max) as f64).exp() / total) as f32;
            }
        }
    }
    out
}

/// Concatenate along axis 1.
pub fn concat(xs: &[&Tensor], out_shape: &[usize]) -> Tensor {
    let n_n = out_shape[0];
    let inner: usize = out_shape[2..].iter().product();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for n in 0..n_n {
        for x in xs {
            let block = x.shape()[1] * inner;
            out.extend_from_slice(&x.data()[n * block..][..block]);
        }
    }
    // Shapes were validated: the pieces fill the output exactly.
    match Tensor::new(out_shape.to_vec(), out) {
        Ok(t) => t,
        Err(e) => unreachable!("concat of validated shapes: {e}"),
    }
}

/// Channels `start ..` of `x`, as many as `out_shape` holds.
pub fn slice_channels(x: &Tensor, start: usize, out_shape: &[usize]) -> Tensor {
    let (n_n, c_in, len) = (out_shape[0], x.shape()[1], out_shape[1]);
    let inner: usize = out_shape[2..].iter().product();
    let mut out = Vec::with_capacity(n_n * len * inner);
    for n in 0..n_n {
        out.extend_from_slice(&x.data()[(n * c_in + start) * inner..][..len * inner]);
    }
    match Tensor::new(out_shape.to_vec(), out) {
        Ok(t) => t,
        Err(e) => unreachable!("slice of a validated shape: {e}"),
    }
}

/// Apply fused epilogue steps in order; `Add` consumes `residuals` in order.
pub fn epilogue(mut y: Tensor, steps: &[Step], residuals: &[&Tensor]) -> Tensor {
    let mut next = residuals.iter();
    for step in steps {
        match step {
            Step::Add => {
                if let Some(r) = next.next() {
                    y.data_mut()
                        .iter_mut()
                        .zip(r.data())
                        .for_each(|(a, b)| *a += b);
                }
            }
            Step::Act(a) => y.data_mut().iter_mut().for_each(|v| *v = a.apply(*v)),
            Step::MaxPool2 => y = max_pool_2x2(&y),
        }
    }
    y
}

/// 2×2 max pooling at stride 2 of an NCHW tensor with even sides.
fn max_pool_2x2(x: &Tensor) -> Tensor {
    let s = x.shape();
    let (planes, h, w) = (s[0] * s[1], s[2], s[3]);
    let (oh, ow) = (h / 2, w / 2);
    let d = x.data();
    let mut out = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        for y in 0..oh {
            for c in 0..ow {
                let at = |dy: usize, dx: usize| d[(p * h + 2 * y + dy) * w + 2 * c + dx];
                out.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    match Tensor::new(vec![s[0], s[1], oh, ow], out) {
        Ok(t) => t,
        Err(e) => unreachable!("pooling a validated shape: {e}"),
    }
}

/// Elementwise sum.
pub fn add(xs: &[&Tensor]) -> Tensor {
    let mut out = xs[0].clone();
    for x in &xs[1..] {
        out.data_mut()
            .iter_mut()
            .zip(x.data())
            .for_each(|(a, b)| *a += b);
    }
    out
}

/// PyTorch's `ConvTranspose2d` by its definition: every input element
/// scatters the kernel, scaled by it, onto the output at `stride` (f64
/// accumulation), then the border `pad` is cropped.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &ConvTranspose,
    out_shape: &[usize],
) -> Tensor {
    let s = x.shape();
    let (batch, h, wd) = (s[0], s[2], s[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let (cin_g, cout_g) = (c.in_channels / c.groups, c.out_channels / c.groups);
    let [kh, kw] = c.window.kernel;
    let mut acc = vec![0.0f64; batch * c.out_channels * oh * ow];
    for n in 0..batch {
        for ic in 0..c.in_channels {
            let g = ic / cin_g;
            for iy in 0..h {
                for ix in 0..wd {
                    let v = x.data()[((n * c.in_channels + ic) * h + iy) * wd + ix] as f64;
                    for ocg in 0..cout_g {
                        let oc = g * cout_g + ocg;
                        for ki in 0..kh {
                            let y = (iy * c.window.stride[0] + ki * c.window.dilation[0]) as i64
                                - c.window.pad[0] as i64;
                            if y < 0 || y >= oh as i64 {
                                continue;
                            }
                            for kj in 0..kw {
                                let xo = (ix * c.window.stride[1] + kj * c.window.dilation[1])
                                    as i64
                                    - c.window.pad[1] as i64;
                                if xo < 0 || xo >= ow as i64 {
                                    continue;
                                }
                                let wv = w.data()[((ic * cout_g + ocg) * kh + ki) * kw + kj] as f64;
                                acc[((n * c.out_channels + oc) * oh + y as usize) * ow
                                    + xo as usize] += v * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    let plane = oh * ow;
    let data = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let oc = i / plane % c.out_channels;
            (v + bias.map_or(0.0, |b| b.data()[oc] as f64)) as f32
        })
        .collect();
    match Tensor::new(out_shape.to_vec(), data) {
        Ok(t) => t,
        Err(e) => unreachable!("conv_transpose output built from its own shape: {e}"),
    }
}

/// Every plane of an NCHW `x` resized to `size`, sampled as PyTorch's
/// `F.interpolate` does (see [`ResizeMode`]); coordinates in f64.
pub fn resize(x: &Tensor, size: [usize; 2], mode: ResizeMode) -> Tensor {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    // The source position of output `o` along an axis of `n` inputs
    // resized to `m`: the two neighbours and the second's weight.
    let source = |o: usize, n: usize, m: usize| -> (usize, usize, f64) {
        match mode {
            // PyTorch's index: exact for equal and doubled sizes, else
            // the product with an f32 scale (not always the exact floor).
            ResizeMode::Nearest => {
                let i = if m == n {
                    o
                } else if m == 2 * n {
                    o / 2
                } else {
                    (o as f32 * (n as f32 / m as f32)).floor() as usize
                };
                (i.min(n - 1), i.min(n - 1), 0.0)
            }
            ResizeMode::Bilinear { align_corners } => {
                let p = if align_corners {
                    if m > 1 {
                        o as f64 * (n - 1) as f64 / (m - 1) as f64
                    } else {
                        0.0
                    }
                } else {
                    ((o as f64 + 0.5) * n as f64 / m as f64 - 0.5).max(0.0)
                };
                let i = (p.floor() as usize).min(n - 1);
                (i, (i + 1).min(n - 1), p - i as f64)
            }
        }
    };
    let planes = s[0] * s[1];
    let mut data = Vec::with_capacity(planes * size[0] * size[1]);
    for plane in x.data().chunks(h * w).take(planes) {
        for y in 0..size[0] {
            let (y0, y1, wy) = source(y, h, size[0]);
            for xo in 0..size[1] {
                let (x0, x1, wx) = source(xo, w, size[1]);
                let at = |r: usize, c: usize| plane[r * w + c] as f64;
                let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                data.push((top * (1.0 - wy) + bottom * wy) as f32);
            }
        }
    }
    match Tensor::new(vec![s[0], s[1], size[0], size[1]], data) {
        Ok(t) => t,
        Err(e) => unreachable!("resize output built from its own shape: {e}"),
    }
}

/// `x · y`, with `y` either `x`'s shape or one value per (item, channel)
/// of an NCHW `x`.
pub fn mul(xs: &[&Tensor]) -> Tensor {
    let (x, y) = (xs[0], xs[1]);
    let mut out = x.clone();
    if y.shape() == x.shape() {
        out.data_mut()
            .iter_mut()
            .zip(y.data())
            .for_each(|(a, b)| *a *= b);
    } else {
        let plane: usize = x.shape()[2..].iter().product();
        for (chunk, g) in out.data_mut().chunks_mut(plane.max(1)).zip(y.data()) {
            chunk.iter_mut().for_each(|a| *a *= g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::Window;

    #[test]
    fn mul_broadcasts_a_gate_per_channel() {
        let x = t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
        let gate = t(&[1, 2, 1, 1], &[10., -1.]);
        assert_eq!(mul(&[&x, &gate]).data(), &[10., 20., -3., -4.]);
        assert_eq!(mul(&[&x, &x]).data(), &[1., 4., 9., 16.]);
    }

    /// PyTorch's `max_unpool2d(max_pool2d(x, 3, 2, return_indices=True))`
    /// on a 1×5×5 plane: overlapping windows share the centre column's
    /// winner, where the later window's value stays; a tie goes to the
    /// first position in scan order.
    #[test]
    fn max_unpool_places_values_at_pytorchs_indices() {
        #[rustfmt::skip]
        let x = t(&[1, 1, 5, 5], &[
            0., 0., 9., 0., 0.,
            0., 0., 0., 0., 0.,
            1., 0., 0., 0., 1.,
            0., 0., 0., 0., 0.,
            0., 0., 0., 0., 0.,
        ]);
        let values = t(&[1, 1, 2, 2], &[10., 20., 30., 40.]);
        let y = max_unpool2d(&values, &x, &window(3, 2, [0; 4]));
        // Windows (0,0) and (0,1) both pick the 9 at (0,2): 20 stays.
        // Window (1,0) picks the 1 at (2,0); (1,1) the 1 at (2,4).
        #[rustfmt::skip]
        let want = [
            0., 0., 20., 0., 0.,
            0., 0., 0., 0., 0.,
            30., 0., 0., 0., 40.,
            0., 0., 0., 0., 0.,
            0., 0., 0., 0., 0.,
        ];
        assert_eq!(y.data(), &want);
    }

    #[test]
    fn hard_activations_follow_pytorch() {
        use crate::ir::op::Activation;
        let x = t(&[1, 5], &[-4., -3., 0., 1.5, 4.]);
        let hs = activation(&x, Activation::HardSigmoid);
        assert_eq!(hs.data(), &[0., 0., 0.5, 0.75, 1.]);
        let hw = activation(&x, Activation::HardSwish);
        assert_eq!(hw.data(), &[-0., -0., 0., 1.125, 4.]);
        let relu6 = activation(&t(&[1, 3], &[-1., 3., 7.]), Activation::Clip(0., 6.));
        assert_eq!(relu6.data(), &[0., 3., 6.]);
    }

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn window(k: usize, s: usize, pad: [usize; 4]) -> Window {
        Window {
            kernel: [k, k],
            stride: [s, s],
            pad,
            dilation: [1, 1],
        }
    }

    fn conv(in_c: usize, out_c: usize, w: Window, groups: usize) -> Conv {
        Conv {
            in_channels: in_c,
            out_channels: out_c,
            window: w,
            groups,
            bias: true,
            epilogue: Vec::new(),
            algo: Default::default(),
        }
    }

    #[test]
    fn valid_output_ranges() {
        // k=0 with pad 1 on size 3, stride 1, 3 outputs: o=0 reads −1.
        assert_eq!(valid_outputs(0, 1, 1, 1, 3, 3), 1..3);
        assert_eq!(valid_outputs(2, 1, 1, 1, 3, 3), 0..2);
        // stride 2, dilation 2, no valid position at all.
        assert_eq!(valid_outputs(3, 2, 2, 0, 5, 1).len(), 0);
    }

    #[test]
    fn conv_padding_edges() {
        // 3x3 input of ones, 3x3 kernel of ones, pad 1: corner sees 4, edge 6, centre 9.
        let x = t(&[1, 1, 3, 3], &[1.0; 9]);
        let w = t(&[1, 1, 3, 3], &[1.0; 9]);
        let b = t(&[1], &[0.5]);
        let y = conv2d(
            &x,
            &w,
            Some(&b),
            &conv(1, 1, window(3, 1, [1; 4]), 1),
            &[1, 1, 3, 3],
        );
        assert_eq!(y.data(), &[4.5, 6.5, 4.5, 6.5, 9.5, 6.5, 4.5, 6.5, 4.5]);
    }

    #[test]
    fn conv_stride_and_asymmetric_pad() {
        // 1x4 row 1,2,3,4; kernel [1,1] width 2, stride 2, pad left 1 right 0.
        let x = t(&[1, 1, 1, 4], &[1., 2., 3., 4.]);
        let w = t(&[1, 1, 1, 2], &[1., 10.]);
        let c = Conv {
            in_channels: 1,
            out_channels: 1,
            window: Window {
                kernel: [1, 2],
                stride: [1, 2],
                pad: [0, 1, 0, 0],
                dilation: [1, 1],
            },
            groups: 1,
            bias: false,
            epilogue: Vec::new(),
            algo: Default::default(),
        };
        // Windows: [pad,1] -> 10; [2,3] -> 2+30 = 32. (5 wide padded, k2 s2 -> 2 outputs)
        let y = conv2d(&x, &w, None, &c, &[1, 1, 1, 2]);
        assert_eq!(y.data(), &[10., 32.]);
    }

    #[test]
    fn conv_groups_and_dilation_and_batch() {
        // Two groups, each channel convolved with its own 1x1 weight.
        let x = t(&[2, 2, 1, 1], &[1., 2., 3., 4.]);
        let w = t(&[2, 1, 1, 1], &[10., 100.]);
        let y = conv2d(
            &x,
            &w,
            None,
            &conv(2, 2, window(1, 1, [0; 4]), 2),
            &[2, 2, 1, 1],
        );
        assert_eq!(y.data(), &[10., 200., 30., 400.]);
        // Dilation 2: a 2x2 kernel reads x[0,0], x[0,2], x[2,0], x[2,2].
        let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        let w = t(&[1, 1, 2, 2], &[1., 1., 1., 1.]);
        let mut c = conv(1, 1, window(2, 1, [0; 4]), 1);
        c.window.dilation = [2, 2];
        c.bias = false;
        let y = conv2d(&x, &w, None, &c, &[1, 1, 1, 1]);
        assert_eq!(y.data(), &[1. + 3. + 7. + 9.]);
    }

    #[test]
    fn ceil_mode_pool_window_hangs_over_the_edge() {
        // 1x3 input, max and avg pool k2 s2 ceil: windows [0,1] and [2, overhang].
        let x = t(&[1, 1, 1, 3], &[1., 5., 3.]);
        let mut p = Pool {
            kind: PoolKind::Max,
            window: Window {
                kernel: [1, 2],
                stride: [1, 2],
                pad: [0; 4],
                dilation: [1, 1],
            },
            ceil: true,
            count_include_pad: true,
        };
        assert_eq!(pool2d(&x, &p, &[1, 1, 1, 2]).data(), &[5., 3.]);
        // The overhanging window is clipped to the input: 3 / 1, not 3 / 2.
        p.kind = PoolKind::Avg;
        assert_eq!(pool2d(&x, &p, &[1, 1, 1, 2]).data(), &[3., 3.]);
    }

    #[test]
    fn avg_pool_count_include_pad() {
        let x = t(&[1, 1, 2, 2], &[4., 4., 4., 4.]);
        let mut p = Pool {
            kind: PoolKind::Avg,
            window: window(2, 2, [1; 4]),
            ceil: false,
            count_include_pad: true,
        };
        // Corner window covers one real element and three pads.
        assert_eq!(pool2d(&x, &p, &[1, 1, 2, 2]).data(), &[1.; 4]);
        p.count_include_pad = false;
        assert_eq!(pool2d(&x, &p, &[1, 1, 2, 2]).data(), &[4.; 4]);
    }

    #[test]
    fn adaptive_pool_overlapping_cells() {
        // 3 -> 2: cells [0,2) and [1,3).
        let x = t(&[1, 1, 1, 3], &[1., 2., 3.]);
        assert_eq!(adaptive_avg_pool(&x, &[1, 1, 1, 2]).data(), &[1.5, 2.5]);
    }

    #[test]
    fn dense_layouts_agree() {
        let x = t(&[1, 2], &[1., 2.]);
        let out_in = t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
        let in_out = t(&[2, 3], &[1., 0., 1., 0., 1., 1.]);
        let mut d = Dense {
            in_features: 2,
            out_features: 3,
            bias: false,
            layout: WeightLayout::OutIn,
            epilogue: Vec::new(),
            algo: crate::ir::op::DenseAlgo::Unselected,
        };
        let a = dense(&x, &out_in, None, &d);
        d.layout = WeightLayout::InOut;
        let b = dense(&x, &in_out, None, &d);
        assert_eq!(a.data(), &[1., 2., 3.]);
        assert_eq!(a, b);
    }

    #[test]
    fn softmax_concat_add_batchnorm() {
        let x = t(&[1, 2], &[0., 0.]);
        assert_eq!(softmax(&x).data(), &[0.5, 0.5]);
        let a = t(&[2, 1, 1, 1], &[1., 2.]);
        let b = t(&[2, 2, 1, 1], &[3., 4., 5., 6.]);
        assert_eq!(
            concat(&[&a, &b], &[2, 3, 1, 1]).data(),
            &[1., 3., 4., 2., 5., 6.]
        );
        assert_eq!(add(&[&a, &a]).data(), &[2., 4.]);
        let one = t(&[1], &[1.]);
        let y = batch_norm(&a, &t(&[1], &[2.]), &one, &one, &t(&[1], &[3.]), 1.0);
        // (x − 1) / 2 · 2 + 1
        assert_eq!(y.data(), &[1., 2.]);
    }
}
