//! The heart of D²AE: each loss term sends gradients to exactly the parameter groups the paper
//! names (sections 3.1–3.5), and one backward pass of the eq. 6 total trains the adversary W_P by
//! λ_P·L_T^adv alone.

mod common;

use std::collections::BTreeMap;

use d2ae_train::{Ablation, D2ae, ModelConfig, ParamGroup};
use tch::{nn, Device, Tensor};

use ParamGroup::*;

/// Gradients of `term` with respect to every trainable variable, by group. An unused variable's
/// gradient is undefined; it is reported as an exact zero.
fn grads(
    term: &Tensor,
    groups: &[(ParamGroup, Vec<(String, Tensor)>)],
) -> BTreeMap<ParamGroup, Vec<Tensor>> {
    let params: Vec<&Tensor> = groups
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|(_, t)| t))
        .collect();
    let mut gs = Tensor::run_backward(&[term], &params, true, false).into_iter();
    groups
        .iter()
        .map(|(g, ps)| {
            let v = ps
                .iter()
                .map(|(_, p)| {
                    let grad = gs.next().expect("one grad per param");
                    if grad.defined() {
                        grad
                    } else {
                        p.zeros_like()
                    }
                })
                .collect();
            (*g, v)
        })
        .collect()
}

/// Sum of |grad| per group.
fn magnitudes(g: &BTreeMap<ParamGroup, Vec<Tensor>>) -> BTreeMap<ParamGroup, f64> {
    g.iter()
        .map(|(k, ts)| {
            let m = ts
                .iter()
                .map(|t| t.abs().sum(tch::Kind::Double).double_value(&[]))
                .sum();
            (*k, m)
        })
        .collect()
}

fn assert_routing(name: &str, mags: &BTreeMap<ParamGroup, f64>, reaches: &[ParamGroup]) {
    for (g, m) in mags {
        if reaches.contains(g) {
            assert!(
                m.is_finite() && *m > 0.0,
                "{name}: {g:?} should get a gradient: {mags:?}"
            );
        } else {
            assert_eq!(*m, 0.0, "{name}: {g:?} must get exactly zero: {mags:?}");
        }
    }
}

#[test]
fn each_loss_term_reaches_exactly_its_parameter_groups() {
    let cfg = common::tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, 5).unwrap();
    let groups = model.param_groups(&vs);
    assert_eq!(
        groups.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        ParamGroup::ALL.to_vec()
    );
    let (images, labels) = common::batch(6, 16, 5, 3);
    let out = model.forward_t(&images, true).unwrap();
    let terms = model.losses(&out, &labels, &images).unwrap();

    let l_adv = terms.l_adv.as_ref().unwrap();
    let cases: [(&str, &Tensor, &[ParamGroup]); 5] = [
        ("L_T", &terms.l_t, &[Encoder, BranchT, ClassifierT]),
        ("L_T^adv", l_adv, &[ClassifierP]),
        ("L_H", terms.l_h.as_ref().unwrap(), &[Encoder, BranchP]),
        (
            "L_X",
            terms.l_x.as_ref().unwrap(),
            &[Encoder, BranchT, BranchP, Decoder],
        ),
        (
            "L~_X",
            terms.l_x_aug.as_ref().unwrap(),
            &[Encoder, BranchT, BranchP, Decoder],
        ),
    ];
    for (name, term, reaches) in cases {
        assert_routing(name, &magnitudes(&grads(term, &groups)), reaches);
    }

    // The total: every group learns, and W_P's gradient is exactly λ_P·∇L_T^adv (L_H and the
    // reconstruction add nothing to it).
    let total = grads(&terms.total, &groups);
    assert_routing("total", &magnitudes(&total), &ParamGroup::ALL);
    let adv = grads(&(l_adv * cfg.lambda_p), &groups);
    for (a, b) in total[&ClassifierP].iter().zip(&adv[&ClassifierP]) {
        let diff = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]);
        assert!(
            scale > 0.0 && diff <= 1e-6 * scale,
            "diff {diff} vs scale {scale}"
        );
    }
}

#[test]
fn ablations_remove_exactly_their_gradient_paths() {
    let (images, labels) = common::batch(6, 16, 5, 4);
    let total_mags = |ablation: Ablation| {
        let cfg = common::tiny_config().with_ablation(ablation);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = D2ae::new(&vs.root(), &cfg, 5).unwrap();
        let out = model.forward_t(&images, true).unwrap();
        let terms = model.losses(&out, &labels, &images).unwrap();
        let groups = model.param_groups(&vs);
        (magnitudes(&grads(&terms.total, &groups)), terms)
    };

    // Without L_T^adv, L_H alone trains the identity classifier W_P (section 5.2) as well as
    // B_P: W_P's whole gradient is λ_P·∇L_H.
    let (mags, terms) = total_mags(Ablation::NoAdv);
    assert!(terms.l_adv.is_none() && terms.l_h.is_some());
    assert!(mags[&ClassifierP] > 0.0);
    assert!(mags[&BranchP] > 0.0);
    {
        let cfg = common::tiny_config().with_ablation(Ablation::NoAdv);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = D2ae::new(&vs.root(), &cfg, 5).unwrap();
        let out = model.forward_t(&images, true).unwrap();
        let terms = model.losses(&out, &labels, &images).unwrap();
        let groups = model.param_groups(&vs);
        let total = grads(&terms.total, &groups);
        let lh = grads(&(terms.l_h.as_ref().unwrap() * cfg.lambda_p), &groups);
        for (a, b) in total[&ClassifierP].iter().zip(&lh[&ClassifierP]) {
            let diff = (a - b).abs().max().double_value(&[]);
            let scale = b.abs().max().double_value(&[]);
            assert!(scale > 0.0 && diff <= 1e-6 * scale, "{diff} vs {scale}");
        }
    }

    // Without L_H, B_P still learns from the reconstruction.
    let (mags, terms) = total_mags(Ablation::NoLh);
    assert!(terms.l_h.is_none() && terms.l_adv.is_some());
    assert!(mags[&BranchP] > 0.0 && mags[&ClassifierP] > 0.0);

    // Without statistical augmentation there is no L̃_X and no augmented features.
    let (_, terms) = total_mags(Ablation::NoStatAug);
    assert!(terms.l_x_aug.is_none() && terms.l_x.is_some());

    // The baseline has only E, B_T and W_T, trained by L_T.
    let (mags, terms) = total_mags(Ablation::Baseline);
    assert_eq!(
        mags.keys().copied().collect::<Vec<_>>(),
        vec![Encoder, BranchT, ClassifierT]
    );
    assert!(mags.values().all(|m| *m > 0.0));
    assert!(terms.l_adv.is_none() && terms.l_h.is_none() && terms.l_x.is_none());
    let want = terms.l_t.double_value(&[]);
    assert!((terms.total.double_value(&[]) - want).abs() < 1e-6);
}

#[test]
fn total_is_the_weighted_sum_of_eq_6() {
    let cfg = common::tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, 5).unwrap();
    let (images, labels) = common::batch(4, 16, 5, 5);
    let out = model.forward_t(&images, true).unwrap();
    let v = model.losses(&out, &labels, &images).unwrap().values();
    let want = cfg.lambda_t * v.l_t
        + cfg.lambda_p * (v.l_adv.unwrap() + v.l_h.unwrap())
        + cfg.lambda_x() * (v.l_x.unwrap() + v.l_x_aug.unwrap());
    assert!((v.total - want).abs() < 1e-5 * want, "{v:?}");
    // L_H is a cross-entropy against uniform: never below log N_ID.
    assert!(v.l_h.unwrap() >= (5f64).ln() - 1e-6);
    // L_X on random images in [-1, 1] is ½·Σ over 3·16·16 values of order 1.
    assert!(v.l_x.unwrap() > 10.0 && v.l_x.unwrap() < 3.0 * 256.0 * 4.0);
    assert!((0.0..=1.0).contains(&v.acc_t) && v.acc_p.is_some());
}

#[test]
fn bad_inputs_are_rejected_with_context() {
    let cfg = common::tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, 5).unwrap();
    let (images, labels) = common::batch(4, 16, 5, 6);
    let wrong_size = Tensor::zeros([4, 3, 20, 20], (tch::Kind::Float, Device::Cpu));
    let err = model.forward_t(&wrong_size, true).unwrap_err().to_string();
    assert!(err.contains("20×20") && err.contains("16×16"), "{err}");
    let out = model.forward_t(&images, true).unwrap();
    let err = model
        .losses(&out, &(labels + 5), &images)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside 0..5"), "{err}");
    let err = D2ae::new(&vs.root(), &ModelConfig::small(), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_identities"), "{err}");
}

/// Which features each identity classifier is applied to, for every `classifier_noise` setting:
/// the logits must equal the classifier applied to exactly that feature (clean or augmented).
#[test]
fn classifier_noise_decides_which_features_the_classifiers_see() {
    use d2ae_train::ClassifierNoise;
    let (images, _) = common::batch(6, 16, 5, 6);
    for noise in [
        ClassifierNoise::All,
        ClassifierNoise::Identity,
        ClassifierNoise::None,
    ] {
        let mut cfg = common::tiny_config();
        cfg.stat_aug.classifier_noise = noise;
        let vs = nn::VarStore::new(Device::Cpu);
        let model = D2ae::new(&vs.root(), &cfg, 5).unwrap();
        let vars = vs.variables();
        let linear = |group: &str, f: &Tensor| {
            f.linear(
                &vars[&format!("{group}.weight")],
                Some(&vars[&format!("{group}.bias")]),
            )
        };
        let out = model.forward_t(&images, true).unwrap();
        let same = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-5;
        let (f_t_aug, f_p_aug) = (out.f_t_aug.as_ref().unwrap(), out.f_p_aug.as_ref().unwrap());
        let f_p = out.f_p.as_ref().unwrap();
        let (t_noisy, p_noisy) = match noise {
            ClassifierNoise::All => (true, true),
            ClassifierNoise::Identity => (true, false),
            ClassifierNoise::None => (false, false),
        };
        let want_t = linear("w_t", if t_noisy { f_t_aug } else { &out.f_t });
        let want_p = linear("w_p", if p_noisy { f_p_aug } else { f_p });
        assert!(same(&out.logits_t, &want_t), "{noise:?}: W_T input");
        for logits in [&out.logits_p, &out.logits_p_fixed] {
            assert!(
                same(logits.as_ref().unwrap(), &want_p),
                "{noise:?}: W_P input"
            );
        }
        // The noise is real: the other choice would give different logits.
        let other_p = linear("w_p", if p_noisy { f_p } else { f_p_aug });
        assert!(!same(out.logits_p.as_ref().unwrap(), &other_p), "{noise:?}");
    }
}
