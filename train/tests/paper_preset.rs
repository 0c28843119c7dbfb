//! The paper's model (Inception-ResNet-v1 at 235 px, 20-conv decoder) runs forward and backward
//! on the CPU at batch 2.

use d2ae_train::{D2ae, ModelConfig, ParamGroup};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn paper_preset_forward_backward_at_batch_2() {
    let cfg = ModelConfig::paper();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, 10).unwrap();
    tch::manual_seed(0);
    let images = Tensor::rand([2, 3, 235, 235], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let labels = Tensor::from_slice(&[3i64, 7]);
    let out = model.forward_t(&images, true).unwrap();
    assert_eq!(out.f_t.size(), [2, 256]);
    assert_eq!(out.f_p.as_ref().unwrap().size(), [2, 256]);
    assert_eq!(out.logits_t.size(), [2, 10]);
    assert_eq!(out.recon.as_ref().unwrap().size(), [2, 3, 235, 235]);
    assert_eq!(out.recon_aug.as_ref().unwrap().size(), [2, 3, 235, 235]);
    let terms = model.losses(&out, &labels, &images).unwrap();
    let v = terms.values();
    assert!(v.total.is_finite() && v.total > 0.0, "{v:?}");
    terms.total.backward();
    for (g, params) in model.param_groups(&vs) {
        let mag: f64 = params
            .iter()
            .map(|(_, p)| p.grad().abs().sum(Kind::Double).double_value(&[]))
            .sum();
        assert!(mag.is_finite() && mag > 0.0, "{g:?}: {mag}");
    }
    // The encoder ends in a 6×6×1792 map; encode gives the eval-mode features.
    let (f_t, f_p) = tch::no_grad(|| model.encode(&images)).unwrap();
    assert_eq!(f_t.size(), [2, 256]);
    assert_eq!(f_p.unwrap().size(), [2, 256]);
    let groups: Vec<ParamGroup> = model.param_groups(&vs).iter().map(|(g, _)| *g).collect();
    assert_eq!(groups, ParamGroup::ALL.to_vec());
}
