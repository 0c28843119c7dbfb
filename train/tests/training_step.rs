//! Optimizer steps on the model: the loss moves, and a few steps fit a tiny batch.

mod common;

use d2ae_train::{Ablation, D2ae, ParamGroup};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

/// libtorch's random generator is global: tests of this file that draw from it run one at a time,
/// so a seed gives the same draws whatever the test threads do.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn one_sgd_step_changes_the_loss_and_every_group() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    // Without augmentation noise and with batch statistics, the forward is deterministic, so
    // the loss changes only because the weights did.
    let cfg = common::tiny_config().with_ablation(Ablation::NoStatAug);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, 4).unwrap();
    let (images, labels) = common::batch(8, 16, 4, 11);
    let loss = |m: &D2ae| {
        let out = m.forward_t(&images, true).unwrap();
        m.losses(&out, &labels, &images).unwrap()
    };
    let before: Vec<(ParamGroup, Tensor)> = model
        .param_groups(&vs)
        .into_iter()
        .map(|(g, ps)| (g, ps[0].1.copy()))
        .collect();
    let first = loss(&model);
    let again = loss(&model).values().total;
    assert_eq!(first.values().total, again, "the forward is deterministic");

    let mut opt = nn::Sgd::default().build(&vs, 0.05).unwrap();
    opt.backward_step(&first.total);
    let after = loss(&model).values().total;
    assert!(
        after < first.values().total,
        "one step should lower the loss: {} → {after}",
        first.values().total
    );
    for ((g, old), (_, now)) in before.iter().zip(model.param_groups(&vs)) {
        assert!(!old.equal(&now[0].1), "{g:?} did not change");
    }
}

#[test]
fn eighty_steps_fit_a_tiny_batch() {
    // Seeded: initialisation and the statistical-augmentation noise are random, and an unlucky draw
    // once left L_T at 0.51 of its start.
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    let cfg = common::tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, 4).unwrap();
    let (images, labels) = common::structured_batch(8, 16, 4);
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let mut first = None;
    let mut last = None;
    for _ in 0..80 {
        let out = model.forward_t(&images, true).unwrap();
        let terms = model.losses(&out, &labels, &images).unwrap();
        let v = terms.values();
        first.get_or_insert(v);
        last = Some(v);
        opt.backward_step(&terms.total);
    }
    let (first, last) = (first.unwrap(), last.unwrap());
    assert!(
        last.l_t < 0.5 * first.l_t,
        "L_T {} → {}",
        first.l_t,
        last.l_t
    );
    let (x0, x1) = (first.l_x.unwrap(), last.l_x.unwrap());
    assert!(x1 < 0.8 * x0, "L_X {x0} → {x1}");
    // The running σ moved away from its initial 1 towards the features' spread.
    let (std_t, std_p) = model.feature_std();
    assert!(!std_t.equal(&std_t.ones_like()));
    assert!(!std_p.unwrap().equal(&std_t.ones_like()));
}

#[test]
fn dispel_pool_changes_only_the_dispelling_branch() {
    use d2ae_train::BranchPool;
    // Building a model draws from the global generator the seeded test above relies on.
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = common::tiny_config();
    cfg.branch.dispel_pool = Some(BranchPool::Flatten);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, 4).unwrap();
    let vars = vs.variables();
    let fc_in = |name: &str| vars[name].size()[1];
    let c = cfg.branch.channels;
    assert_eq!(
        fc_in("branch_t.fc.weight"),
        c,
        "B_T keeps the global average"
    );
    let p_in = fc_in("branch_p.fc.weight");
    assert!(p_in > c && p_in % c == 0, "B_P sees every position: {p_in}");
    let (images, _) = common::batch(2, 16, 4, 3);
    let out = model.forward_t(&images, false).unwrap();
    assert_eq!(out.f_t.size(), out.f_p.as_ref().unwrap().size());

    // Written out and read back, the config still builds this model; without the key it is the
    // shared `pool`, as configs written before it existed.
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(text.contains("\"dispel_pool\":\"flatten\""), "{text}");
    cfg.branch.dispel_pool = None;
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(!text.contains("dispel_pool"), "{text}");
}
