//! The data-parallel math: 2 ranks with batch B/2 each, gradients averaged by `GradSync`, take the
//! same SGD steps as 1 process with batch B. Ranks start from different seeds, so this also checks
//! that `broadcast_parameters` makes them start from rank 0's weights.

mod dist_support;

use std::sync::Mutex;

use d2ae_train::dist::{broadcast_parameters, Collective, GradSync, DEFAULT_BUCKET_BYTES};
use dist_support::{on_ranks, quick};
use tch::nn::{self, Module, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 16;
const STEPS: i64 = 6;

/// `tch::manual_seed` is process-global; threads build their models one at a time.
static SEEDING: Mutex<()> = Mutex::new(());

fn model(seed: i64) -> (VarStore, impl Module) {
    let _guard = SEEDING.lock().unwrap();
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "l1", 6, 12, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&root / "l2", 12, 3, Default::default()));
    (vs, net)
}

/// Step `step`'s batch: rows `rows` of a deterministic dataset.
fn batch(step: i64, rows: std::ops::Range<i64>) -> (Tensor, Tensor) {
    let idx = Tensor::arange_start(rows.start, rows.end, (Kind::Float, Device::Cpu)).unsqueeze(1);
    let cols = Tensor::arange(6, (Kind::Float, Device::Cpu)).unsqueeze(0);
    let x = ((&idx * 0.7 + &cols * 1.3 + step as f64 * 0.11).sin()) * 2.0;
    let y = Tensor::stack(
        &[
            x.sum_dim_intlist(1, false, Kind::Float).sin(),
            x.narrow(1, 0, 2).prod_dim_int(1, false, Kind::Float).tanh(),
            (x.narrow(1, 3, 3).mean_dim(1, false, Kind::Float) * 3.0).cos(),
        ],
        1,
    );
    (x, y)
}

fn params(vs: &VarStore) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Train `STEPS` SGD steps on rows `rows` of each batch, averaging gradients through `comm` if any.
fn train(
    seed: i64,
    rows: std::ops::Range<i64>,
    mut comm: Option<&mut dyn Collective>,
) -> Vec<(String, Vec<f32>)> {
    let (vs, net) = model(seed);
    if let Some(c) = comm.as_deref_mut() {
        broadcast_parameters(&vs, c).unwrap();
    }
    let sync = GradSync::new(&vs, DEFAULT_BUCKET_BYTES).unwrap();
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.05)
    .unwrap();
    for step in 0..STEPS {
        let (x, y) = batch(step, rows.clone());
        let loss = (net.forward(&x) - y).square().mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        if let Some(c) = comm.as_deref_mut() {
            sync.sync(c).unwrap();
        }
        opt.step();
    }
    params(&vs)
}

fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|((na, va), (nb, vb))| {
            assert_eq!(na, nb);
            va.iter().zip(vb).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn two_ranks_with_half_batches_match_one_rank_with_the_full_batch() {
    let reference = train(100, 0..BATCH, None);
    let initial = params(&model(100).0);
    let ranks = on_ranks(2, quick(), |rank, comm| {
        let half = BATCH / 2;
        let rows = rank as i64 * half..(rank as i64 + 1) * half;
        // Different seeds: only the broadcast makes rank 1 start from rank 0's weights.
        train(100 + rank as i64, rows, Some(comm as &mut dyn Collective))
    });
    assert_eq!(ranks[0], ranks[1], "replicas must stay bit-identical");
    let diff = max_diff(&ranks[0], &reference);
    assert!(diff < 1e-5, "2×B/2 vs 1×B differ by {diff}");
    // The comparison has teeth: training moved the weights, and half a batch alone goes elsewhere.
    assert!(max_diff(&reference, &initial) > 1e-2);
    let alone = train(100, 0..BATCH / 2, None);
    assert!(max_diff(&alone, &reference) > 1e-3);
}
