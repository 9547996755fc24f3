//! A fused LSTM step for streaming inference: one matrix product of `h`
//! (`[B, H]`, read in place) with the stacked gate weights (`[H, 4H]`) on top
//! of `bias + x·W_ih` (a few multiply-adds, the input is narrow), then every
//! gate computed in one pass over the contiguous product, updating `h` and `c`
//! in place. candle's generic cell runs a chain
//! of separate element-wise tensor ops over `[B, 4H]`, each allocating and
//! walking the buffer; at edge sizes that chain, not the product, is the cost.
//! Numerically the same cell (gate order i, f, g, o, as PyTorch and candle).

use candle_core::{Result, Tensor};

/// Gate weights in fused layout, built from candle/PyTorch LSTM weights.
#[derive(Clone, Debug)]
pub struct FusedLstm {
    /// `W_ih` transposed, `[in, 4H]` row-major.
    w_in: Vec<f32>,
    /// `W_hh` transposed, `[H, 4H]` row-major, as gemm reads it.
    w_hid: Vec<f32>,
    /// Reused `[B, 4H]` gate buffer.
    gates: Vec<f32>,
    /// `b_ih + b_hh`, `[4H]`.
    bias: Vec<f32>,
    inputs: usize,
    hidden: usize,
}

/// Rows per block: a block's `[BLOCK, 4H]` gates stay in L2 between the
/// product and the activation.
const BLOCK: usize = 256;

/// Up to this many series a plain loop beats gemm's per-call overhead.
const SMALL_BATCH: usize = 32;

/// Gate nonlinearities and the state update, row by row (each row stays in
/// cache): sigmoid on i, f, o; tanh as 2·sigmoid(2x) − 1. Uses AVX2 and FMA
/// when the CPU has them, the SSE2 baseline otherwise.
fn activate(gates: &mut [f32], h: &mut [f32], c: &mut [f32], n_h: usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            activate_avx2(gates, h, c, n_h)
        };
        return;
    }
    activate_rows::<false>(gates, h, c, n_h);
}

/// `activate_rows` compiled for AVX2 + FMA (the inlined code vectorises 8-wide).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn activate_avx2(gates: &mut [f32], h: &mut [f32], c: &mut [f32], n_h: usize) {
    activate_rows::<true>(gates, h, c, n_h);
}

/// `FMA`: use fused multiply-add (only where the caller enables the `fma`
/// target feature; elsewhere `mul_add` would be a libm call).
#[inline(always)]
fn activate_rows<const FMA: bool>(gates: &mut [f32], h: &mut [f32], c: &mut [f32], n_h: usize) {
    let rows = gates
        .chunks_exact_mut(4 * n_h)
        .zip(h.chunks_exact_mut(n_h))
        .zip(c.chunks_exact_mut(n_h));
    for ((row, hr), cr) in rows {
        for v in row[2 * n_h..3 * n_h].iter_mut() {
            *v *= 2.0;
        }
        sigmoid_in_place::<FMA>(row);
        let (i, rest) = row.split_at(n_h);
        let (f, rest) = rest.split_at(n_h);
        let (g, o) = rest.split_at(n_h);
        for k in 0..n_h {
            cr[k] = f[k] * cr[k] + i[k] * (2.0 * g[k] - 1.0);
            hr[k] = 2.0 * cr[k];
        }
        sigmoid_in_place::<FMA>(hr);
        for k in 0..n_h {
            hr[k] = o[k] * (2.0 * hr[k] - 1.0);
        }
    }
}

/// `dst[b×n] += lhs[b×k] × rhs[k×n]`, all row-major, on the calling thread.
#[allow(unsafe_code)]
fn gemm_into(dst: &mut [f32], lhs: &[f32], rhs: &[f32], b: usize, k: usize, n: usize) {
    assert!(
        dst.len() == b * n && lhs.len() == b * k && rhs.len() == k * n,
        "gemm shapes"
    );
    // SAFETY: the assert above guarantees every index the strides address is
    // inside its slice; dst is a distinct &mut, so nothing aliases.
    unsafe {
        gemm::gemm(
            b,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `e^x` without libm, branch-free so a loop over a slice vectorises:
/// `2^round(x·log2 e)` from the exponent bits times a degree-6 polynomial for
/// `2^f`, `|f| ≤ 0.5` (relative error about 1e-7).
#[inline(always)]
fn fast_exp<const FMA: bool>(x: f32) -> f32 {
    let fma = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let t = x.clamp(-87.0, 87.0) * std::f32::consts::LOG2_E;
    // Round to nearest with the 1.5·2^23 trick: f32::round is a libm call on
    // the SSE2 baseline, this vectorises.
    const MAGIC: f32 = 12_582_912.0;
    let shifted = t + MAGIC;
    let n = shifted - MAGIC;
    // The integer n sits in the low mantissa bits of `shifted`; reading it from
    // the bits (not `n as i32`, whose saturating cast stays scalar) keeps the
    // whole function in vector registers.
    let n_int = shifted.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let f = (t - n) * std::f32::consts::LN_2;
    let mut p = 1.0 / 720.0;
    for coef in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = fma(p, f, coef);
    }
    f32::from_bits((n_int.wrapping_add(127) as u32) << 23) * p
}

/// Logistic sigmoid over a slice, in place.
#[inline(always)]
fn sigmoid_in_place<const FMA: bool>(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = 1.0 / (1.0 + fast_exp::<FMA>(-*x));
    }
}

impl FusedLstm {
    /// From `weight_ih [4H, in]`, `weight_hh [4H, H]`, `bias_ih [4H]`, `bias_hh [4H]`.
    pub fn new(w_ih: &Tensor, w_hh: &Tensor, b_ih: &Tensor, b_hh: &Tensor) -> Result<Self> {
        let (four_h, inputs) = w_ih.dims2()?;
        let hidden = four_h / 4;
        let rows = |w: &Tensor| w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>();
        Ok(Self {
            w_in: rows(w_ih)?,
            w_hid: rows(w_hh)?,
            bias: (b_ih + b_hh)?.to_vec1::<f32>()?,
            inputs,
            hidden,
            gates: Vec::new(),
        })
    }

    /// Hidden units.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// `gates = bias + x × W_ih + h × W_hh` for the `b` rows of `x` and `h`:
    /// the narrow input part as row updates, the hidden part with a plain
    /// loop for a few rows (its inner loop vectorises), gemm on one thread
    /// otherwise.
    fn product(&mut self, x: &[f32], h: &[f32], b: usize) {
        let (n_in, n_h, n) = (self.inputs, self.hidden, 4 * self.hidden);
        self.gates.clear();
        for r in 0..b {
            self.gates.extend_from_slice(&self.bias);
            let row = &mut self.gates[r * n..];
            add_row_products(row, &x[r * n_in..(r + 1) * n_in], &self.w_in, n);
            if b <= SMALL_BATCH {
                add_row_products(row, &h[r * n_h..(r + 1) * n_h], &self.w_hid, n);
            }
        }
        if b > SMALL_BATCH {
            gemm_into(&mut self.gates, h, &self.w_hid, b, n_h, n);
        }
    }

    /// One step for `B = h.len() / H` series. `x` is `[B, in]`, `h` and `c`
    /// are `[B, H]`, row-major; `h` and `c` are updated in place.
    pub fn step(&mut self, x: &[f32], h: &mut [f32], c: &mut [f32]) -> Result<()> {
        let (n_in, n_h) = (self.inputs, self.hidden);
        let b = h.len() / n_h;
        if x.len() != b * n_in || c.len() != h.len() || h.len() != b * n_h {
            return Err(candle_core::Error::Msg(format!(
                "fused LSTM step: x {} / h {} / c {} do not fit B×{n_in}, B×{n_h}",
                x.len(),
                h.len(),
                c.len()
            )));
        }
        // Blocks of rows: each block's gates are activated while still in cache.
        for start in (0..b).step_by(BLOCK) {
            let end = (start + BLOCK).min(b);
            let (hb, cb) = (
                &mut h[start * n_h..end * n_h],
                &mut c[start * n_h..end * n_h],
            );
            self.product(&x[start * n_in..end * n_in], hb, end - start);
            activate(&mut self.gates, hb, cb, n_h);
        }
        Ok(())
    }
}

/// `row[..n] += Σ_k a[k] · w[k·n..(k+1)·n]`.
#[inline(always)]
fn add_row_products(row: &mut [f32], a: &[f32], w: &[f32], n: usize) {
    for (k, &ak) in a.iter().enumerate() {
        for (o, wk) in row[..n].iter_mut().zip(&w[k * n..(k + 1) * n]) {
            *o += ak * wk;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::rnn::{LSTMConfig, LSTMState, RNN};
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn fast_exp_is_accurate() {
        for i in -2000..2000 {
            let x = i as f32 * 0.04;
            let (got, want) = (fast_exp::<false>(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 1e-5,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(fast_exp::<false>(-200.0) >= 0.0 && fast_exp::<true>(-200.0) < 1e-37);
    }

    #[test]
    fn matches_candles_lstm_cell() {
        // The small-batch loop, the gemm path, and several blocks.
        for b in [5, 40, 600] {
            check(b);
        }
    }

    fn check(b: usize) {
        let (n_in, n_h) = (2, 8);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = LSTMConfig {
            b_ih_init: Some(candle_nn::Init::Uniform { lo: -0.3, up: 0.3 }),
            b_hh_init: Some(candle_nn::Init::Uniform { lo: -0.3, up: 0.3 }),
            ..LSTMConfig::default()
        };
        let lstm = candle_nn::lstm(n_in, n_h, cfg, vb.pp("lstm")).unwrap();
        let get = |n: &str| {
            vm.data().lock().unwrap()[&format!("lstm.{n}")]
                .as_tensor()
                .clone()
        };
        let mut fused = FusedLstm::new(
            &get("weight_ih_l0"),
            &get("weight_hh_l0"),
            &get("bias_ih_l0"),
            &get("bias_hh_l0"),
        )
        .unwrap();
        let xs: Vec<f32> = (0..b * n_in).map(|i| ((i as f32) * 0.37).sin()).collect();
        let mut h: Vec<f32> = (0..b * n_h)
            .map(|i| ((i as f32) * 0.11).cos() * 0.5)
            .collect();
        let mut c: Vec<f32> = (0..b * n_h)
            .map(|i| ((i as f32) * 0.23).sin() * 0.5)
            .collect();
        let state = LSTMState::new(
            Tensor::from_slice(&h, (b, n_h), &Device::Cpu).unwrap(),
            Tensor::from_slice(&c, (b, n_h), &Device::Cpu).unwrap(),
        );
        let x = Tensor::from_slice(&xs, (b, n_in), &Device::Cpu).unwrap();
        let mut want = state;
        for _ in 0..3 {
            want = lstm.step(&x, &want).unwrap();
            fused.step(&xs, &mut h, &mut c).unwrap();
        }
        let want_h = want.h.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want_c = want.c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, e) in h.iter().zip(&want_h).chain(c.iter().zip(&want_c)) {
            assert!((a - e).abs() < 1e-5, "{a} vs {e}");
        }
    }
}
