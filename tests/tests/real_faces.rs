//! `scripts/demo --real` at reduced scale on a subset of the real aligned CelebA faces
//! (`../shared/data/celeba-aligned-5k/`): ingest `--aligned`, train D²AE and the baseline a few
//! steps, evaluate with the folder's CSV pairs. It fails when any stage of the real-photo path
//! breaks: a photo rejected, a pair that does not resolve, a missing section of the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use d2ae_tests::{bin, json_number as number, project_root, run_ok, shared_data};
use serde_json::Value;

/// Verification folds kept from `pairs.csv` (each has 30 matched and 30 mismatched pairs).
const FOLDS: [u32; 2] = [0, 1];
/// Training identities kept (with all their photos), and validation ones.
const TRAIN_IDENTITIES: usize = 16;
const VAL_IDENTITIES: usize = 2;

/// A copy of the folder's layout with the photos of the kept folds' pairs (partition 2), a few
/// training (0) and validation (1) identities; returns the number of photos per partition.
fn subset(src: &Path, dst: &Path) -> BTreeMap<u8, usize> {
    let read = |name: &str| std::fs::read_to_string(src.join(name)).unwrap();
    let identity: BTreeMap<String, String> = read("identity_CelebA.txt")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(f, i)| (f.to_owned(), i.trim().to_owned()))
        .collect();
    let partition: BTreeMap<String, u8> = read("list_eval_partition.txt")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(f, p)| (f.to_owned(), p.trim().parse().unwrap()))
        .collect();
    let mut pairs = String::new();
    let mut files = BTreeSet::new();
    for line in read("pairs.csv").lines() {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() == 4 && FOLDS.contains(&cols[3].parse().unwrap_or(u32::MAX)) {
            pairs.push_str(line);
            pairs.push('\n');
            for side in &cols[..2] {
                files.insert(side.trim_start_matches("img_align_celeba/").to_owned());
            }
        }
    }
    for (part, count) in [(0u8, TRAIN_IDENTITIES), (1, VAL_IDENTITIES)] {
        let ids: BTreeSet<&String> = partition
            .iter()
            .filter(|(_, &p)| p == part)
            .map(|(f, _)| &identity[f])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(count)
            .collect();
        files.extend(
            identity
                .iter()
                .filter(|(f, i)| partition[*f] == part && ids.contains(i))
                .map(|(f, _)| f.clone()),
        );
    }
    std::fs::create_dir_all(dst.join("img_align_celeba")).unwrap();
    let (mut ids, mut parts) = (String::new(), String::new());
    let mut counts = BTreeMap::new();
    for f in &files {
        std::fs::copy(
            src.join("img_align_celeba").join(f),
            dst.join("img_align_celeba").join(f),
        )
        .unwrap();
        ids.push_str(&format!("{f} {}\n", identity[f]));
        parts.push_str(&format!("{f} {}\n", partition[f]));
        *counts.entry(partition[f]).or_insert(0) += 1;
    }
    std::fs::write(dst.join("identity_CelebA.txt"), ids).unwrap();
    std::fs::write(dst.join("list_eval_partition.txt"), parts).unwrap();
    std::fs::write(dst.join("pairs.csv"), pairs).unwrap();
    counts
}

#[test]
fn real_faces_ingest_train_and_evaluate_with_csv_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("faces");
    let counts = subset(&shared_data().join("celeba-aligned-5k"), &data);
    assert_eq!(counts.len(), 3, "train, val and test photos: {counts:?}");
    let out = dir.path().join("out");
    let bin_dir = bin("d2ae-train").parent().unwrap().to_owned();
    let output = run_ok(
        Command::new(project_root().join("scripts/demo"))
            .args(["--real", "--real-data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(["--steps", "12", "--batch-size", "16", "--threads", "1"]),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| Table 2 (f_T)"), "{stdout}");

    // Every photo ingested, into the partition the folder gave it.
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("shards/index.json")).unwrap()).unwrap();
    for (part, split) in [(0u8, "train"), (1, "val"), (2, "test")] {
        assert_eq!(
            index["splits"][split]["num_samples"].as_u64(),
            Some(counts[&part] as u64),
            "{split}"
        );
    }

    let run = out.join("run-none-seed0");
    let s: Value =
        serde_json::from_slice(&std::fs::read(run.join("eval/summary.json")).unwrap()).unwrap();
    assert_eq!(s["step"].as_u64(), Some(12));
    assert_eq!(s["pairs"].as_u64(), Some(60 * FOLDS.len() as u64));
    for k in ["t", "p", "c"] {
        let v = &s["features"][k]["verification"];
        let acc = number(v, &["accuracy"]);
        assert!((0.0..=1.0).contains(&acc), "{k}: {acc}");
        assert!(number(v, &["tpr_at_fpr_1e-2"]) >= 0.0, "{k}: {v}");
        assert_eq!(v["fold_accuracies"].as_array().unwrap().len(), FOLDS.len());
    }
    // Table 2: the baseline trained as long, verified on the same pairs.
    assert_eq!(s["baseline"]["step"].as_u64(), Some(12));
    number(&s, &["baseline", "verification", "accuracy"]);
    assert!(out.join("run-baseline-seed0/summary.json").exists());
    // The applied factors, each regressed on f_T and f_P.
    for f in [
        "applied_flip",
        "applied_brightness",
        "applied_shift_x",
        "applied_shift_y",
        "applied_scale",
    ] {
        for k in ["t", "p"] {
            let r2 = number(&s, &["applied_factor_r2", f, k]);
            assert!(r2.is_finite() && r2 <= 1.0, "{f} from f_{k}: {r2}");
        }
    }
    // Reconstructions of held-out real faces were decoded and scored.
    let psnr = number(&s, &["reconstruction", "psnr_db"]);
    assert!((5.0..60.0).contains(&psnr), "PSNR {psnr}");
    // The validation identities are not training identities: no identity accuracy, not a 0.
    let val = std::fs::read_to_string(run.join("val.jsonl")).unwrap();
    let last: Value = serde_json::from_str(val.lines().last().unwrap()).unwrap();
    assert_eq!(last["identity_images"].as_u64(), Some(0), "{last}");
    assert!(last["acc_t"].is_null() && last["acc_p"].is_null(), "{last}");
    assert!(s.get("adversary").is_none(), "{s}");
    let report = std::fs::read_to_string(run.join("eval/report.md")).unwrap();
    for section in [
        "## Table 2: baseline vs D²AE",
        "## Image factors applied to the photos",
    ] {
        assert!(report.contains(section), "no {section:?} in the report");
    }
}

#[test]
fn real_demo_names_what_an_incomplete_folder_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("faces");
    std::fs::create_dir_all(data.join("img_align_celeba")).unwrap();
    std::fs::write(data.join("identity_CelebA.txt"), "").unwrap();
    std::fs::write(data.join("list_eval_partition.txt"), "").unwrap();
    let bin_dir = bin("d2ae-train").parent().unwrap().to_owned();
    let out = Command::new(project_root().join("scripts/demo"))
        .args(["--real", "--real-data"])
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pairs.csv") && stderr.contains("--real-data"),
        "{stderr}"
    );
    assert!(!dir.path().join("out/shards").exists(), "nothing ingested");
}
