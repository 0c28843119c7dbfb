//! Benchmarks of the attribute SVMs and LFW verification, side by side with scikit-learn in the
//! same run: `cargo bench -p d2ae-metrics --bench metrics`.
//!
//! - SVM: 40 attributes × 5,000 training samples × 512 dims (CelebA-sized features), one SVM per
//!   attribute at a fixed C, against `sklearn.svm.LinearSVC` (liblinear, the same dual solver) with
//!   the same loss, C and tolerance. Ours is timed on one thread (like liblinear) and on all.
//! - Verification: cosine scores of 6,000 pairs of 512-D features and the full LFW protocol,
//!   against numpy + `scripts/reference/lfw_protocol.py`.

use std::process::Command;
use std::time::Instant;

use d2ae_metrics::svm::{attribute_svms, AttributeConfig, AttributeSplit, SvmParams};
use d2ae_metrics::verify::{cosine_scores, lfw_protocol, PAPER_FPR};
use d2ae_metrics::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

const D: usize = 512;
const N_TRAIN: usize = 5000;
const N_TEST: usize = 2000;
const ATTRS: usize = 40;
const C: f64 = 0.01;
const TOL: f64 = 0.1;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Features: Gaussian. Attribute a: sign of a random direction plus noise, with an offset so
    // positives are 10–50% (CelebA-like imbalance).
    let dirs: Vec<Vec<f32>> = (0..ATTRS)
        .map(|_| {
            (0..D)
                .map(|_| rng.sample::<f32, _>(StandardNormal) / (D as f32).sqrt())
                .collect()
        })
        .collect();
    let mut make = |n: usize| {
        let x: Vec<f32> = (0..n * D).map(|_| rng.sample(StandardNormal)).collect();
        let labels: Vec<Vec<bool>> = dirs
            .iter()
            .enumerate()
            .map(|(a, w)| {
                let offset = 0.2 + a as f32 * 0.025;
                x.chunks(D)
                    .map(|r| {
                        r.iter().zip(w).map(|(p, q)| p * q).sum::<f32>() - offset
                            + 0.5 * rng.sample::<f32, _>(StandardNormal)
                            > 0.0
                    })
                    .collect()
            })
            .collect();
        (x, labels)
    };
    let (xtr, ytr) = make(N_TRAIN);
    let (xte, yte) = make(N_TEST);
    let names: Vec<String> = (0..ATTRS).map(|a| format!("attr{a}")).collect();
    let train = AttributeSplit {
        features: Matrix::new(&xtr, D).unwrap(),
        labels: &ytr,
    };
    let test = AttributeSplit {
        features: Matrix::new(&xte, D).unwrap(),
        labels: &yte,
    };
    let cfg = AttributeConfig {
        c_grid: vec![C],
        params: SvmParams {
            tol: TOL,
            ..SvmParams::default()
        },
        ..AttributeConfig::default()
    };

    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let t = Instant::now();
    let r1 = one.install(|| attribute_svms(&names, train, None, test, &cfg).unwrap());
    let ours_1 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let rn = attribute_svms(&names, train, None, test, &cfg).unwrap();
    let ours_n = t.elapsed().as_secs_f64();
    let epochs: usize = rn.attributes.iter().map(|a| a.svm.epochs).sum();

    // scikit-learn on the same data.
    let write = |name: &str, v: &[f32]| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.path().join(name), bytes).unwrap();
    };
    write("xtr.bin", &xtr);
    write("xte.bin", &xte);
    let flat = |y: &[Vec<bool>]| {
        y.iter()
            .flatten()
            .map(|&v| u8::from(v))
            .collect::<Vec<u8>>()
    };
    std::fs::write(dir.path().join("ytr.bin"), flat(&ytr)).unwrap();
    std::fs::write(dir.path().join("yte.bin"), flat(&yte)).unwrap();

    // Verification data: 6,000 pairs over 12,000 512-D features, LFW fold layout.
    let n_feat = 12_000;
    let base: Vec<f32> = (0..n_feat * D)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let mut feats = base.clone();
    let mut pairs = Vec::with_capacity(6000);
    let (mut same, mut fold) = (vec![], vec![]);
    for i in 0..6000 {
        let s = (i / 300) % 2 == 0;
        let (a, b) = (2 * i, 2 * i + 1);
        if s {
            // b = a + 8·noise: cosine ≈ 0.12 against 0 ± 0.044 for different pairs, so the
            // pairs are not trivially separable.
            for k in 0..D {
                feats[b * D + k] = feats[a * D + k] + 8.0 * base[b * D + k];
            }
        }
        pairs.push((a, b));
        same.push(s);
        fold.push(i / 600);
    }
    write("feats.bin", &feats);
    let pairs_txt: String = pairs
        .iter()
        .zip(&same)
        .zip(&fold)
        .map(|(((a, b), s), f)| format!("{a},{b},{},{f}\n", u8::from(*s)))
        .collect();
    std::fs::write(dir.path().join("pairs.csv"), pairs_txt).unwrap();

    let reps = 5;
    let t = Instant::now();
    let mut report = None;
    for _ in 0..reps {
        let m = Matrix::new(&feats, D).unwrap();
        let scores = cosine_scores(m, &pairs).unwrap();
        report = Some(lfw_protocol(&scores, &same, &fold, &[PAPER_FPR]).unwrap());
    }
    let ours_verify = t.elapsed().as_secs_f64() / reps as f64;
    let report = report.unwrap();

    let script_dir = d2ae_tests::project_root().join("scripts/reference");
    let code = r#"
import sys, json, time, numpy as np
from sklearn.svm import LinearSVC
p, D, A, C, TOL, ref = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
sys.path.insert(0, ref)
import lfw_protocol
xtr = np.fromfile(p + "/xtr.bin", dtype="<f4").reshape(-1, D).astype(np.float64)
xte = np.fromfile(p + "/xte.bin", dtype="<f4").reshape(-1, D).astype(np.float64)
ytr = np.fromfile(p + "/ytr.bin", dtype=np.uint8).reshape(A, -1)
yte = np.fromfile(p + "/yte.bin", dtype=np.uint8).reshape(A, -1)
t = time.perf_counter(); accs = []
for a in range(A):
    m = LinearSVC(C=C, loss="squared_hinge", dual=True, tol=TOL, max_iter=1000, random_state=0).fit(xtr, ytr[a])
    accs.append(m.score(xte, yte[a]))
svm_s = time.perf_counter() - t
f = np.fromfile(p + "/feats.bin", dtype="<f4").reshape(-1, D)
pr = np.loadtxt(p + "/pairs.csv", delimiter=",", dtype=np.int64)
reps = 5; t = time.perf_counter()
for _ in range(reps):
    a = f[pr[:, 0]].astype(np.float64); b = f[pr[:, 1]].astype(np.float64)
    s = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    r = lfw_protocol.protocol(s, pr[:, 2] == 1, pr[:, 3], [1e-3])
ver_s = (time.perf_counter() - t) / reps
print(json.dumps({"svm_s": svm_s, "svm_acc": float(np.mean(accs)), "verify_s": ver_s, "verify_acc": r["accuracy_mean"], "tpr": r["tpr_at_fpr"]["0.001"]["tpr"]}))
"#;
    let out = Command::new(d2ae_tests::python())
        .arg("-c")
        .arg(code)
        .args([
            dir.path().to_str().unwrap(),
            &D.to_string(),
            &ATTRS.to_string(),
            &C.to_string(),
            &TOL.to_string(),
            script_dir.to_str().unwrap(),
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python JSON");
    let f = |k: &str| py[k].as_f64().unwrap();

    println!(
        "## d2ae-metrics vs scikit-learn ({} cores available)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("| task | implementation | time | quality |");
    println!("|---|---|---:|---|");
    println!(
        "| 40 SVMs, {N_TRAIN}×{D}, C={C}, tol={TOL} | d2ae-metrics, 1 thread | {ours_1:.2} s | mean test acc {:.4} ({epochs} epochs total) |",
        r1.mean_test_accuracy
    );
    println!(
        "| | d2ae-metrics, all threads | {ours_n:.2} s | mean test acc {:.4} |",
        rn.mean_test_accuracy
    );
    println!(
        "| | sklearn LinearSVC (liblinear, 1 thread) | {:.2} s | mean test acc {:.4} |",
        f("svm_s"),
        f("svm_acc")
    );
    println!(
        "| LFW protocol, 6000 pairs × {D}-D (cosine + 10 folds + ROC) | d2ae-metrics | {:.1} ms | acc {:.4}, TPR@1e-3 {:.4} |",
        ours_verify * 1e3,
        report.accuracy_mean,
        report.tpr_at_fpr[0].tpr
    );
    println!(
        "| | numpy + scripts/reference/lfw_protocol.py | {:.1} ms | acc {:.4}, TPR@1e-3 {:.4} |",
        f("verify_s") * 1e3,
        f("verify_acc"),
        f("tpr")
    );
}
