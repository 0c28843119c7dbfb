//! `d2ae-eval analyze`: what the features look like (Figures 1b, 4, 7 and 8).
//!
//! - Gaussianity: a Gaussian is fitted to each channel's histogram and scored by adjusted R²
//!   (`d2ae-metrics::gauss`); the histogram of those scores over channels is Figure 8, the first
//!   36 channels' histograms with their fits Figure 7. Statistical augmentation should make f_T
//!   and f_P channels close to Gaussian.
//! - t-SNE (`d2ae-metrics::tsne`, Barnes-Hut) of f_T and f_P, coloured by identity and by an
//!   attribute: f_T should cluster by identity and f_P should not (Figure 4). The leave-one-out
//!   5-NN accuracy of the labels in each map puts a number on what the picture shows.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_metrics::gauss::{channel_gaussianity, summarize, GaussianitySummary, Histogram};
use d2ae_metrics::plot::{channel_grid, histogram_chart, scatter_chart, ChartSize};
use d2ae_metrics::table::Table;
use d2ae_metrics::tsne::{knn_accuracy, tsne_2d, TsneConfig};
use serde::Serialize;

use crate::features::{FeatureKind, FeatureSet};

/// `d2ae-eval analyze`
#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    /// Feature file written by `d2ae-eval extract`.
    #[arg(long)]
    pub features: PathBuf,
    /// Directory for the PNGs and analyze.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Attribute to colour the t-SNE maps by (default: Smiling if present, else the first).
    #[arg(long)]
    pub attribute: Option<String>,
    /// Only rows of this split (default: all rows).
    #[arg(long)]
    pub split: Option<String>,
    /// At most this many rows go into t-SNE (every k-th row is taken beyond it).
    #[arg(long, default_value_t = 2000)]
    pub tsne_max: usize,
    /// t-SNE iterations.
    #[arg(long, default_value_t = 1000)]
    pub tsne_epochs: usize,
    /// Seed of the t-SNE start.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One feature's analysis.
#[derive(Debug, Clone, Serialize)]
pub struct KindAnalysis {
    pub feature: FeatureKind,
    pub gaussianity: GaussianitySummary,
    /// Figure 8: histogram of the channels' adjusted R².
    pub r2_histogram_png: String,
    /// Figure 7: the first 36 channels.
    pub channels_png: String,
    pub tsne_identity_png: Option<String>,
    pub tsne_attribute_png: Option<String>,
    /// Leave-one-out 5-NN accuracy of the identity labels in the t-SNE map.
    pub tsne_identity_knn: Option<f64>,
    /// The same for the attribute.
    pub tsne_attribute_knn: Option<f64>,
}

/// Everything `analyze` reports.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeOutput {
    pub features: String,
    pub rows: usize,
    pub tsne_rows: usize,
    pub identities_in_tsne: usize,
    pub attribute: Option<String>,
    pub kinds: Vec<KindAnalysis>,
}

/// Write every figure under `args.out` and return the numbers.
pub fn analyze(set: &FeatureSet, args: &AnalyzeArgs) -> Result<AnalyzeOutput> {
    let out_dir = &args.out;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let rows: Vec<usize> = match &args.split {
        Some(s) => set.rows_of_split(s),
        None => (0..set.rows()).collect(),
    };
    if rows.len() < 4 {
        bail!("analysis needs at least 4 rows, got {}", rows.len());
    }
    let attribute = pick_attribute(set, args.attribute.as_deref())?;
    let stride = rows.len().div_ceil(args.tsne_max.max(4));
    let tsne_rows: Vec<usize> = rows.iter().copied().step_by(stride.max(1)).collect();
    // Identities renumbered 0.. in order of first appearance, for colours.
    let mut ids: Vec<i64> = Vec::new();
    let identity_labels: Vec<usize> = tsne_rows
        .iter()
        .map(|&i| {
            let id = set.identity[i];
            ids.iter().position(|&x| x == id).unwrap_or_else(|| {
                ids.push(id);
                ids.len() - 1
            })
        })
        .collect();
    let id_names: Vec<String> = ids
        .iter()
        .map(|id| {
            let row = (0..set.rows())
                .find(|&i| set.identity[i] == *id)
                .unwrap_or(0);
            set.meta.identity_names[row].clone()
        })
        .collect();
    let mut kinds = Vec::new();
    for kind in [FeatureKind::T, FeatureKind::P] {
        if !set.has(kind) {
            continue;
        }
        let (buf, cols) = set.features(kind)?;
        let m = FeatureSet::matrix(&buf, cols);
        let sel = m.select_rows(&rows);
        let fits = channel_gaussianity(FeatureSet::matrix(&sel, cols), None);
        let summary = summarize(&fits);
        let tag = kind.tensor_name();
        let r2: Vec<f32> = fits
            .iter()
            .filter_map(|f| f.adj_r2())
            .map(|v| v as f32)
            .collect();
        let hist_png = out_dir.join(format!("gauss_r2_{tag}.png"));
        histogram_chart(
            &hist_png,
            &format!(
                "{}: adjusted R² of a Gaussian fit per channel (mean {:.3})",
                kind.label(),
                summary.mean_adj_r2
            ),
            "adjusted R²",
            &Histogram::new(&r2, 20),
            None,
            ChartSize::default(),
        )?;
        let grid_png = out_dir.join(format!("channels_{tag}.png"));
        channel_grid(
            &grid_png,
            &format!("{}: first 36 channels with Gaussian fits", kind.label()),
            &fits[..fits.len().min(36)],
            ChartSize::new(1400, 1100),
        )?;
        let mut a = KindAnalysis {
            feature: kind,
            gaussianity: summary,
            r2_histogram_png: rel(out_dir, &hist_png),
            channels_png: rel(out_dir, &grid_png),
            tsne_identity_png: None,
            tsne_attribute_png: None,
            tsne_identity_knn: None,
            tsne_attribute_knn: None,
        };
        if tsne_rows.len() >= 4 {
            let x = m.select_rows(&tsne_rows);
            let cfg = TsneConfig {
                epochs: args.tsne_epochs,
                seed: args.seed,
                ..TsneConfig::default()
            };
            let emb = tsne_2d(FeatureSet::matrix(&x, cols), &cfg)
                .with_context(|| format!("t-SNE of {}", kind.label()))?;
            let png = out_dir.join(format!("tsne_identity_{tag}.png"));
            scatter_chart(
                &png,
                &format!(
                    "t-SNE of {} coloured by identity ({} identities)",
                    kind.label(),
                    ids.len()
                ),
                &emb.points,
                &identity_labels,
                Some(id_names.as_slice()),
                ChartSize::new(900, 800),
            )?;
            a.tsne_identity_png = Some(rel(out_dir, &png));
            a.tsne_identity_knn = Some(knn_accuracy(&emb.points, &identity_labels, 5));
            if let Some((col, name)) = &attribute {
                let labels: Vec<usize> = tsne_rows
                    .iter()
                    .map(|&i| usize::from(set.attributes_of(i)[*col] > 0))
                    .collect();
                let png = out_dir.join(format!("tsne_attribute_{tag}.png"));
                let names = vec![format!("not {name}"), name.clone()];
                scatter_chart(
                    &png,
                    &format!("t-SNE of {} coloured by {name}", kind.label()),
                    &emb.points,
                    &labels,
                    Some(names.as_slice()),
                    ChartSize::new(900, 800),
                )?;
                a.tsne_attribute_png = Some(rel(out_dir, &png));
                a.tsne_attribute_knn = Some(knn_accuracy(&emb.points, &labels, 5));
            }
        }
        kinds.push(a);
    }
    Ok(AnalyzeOutput {
        features: args.features.display().to_string(),
        rows: rows.len(),
        tsne_rows: tsne_rows.len(),
        identities_in_tsne: ids.len(),
        attribute: attribute.map(|(_, n)| n),
        kinds,
    })
}

fn pick_attribute(set: &FeatureSet, asked: Option<&str>) -> Result<Option<(usize, String)>> {
    let names = &set.meta.attribute_names;
    match asked {
        Some(a) => match names.iter().position(|n| n == a) {
            Some(i) => Ok(Some((i, a.to_owned()))),
            None => bail!(
                "attribute {a:?} is not in the features (they have: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        },
        None => Ok(names
            .iter()
            .position(|n| n == "Smiling")
            .or((!names.is_empty()).then_some(0))
            .map(|i| (i, names[i].clone()))),
    }
}

/// `path` relative to `dir` when it is inside it.
fn rel(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

/// The numbers for people.
pub fn table(out: &AnalyzeOutput) -> Table {
    let mut t = Table::new([
        "feature",
        "channels",
        "mean adj R²",
        "median",
        "min",
        "> 0.99",
        "t-SNE 5-NN identity",
        "t-SNE 5-NN attribute",
    ]);
    let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v));
    for k in &out.kinds {
        let g = &k.gaussianity;
        t.row([
            k.feature.label().to_owned(),
            g.channels.to_string(),
            format!("{:.4}", g.mean_adj_r2),
            format!("{:.4}", g.median_adj_r2),
            format!("{:.4}", g.min_adj_r2),
            format!("{:.1}%", 100.0 * g.above_0_99),
            f(k.tsne_identity_knn),
            f(k.tsne_attribute_knn),
        ]);
    }
    t
}

/// Run `analyze`.
pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let set = FeatureSet::read(&args.features)?;
    let out = analyze(&set, args)?;
    let json_path = args.out.join("analyze.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&out)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} rows ({} in t-SNE, {} identities){}",
        out.rows,
        out.tsne_rows,
        out.identities_in_tsne,
        out.attribute
            .as_ref()
            .map_or(String::new(), |a| format!(", attribute {a}"))
    );
    print!("{}", table(&out));
    println!("figures and analyze.json → {}", args.out.display());
    Ok(())
}
