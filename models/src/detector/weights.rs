//! The LSTM's weights: saved and loaded as safetensors, seeded, and
//! turned into the fused cell inference runs on.

use super::Detector;
use crate::fused::FusedLstm;
use crate::ModelError;
use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use rand::{rngs::StdRng, Rng};

impl Detector {
    /// The weights as safetensors bytes.
    pub fn weights_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
        let tensors: Vec<(String, Tensor)> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        safetensors::serialize(tensors, None)
            .map_err(|e| ModelError::Config(format!("serialising weights: {e}")))
    }

    /// Loads weights from safetensors bytes; every variable must be there
    /// with its shape.
    pub fn load_weights_bytes(&mut self, bytes: &[u8], train_steps: u64) -> Result<(), ModelError> {
        let loaded = candle_core::safetensors::load_buffer(bytes, &self.device)?;
        {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
            for (name, var) in data.iter() {
                let t = loaded
                    .get(name)
                    .ok_or_else(|| ModelError::Config(format!("weights lack {name}")))?;
                if t.shape() != var.shape() {
                    return Err(ModelError::Config(format!(
                        "{name}: shape {:?}, the model needs {:?}",
                        t.shape(),
                        var.shape()
                    )));
                }
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        (self.cell, self.head_w, self.head_b) = inference_cell(&self.varmap)?;
        self.train_steps = train_steps;
        Ok(())
    }
}

/// The fused inference cell and the head, from the current variables.
pub(super) fn inference_cell(varmap: &VarMap) -> Result<(FusedLstm, Vec<f32>, f32), ModelError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
    let get = |name: &str| {
        data.get(name)
            .map(|v| v.as_tensor().detach())
            .ok_or_else(|| ModelError::Config(format!("model has no variable {name}")))
    };
    let cell = FusedLstm::new(
        &get("lstm.weight_ih_l0")?,
        &get("lstm.weight_hh_l0")?,
        &get("lstm.bias_ih_l0")?,
        &get("lstm.bias_hh_l0")?,
    )?;
    let head_w = get("head.weight")?.flatten_all()?.to_vec1::<f32>()?;
    let head_b = get("head.bias")?
        .flatten_all()?
        .to_vec1::<f32>()?
        .first()
        .copied()
        .unwrap_or(0.0);
    Ok((cell, head_w, head_b))
}

/// Re-draws the LSTM weight matrices from `rng` (uniform ±1/√hidden, as
/// PyTorch does), because candle's CPU generator cannot be seeded. Biases
/// and the zero-initialised head are left alone.
pub(crate) fn seed_weights(
    varmap: &VarMap,
    hidden: usize,
    rng: &mut StdRng,
) -> Result<(), ModelError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
    let mut names: Vec<&String> = data
        .keys()
        .filter(|k| k.starts_with("lstm.weight"))
        .collect();
    names.sort();
    let k = 1.0 / (hidden as f32).sqrt();
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let vals: Vec<f32> = (0..n).map(|_| rng.random_range(-k..k)).collect();
        var.set(&Tensor::from_vec(vals, var.shape(), var.device())?)?;
    }
    Ok(())
}
