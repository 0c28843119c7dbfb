//! Parsing the real LFW protocol files in `../shared/data/lfw/`.

use d2ae_metrics::pairs::{MissingPolicy, PairFormat, PairList, PairSide, SampleLookup, SampleRef};

#[test]
fn view2_pairs_txt_has_10_folds_of_300_matched_and_300_mismatched() {
    let path = d2ae_tests::shared_data().join("lfw/pairs.txt");
    let l = PairList::read(&path).unwrap();
    assert_eq!(
        (l.format, l.folds, l.pairs.len(), l.matched()),
        (PairFormat::LfwView2, 10, 6000, 3000)
    );
    for fold in 0..10 {
        let in_fold: Vec<_> = l.pairs.iter().filter(|p| p.fold == fold).collect();
        assert_eq!(in_fold.len(), 600);
        assert_eq!(in_fold.iter().filter(|p| p.same).count(), 300);
        assert!(in_fold[..300].iter().all(|p| p.same) && in_fold[300..].iter().all(|p| !p.same));
    }
    // First lines of the file: `Abel_Pacheco 1 4` and `Abdel_Madi_Shabneh 1 Dean_Barker 1`.
    assert_eq!(
        l.pairs[0].a.describe(),
        "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    );
    assert_eq!(
        l.pairs[0].b.describe(),
        "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    );
    assert_eq!(
        l.pairs[300].b,
        PairSide::Lfw {
            name: "Dean_Barker".into(),
            number: 1
        }
    );
    // Matched pairs name one person, mismatched ones two.
    for p in &l.pairs {
        let (PairSide::Lfw { name: a, .. }, PairSide::Lfw { name: b, .. }) = (&p.a, &p.b) else {
            panic!("LFW sides expected");
        };
        assert_eq!(a == b, p.same);
    }
}

#[test]
fn view1_files_are_one_fold_each() {
    for (file, n) in [("pairsDevTrain.txt", 1100), ("pairsDevTest.txt", 500)] {
        let l = PairList::read(&d2ae_tests::shared_data().join("lfw").join(file)).unwrap();
        assert_eq!(
            (l.format, l.folds, l.pairs.len(), l.matched()),
            (PairFormat::LfwView1, 1, 2 * n, n),
            "{file}"
        );
    }
}

#[test]
fn pairs_resolve_against_an_ingested_lfw_layout_and_report_every_missing_image() {
    let l = PairList::read(&d2ae_tests::shared_data().join("lfw/pairs.txt")).unwrap();
    // The two real images in shared/data, as ingest would record them.
    let lookup = SampleLookup::new([
        SampleRef {
            key: "a1",
            identity_name: "Anthony_Hopkins",
            source: "Anthony_Hopkins/Anthony_Hopkins_0001.jpg",
        },
        SampleRef {
            key: "a2",
            identity_name: "Anthony_Hopkins",
            source: "Anthony_Hopkins/Anthony_Hopkins_0002.jpg",
        },
    ]);
    // `Anthony_Hopkins 1 2` (line 5418, fold 10) is the one pair both images of which are here;
    // `Anthony_Hopkins 2 Orlando_Bloom 1` has one side missing.
    let err = lookup
        .resolve(&l, MissingPolicy::Error)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "5999 of 6000 pairs name samples missing from the features (7699 distinct)"
        ),
        "{}",
        &err[..200]
    );
    assert!(
        err.contains("Abel_Pacheco/Abel_Pacheco_0004.jpg")
            && err.contains("Orlando_Bloom/Orlando_Bloom_0001.jpg")
    );
    assert!(!err.contains("Anthony_Hopkins_0001"));
    let r = lookup.resolve(&l, MissingPolicy::Skip).unwrap();
    assert_eq!(
        (r.rows.clone(), r.same.clone(), r.fold.clone(), r.skipped),
        (vec![(0, 1)], vec![true], vec![9], 5999)
    );
    // Every distinct image the file names, once: View 2 names 7701 distinct images, 2 are here.
    assert_eq!(r.missing.len(), 7699);
    let path = std::env::temp_dir().join(format!("d2ae-metrics-pairs-{}.csv", std::process::id()));
    std::fs::write(
        &path,
        "a,b,label\na1,Anthony_Hopkins/Anthony_Hopkins_0002.jpg,1\n",
    )
    .unwrap();
    let csv = PairList::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let r = lookup.resolve(&csv, MissingPolicy::Error).unwrap();
    assert_eq!(r.rows, [(0, 1)]);
}
