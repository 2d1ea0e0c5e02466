//! The training step's arithmetic: each op's forward pass with training
//! semantics and its backward pass, generic over f32 (training) and f64
//! (the gradient checks). Convolutions, transposed convolutions and dense
//! layers run as im2col/col2im around matrix products on netc's GEMM
//! micro-kernels ([`Real::matmul`]); images of a batch run in parallel.

use super::real::{Buf, ConvSpec, Mat, Real};
use crate::ir::op::{
    Activation, Conv, ConvTranspose, Dense, Pool, PoolKind, ResizeMode, WeightLayout, Window,
};
use netc_runtime::kernels::resize::{taps, Tap, RESIZE_BILINEAR, RESIZE_NEAREST};
use rayon::prelude::*;

fn dims4<T>(b: &Buf<T>) -> [usize; 4] {
    [b.shape[0], b.shape[1], b.shape[2], b.shape[3]]
}

/// A window sliding over a `c × h × w` image, visiting a `gh × gw` grid of
/// positions: a convolution's input and output, or a transposed
/// convolution's output and input.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub gh: usize,
    pub gw: usize,
    pub win: Window,
}

impl Geometry {
    /// Rows of the column matrix: one per (channel, tap).
    fn rows(&self) -> usize {
        self.c * self.win.kernel[0] * self.win.kernel[1]
    }

    fn cols(&self) -> usize {
        self.gh * self.gw
    }

    /// Grid positions along `axis` whose tap `k` reads inside the image,
    /// and the image index the first of them reads.
    fn valid(&self, axis: usize, k: usize) -> (std::ops::Range<usize>, usize) {
        let w = &self.win;
        let (stride, pad) = (w.stride[axis], w.pad[axis]);
        let offset = k * w.dilation[axis];
        let (size, grid) = ([self.h, self.w][axis], [self.gh, self.gw][axis]);
        // o·stride + offset ≥ pad and o·stride + offset − pad < size.
        let lo = pad.saturating_sub(offset).div_ceil(stride);
        let hi = match (size + pad).checked_sub(offset + 1) {
            Some(room) => (room / stride + 1).min(grid),
            None => 0,
        };
        let lo = lo.min(hi);
        (lo..hi, (lo * stride + offset).saturating_sub(pad))
    }

    /// For every (column row, grid row) whose tap reads inside the image:
    /// the column segment `[x0, x1)` of that grid row, the image row's
    /// first index read, and the step between reads.
    fn segments(&self, mut f: impl FnMut(usize, usize, std::ops::Range<usize>, usize)) {
        let [kh, kw] = self.win.kernel;
        let sw = self.win.stride[1];
        for ci in 0..self.c {
            for ky in 0..kh {
                let (ys, iy0) = self.valid(0, ky);
                for kx in 0..kw {
                    let row = (ci * kh + ky) * kw + kx;
                    let (xs, ix0) = self.valid(1, kx);
                    if xs.is_empty() {
                        continue;
                    }
                    for (j, oy) in ys.clone().enumerate() {
                        let iy = iy0 + j * self.win.stride[0];
                        let src = (ci * self.h + iy) * self.w + ix0;
                        f(row * self.cols() + oy * self.gw, src, xs.clone(), sw);
                    }
                }
            }
        }
    }
}

/// `col[(c·kh + ky)·kw + kx][y·gw + x]` = the image value that tap reads
/// at grid position (y, x), 0 in the padding.
fn im2col<T: Real>(img: &[T], g: &Geometry, col: &mut [T]) {
    let padded = g.win.pad != [0; 4];
    if padded {
        col[..g.rows() * g.cols()].fill(T::ZERO);
    }
    g.segments(|dst, src, xs, stride| {
        let out = &mut col[dst + xs.start..dst + xs.end];
        if stride == 1 {
            out.copy_from_slice(&img[src..src + out.len()]);
        } else {
            for (i, o) in out.iter_mut().enumerate() {
                *o = img[src + i * stride];
            }
        }
    });
}

/// The adjoint of [`im2col`]: every column entry added back to the image
/// value it was read from.
fn col2im<T: Real>(col: &[T], g: &Geometry, img: &mut [T]) {
    g.segments(|dst, src, xs, stride| {
        let from = &col[dst + xs.start..dst + xs.end];
        if stride == 1 {
            for (o, &v) in img[src..src + from.len()].iter_mut().zip(from) {
                *o += v;
            }
        } else {
            for (i, &v) in from.iter().enumerate() {
                img[src + i * stride] += v;
            }
        }
    });
}

/// `dst[r][c] += src[c][r]` for a `rows × cols` destination.
fn add_transposed<T: Real>(dst: &mut [T], src: &[T], rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            dst[r * cols + c] += src[c * rows + r];
        }
    }
}

fn add_bias<T: Real>(y: &mut [T], bias: &[T], plane: usize) {
    for (chunk, &b) in y.chunks_mut(plane).zip(bias) {
        chunk.iter_mut().for_each(|v| *v += b);
    }
}

/// Per-channel sums of an NCHW gradient: a bias's gradient.
fn channel_sums<T: Real>(dy: &Buf<T>) -> Vec<T> {
    let c = dy.shape[1];
    let plane = dy.plane();
    let mut out = vec![T::ZERO; c];
    for (i, chunk) in dy.data.chunks(plane).enumerate() {
        out[i % c] += chunk.iter().copied().sum();
    }
    out
}

/// Gradients of a layer with a weight and an optional bias.
pub struct LayerGrads<T> {
    pub dx: Option<Buf<T>>,
    pub dw: Vec<T>,
    pub db: Option<Vec<T>>,
}

fn conv_geometry(c: &Conv, x: &[usize; 4], out: &[usize]) -> Geometry {
    Geometry {
        c: x[1] / c.groups,
        h: x[2],
        w: x[3],
        gh: out[2],
        gw: out[3],
        win: c.window,
    }
}

pub fn conv_forward<T: Real>(
    x: &Buf<T>,
    w: &[T],
    bias: Option<&[T]>,
    c: &Conv,
    out_shape: &[usize],
) -> Buf<T> {
    let xs = dims4(x);
    let geo = conv_geometry(c, &xs, out_shape);
    let (groups, og) = (c.groups, c.out_channels / c.groups);
    let (kk, cols, item) = (geo.rows(), geo.cols(), x.item());
    let mut y = Buf::zeros(out_shape);
    let spec = ConvSpec {
        batch: xs[0],
        groups,
        in_c: xs[1],
        hw: [xs[2], xs[3]],
        out_c: c.out_channels,
        out_hw: [out_shape[2], out_shape[3]],
        kernel: c.window.kernel,
        stride: c.window.stride,
        pad: [c.window.pad[0], c.window.pad[1]],
        dilation: c.window.dilation,
    };
    if T::native_conv(&spec, &x.data, w, bias, &mut y.data) {
        return y;
    }
    y.data
        .par_chunks_mut(c.out_channels * cols)
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; kk * cols],
            |col, (n, out)| {
                for g in 0..groups {
                    let img = &x.data[n * item + g * geo.c * geo.h * geo.w..];
                    im2col(img, &geo, col);
                    T::matmul(
                        Mat::rows(&w[g * og * kk..], og, kk),
                        Mat::rows(col, kk, cols),
                        &mut out[g * og * cols..],
                        cols,
                        false,
                    );
                }
                if let Some(b) = bias {
                    add_bias(out, b, cols);
                }
            },
        );
    y
}

/// Images per batch are split into this many fixed parts, each summing
/// its own weight gradient, then the parts are added in order: the sum
/// does not depend on the thread count or on scheduling, so a step is
/// reproducible (a resumed run repeats an uninterrupted one exactly).
const PARTS: usize = 8;

/// Run `image(n, dx_n, partial)` for every image `n` of `dx` (items of
/// `item` values) in [`PARTS`] parallel parts; returns the parts'
/// `dwt` (`len` values each) summed in part order.
fn in_parts<T: Real>(
    dx: &mut [T],
    item: usize,
    len: usize,
    image: impl Fn(usize, &mut [T], &mut Partial<T>) + Sync,
) -> Vec<T> {
    let images = dx.len() / item.max(1);
    let per = images.div_ceil(PARTS).max(1);
    let parts: Vec<Vec<T>> = dx
        .par_chunks_mut(item * per)
        .enumerate()
        .map(|(part, chunk)| {
            let mut p = Partial {
                dwt: vec![T::ZERO; len],
                col: Vec::new(),
                dcol: Vec::new(),
            };
            for (j, dx_img) in chunk.chunks_mut(item).enumerate() {
                image(part * per + j, dx_img, &mut p);
            }
            p.dwt
        })
        .collect();
    let mut sum = vec![T::ZERO; len];
    for p in parts {
        sum.iter_mut().zip(&p).for_each(|(s, &v)| *s += v);
    }
    sum
}

struct Partial<T> {
    /// This part's weight gradient (a transposed convolution's is kept
    /// transposed per group: `[og·kh·kw, c/groups]`).
    dwt: Vec<T>,
    col: Vec<T>,
    dcol: Vec<T>,
}

/// A stride-1 convolution's input gradient as a convolution of `dy` with
/// the flipped, transposed kernel: the window over `dy` (padded by
/// `d·(k−1) − pad`) visiting the input's grid. `None` when the layer is
/// strided or padded by more than its reach (then col2im is used).
fn flipped_geometry(c: &Conv, x: &[usize; 4], dy: &[usize]) -> Option<Geometry> {
    let w = &c.window;
    if w.stride != [1, 1] {
        return None;
    }
    let reach = |a: usize| w.dilation[a] * (w.kernel[a] - 1);
    let top = reach(0).checked_sub(w.pad[0])?;
    let left = reach(1).checked_sub(w.pad[1])?;
    Some(Geometry {
        c: c.out_channels / c.groups,
        h: dy[2],
        w: dy[3],
        gh: x[2],
        gw: x[3],
        win: Window {
            pad: [top, left, 0, 0],
            ..*w
        },
    })
}

pub fn conv_backward<T: Real>(
    x: &Buf<T>,
    w: &[T],
    dy: &Buf<T>,
    c: &Conv,
    need_dx: bool,
) -> LayerGrads<T> {
    let xs = dims4(x);
    let geo = conv_geometry(c, &xs, &dy.shape);
    let (groups, og) = (c.groups, c.out_channels / c.groups);
    let (kk, cols, item) = (geo.rows(), geo.cols(), x.item());
    let flipped = flipped_geometry(c, &xs, &dy.shape);
    // The flipped kernel per group: `[c/groups, og·kh·kw]`, tap order
    // reversed, so `dx_g = W'_g · col(dy_g)`.
    let taps = c.window.kernel[0] * c.window.kernel[1];
    let w_flipped: Vec<T> = match flipped {
        Some(_) => (0..w.len())
            .map(|i| {
                let (g, rest) = (i / (geo.c * og * taps), i % (geo.c * og * taps));
                let (ci, rest) = (rest / (og * taps), rest % (og * taps));
                let (o, t) = (rest / taps, rest % taps);
                w[((g * og + o) * geo.c + ci) * taps + (taps - 1 - t)]
            })
            .collect(),
        None => Vec::new(),
    };
    let mut dx = Buf::zeros(&x.shape);
    // The input gradient of a stride-1 layer as one whole-batch
    // convolution of dy on the inference kernels, where the number type
    // has them.
    let native_dx = need_dx
        && flipped.is_some_and(|f| {
            let spec = ConvSpec {
                batch: xs[0],
                groups,
                in_c: c.out_channels,
                hw: [f.h, f.w],
                out_c: xs[1],
                out_hw: [f.gh, f.gw],
                kernel: f.win.kernel,
                stride: [1, 1],
                pad: [f.win.pad[0], f.win.pad[1]],
                dilation: f.win.dilation,
            };
            T::native_conv(&spec, &dy.data, &w_flipped, None, &mut dx.data)
        });
    let dy_item = dy.item();
    let dy_plane = dy.plane();
    let dw = in_parts(
        &mut dx.data,
        item,
        w.len(),
        |n, dx_img, p: &mut Partial<T>| {
            if p.col.is_empty() {
                p.col = vec![T::ZERO; kk * cols];
                let dcol = match flipped {
                    Some(f) => f.rows() * f.cols(),
                    None => kk * cols,
                };
                p.dcol = vec![T::ZERO; dcol];
            }
            for g in 0..groups {
                let at = g * geo.c * geo.h * geo.w;
                let dy_img = &dy.data[n * dy_item + g * og * dy_plane..];
                let dy_g = Mat::rows(dy_img, og, cols);
                // dW_g [og, kk] += dy_g · colᵀ: col is built row by row and
                // transposed through L1 as the product packs it.
                im2col(&x.data[n * item + at..], &geo, &mut p.col);
                T::matmul(
                    dy_g,
                    Mat::rows(&p.col, kk, cols).t(),
                    &mut p.dwt[g * og * kk..],
                    kk,
                    true,
                );
                if !need_dx || native_dx {
                    continue;
                }
                match flipped {
                    Some(f) => {
                        im2col(dy_img, &f, &mut p.dcol);
                        let wf = Mat::rows(&w_flipped[g * geo.c * og * taps..], geo.c, og * taps);
                        let col = Mat::rows(&p.dcol, og * taps, f.cols());
                        T::matmul(wf, col, &mut dx_img[at..], f.cols(), false);
                    }
                    None => {
                        let w_g = Mat::rows(&w[g * og * kk..], og, kk);
                        T::matmul(w_g.t(), dy_g, &mut p.dcol, cols, false);
                        col2im(&p.dcol, &geo, &mut dx_img[at..]);
                    }
                }
            }
        },
    );
    LayerGrads {
        dx: need_dx.then_some(dx),
        dw,
        db: c.bias.then(|| channel_sums(dy)),
    }
}

/// A transposed convolution's window over its output, visiting its input.
fn transpose_geometry(c: &ConvTranspose, x: &[usize; 4], out: &[usize]) -> Geometry {
    Geometry {
        c: c.out_channels / c.groups,
        h: out[2],
        w: out[3],
        gh: x[2],
        gw: x[3],
        win: c.window,
    }
}

/// PyTorch's `ConvTranspose2d`, weight `[in, out/groups, kh, kw]`: per
/// group `col = W_gᵀ · x_g`, then col2im onto the output.
pub fn conv_transpose_forward<T: Real>(
    x: &Buf<T>,
    w: &[T],
    bias: Option<&[T]>,
    c: &ConvTranspose,
    out_shape: &[usize],
) -> Buf<T> {
    let xs = dims4(x);
    let geo = transpose_geometry(c, &xs, out_shape);
    let (groups, cg) = (c.groups, c.in_channels / c.groups);
    let (kk, cols, item) = (geo.rows(), geo.cols(), x.item());
    let out_plane = out_shape[2] * out_shape[3];
    let mut y = Buf::zeros(out_shape);
    y.data
        .par_chunks_mut(c.out_channels * out_plane)
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; kk * cols],
            |col, (n, out)| {
                for g in 0..groups {
                    let w_g = Mat::rows(&w[g * cg * kk..], cg, kk);
                    let x_g = Mat::rows(&x.data[n * item + g * cg * cols..], cg, cols);
                    T::matmul(w_g.t(), x_g, col, cols, false);
                    col2im(col, &geo, &mut out[g * geo.c * out_plane..]);
                }
                if let Some(b) = bias {
                    add_bias(out, b, out_plane);
                }
            },
        );
    y
}

pub fn conv_transpose_backward<T: Real>(
    x: &Buf<T>,
    w: &[T],
    dy: &Buf<T>,
    c: &ConvTranspose,
    need_dx: bool,
) -> LayerGrads<T> {
    let xs = dims4(x);
    let geo = transpose_geometry(c, &xs, &dy.shape);
    let (groups, cg) = (c.groups, c.in_channels / c.groups);
    let (kk, cols, item, dy_item) = (geo.rows(), geo.cols(), x.item(), dy.item());
    let out_plane = dy.plane();
    let mut dx = Buf::zeros(&x.shape);
    let partial = in_parts(
        &mut dx.data,
        item,
        w.len(),
        |n, dx_img, p: &mut Partial<T>| {
            if p.col.is_empty() {
                p.col = vec![T::ZERO; kk * cols];
            }
            for g in 0..groups {
                im2col(
                    &dy.data[n * dy_item + g * geo.c * out_plane..],
                    &geo,
                    &mut p.col,
                );
                let x_g = Mat::rows(&x.data[n * item + g * cg * cols..], cg, cols);
                // dW_gᵀ [kk, cg] = col · x_gᵀ.
                T::matmul(
                    Mat::rows(&p.col, kk, cols),
                    x_g.t(),
                    &mut p.dwt[g * cg * kk..],
                    cg,
                    true,
                );
                if need_dx {
                    let w_g = Mat::rows(&w[g * cg * kk..], cg, kk);
                    let col = Mat::rows(&p.col, kk, cols);
                    T::matmul(w_g, col, &mut dx_img[g * cg * cols..], cols, false);
                }
            }
        },
    );
    let mut dw = vec![T::ZERO; w.len()];
    for g in 0..groups {
        let at = g * cg * kk;
        add_transposed(
            &mut dw[at..at + cg * kk],
            &partial[at..at + cg * kk],
            cg,
            kk,
        );
    }
    LayerGrads {
        dx: need_dx.then_some(dx),
        dw,
        db: c.bias.then(|| channel_sums(dy)),
    }
}

/// The weight as the right-hand side of `Y = X · W'`: `[in, out]`.
fn dense_rhs<'a, T>(w: &'a [T], d: &Dense) -> Mat<'a, T> {
    match d.layout {
        WeightLayout::OutIn => Mat::rows(w, d.out_features, d.in_features).t(),
        WeightLayout::InOut => Mat::rows(w, d.in_features, d.out_features),
    }
}

pub fn dense_forward<T: Real>(x: &Buf<T>, w: &[T], bias: Option<&[T]>, d: &Dense) -> Buf<T> {
    let n = x.shape[0];
    let mut y = Buf::zeros(&[n, d.out_features]);
    let xm = Mat::rows(&x.data, n, d.in_features);
    T::par_matmul(xm, dense_rhs(w, d), &mut y.data, d.out_features, false);
    if let Some(b) = bias {
        for row in y.data.chunks_mut(d.out_features) {
            row.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
        }
    }
    y
}

pub fn dense_backward<T: Real>(
    x: &Buf<T>,
    w: &[T],
    dy: &Buf<T>,
    d: &Dense,
    need_dx: bool,
) -> LayerGrads<T> {
    let n = x.shape[0];
    let (fin, fout) = (d.in_features, d.out_features);
    let xm = Mat::rows(&x.data, n, fin);
    let dym = Mat::rows(&dy.data, n, fout);
    let dx = need_dx.then(|| {
        let mut dx = Buf::zeros(&x.shape);
        T::par_matmul(dym, dense_rhs(w, d).t(), &mut dx.data, fin, false);
        dx
    });
    let mut dw = vec![T::ZERO; w.len()];
    match d.layout {
        WeightLayout::OutIn => T::par_matmul(dym.t(), xm, &mut dw, fin, false),
        WeightLayout::InOut => T::par_matmul(xm.t(), dym, &mut dw, fout, false),
    }
    let db = d.bias.then(|| {
        let mut db = vec![T::ZERO; fout];
        for row in dy.data.chunks(fout) {
            db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
        db
    });
    LayerGrads { dx, dw, db }
}

/// Batch statistics per channel: mean and 1/√(biased var + eps), and the
/// unbiased variance for the running estimate.
pub struct BatchStats<T> {
    pub mean: Vec<T>,
    pub inv_std: Vec<T>,
    pub unbiased_var: Vec<T>,
}

/// Training batch norm: normalise with the batch's own statistics.
pub fn batch_norm_train<T: Real>(
    x: &Buf<T>,
    gamma: &[T],
    beta: &[T],
    eps: f32,
) -> (Buf<T>, BatchStats<T>) {
    let (n, c, plane) = (x.shape[0], x.shape[1], x.plane());
    let count = (n * plane) as f64;
    let mut stats = BatchStats {
        mean: vec![T::ZERO; c],
        inv_std: vec![T::ZERO; c],
        unbiased_var: vec![T::ZERO; c],
    };
    // Per channel, in parallel: a two-pass mean and variance in f64.
    let per_channel: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let values =
                || (0..n).flat_map(move |i| x.data[(i * c + ch) * plane..][..plane].iter());
            let mean = values().map(|v| v.to_f64()).sum::<f64>() / count;
            let ss: f64 = values().map(|v| (v.to_f64() - mean).powi(2)).sum();
            (mean, ss)
        })
        .collect();
    for (ch, &(mean, ss)) in per_channel.iter().enumerate() {
        let var = ss / count;
        stats.mean[ch] = T::from_f64(mean);
        stats.inv_std[ch] = T::from_f64(1.0 / (var + eps as f64).sqrt());
        stats.unbiased_var[ch] = T::from_f64(if count > 1.0 { ss / (count - 1.0) } else { var });
    }
    let mut y = x.clone();
    y.data
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(i, chunk)| {
            let ch = i % c;
            let (m, s) = (stats.mean[ch], stats.inv_std[ch] * gamma[ch]);
            chunk.iter_mut().for_each(|v| *v = (*v - m) * s + beta[ch]);
        });
    (y, stats)
}

/// Inference batch norm with running statistics.
pub fn batch_norm_eval<T: Real>(
    x: &Buf<T>,
    [gamma, beta, mean, var]: [&[T]; 4],
    eps: f32,
) -> Buf<T> {
    let (c, plane) = (x.shape[1], x.plane());
    let mut y = x.clone();
    y.data
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(i, chunk)| {
            let ch = i % c;
            let s = T::from_f64(1.0 / (var[ch].to_f64() + eps as f64).sqrt()) * gamma[ch];
            chunk
                .iter_mut()
                .for_each(|v| *v = (*v - mean[ch]) * s + beta[ch]);
        });
    y
}

/// Returns (dx, dγ, dβ).
pub fn batch_norm_backward<T: Real>(
    x: &Buf<T>,
    gamma: &[T],
    stats: &BatchStats<T>,
    dy: &Buf<T>,
) -> (Buf<T>, Vec<T>, Vec<T>) {
    let (n, c, plane) = (x.shape[0], x.shape[1], x.plane());
    let count = T::from_f64((n * plane) as f64);
    let (dgamma, dbeta): (Vec<T>, Vec<T>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (m, s) = (stats.mean[ch], stats.inv_std[ch]);
            let (mut dg, mut db) = (T::ZERO, T::ZERO);
            for i in 0..n {
                let at = (i * c + ch) * plane;
                for (&xv, &g) in x.data[at..at + plane].iter().zip(&dy.data[at..at + plane]) {
                    db += g;
                    dg += g * (xv - m) * s;
                }
            }
            (dg, db)
        })
        .unzip();
    let mut dx = Buf::zeros(&x.shape);
    dx.data
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(i, out)| {
            let ch = i % c;
            let (m, s) = (stats.mean[ch], stats.inv_std[ch]);
            let k = gamma[ch] * s / count;
            let xs = &x.data[i * plane..][..plane];
            let dys = &dy.data[i * plane..][..plane];
            for ((o, &xv), &g) in out.iter_mut().zip(xs).zip(dys) {
                let xhat = (xv - m) * s;
                *o = k * (count * g - dbeta[ch] - xhat * dgamma[ch]);
            }
        });
    (dx, dgamma, dbeta)
}

/// An activation, elementwise; ReLU without leaving the number type.
pub fn activation_forward<T: Real>(x: &Buf<T>, a: Activation) -> Buf<T> {
    let mut y = x.clone();
    let relu = a == Activation::Relu;
    y.data.par_chunks_mut(1 << 14).for_each(|chunk| {
        if relu {
            chunk.iter_mut().for_each(|v| {
                if *v < T::ZERO {
                    *v = T::ZERO
                }
            })
        } else {
            chunk
                .iter_mut()
                .for_each(|v| *v = T::from_f64(a.apply64(v.to_f64())))
        }
    });
    y
}

/// `dy · f'(x)`.
pub fn activation_backward<T: Real>(x: &Buf<T>, dy: &Buf<T>, a: Activation) -> Buf<T> {
    let mut dx = dy.clone();
    dx.data
        .par_chunks_mut(1 << 14)
        .zip(x.data.par_chunks(1 << 14))
        .for_each(|(g, x)| {
            if a == Activation::Relu {
                g.iter_mut().zip(x).for_each(|(g, &x)| {
                    if x <= T::ZERO {
                        *g = T::ZERO
                    }
                })
            } else {
                g.iter_mut()
                    .zip(x)
                    .for_each(|(g, &x)| *g = *g * T::from_f64(a.derivative(x.to_f64())))
            }
        });
    dx
}

/// Input positions of one pooling window and the average's divisor, with
/// the interpreter's rules (max ignores padding; average divides by the
/// padded window clipped to the padded input, or by the real elements).
fn pool_window(p: &Pool, [h, w]: [usize; 2], [oy, ox]: [usize; 2], taps: &mut Vec<usize>) -> usize {
    let win = &p.window;
    let [kh, kw] = win.kernel;
    let [pt, pl, pb, pr] = win.pad;
    taps.clear();
    for ky in 0..kh {
        let Some(iy) = (oy * win.stride[0] + ky * win.dilation[0])
            .checked_sub(pt)
            .filter(|&i| i < h)
        else {
            continue;
        };
        for kx in 0..kw {
            if let Some(ix) = (ox * win.stride[1] + kx * win.dilation[1])
                .checked_sub(pl)
                .filter(|&i| i < w)
            {
                taps.push(iy * w + ix);
            }
        }
    }
    if p.count_include_pad {
        let extent = |o: usize, s: usize, k: usize, size: usize| (o * s + k).min(size) - o * s;
        extent(oy, win.stride[0], kh, h + pt + pb) * extent(ox, win.stride[1], kw, w + pl + pr)
    } else {
        taps.len()
    }
    .max(1)
}

/// Pooling forward; max pooling also returns each output's winning input
/// position within its plane.
pub fn pool_forward<T: Real>(x: &Buf<T>, p: &Pool, out_shape: &[usize]) -> (Buf<T>, Vec<u32>) {
    let [_, _, h, w] = dims4(x);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut y = Buf::zeros(out_shape);
    let mut arg = vec![
        0u32;
        if p.kind == PoolKind::Max {
            y.data.len()
        } else {
            0
        }
    ];
    let win = &p.window;
    let tiled = p.kind == PoolKind::Max
        && win.pad == [0; 4]
        && win.dilation == [1, 1]
        && win.stride == win.kernel
        && oh * win.kernel[0] <= h
        && ow * win.kernel[1] <= w;
    if tiled {
        // Non-overlapping windows inside the plane: no padding or bounds
        // to consider (a 2×2/2 max pool).
        let [kh, kw] = win.kernel;
        y.data
            .par_chunks_mut(oh * ow)
            .zip(arg.par_chunks_mut(oh * ow))
            .enumerate()
            .for_each(|(plane, (out, arg))| {
                let src = &x.data[plane * h * w..][..h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut best = oy * kh * w + ox * kw;
                        for ky in 0..kh {
                            let row = (oy * kh + ky) * w + ox * kw;
                            for i in row..row + kw {
                                if src[i] > src[best] {
                                    best = i;
                                }
                            }
                        }
                        out[oy * ow + ox] = src[best];
                        arg[oy * ow + ox] = best as u32;
                    }
                }
            });
        return (y, arg);
    }
    let planes = y.data.len() / (oh * ow);
    let job =
        |plane: usize, out: &mut [T], arg: Option<&mut [u32]>| {
            let src = &x.data[plane * h * w..][..h * w];
            let mut taps = Vec::new();
            let mut arg = arg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let div = pool_window(p, [h, w], [oy, ox], &mut taps);
                    let o = oy * ow + ox;
                    match (p.kind, arg.as_deref_mut()) {
                        (PoolKind::Max, Some(arg)) => {
                            let best = taps.iter().copied().fold(taps[0], |b, i| {
                                if src[i] > src[b] {
                                    i
                                } else {
                                    b
                                }
                            });
                            out[o] = src[best];
                            arg[o] = best as u32;
                        }
                        _ => {
                            let s: T = taps.iter().map(|&i| src[i]).sum();
                            out[o] = s / T::from_f64(div as f64);
                        }
                    }
                }
            }
        };
    if arg.is_empty() {
        y.data
            .par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(i, out)| job(i, out, None));
    } else {
        y.data
            .par_chunks_mut(oh * ow)
            .zip(arg.par_chunks_mut(oh * ow))
            .enumerate()
            .for_each(|(i, (out, a))| job(i, out, Some(a)));
    }
    debug_assert_eq!(planes, y.data.len() / (oh * ow));
    (y, arg)
}

pub fn pool_backward<T: Real>(x_shape: &[usize], p: &Pool, arg: &[u32], dy: &Buf<T>) -> Buf<T> {
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.shape[2], dy.shape[3]);
    let mut dx = Buf::zeros(x_shape);
    dx.data
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, out)| {
            let g = &dy.data[plane * oh * ow..][..oh * ow];
            match p.kind {
                PoolKind::Max => {
                    let a = &arg[plane * oh * ow..][..oh * ow];
                    for (&i, &gv) in a.iter().zip(g) {
                        out[i as usize] += gv;
                    }
                }
                PoolKind::Avg => {
                    let mut taps = Vec::new();
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let div = pool_window(p, [h, w], [oy, ox], &mut taps);
                            let share = g[oy * ow + ox] / T::from_f64(div as f64);
                            for &i in &taps {
                                out[i] += share;
                            }
                        }
                    }
                }
            }
        });
    dx
}

/// `maxunpool`: each value of `x` placed where the max pool `window`
/// over `source` found its winner (the pool forward's rule), in a zero
/// tensor shaped like `source`; also returns those positions.
pub fn max_unpool_forward<T: Real>(
    x: &Buf<T>,
    source: &Buf<T>,
    window: Window,
    ceil: bool,
) -> (Buf<T>, Vec<u32>) {
    let pool = Pool {
        kind: PoolKind::Max,
        window,
        ceil,
        count_include_pad: false,
    };
    let (_, arg) = pool_forward(source, &pool, &x.shape);
    let [_, _, h, w] = dims4(source);
    let per = x.shape[2] * x.shape[3];
    let mut y = Buf::zeros(&source.shape);
    y.data
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, out)| {
            let a = &arg[plane * per..][..per];
            let v = &x.data[plane * per..][..per];
            for (&i, &v) in a.iter().zip(v) {
                out[i as usize] = v;
            }
        });
    (y, arg)
}

/// The values' gradient of `maxunpool`: the output gradient read at each
/// value's position.
pub fn max_unpool_backward<T: Real>(x_shape: &[usize], arg: &[u32], dy: &Buf<T>) -> Buf<T> {
    let (h, w) = (dy.shape[2], dy.shape[3]);
    let per = x_shape[2] * x_shape[3];
    let mut dx = Buf::zeros(x_shape);
    dx.data
        .par_chunks_mut(per)
        .enumerate()
        .for_each(|(plane, out)| {
            let g = &dy.data[plane * h * w..][..h * w];
            let a = &arg[plane * per..][..per];
            for (o, &i) in out.iter_mut().zip(a) {
                *o = g[i as usize];
            }
        });
    dx
}

/// PyTorch's adaptive-average bins: output `i` of `out` averages input
/// `⌊i·n/out⌋ .. ⌈(i+1)·n/out⌉`.
fn bin(i: usize, n: usize, out: usize) -> std::ops::Range<usize> {
    i * n / out..((i + 1) * n).div_ceil(out)
}

pub fn adaptive_avg_forward<T: Real>(x: &Buf<T>, out_shape: &[usize]) -> Buf<T> {
    let [_, _, h, w] = dims4(x);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut y = Buf::zeros(out_shape);
    for (plane, out) in y.data.chunks_mut(oh * ow).enumerate() {
        let src = &x.data[plane * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let (rows, cols) = (bin(oy, h, oh), bin(ox, w, ow));
                let count = T::from_f64((rows.len() * cols.len()) as f64);
                let s: T = rows
                    .flat_map(|iy| cols.clone().map(move |ix| src[iy * w + ix]))
                    .sum();
                out[oy * ow + ox] = s / count;
            }
        }
    }
    y
}

pub fn adaptive_avg_backward<T: Real>(x_shape: &[usize], dy: &Buf<T>) -> Buf<T> {
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.shape[2], dy.shape[3]);
    let mut dx = Buf::zeros(x_shape);
    for (plane, out) in dx.data.chunks_mut(h * w).enumerate() {
        let g = &dy.data[plane * oh * ow..][..oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let (rows, cols) = (bin(oy, h, oh), bin(ox, w, ow));
                let share = g[oy * ow + ox] / T::from_f64((rows.len() * cols.len()) as f64);
                for iy in rows {
                    for ix in cols.clone() {
                        out[iy * w + ix] += share;
                    }
                }
            }
        }
    }
    dx
}

/// Softmax over axis 1 at every other position.
pub fn softmax_forward<T: Real>(x: &Buf<T>) -> Buf<T> {
    let (n, c, inner) = (x.shape[0], x.shape[1], x.plane());
    let mut y = x.clone();
    for i in 0..n {
        for p in 0..inner {
            let at = |ch: usize| (i * c + ch) * inner + p;
            let max = (0..c)
                .map(|ch| x.data[at(ch)].to_f64())
                .fold(f64::MIN, f64::max);
            let total: f64 = (0..c).map(|ch| (x.data[at(ch)].to_f64() - max).exp()).sum();
            for ch in 0..c {
                y.data[at(ch)] = T::from_f64((x.data[at(ch)].to_f64() - max).exp() / total);
            }
        }
    }
    y
}

/// `dx = y ⊙ (dy − Σ_c dy·y)`.
pub fn softmax_backward<T: Real>(y: &Buf<T>, dy: &Buf<T>) -> Buf<T> {
    let (n, c, inner) = (y.shape[0], y.shape[1], y.plane());
    let mut dx = Buf::zeros(&y.shape);
    for i in 0..n {
        for p in 0..inner {
            let at = |ch: usize| (i * c + ch) * inner + p;
            let dot: T = (0..c).map(|ch| dy.data[at(ch)] * y.data[at(ch)]).sum();
            for ch in 0..c {
                dx.data[at(ch)] = y.data[at(ch)] * (dy.data[at(ch)] - dot);
            }
        }
    }
    dx
}

/// Channels of each operand side by side.
pub fn concat_forward<T: Real>(xs: &[&Buf<T>], out_shape: &[usize]) -> Buf<T> {
    let mut y = Buf::zeros(out_shape);
    let mut offset = 0;
    let item = y.item();
    for x in xs {
        let part = x.item();
        for n in 0..x.shape[0] {
            y.data[n * item + offset..][..part].copy_from_slice(&x.data[n * part..][..part]);
        }
        offset += part;
    }
    y
}

/// Channels `start ..` of `dy`, as an operand of `shape` (concat's adjoint)
/// — or, with `into`, `dy` placed there in zeros (slice's adjoint).
pub fn channel_block<T: Real>(dy: &Buf<T>, shape: &[usize], start: usize, into: bool) -> Buf<T> {
    let mut out = Buf::zeros(shape);
    let (big, small) = if into {
        (out.item(), dy.item())
    } else {
        (dy.item(), out.item())
    };
    let offset = start * dy.plane();
    for n in 0..shape[0] {
        if into {
            out.data[n * big + offset..][..small].copy_from_slice(&dy.data[n * small..][..small]);
        } else {
            out.data[n * small..][..small].copy_from_slice(&dy.data[n * big + offset..][..small]);
        }
    }
    out
}

/// ShuffleNet's shuffle: output channel `j·groups + g` is input channel
/// `g·(C / groups) + j`.
pub fn channel_shuffle<T: Real>(x: &Buf<T>, groups: usize) -> Buf<T> {
    let (c, plane) = (x.shape[1], x.plane());
    let per = c / groups;
    let mut y = Buf::zeros(&x.shape);
    for (src, dst) in x.data.chunks(c * plane).zip(y.data.chunks_mut(c * plane)) {
        for g in 0..groups {
            for j in 0..per {
                dst[(j * groups + g) * plane..][..plane]
                    .copy_from_slice(&src[(g * per + j) * plane..][..plane]);
            }
        }
    }
    y
}

/// Whether `b` is one value per (item, channel) of `a`'s shape.
fn gate(a: &Buf<impl Real>, b: &Buf<impl Real>) -> bool {
    b.data.len() != a.data.len()
}

pub fn mul_forward<T: Real>(a: &Buf<T>, b: &Buf<T>) -> Buf<T> {
    let mut y = a.clone();
    if gate(a, b) {
        for (chunk, &g) in y.data.chunks_mut(a.plane()).zip(&b.data) {
            chunk.iter_mut().for_each(|v| *v = *v * g);
        }
    } else {
        y.data
            .iter_mut()
            .zip(&b.data)
            .for_each(|(v, &g)| *v = *v * g);
    }
    y
}

/// Returns (da, db).
pub fn mul_backward<T: Real>(a: &Buf<T>, b: &Buf<T>, dy: &Buf<T>) -> (Buf<T>, Buf<T>) {
    let da = mul_forward(dy, b);
    let mut db = Buf::zeros(&b.shape);
    if gate(a, b) {
        let plane = a.plane();
        for (i, d) in db.data.iter_mut().enumerate() {
            let (g, x) = (
                &dy.data[i * plane..][..plane],
                &a.data[i * plane..][..plane],
            );
            *d = g.iter().zip(x).map(|(&g, &x)| g * x).sum();
        }
    } else {
        db.data
            .iter_mut()
            .zip(dy.data.iter().zip(&a.data))
            .for_each(|(d, (&g, &x))| *d = g * x);
    }
    (da, db)
}

fn resize_taps(mode: ResizeMode, input: usize, output: usize) -> Vec<Tap> {
    match mode {
        ResizeMode::Nearest => taps(RESIZE_NEAREST, false, input, output),
        ResizeMode::Bilinear { align_corners } => {
            taps(RESIZE_BILINEAR, align_corners, input, output)
        }
    }
}

/// `resize` forward, or (with `adjoint`) its transpose: every output's
/// gradient shared back over the four inputs it read, by the same weights.
pub fn resize<T: Real>(x: &Buf<T>, out_shape: &[usize], mode: ResizeMode, adjoint: bool) -> Buf<T> {
    let (small, big) = if adjoint {
        (out_shape, &x.shape[..])
    } else {
        (&x.shape[..], out_shape)
    };
    let (h, w, oh, ow) = (small[2], small[3], big[2], big[3]);
    let ty = resize_taps(mode, h, oh);
    let tx = resize_taps(mode, w, ow);
    let mut y = Buf::zeros(out_shape);
    let (src_plane, dst_plane) = (x.plane(), y.plane());
    for (i, dst) in y.data.chunks_mut(dst_plane).enumerate() {
        let src = &x.data[i * src_plane..][..src_plane];
        for (oy, a) in ty.iter().enumerate() {
            for (ox, b) in tx.iter().enumerate() {
                let (wy, wx) = (a.weight as f64, b.weight as f64);
                let corners = [
                    (a.lo, b.lo, (1.0 - wy) * (1.0 - wx)),
                    (a.lo, b.hi, (1.0 - wy) * wx),
                    (a.hi, b.lo, wy * (1.0 - wx)),
                    (a.hi, b.hi, wy * wx),
                ];
                for (iy, ix, k) in corners {
                    if k == 0.0 {
                        continue;
                    }
                    let k = T::from_f64(k);
                    if adjoint {
                        dst[iy * w + ix] += src[oy * ow + ox] * k;
                    } else {
                        dst[oy * ow + ox] += src[iy * w + ix] * k;
                    }
                }
            }
        }
    }
    y
}
