//! The LSTM forecaster: one LSTM layer over a series' normalised values and a
//! linear head predicting the change to the next value. The head starts at
//! zero, so an untrained model is the persistence forecast (next = last), a
//! strong baseline that online training can only improve on.

use candle_core::{Module, Result, Tensor};
use candle_nn::rnn::{LSTMConfig, LSTMState, LSTM, RNN};
use candle_nn::{Init, Linear, VarBuilder};

/// Shape of the forecaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForecasterConfig {
    /// Input features per step (1: the normalised value).
    pub inputs: usize,
    /// LSTM hidden units.
    pub hidden: usize,
}

/// LSTM plus residual head. Keys: `lstm.weight_ih_l0`, …, `head.weight`, `head.bias`.
#[derive(Clone, Debug)]
pub struct Forecaster {
    lstm: LSTM,
    head: Linear,
    cfg: ForecasterConfig,
}

impl Forecaster {
    /// Builds the layers from `vb` (fresh variables or loaded weights).
    pub fn new(cfg: ForecasterConfig, vb: VarBuilder) -> Result<Self> {
        let lstm = candle_nn::lstm(cfg.inputs, cfg.hidden, LSTMConfig::default(), vb.pp("lstm"))?;
        let hv = vb.pp("head");
        let w = hv.get_with_hints((1, cfg.hidden), "weight", Init::Const(0.0))?;
        let b = hv.get_with_hints(1, "bias", Init::Const(0.0))?;
        Ok(Self {
            lstm,
            head: Linear::new(w, Some(b)),
            cfg,
        })
    }

    /// The layer shape.
    pub fn config(&self) -> ForecasterConfig {
        self.cfg
    }

    /// A zero state for `batch` series.
    pub fn zero_state(&self, batch: usize) -> Result<LSTMState> {
        self.lstm.zero_state(batch)
    }

    /// One step for every series at once: `x` is `[N, inputs]` (first column
    /// the value). Returns the forecast of the next value `[N]` and the new state.
    pub fn step(&self, x: &Tensor, state: &LSTMState) -> Result<(Tensor, LSTMState)> {
        let next = self.lstm.step(x, state)?;
        let delta = self.head.forward(&next.h)?.squeeze(1)?;
        let last = x.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(((last + delta)?, next))
    }

    /// Forecasts over whole windows for training: `x` is `[B, T, inputs]`,
    /// returns `[B, T]`, each the forecast of the following value.
    pub fn forward_seq(&self, x: &Tensor) -> Result<Tensor> {
        let states = self.lstm.seq(x)?;
        let h = self.lstm.states_to_tensor(&states)?;
        let delta = self.head.forward(&h)?.squeeze(2)?;
        let last = x.narrow(2, 0, 1)?.squeeze(2)?;
        last + delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn untrained_model_is_persistence() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let f = Forecaster::new(
            ForecasterConfig {
                inputs: 1,
                hidden: 8,
            },
            vb,
        )
        .unwrap();
        let x = Tensor::new(&[[0.5f32], [-1.0], [3.0]], &Device::Cpu).unwrap();
        let (pred, state) = f.step(&x, &f.zero_state(3).unwrap()).unwrap();
        assert_eq!(pred.to_vec1::<f32>().unwrap(), vec![0.5, -1.0, 3.0]);
        assert_eq!(state.h.dims(), &[3, 8]);
    }

    #[test]
    fn fixed_weights_give_reference_numbers() {
        // All LSTM weights 0.1, biases 0, head weight 1: a hand-checkable cell.
        let dev = Device::Cpu;
        let mut map = std::collections::HashMap::new();
        let h = 2;
        map.insert(
            "lstm.weight_ih_l0".to_string(),
            Tensor::full(0.1f32, (4 * h, 1), &dev).unwrap(),
        );
        map.insert(
            "lstm.weight_hh_l0".to_string(),
            Tensor::full(0.1f32, (4 * h, h), &dev).unwrap(),
        );
        map.insert(
            "lstm.bias_ih_l0".to_string(),
            Tensor::zeros(4 * h, DType::F32, &dev).unwrap(),
        );
        map.insert(
            "lstm.bias_hh_l0".to_string(),
            Tensor::zeros(4 * h, DType::F32, &dev).unwrap(),
        );
        map.insert(
            "head.weight".to_string(),
            Tensor::ones((1, h), DType::F32, &dev).unwrap(),
        );
        map.insert(
            "head.bias".to_string(),
            Tensor::zeros(1, DType::F32, &dev).unwrap(),
        );
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let f = Forecaster::new(
            ForecasterConfig {
                inputs: 1,
                hidden: h,
            },
            vb,
        )
        .unwrap();
        let x = Tensor::new(&[[1.0f32]], &dev).unwrap();
        let (pred, _) = f.step(&x, &f.zero_state(1).unwrap()).unwrap();
        // gates: sigmoid(0.1) = 0.524979, g = tanh(0.1) = 0.099668;
        // c = 0.524979·0.099668 = 0.052324; h = 0.524979·tanh(c) = 0.027448 per unit.
        let expected = 1.0 + 2.0 * 0.027448;
        let got = pred.to_vec1::<f32>().unwrap()[0];
        assert!(
            (got - expected).abs() < 1e-5,
            "got {got}, expected {expected}"
        );
    }
}
