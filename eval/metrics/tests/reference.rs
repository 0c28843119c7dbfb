//! d2ae-metrics against independent implementations run with the venv's Python:
//! `scripts/reference/lfw_protocol.py` (numpy + scikit-learn) for the LFW protocol, and
//! scikit-learn's `LinearSVC` (liblinear) for the SVM.

use std::path::Path;
use std::process::Command;

use d2ae_metrics::svm::{LinearSvm, Loss, SvmParams};
use d2ae_metrics::verify::{lfw_protocol, VerificationReport, PAPER_FPR};
use d2ae_metrics::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde_json::Value;

/// 10 folds × (300 same + 300 different) synthetic scores, like LFW View 2. With `decimals`,
/// scores are rounded so that many pairs tie.
fn synthetic_pairs(seed: u64, decimals: Option<i32>) -> (Vec<f64>, Vec<bool>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut s, mut y, mut f) = (vec![], vec![], vec![]);
    for fold in 0..10 {
        for same in [true, false] {
            for _ in 0..300 {
                let mean = if same { 0.55 } else { 0.15 };
                let mut v = mean + 0.15 * rng.sample::<f64, _>(StandardNormal);
                if let Some(d) = decimals {
                    let k = 10f64.powi(d);
                    v = (v * k).round() / k;
                }
                s.push(v);
                y.push(same);
                f.push(fold);
            }
        }
    }
    (s, y, f)
}

fn run_reference(dir: &Path, scores: &[f64], same: &[bool], fold: &[usize]) -> Value {
    let csv = dir.join("scores.csv");
    let mut text = String::from("score,same,fold\n");
    for i in 0..scores.len() {
        // `{:?}` writes the shortest representation that parses back to the same f64.
        text += &format!("{:?},{},{}\n", scores[i], u8::from(same[i]), fold[i]);
    }
    std::fs::write(&csv, text).unwrap();
    let script = d2ae_tests::project_root().join("scripts/reference/lfw_protocol.py");
    let out = d2ae_tests::run_ok(
        Command::new(d2ae_tests::python())
            .arg(&script)
            .arg(&csv)
            .args(["--fpr", "0.001", "--fpr", "0.01"]),
    );
    serde_json::from_slice(&out.stdout).expect("reference prints JSON")
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        v => v.as_f64().expect("number"),
    }
}

fn assert_same_as_reference(ours: &VerificationReport, reference: &Value) {
    let folds = reference["folds"].as_array().unwrap();
    assert_eq!(ours.folds.len(), folds.len());
    for (o, r) in ours.folds.iter().zip(folds) {
        // Identical accuracy: the same number of pairs right in every fold.
        let right = |acc: f64, n: usize| (acc * n as f64).round() as usize;
        assert_eq!(o.pairs, r["pairs"].as_u64().unwrap() as usize);
        assert_eq!(
            right(o.accuracy, o.pairs),
            right(as_f64(&r["accuracy"]), o.pairs),
            "fold {}: ours {} reference {}",
            o.fold,
            o.accuracy,
            r["accuracy"]
        );
        // (numpy divides differently, so the f64s may differ in the last bit; the counts may not.)
        assert_eq!(o.threshold, as_f64(&r["threshold"]), "fold {}", o.fold);
    }
    assert!((ours.accuracy_mean - as_f64(&reference["accuracy_mean"])).abs() < 1e-12);
    assert!((ours.accuracy_std - as_f64(&reference["accuracy_std"])).abs() < 1e-12);
    for t in &ours.tpr_at_fpr {
        let r = &reference["tpr_at_fpr"][format!("{:?}", t.fpr_target)];
        assert_eq!(t.tpr, as_f64(&r["tpr"]), "TPR@FPR={}", t.fpr_target);
        assert_eq!(t.fpr, as_f64(&r["fpr"]), "FPR reached at {}", t.fpr_target);
        assert_eq!(t.threshold, as_f64(&r["threshold"]));
    }
    assert!(
        (ours.auc - as_f64(&reference["auc"])).abs() < 1e-12,
        "AUC {} vs {}",
        ours.auc,
        reference["auc"]
    );
    assert!(
        (ours.eer - as_f64(&reference["eer"])).abs() < 1e-12,
        "EER {} vs {}",
        ours.eer,
        reference["eer"]
    );
}

#[test]
fn lfw_protocol_matches_the_numpy_sklearn_reference_on_6000_pairs() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, decimals) in [(1, None), (2, Some(2))] {
        let (s, y, f) = synthetic_pairs(seed, decimals);
        assert_eq!(s.len(), 6000);
        let ours = lfw_protocol(&s, &y, &f, &[PAPER_FPR, 0.01]).unwrap();
        let reference = run_reference(dir.path(), &s, &y, &f);
        assert_same_as_reference(&ours, &reference);
        // The scores overlap, so this is not a trivial 100%: d' = 0.4/0.15 gives about 91%.
        assert!(
            (0.85..0.97).contains(&ours.accuracy_mean),
            "{}",
            ours.accuracy_mean
        );
        assert!(ours.tpr_at_fpr[0].tpr > 0.0 && ours.tpr_at_fpr[0].tpr < 0.9);
    }
}

#[test]
fn lfw_protocol_matches_the_reference_with_a_degenerate_fold() {
    // Fold 0's training data has only same pairs → threshold −∞ in both.
    let s = [0.1, 0.2, 0.9, 0.3, 0.4, 0.8];
    let y = [true, true, false, true, true, false];
    let f = [1, 1, 0, 0, 0, 0];
    let dir = tempfile::tempdir().unwrap();
    let ours = lfw_protocol(&s, &y, &f, &[PAPER_FPR, 0.01]).unwrap();
    assert_same_as_reference(&ours, &run_reference(dir.path(), &s, &y, &f));
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn svm_matches_sklearn_linearsvc() {
    let (d, n_train, n_test) = (64, 3000, 2000);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w_true: Vec<f32> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
    let mut gen = |n: usize| {
        let x: Vec<f32> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
        let y: Vec<bool> = x
            .chunks(d)
            .map(|r| {
                let s: f32 = r.iter().zip(&w_true).map(|(a, b)| a * b).sum::<f32>() + 1.0;
                s + 4.0 * rng.sample::<f32, _>(StandardNormal) > 0.0
            })
            .collect();
        (x, y)
    };
    let (xtr, ytr) = gen(n_train);
    let (xte, yte) = gen(n_test);
    let dir = tempfile::tempdir().unwrap();
    write_f32(&dir.path().join("xtr.bin"), &xtr);
    write_f32(&dir.path().join("xte.bin"), &xte);
    let labels = |y: &[bool]| y.iter().map(|&v| u8::from(v)).collect::<Vec<u8>>();
    std::fs::write(dir.path().join("ytr.bin"), labels(&ytr)).unwrap();
    std::fs::write(dir.path().join("yte.bin"), labels(&yte)).unwrap();

    let params = SvmParams {
        loss: Loss::SquaredHinge,
        c: 0.1,
        tol: 1e-4,
        max_epochs: 10_000,
        ..SvmParams::default()
    };
    let svm = LinearSvm::train(Matrix::new(&xtr, d).unwrap(), &ytr, &params).unwrap();
    assert!(svm.converged);
    let ours = svm.accuracy(Matrix::new(&xte, d).unwrap(), &yte);

    let code = r#"
import sys, json, numpy as np
from sklearn.svm import LinearSVC
d = int(sys.argv[2]); p = sys.argv[1]
xtr = np.fromfile(p + "/xtr.bin", dtype="<f4").reshape(-1, d).astype(np.float64)
xte = np.fromfile(p + "/xte.bin", dtype="<f4").reshape(-1, d).astype(np.float64)
ytr = np.fromfile(p + "/ytr.bin", dtype=np.uint8); yte = np.fromfile(p + "/yte.bin", dtype=np.uint8)
m = LinearSVC(C=0.1, loss="squared_hinge", dual=True, tol=1e-4, max_iter=10000, random_state=0).fit(xtr, ytr)
print(json.dumps({"acc": float(m.score(xte, yte)), "w": m.coef_[0].tolist(), "b": float(m.intercept_[0])}))
"#;
    let out = d2ae_tests::run_python(code, &[dir.path().to_str().unwrap(), &d.to_string()]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let theirs = r["acc"].as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= 0.01,
        "ours {ours} sklearn {theirs}"
    );
    // Same objective, both converged: the same hyperplane.
    let w: Vec<f64> = r["w"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let dotp: f64 = w.iter().zip(&svm.w).map(|(a, &b)| a * f64::from(b)).sum();
    let na: f64 = w.iter().map(|a| a * a).sum::<f64>().sqrt();
    let nb: f64 = svm
        .w
        .iter()
        .map(|&b| f64::from(b) * f64::from(b))
        .sum::<f64>()
        .sqrt();
    assert!(
        dotp / (na * nb) > 0.999,
        "cosine of the weight vectors {}",
        dotp / (na * nb)
    );
    assert!(
        (f64::from(svm.b) - r["b"].as_f64().unwrap()).abs() < 0.02 * na,
        "bias {} vs {}",
        svm.b,
        r["b"]
    );
    // The labels are noisy: well above chance, well below perfect.
    assert!((0.6..0.9).contains(&ours), "{ours}");
}
