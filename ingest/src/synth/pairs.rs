//! Verification pairs over the held-out identities, in LFW View 2's shape.
//!
//! As in LFW, the folds are identity-disjoint: the held-out identities are dealt into `folds`
//! groups and every pair of a fold, matched or mismatched, stays inside its group. A threshold
//! chosen on nine folds is then tested on people it has never seen.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::Rng;

use super::factors::stream;

/// One held-out identity: its id and its image files in file order.
#[derive(Debug, Clone)]
pub struct HeldOutIdentity {
    pub id: u32,
    /// File numbers (0-based) of its images, ascending. Image `i` (1-based) of the identity in
    /// `pairs.txt` is `files[i - 1]`.
    pub files: Vec<usize>,
}

/// A pair of images: (identity id, 1-based image number within that identity) twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pair {
    pub left: (u32, u32),
    pub right: (u32, u32),
}

/// One fold: `k` matched pairs, then `k` mismatched pairs.
#[derive(Debug, Clone, Default)]
pub struct Fold {
    pub matched: Vec<Pair>,
    pub mismatched: Vec<Pair>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PairsError {
    #[error(
        "{folds} identity-disjoint folds need at least {} held-out identities with 2 images each, \
         but there are {held_out}; lower --folds or raise --held-out-identities",
        2 * folds
    )]
    TooFewIdentities { folds: usize, held_out: usize },
    #[error(
        "fold {fold} can form only {available} distinct {kind} pairs, fewer than --pairs-per-fold \
         {wanted}; lower --pairs-per-fold or raise --held-out-identities / --images-per-identity"
    )]
    TooFewPairs {
        fold: usize,
        kind: &'static str,
        available: u64,
        wanted: usize,
    },
}

/// Draw `per_fold` matched and `per_fold` mismatched pairs for each of `folds` folds, without
/// repeats. Pairs within each half of a fold are sorted, as in LFW's file. No folds, no pairs.
pub fn make_folds(
    seed: u64,
    identities: &[HeldOutIdentity],
    folds: usize,
    per_fold: usize,
) -> Result<Vec<Fold>, PairsError> {
    let usable: Vec<&HeldOutIdentity> = identities.iter().filter(|i| i.files.len() >= 2).collect();
    if folds == 0 {
        return Ok(Vec::new());
    }
    if usable.len() < 2 * folds {
        return Err(PairsError::TooFewIdentities {
            folds,
            held_out: usable.len(),
        });
    }
    let mut rng = stream(seed, "pairs", 0);
    let mut order = usable;
    order.shuffle(&mut rng);
    let mut out = Vec::with_capacity(folds);
    for fold in 0..folds {
        let group: Vec<&HeldOutIdentity> =
            order.iter().skip(fold).step_by(folds).copied().collect();
        let matched = matched_pairs(&mut rng, &group, per_fold).map_err(|available| {
            PairsError::TooFewPairs {
                fold,
                kind: "matched",
                available,
                wanted: per_fold,
            }
        })?;
        let mismatched = mismatched_pairs(&mut rng, &group, per_fold).map_err(|available| {
            PairsError::TooFewPairs {
                fold,
                kind: "mismatched",
                available,
                wanted: per_fold,
            }
        })?;
        out.push(Fold {
            matched,
            mismatched,
        });
    }
    Ok(out)
}

/// All same-identity pairs of the group, then a random `k` of them; `Err(available)` if too few.
fn matched_pairs(
    rng: &mut impl Rng,
    group: &[&HeldOutIdentity],
    k: usize,
) -> Result<Vec<Pair>, u64> {
    let mut all = Vec::new();
    for ident in group {
        let n = ident.files.len() as u32;
        for i in 1..=n {
            for j in i + 1..=n {
                all.push(Pair {
                    left: (ident.id, i),
                    right: (ident.id, j),
                });
            }
        }
    }
    if all.len() < k {
        return Err(all.len() as u64);
    }
    let (chosen, _) = all.partial_shuffle(rng, k);
    let mut chosen = chosen.to_vec();
    chosen.sort();
    Ok(chosen)
}

/// `k` distinct pairs of images of two different identities of the group, smaller id first.
fn mismatched_pairs(
    rng: &mut impl Rng,
    group: &[&HeldOutIdentity],
    k: usize,
) -> Result<Vec<Pair>, u64> {
    let sizes: Vec<u64> = group.iter().map(|g| g.files.len() as u64).collect();
    let total: u64 = sizes.iter().sum();
    let available = (total * total - sizes.iter().map(|s| s * s).sum::<u64>()) / 2;
    if available < k as u64 {
        return Err(available);
    }
    let mut chosen = BTreeSet::new();
    // With at least 2k candidates, rejection sampling finishes in about k draws; otherwise the
    // candidates are few enough to list.
    if available >= 2 * k as u64 {
        while chosen.len() < k {
            let a = rng.random_range(0..group.len());
            let mut b = rng.random_range(0..group.len() - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (group[a], group[b]);
            let i = rng.random_range(1..=a.files.len() as u32);
            let j = rng.random_range(1..=b.files.len() as u32);
            chosen.insert(ordered((a.id, i), (b.id, j)));
        }
    } else {
        let mut all = Vec::new();
        for (x, a) in group.iter().enumerate() {
            for b in &group[x + 1..] {
                for i in 1..=a.files.len() as u32 {
                    for j in 1..=b.files.len() as u32 {
                        all.push(ordered((a.id, i), (b.id, j)));
                    }
                }
            }
        }
        let (some, _) = all.partial_shuffle(rng, k);
        chosen.extend(some.iter().copied());
    }
    Ok(chosen.into_iter().collect())
}

fn ordered(a: (u32, u32), b: (u32, u32)) -> Pair {
    if a <= b {
        Pair { left: a, right: b }
    } else {
        Pair { left: b, right: a }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_out(n: u32, per: usize) -> Vec<HeldOutIdentity> {
        (0..n)
            .map(|k| HeldOutIdentity {
                id: 100 + k,
                files: (0..per).map(|j| (k as usize) * per + j).collect(),
            })
            .collect()
    }

    #[test]
    fn folds_are_identity_disjoint_and_pairs_unique() {
        let ids = held_out(23, 6);
        let folds = make_folds(9, &ids, 10, 12).unwrap();
        assert_eq!(folds.len(), 10);
        let mut owner = std::collections::HashMap::new();
        let mut seen = BTreeSet::new();
        for (f, fold) in folds.iter().enumerate() {
            assert_eq!((fold.matched.len(), fold.mismatched.len()), (12, 12));
            for p in &fold.matched {
                assert_eq!(p.left.0, p.right.0);
                assert!(p.left.1 < p.right.1 && p.right.1 <= 6);
            }
            for p in &fold.mismatched {
                assert!(p.left.0 < p.right.0);
            }
            for p in fold.matched.iter().chain(&fold.mismatched) {
                assert!(seen.insert(*p), "duplicate pair {p:?}");
                for id in [p.left.0, p.right.0] {
                    assert_eq!(
                        *owner.entry(id).or_insert(f),
                        f,
                        "identity {id} in two folds"
                    );
                }
            }
        }
        // Same seed, same folds.
        let again = make_folds(9, &ids, 10, 12).unwrap();
        assert_eq!(again[3].matched, folds[3].matched);
        assert_eq!(again[7].mismatched, folds[7].mismatched);
    }

    #[test]
    fn too_few_identities_or_pairs_is_an_error() {
        assert_eq!(
            make_folds(0, &held_out(19, 4), 10, 1).unwrap_err(),
            PairsError::TooFewIdentities {
                folds: 10,
                held_out: 19
            }
        );
        // 2 identities × 3 images per fold: 6 matched and 9 mismatched pairs exist.
        let err = make_folds(0, &held_out(2, 3), 1, 7).unwrap_err();
        assert!(matches!(
            err,
            PairsError::TooFewPairs {
                available: 6,
                kind: "matched",
                ..
            }
        ));
        assert!(make_folds(0, &[], 0, 5).unwrap().is_empty());
        // 2 × 4 images: exactly 12 matched pairs, and 16 mismatched ones (listed, not sampled).
        let folds = make_folds(0, &held_out(2, 4), 1, 12).unwrap();
        assert_eq!(
            (folds[0].matched.len(), folds[0].mismatched.len()),
            (12, 12)
        );
    }
}
