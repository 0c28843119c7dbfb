//! `d2ae-eval report`: one Markdown report (and its JSON twin) of a trained run.
//!
//! It gathers what the other subcommands make: training curves from `metrics.jsonl` and
//! `val.jsonl`, the latest validation reconstructions, the verification and attribute tables
//! next to the paper's published numbers (Table 1), the Figure 5a bars, the Gaussianity and t-SNE
//! figures, the editing grids, and the autoencoder's fidelity (reconstruction PSNR, identity swaps
//! and attribute edits re-encoded, [`crate::fidelity`]). Images go to `<stem>_files/` beside the
//! report and are linked relatively, so the report reads on GitHub and survives being moved as a
//! folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_metrics::pairs::MissingPolicy;
use d2ae_metrics::plot::{line_chart, ChartSize, Series};
use d2ae_metrics::table::{percent, percent_pm, Align, Table};
use serde::Serialize;

use crate::analyze::{self, AnalyzeArgs, AnalyzeOutput};
use crate::applied_factors::{self, AppliedFactorsOutput};
use crate::attributes::{self, AttributesArgs, AttributesOutput, Directions};
use crate::edit::{self, EditArgs, EditMode, EditOutput};
use crate::extract::{self, ExtractArgs};
use crate::features::{FeatureChoice, FeatureKind, FeatureSet};
use crate::fidelity::{self, FidelityConfig, FidelityOutput, ModelOn};
use crate::model_io;
use crate::probe::{self, ProbeArgs, ProbeOutput};
use crate::verify::{self, VerifyOutput};

/// `d2ae-eval report`
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Run directory of `d2ae-train fit` (config.json, metrics.jsonl, val.jsonl, val/, checkpoints/).
    #[arg(long)]
    pub run: PathBuf,
    /// The Markdown report to write; report.json goes beside it and images to `<stem>_files/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Features from `d2ae-eval extract`. Without it, features are extracted from --data.
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Dataset to extract features from and to take the editing samples from.
    #[arg(long)]
    pub data: Option<String>,
    /// Checkpoint to report on (default: the newest in --run).
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// Pair list for verification (LFW pairs.txt or CSV); omitted: no verification section.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Drop pairs naming samples that are not in the features instead of failing.
    #[arg(long)]
    pub skip_missing: bool,
    /// Samples for the editing grids, comma-separated keys (default: up to 4 of different
    /// identities from the features).
    #[arg(long, value_delimiter = ',')]
    pub edit_keys: Vec<String>,
    /// Attributes for the attribute-editing grid (default: the 3 that f_P predicts best above
    /// the majority rate).
    #[arg(long, value_delimiter = ',')]
    pub edit_attributes: Vec<String>,
    /// Attributes the fidelity summary values (swap attributes kept, edit flip rate) average
    /// over, comma-separated (default: all with f_P SVMs).
    #[arg(long, value_delimiter = ',')]
    pub fidelity_attributes: Vec<String>,
    /// Score fidelity on at most this many held-out images (default: all).
    #[arg(long)]
    pub fidelity_max_images: Option<usize>,
    /// A run of the `baseline` ablation (encoder and identity branch only) trained on the same
    /// data: its f_T is verified on the same pairs and shown beside this run's, the paper's
    /// Table 2 (needs --data and --pairs).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Also extract features with known flips, brightness offsets, shifts and scales applied
    /// (`extract --apply-factors`) and report how well f_T and f_P predict each: labels for
    /// image factors that real photos lack (needs --data).
    #[arg(long)]
    pub apply_factors: bool,
    /// Attribute to colour the t-SNE maps by.
    #[arg(long)]
    pub attribute: Option<String>,
    /// At most this many rows in the t-SNE maps.
    #[arg(long, default_value_t = 2000)]
    pub tsne_max: usize,
    /// t-SNE iterations.
    #[arg(long, default_value_t = 1000)]
    pub tsne_epochs: usize,
    /// Device for extraction and decoding: cpu, cuda or cuda:K.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// S3-compatible endpoint for s3:// URLs.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
}

/// The paper's Table 1 (D2AE rows): LFW accuracy, TPR at FPR = 1e-3, CelebA mean attribute
/// accuracy, in percent.
pub const PAPER_TABLE1: [(FeatureKind, f64, f64, f64); 3] = [
    (FeatureKind::T, 99.78, 99.63, 79.78),
    (FeatureKind::P, 64.13, 5.3, 81.99),
    (FeatureKind::C, 99.80, 99.40, 83.16),
];

/// An image in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub caption: String,
    /// Relative to the report.
    pub path: String,
}

/// The JSON twin of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportJson {
    pub run: String,
    pub checkpoint: Option<String>,
    pub step: Option<u64>,
    pub config: serde_json::Value,
    pub summary: serde_json::Value,
    pub training_steps_logged: usize,
    pub verification: Option<VerifyOutput>,
    pub attributes: Option<AttributesOutput>,
    /// A freshly trained linear identity probe on each feature (train → val split).
    pub identity_probe: Option<ProbeOutput>,
    /// The model's own adversary W_P: its identity accuracy on f_P at the last validation
    /// (`val.jsonl`), with the chance level logged beside it.
    pub adversary: Option<AdversaryAccuracy>,
    pub analysis: Option<AnalyzeOutput>,
    pub edits: Vec<EditOutput>,
    /// Reconstruction PSNR, identity swaps and attribute edits on held-out images.
    pub fidelity: Option<FidelityOutput>,
    /// Table 2: the baseline's f_T verified on the same pairs, when `--baseline` was given.
    pub baseline: Option<BaselineComparison>,
    /// Known flip, brightness, shift and scale applied to the images, regressed on each feature.
    pub applied_factors: Option<AppliedFactorsOutput>,
    pub figures: Vec<Figure>,
    /// Things the report could not include, and why.
    pub omitted: Vec<String>,
    pub paper_table1: Vec<(FeatureKind, f64, f64, f64)>,
}

impl ReportArgs {
    /// In-memory extraction of every split of `data` with `checkpoint`, on the report's device
    /// and endpoint.
    fn extract(&self, checkpoint: &str, data: &str) -> ExtractArgs {
        ExtractArgs {
            checkpoint: checkpoint.to_owned(),
            data: data.to_owned(),
            splits: vec![],
            out: PathBuf::new(),
            flip: false,
            apply_factors: false,
            factor_seed: 0,
            concat: false,
            batch_size: 64,
            device: self.device.clone(),
            decode_threads: None,
            endpoint: self.endpoint.clone(),
            json: false,
        }
    }
}

/// The adversary's identity accuracy on f_P at the run's last validation.
#[derive(Debug, Clone, Serialize)]
pub struct AdversaryAccuracy {
    pub step: u64,
    pub accuracy: f64,
    pub chance: Option<f64>,
}

/// The last row of `val.jsonl` that has the adversary's accuracy.
pub fn adversary_accuracy(run: &Path) -> Result<Option<AdversaryAccuracy>> {
    let val = read_jsonl(&run.join("val.jsonl"))?;
    Ok(val.iter().rev().find_map(|r| {
        Some(AdversaryAccuracy {
            step: r.get("step")?.as_u64()?,
            accuracy: r.get("acc_p")?.as_f64()?,
            chance: r.get("chance").and_then(|c| c.as_f64()),
        })
    }))
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read(path) {
        Ok(b) => {
            Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("{} is not valid JSON", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Rows of a JSONL file (missing file: none). A malformed line is an error naming its number.
pub fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {} is not JSON", path.display(), i + 1))
        })
        .collect()
}

/// `(step, value)` of `field` over the rows that have both as numbers.
pub fn series(rows: &[serde_json::Value], field: &str) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(field)?.as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Training-curve PNGs from the run's logs; returns the figures made.
pub fn training_curves(run: &Path, files: &Path, rel_dir: &str) -> Result<(Vec<Figure>, usize)> {
    let metrics = read_jsonl(&run.join("metrics.jsonl"))?;
    let val = read_jsonl(&run.join("val.jsonl"))?;
    let mut figures = Vec::new();
    let named = |rows: &[serde_json::Value], fields: &[(&str, &str)]| -> Vec<Series> {
        fields
            .iter()
            .map(|(f, name)| Series {
                name: (*name).to_owned(),
                points: series(rows, f),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let losses = named(
        &metrics,
        &[
            ("loss", "total (eq. 6)"),
            ("l_t", "L_T"),
            ("l_adv", "L_T^adv"),
            ("l_h", "L_H"),
            ("l_x", "L_X"),
            ("l_x_aug", "L̃_X"),
        ],
    );
    if !losses.is_empty() {
        let all_positive = losses.iter().all(|s| s.points.iter().all(|p| p.1 > 0.0));
        let path = files.join("losses.png");
        line_chart(
            &path,
            "Training losses",
            "step",
            "loss",
            &losses,
            all_positive,
            ChartSize::new(900, 560),
        )?;
        figures.push(Figure {
            caption: "Training losses per step (metrics.jsonl)".into(),
            path: format!("{rel_dir}/losses.png"),
        });
    }
    let mut acc = named(
        &metrics,
        &[
            ("acc_t", "train acc W_T on f_T"),
            ("acc_p", "train acc W_P on f_P"),
        ],
    );
    acc.extend(named(
        &val,
        &[
            ("acc_t", "val acc of f_T"),
            ("acc_p", "val acc of adversary on f_P"),
            ("chance", "chance"),
        ],
    ));
    if !acc.is_empty() {
        let path = files.join("accuracy.png");
        line_chart(
            &path,
            "Identity accuracy",
            "step",
            "accuracy",
            &acc,
            false,
            ChartSize::new(900, 560),
        )?;
        figures.push(Figure {
            caption: "Identity accuracy of W_T on f_T and of the adversary W_P on f_P (train batches and validation)".into(),
            path: format!("{rel_dir}/accuracy.png"),
        });
    }
    Ok((figures, metrics.len()))
}

/// The newest `val/step-N.png` of the run, copied beside the report.
fn latest_val_image(run: &Path, files: &Path, rel_dir: &str) -> Result<Option<Figure>> {
    let Ok(entries) = std::fs::read_dir(run.join("val")) else {
        return Ok(None);
    };
    let mut pngs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    let Some(last) = pngs.pop() else {
        return Ok(None);
    };
    let name = last
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::copy(&last, files.join(&name))
        .with_context(|| format!("copying {}", last.display()))?;
    Ok(Some(Figure {
        caption: format!("Validation inputs (top) and reconstructions (bottom), {name}"),
        path: format!("{rel_dir}/{name}"),
    }))
}

/// Up to `n` rows of different identities (first appearance order).
fn distinct_identity_keys(set: &FeatureSet, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut keys = Vec::new();
    for i in 0..set.rows() {
        if !seen.contains(&set.identity[i]) {
            seen.push(set.identity[i]);
            keys.push(set.meta.keys[i].clone());
            if keys.len() == n {
                break;
            }
        }
    }
    keys
}

/// Make the report.
pub fn report(args: &ReportArgs) -> Result<ReportJson> {
    if !args.run.is_dir() {
        bail!("run directory {} does not exist", args.run.display());
    }
    let out_dir = args
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = args
        .out
        .file_stem()
        .map_or("report".into(), |s| s.to_string_lossy().into_owned());
    let rel_dir = format!("{stem}_files");
    let files = out_dir.join(&rel_dir);
    std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
    let config = read_json(&args.run.join("config.json"))?.unwrap_or(serde_json::Value::Null);
    let summary = read_json(&args.run.join("summary.json"))?.unwrap_or(serde_json::Value::Null);
    let mut omitted = Vec::new();
    let (mut figures, logged) = training_curves(&args.run, &files, &rel_dir)?;
    if logged == 0 {
        omitted.push("training curves: metrics.jsonl is missing or empty".into());
    }
    if let Some(f) = latest_val_image(&args.run, &files, &rel_dir)? {
        figures.push(f);
    }
    let checkpoint = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| args.run.display().to_string());

    // Features: given, or extracted from --data.
    let features_path = match (&args.features, &args.data) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(data)) => {
            let path = files.join("features.safetensors");
            let (set, _) = extract::extract_features(&args.extract(&checkpoint, data), true)?;
            set.write(&path)?;
            Some(path)
        }
        (None, None) => {
            omitted.push(
                "features, verification, attributes, analysis, editing: give --features or --data"
                    .into(),
            );
            None
        }
    };
    let set = features_path
        .as_ref()
        .map(|p| FeatureSet::read(p))
        .transpose()?;

    let mut verification = None;
    if let (Some(set), Some(fp), Some(pairs)) = (&set, &features_path, &args.pairs) {
        let policy = MissingPolicy::skipping(args.skip_missing);
        let mut v = verify::verify(set, fp, pairs, &FeatureChoice::All.kinds(set), policy)?;
        verify::plot_roc(&v, &files.join("roc.png"))?;
        v.plot = Some(format!("{rel_dir}/roc.png"));
        figures.push(Figure {
            caption: "ROC curves of face verification with f_T, f_P and f_C".into(),
            path: format!("{rel_dir}/roc.png"),
        });
        verification = Some(v);
    } else if set.is_some() {
        omitted.push("verification: give --pairs".into());
    }

    let mut attrs = None;
    let mut directions_path = None;
    let mut directions = None;
    if let (Some(set), Some(fp)) = (&set, &features_path) {
        let a_args = AttributesArgs {
            features: fp.clone(),
            train_split: "train".into(),
            val_split: "val".into(),
            test_split: "test".into(),
            feature: FeatureChoice::All,
            plot: None,
            save_directions: None,
            json: false,
        };
        match attributes::attributes(set, &a_args) {
            Ok(mut a) => {
                if !a.difference_p_minus_t.is_empty() {
                    attributes::plot_difference(&a, &files.join("attributes_p_minus_t.png"))?;
                    a.plot = Some(format!("{rel_dir}/attributes_p_minus_t.png"));
                    figures.push(Figure {
                        caption: "Per-attribute accuracy of f_P minus f_T (Figure 5a)".into(),
                        path: format!("{rel_dir}/attributes_p_minus_t.png"),
                    });
                }
                if !a.reports.is_empty() {
                    let p = files.join("directions.safetensors");
                    let d = Directions::from_reports(&a.reports);
                    d.write(&p)?;
                    a.directions = Some(format!("{rel_dir}/directions.safetensors"));
                    directions_path = Some(p);
                    directions = Some(d);
                }
                attrs = Some(a);
            }
            Err(e) => omitted.push(format!("attributes: {e:#}")),
        }
    }

    let mut baseline = None;
    if let Some(b) = &args.baseline {
        match (&args.data, &args.pairs) {
            (Some(data), Some(pairs)) => match baseline_verification(args, b, data, pairs) {
                Ok(v) => baseline = Some(v),
                Err(e) => omitted.push(format!("Table 2 (baseline): {e:#}")),
            },
            _ => omitted.push("Table 2 (baseline): give --data and --pairs".into()),
        }
    }

    let mut applied = None;
    match (args.apply_factors, &args.data) {
        (true, Some(data)) => match report_applied_factors(args, data, &checkpoint) {
            Ok(a) => applied = Some(a),
            Err(e) => omitted.push(format!("applied factors: {e:#}")),
        },
        (true, None) => omitted.push("applied factors: give --data".into()),
        _ => {}
    }

    let mut identity_probe = None;
    if let (Some(set), Some(fp)) = (&set, &features_path) {
        let args = ProbeArgs {
            features: fp.clone(),
            train_split: "train".into(),
            test_split: "val".into(),
            feature: FeatureChoice::All,
            c: 0.1,
            json: false,
        };
        match probe::identity_probe(set, &args) {
            Ok(p) => identity_probe = Some(p),
            Err(e) => omitted.push(format!("identity probe: {e:#}")),
        }
    }
    let adversary = adversary_accuracy(&args.run)?;

    let mut analysis = None;
    if let (Some(set), Some(fp)) = (&set, &features_path) {
        let dir = files.join("analysis");
        let an = AnalyzeArgs {
            features: fp.clone(),
            out: dir,
            attribute: args.attribute.clone(),
            split: None,
            tsne_max: args.tsne_max,
            tsne_epochs: args.tsne_epochs,
            seed: 0,
            json: false,
        };
        match analyze::analyze(set, &an) {
            Ok(a) => {
                for k in &a.kinds {
                    let l = k.feature.label();
                    let mut add = |p: &Option<String>, caption: String| {
                        if let Some(p) = p {
                            figures.push(Figure {
                                caption,
                                path: format!("{rel_dir}/analysis/{p}"),
                            });
                        }
                    };
                    add(
                        &Some(k.r2_histogram_png.clone()),
                        format!("Adjusted R² of per-channel Gaussian fits of {l} (Figure 8)"),
                    );
                    add(
                        &Some(k.channels_png.clone()),
                        format!("First 36 channels of {l} with Gaussian fits (Figure 7)"),
                    );
                    add(
                        &k.tsne_identity_png,
                        format!("t-SNE of {l} coloured by identity (Figures 1b, 4)"),
                    );
                    add(
                        &k.tsne_attribute_png,
                        format!(
                            "t-SNE of {l} coloured by {}",
                            a.attribute.clone().unwrap_or_default()
                        ),
                    );
                }
                analysis = Some(a);
            }
            Err(e) => omitted.push(format!("analysis: {e:#}")),
        }
    }

    let mut edits = Vec::new();
    match (&set, &args.data) {
        (Some(set), Some(data)) if set.has(FeatureKind::P) => {
            let keys = if args.edit_keys.is_empty() {
                distinct_identity_keys(set, 4)
            } else {
                args.edit_keys.clone()
            };
            let base = |mode: EditMode, keys: Vec<String>, name: &str| EditArgs {
                checkpoint: checkpoint.clone(),
                data: data.clone(),
                keys,
                mode,
                out: files.join(name),
                directions: directions_path.clone(),
                attributes: vec![],
                steps: 7,
                max_sigma: edit::DEFAULT_MAX_SIGMA,
                cell: None,
                device: args.device.clone(),
                endpoint: args.endpoint.clone(),
                json: false,
            };
            let mut jobs: Vec<(EditArgs, &str)> = Vec::new();
            if keys.len() >= 2 {
                jobs.push((base(EditMode::Swap, keys.clone(), "swap.png"), "Identity swap: decode(f_T of the column, f_P of the row); the diagonal is each face's reconstruction"));
                jobs.push((base(EditMode::Interpolate, keys[..2].to_vec(), "interpolate.png"), "Identity interpolation β·f_T(A) + (1 − β)·f_T(B) with f_P of A, then of B (Figure 9)"));
                jobs.push((
                    base(
                        EditMode::Interpolate2d,
                        keys[..2].to_vec(),
                        "interpolate2d.png",
                    ),
                    "2-D interpolation over f_T (across) and f_P (down) (Figure 1a)",
                ));
            } else {
                omitted.push("swap and interpolation grids: need samples of two identities".into());
            }
            if let (Some(_), Some(a)) = (&directions_path, &attrs) {
                let mut e = base(
                    EditMode::Attribute,
                    keys[..keys.len().min(2)].to_vec(),
                    "attribute_edit.png",
                );
                e.attributes = if args.edit_attributes.is_empty() {
                    let mut by_gain: Vec<(f64, String)> = a
                        .attributes
                        .iter()
                        .filter_map(|r| {
                            Some((
                                r.accuracy.get(&FeatureKind::P)? - r.majority_accuracy,
                                r.name.clone(),
                            ))
                        })
                        .collect();
                    by_gain.sort_by(|x, y| y.0.total_cmp(&x.0));
                    by_gain.into_iter().take(3).map(|(_, n)| n).collect()
                } else {
                    args.edit_attributes.clone()
                };
                jobs.push((e, "Attribute editing along the f_P SVM directions, within 3 learned σ (Figure 10)"));
            } else {
                omitted.push("attribute editing: no f_P attribute directions (the features have no attributes)".into());
            }
            for (job, caption) in jobs {
                let name = job
                    .out
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let out = edit::edit(&job).with_context(|| format!("making {name}"))?;
                figures.push(Figure {
                    caption: caption.to_owned(),
                    path: format!("{rel_dir}/{name}"),
                });
                edits.push(out);
            }
        }
        (Some(_), Some(_)) => omitted.push("editing: the model has no f_P (baseline)".into()),
        (Some(_), None) => omitted.push("editing grids: give --data".into()),
        _ => {}
    }

    let mut fidelity = None;
    match (&set, &args.data) {
        (Some(set), Some(data)) if set.has(FeatureKind::P) => {
            match report_fidelity(args, data, &checkpoint, directions.as_ref(), &files) {
                Ok((f, grid)) => {
                    if grid {
                        figures.push(Figure {
                            caption: "Autoencoder fidelity: held-out inputs, their reconstructions, and decode(f_T of each column, f_P of the first)".into(),
                            path: format!("{rel_dir}/fidelity.png"),
                        });
                    }
                    fidelity = Some(f);
                }
                Err(e) => omitted.push(format!("autoencoder fidelity: {e:#}")),
            }
        }
        (Some(_), Some(_)) => {
            omitted.push("autoencoder fidelity: the model has no f_P (baseline)".into())
        }
        (Some(_), None) => omitted.push("autoencoder fidelity: give --data".into()),
        _ => {}
    }

    let step = set.as_ref().map(|s| s.meta.step);
    let json = ReportJson {
        run: args.run.display().to_string(),
        checkpoint: set.as_ref().map(|s| s.meta.checkpoint.clone()),
        step,
        config,
        summary,
        training_steps_logged: logged,
        verification,
        attributes: attrs,
        identity_probe,
        adversary,
        analysis,
        edits,
        fidelity,
        baseline,
        applied_factors: applied,
        figures,
        omitted,
        paper_table1: PAPER_TABLE1.to_vec(),
    };
    let md = markdown(&json, &rel_dir);
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    let json_path = args.out.with_extension("json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok(json)
}

/// The split fidelity is scored on, as the attribute SVMs pick theirs: `test`, else `val`, else
/// every fourth image of `train` (the rows the SVMs were scored on, never trained on).
pub fn fidelity_split(splits: &[String]) -> Option<(String, Option<usize>)> {
    let has = |s: &str| splits.iter().any(|x| x == s);
    if has("test") {
        Some(("test".into(), None))
    } else if has("val") {
        Some(("val".into(), None))
    } else if has("train") {
        Some(("train".into(), Some(4)))
    } else {
        None
    }
}

/// The baseline run's f_T on the report's pairs (the paper's Table 2).
#[derive(Debug, Clone, Serialize)]
pub struct BaselineComparison {
    pub run: String,
    pub checkpoint: String,
    pub step: u64,
    pub verification: VerifyOutput,
}

/// Verification accuracy and TPR at FPR = 1e-3, in percent.
pub type AccTpr = (f64, f64);

/// The paper's Table 2: (training set, Baseline, D²AE).
pub const PAPER_TABLE2: [(&str, AccTpr, AccTpr); 2] = [
    ("MS-Celeb-1M", (99.816, 99.73), (99.80, 99.40)),
    ("CASIA-WebFace", (98.93, 94.87), (99.25, 96.80)),
];

/// Extract the baseline run's features from `data` (in memory) and verify its f_T on `pairs`.
fn baseline_verification(
    args: &ReportArgs,
    run: &str,
    data: &str,
    pairs: &Path,
) -> Result<BaselineComparison> {
    let (set, summary) = extract::extract_features(&args.extract(run, data), true)?;
    let policy = MissingPolicy::skipping(args.skip_missing);
    let verification = verify::verify(&set, Path::new(run), pairs, &[FeatureKind::T], policy)?;
    Ok(BaselineComparison {
        run: run.to_owned(),
        checkpoint: summary.checkpoint,
        step: summary.step,
        verification,
    })
}

/// Table 2's rows: the baseline's f_T and this run's, on the same pairs.
fn table2(r: &ReportJson, b: &BaselineComparison) -> Table {
    let mut t = Table::new([
        "model (f_T)",
        "step",
        "accuracy %",
        "folds min–max %",
        "TPR@FPR=1e-3 %",
        "TPR@FPR=1e-2 %",
        "AUC",
    ]);
    let ours = r
        .verification
        .as_ref()
        .and_then(|v| v.results.iter().find(|x| x.feature == FeatureKind::T));
    let rows = [
        ("Baseline", Some(b.step), b.verification.results.first()),
        ("D²AE", r.step, ours),
    ];
    for (name, step, v) in rows {
        let Some(v) = v else { continue };
        let folds: Vec<f64> = v.report.folds.iter().map(|f| f.accuracy).collect();
        let (lo, hi) = folds
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        t.row([
            name.to_owned(),
            step.map_or("–".into(), |s| s.to_string()),
            percent_pm(v.report.accuracy_mean, v.report.accuracy_std),
            if folds.is_empty() {
                "–".into()
            } else {
                format!("{}–{}", percent(lo), percent(hi))
            },
            v.tpr_at_1e3.map_or("–".into(), percent),
            v.tpr_at_1e2.map_or("–".into(), percent),
            format!("{:.4}", v.report.auc),
        ]);
    }
    t
}

/// Features with known factors applied, extracted in memory, and each factor regressed on them.
fn report_applied_factors(
    args: &ReportArgs,
    data: &str,
    checkpoint: &str,
) -> Result<AppliedFactorsOutput> {
    const SEED: u64 = 0;
    let ex = ExtractArgs {
        apply_factors: true,
        factor_seed: SEED,
        ..args.extract(checkpoint, data)
    };
    let (set, _) = extract::extract_features(&ex, true)?;
    applied_factors::regress(&set, SEED)
}

/// Fidelity of the report's checkpoint on `data`'s held-out split with the report's f_P SVMs;
/// writes `fidelity.png` into `files` (true when it did).
fn report_fidelity(
    args: &ReportArgs,
    data: &str,
    checkpoint: &str,
    directions: Option<&Directions>,
    files: &Path,
) -> Result<(FidelityOutput, bool)> {
    let index = extract::read_index(data, args.endpoint.clone())?;
    let splits: Vec<String> = index.splits.keys().cloned().collect();
    let (split, hold_out_every) = fidelity_split(&splits).with_context(|| {
        format!(
            "{data} has no test, val or train split (it has: {})",
            splits.join(", ")
        )
    })?;
    let device = model_io::parse_device(&args.device)?;
    let loaded = model_io::load(checkpoint, args.endpoint.clone(), device)?;
    let cfg = FidelityConfig {
        data: data.to_owned(),
        split,
        hold_out_every,
        mean_split: "train".into(),
        attributes: args.fidelity_attributes.clone(),
        swap_pairs: fidelity::DEFAULT_SWAP_PAIRS,
        max_sigma: edit::DEFAULT_MAX_SIGMA,
        seed: 0,
        max_images: args.fidelity_max_images,
        batch_size: fidelity::DEFAULT_BATCH_SIZE,
        endpoint: args.endpoint.clone(),
        progress: true,
    };
    let run = fidelity::fidelity_with(
        &ModelOn {
            model: &loaded.model,
            device,
        },
        &cfg,
        directions,
    )?;
    let grid = match &run.grid {
        Some(g) => {
            g.save(&files.join("fidelity.png"))?;
            true
        }
        None => false,
    };
    Ok((run.output, grid))
}

fn cfg_str(v: &serde_json::Value, ptr: &str) -> Option<String> {
    let x = v.pointer(ptr)?;
    Some(match x {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Render the report.
pub fn markdown(r: &ReportJson, rel_dir: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# D²AE run report\n");
    let _ = writeln!(
        md,
        "Run `{}`{}.\n",
        r.run,
        r.checkpoint.as_ref().map_or(String::new(), |c| format!(
            ", checkpoint `{c}` (step {})",
            r.step.unwrap_or(0)
        ))
    );
    let mut t = Table::new(["setting", "value"]).align(1, Align::Left);
    for (label, ptr) in [
        ("preset", "/train/preset"),
        ("ablation", "/train/ablation"),
        ("image size", "/model/image_size"),
        ("feature dim", "/model/branch/feature_dim"),
        ("identities", "/num_identities"),
        ("total steps", "/total_steps"),
        ("batch size", "/train/batch_size"),
        ("learning rate", "/train/lr"),
        ("device", "/train/device"),
    ] {
        if let Some(v) = cfg_str(&r.config, ptr) {
            t.row([label.to_owned(), v]);
        }
    }
    for (label, ptr) in [
        ("images/s (training)", "/images_per_sec"),
        ("wall time s", "/seconds"),
        ("last loss", "/last_loss"),
    ] {
        if let Some(v) = r.summary.pointer(ptr).and_then(|v| v.as_f64()) {
            t.row([label.to_owned(), format!("{v:.3}")]);
        }
    }
    if !t.is_empty() {
        let _ = writeln!(md, "{}", t.to_markdown());
    }

    let _ = writeln!(md, "## Table 1: verification and attributes\n");
    let _ = writeln!(
        md,
        "Ours beside the paper's published D²AE numbers (LFW accuracy, TPR at FPR = 10⁻³, CelebA mean attribute accuracy). \
         The paper trains Inception-ResNet on MS-Celeb-1M; a short run on a few photos is not expected to come near them.\n"
    );
    let mut t1 = Table::new([
        "model",
        "acc %",
        "TPR@1e-3 %",
        "attr %",
        "paper acc %",
        "paper TPR %",
        "paper attr %",
    ]);
    for (kind, pa, pt, pattr) in PAPER_TABLE1 {
        let v = r
            .verification
            .as_ref()
            .and_then(|v| v.results.iter().find(|x| x.feature == kind));
        let a = r
            .attributes
            .as_ref()
            .and_then(|a| a.summaries.iter().find(|s| s.feature == kind));
        t1.row([
            kind.paper_name().to_owned(),
            v.map_or("–".into(), |v| {
                percent_pm(v.report.accuracy_mean, v.report.accuracy_std)
            }),
            v.and_then(|v| v.tpr_at_1e3).map_or("–".into(), percent),
            a.map_or("–".into(), |a| percent(a.mean_test_accuracy)),
            format!("{pa:.2}"),
            format!("{pt:.2}"),
            format!("{pattr:.2}"),
        ]);
    }
    let _ = writeln!(md, "{}", t1.to_markdown());
    if let Some(v) = &r.verification {
        let _ = writeln!(
            md,
            "Verification: {} pairs from `{}` ({:?}); {} skipped for missing samples.\n",
            v.pairs_used, v.pairs_file, v.pairs_format, v.skipped
        );
        let _ = writeln!(md, "{}", verify::table(v).to_markdown());
    }
    if let Some(a) = &r.attributes {
        let _ = writeln!(
            md,
            "Attributes: linear SVMs trained on {} rows, C chosen on {}, scored on {} rows.\n",
            a.train_rows,
            if a.val_rows > 0 {
                format!("{} validation rows", a.val_rows)
            } else {
                "a held-out fifth of training".into()
            },
            a.test_rows
        );
        for n in &a.notes {
            let _ = writeln!(md, "- {n}");
        }
        if !a.notes.is_empty() {
            md.push('\n');
        }
        if !a.attributes.is_empty() {
            let _ = writeln!(
                md,
                "<details><summary>Per-attribute accuracy</summary>\n\n{}\n</details>\n",
                attributes::table(a).to_markdown()
            );
        }
        if !a.factors.is_empty() {
            let _ = writeln!(md, "Held-out R² of each continuous factor regressed (ridge) on the features: how much of it each feature explains.\n");
            let _ = writeln!(md, "{}", attributes::factor_table(&a.factors).to_markdown());
        }
    }
    if let Some(b) = &r.baseline {
        let _ = writeln!(md, "## Table 2: baseline vs D²AE\n");
        let _ = writeln!(
            md,
            "f_T of the `baseline` ablation (the same encoder and identity branch, no dispelling branch, no decoder; run `{}`) \
             and of this run, verified on the same {} pairs. The paper's claim: D²AE is at least as good, and better on the \
             smaller training set.\n",
            b.run, b.verification.pairs_used
        );
        let _ = writeln!(md, "{}", table2(r, b).to_markdown());
        let mut paper = Table::new([
            "paper (training set)",
            "Baseline acc %",
            "Baseline TPR@1e-3 %",
            "D²AE acc %",
            "D²AE TPR@1e-3 %",
        ]);
        for (set, (ba, bt), (da, dt)) in PAPER_TABLE2 {
            paper.row([
                set.to_owned(),
                format!("{ba:.2}"),
                format!("{bt:.2}"),
                format!("{da:.2}"),
                format!("{dt:.2}"),
            ]);
        }
        let _ = writeln!(md, "{}", paper.to_markdown());
    }
    if let Some(a) = &r.applied_factors {
        let _ = writeln!(md, "## Image factors applied to the photos\n");
        let _ = writeln!(md, "{}", applied_factors::markdown(a));
    }
    if r.identity_probe.is_some() || r.adversary.is_some() {
        let _ = writeln!(md, "## Identity left in each feature\n");
        if let Some(a) = &r.adversary {
            let _ = writeln!(
                md,
                "The model's adversary W_P classifies {}% of validation images by identity from f_P (step {}{}).\n",
                percent(a.accuracy),
                a.step,
                a.chance.map_or(String::new(), |c| format!(", chance {}%", percent(c)))
            );
        }
        if let Some(p) = &r.identity_probe {
            let _ = writeln!(
                md,
                "A fresh linear probe (one-vs-rest SVMs, C = {}) trained on the {} identities of `{}` ({} rows), scored on {} rows of `{}`: \
                 unlike the adversary, f_P was never trained to fool it.\n",
                p.c, p.identities, p.train_split, p.train_rows, p.test_rows, p.test_split
            );
            let _ = writeln!(md, "{}", probe::table(p).to_markdown());
        }
    }
    if let Some(a) = &r.analysis {
        let _ = writeln!(md, "## Feature analysis\n");
        let _ = writeln!(
            md,
            "{} rows; t-SNE of {} rows over {} identities.\n",
            a.rows, a.tsne_rows, a.identities_in_tsne
        );
        let _ = writeln!(md, "{}", analyze::table(a).to_markdown());
    }
    if let Some(f) = &r.fidelity {
        let _ = writeln!(md, "{}", fidelity::markdown(f));
    }
    let _ = writeln!(md, "## Figures\n");
    for f in &r.figures {
        let _ = writeln!(md, "**{}**\n\n![{}]({})\n", f.caption, f.caption, f.path);
    }
    if !r.omitted.is_empty() {
        let _ = writeln!(md, "## Not included\n");
        for o in &r.omitted {
            let _ = writeln!(md, "- {o}");
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "All numbers are also in the JSON file beside this report; images are in `{rel_dir}/`."
    );
    md
}

/// Run `report`.
pub fn run(args: &ReportArgs) -> Result<()> {
    let r = report(args)?;
    println!(
        "report → {} ({} figures, {} omitted sections; JSON beside it)",
        args.out.display(),
        r.figures.len(),
        r.omitted.len()
    );
    for o in &r.omitted {
        println!("  not included: {o}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fidelity_scores_the_split_the_attribute_svms_scored() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            fidelity_split(&names(&["test", "train", "val"])),
            Some(("test".into(), None))
        );
        assert_eq!(
            fidelity_split(&names(&["train", "val"])),
            Some(("val".into(), None))
        );
        assert_eq!(
            fidelity_split(&names(&["train"])),
            Some(("train".into(), Some(4)))
        );
        assert_eq!(fidelity_split(&names(&["other"])), None);
    }
}
