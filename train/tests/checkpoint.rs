//! Weights as safetensors: a round trip in Rust, the file read by Python's `safetensors`, and the
//! PyTorch mirror of the model (scripts/bench/model_reference.py) computing the same outputs and
//! losses from it.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use d2ae_train::checkpoint::{self, CheckpointError, Header};
use d2ae_train::{D2ae, ModelConfig};
use tch::{nn, Device, Kind, Tensor};

/// A tiny model after a few training steps, so batch-norm statistics and the running σ hold
/// values a loader could get wrong.
fn trained_tiny(num_identities: i64) -> (nn::VarStore, D2ae) {
    use tch::nn::OptimizerConfig;
    let cfg = common::tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, num_identities).unwrap();
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let (images, labels) = common::batch(8, 16, num_identities, 21);
    for _ in 0..3 {
        let out = model.forward_t(&images, true).unwrap();
        opt.backward_step(&model.losses(&out, &labels, &images).unwrap().total);
    }
    (vs, model)
}

fn header(model: &D2ae) -> Header {
    Header {
        config: model.config().clone(),
        num_identities: model.num_identities(),
        extra: BTreeMap::from([("step".to_string(), "3".to_string())]),
    }
}

#[test]
fn weights_round_trip_and_mismatches_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (vs, model) = trained_tiny(5);
    checkpoint::save_model(&vs, &header(&model), &path).unwrap();

    assert_eq!(checkpoint::read_header(&path).unwrap(), header(&model));
    let loaded = checkpoint::load_model(path.to_str().unwrap(), None, Device::Cpu).unwrap();
    assert_eq!(
        loaded.meta.step, 3,
        "a model file's step comes from its extra.step"
    );
    let (vs2, model2) = (loaded.vs, loaded.model);
    let (a, b) = (vs.variables(), vs2.variables());
    assert_eq!(a.len(), b.len());
    assert!(a.contains_key("stat_p.running_std") && a.contains_key("decoder.fc_bn.running_var"));
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after the round trip");
    }
    let (images, _) = common::batch(3, 16, 5, 22);
    let (f1, p1) = tch::no_grad(|| model.encode(&images)).unwrap();
    let (f2, p2) = tch::no_grad(|| model2.encode(&images)).unwrap();
    assert!(f1.equal(&f2) && p1.unwrap().equal(&p2.unwrap()));

    // Another config's model refuses the file and says which tensor does not fit.
    let mut other = common::tiny_config();
    other.branch.feature_dim = 7;
    let vs3 = nn::VarStore::new(Device::Cpu);
    D2ae::new(&vs3.root(), &other, 5).unwrap();
    let file = checkpoint::decode("model.safetensors", &std::fs::read(&path).unwrap()).unwrap();
    let err = checkpoint::load_variables(&vs3, &file.model, "model.safetensors").unwrap_err();
    assert!(matches!(err, CheckpointError::Tensor { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("shape"),
        "{msg}"
    );

    let missing = dir.path().join("none.safetensors");
    let err = checkpoint::read_header(&missing).unwrap_err().to_string();
    assert!(err.contains("none.safetensors"), "{err}");
    std::fs::write(&missing, b"not safetensors").unwrap();
    let err = checkpoint::read_header(&missing).unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn python_safetensors_reads_every_name_and_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (vs, model) = trained_tiny(5);
    checkpoint::save_model(&vs, &header(&model), &path).unwrap();
    let code = r#"
import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], framework="numpy") as f:
    shapes = {k: list(f.get_tensor(k).shape) for k in f.keys()}
    sums = {k: float(f.get_tensor(k).astype("float64").sum()) for k in f.keys()}
    print(json.dumps({"shapes": shapes, "sums": sums, "meta": f.metadata()}))
"#;
    let out = d2ae_tests::run_python(code, &[path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shapes = v["shapes"].as_object().unwrap();
    let vars = vs.variables();
    assert_eq!(shapes.len(), vars.len());
    for (name, t) in &vars {
        let want: Vec<i64> = t.size();
        let got: Vec<i64> = shapes[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} missing in Python"))
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(got, want, "{name}");
        let sum = t.sum(Kind::Double).double_value(&[]);
        let py = v["sums"][name].as_f64().unwrap();
        assert!(
            (sum - py).abs() <= 1e-9 * sum.abs().max(1.0),
            "{name}: {sum} vs {py}"
        );
    }
    assert_eq!(shapes["w_t.weight"], serde_json::json!([5, 6]));
    assert_eq!(shapes["stat_t.running_std"], serde_json::json!([6]));
    let meta = &v["meta"];
    assert_eq!(meta["format"], checkpoint::FORMAT);
    assert_eq!(meta["num_identities"], "5");
    assert_eq!(meta["extra.step"], "3");
    let cfg: ModelConfig = serde_json::from_str(meta["config"].as_str().unwrap()).unwrap();
    assert_eq!(&cfg, model.config());
}

#[test]
fn pytorch_reference_model_computes_the_same_forward_and_losses() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    let batch = dir.path().join("batch.safetensors");
    let outputs = dir.path().join("out.safetensors");
    let (vs, model) = trained_tiny(5);
    checkpoint::save_model(&vs, &header(&model), &weights).unwrap();
    let (images, labels) = common::batch(4, 16, 5, 23);
    Tensor::write_safetensors(&[("images", &images), ("labels", &labels)], &batch).unwrap();

    let script = d2ae_tests::project_root().join("scripts/bench/model_reference.py");
    d2ae_tests::run_ok(
        Command::new(d2ae_tests::python())
            .arg(&script)
            .arg("check")
            .args(["--weights", weights.to_str().unwrap()])
            .args(["--batch", batch.to_str().unwrap()])
            .args(["--out", outputs.to_str().unwrap()]),
    );
    let py: BTreeMap<String, Tensor> = Tensor::read_safetensors(&outputs)
        .unwrap()
        .into_iter()
        .collect();

    let (out, terms) = tch::no_grad(|| {
        let out = model.forward_t(&images, false).unwrap();
        let terms = model.losses(&out, &labels, &images).unwrap();
        (out, terms)
    });
    let close = |name: &str, ours: &Tensor| {
        let theirs = &py[name];
        assert_eq!(ours.size(), theirs.size(), "{name}");
        let diff = (ours - theirs).abs().max().double_value(&[]);
        let scale = theirs.abs().max().double_value(&[]).max(1e-3);
        assert!(
            diff <= 1e-4 * scale,
            "{name}: max diff {diff} (scale {scale})"
        );
    };
    close("f_t", &out.f_t);
    close("f_p", out.f_p.as_ref().unwrap());
    close("logits_t", &out.logits_t);
    close("logits_p", out.logits_p.as_ref().unwrap());
    close("logits_p_fixed", out.logits_p_fixed.as_ref().unwrap());
    close("recon", out.recon.as_ref().unwrap());
    close("l_t", &terms.l_t.reshape([1]));
    close("l_adv", &terms.l_adv.as_ref().unwrap().reshape([1]));
    close("l_h", &terms.l_h.as_ref().unwrap().reshape([1]));
    close("l_x", &terms.l_x.as_ref().unwrap().reshape([1]));
    close("total", &terms.total.reshape([1]));
}
