//! Every chart writes a PNG of the requested size with real content. Set
//! `D2AE_METRICS_PLOT_DIR` to keep the images for looking at them.

use std::path::{Path, PathBuf};

use d2ae_metrics::gauss::{channel_gaussianity, fit_channel, Histogram};
use d2ae_metrics::plot::{
    bar_chart, bar_chart_height, channel_grid, histogram_chart, line_chart, roc_chart,
    scatter_chart, ChartSize, Series,
};
use d2ae_metrics::tsne::{knn_accuracy, tsne_2d, TsneConfig};
use d2ae_metrics::verify::{lfw_protocol, PAPER_FPR};
use d2ae_metrics::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn out_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("D2AE_METRICS_PLOT_DIR") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (None, PathBuf::from(d))
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_owned();
            (Some(t), p)
        }
    }
}

/// Width and height from the PNG header, and the number of distinct colours is not checked here
/// (that needs a decoder); instead the file must be far larger than an empty white image.
fn png_size(path: &Path) -> (u32, u32, usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    (be(16), be(20), bytes.len())
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    rng.sample(StandardNormal)
}

#[test]
fn roc_curves_linear_and_log() {
    let (_keep, dir) = out_dir();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut curves = vec![];
    for (name, gap) in [("f_T", 0.5), ("f_P", 0.05), ("f_C", 0.45)] {
        let (mut s, mut y, mut f) = (vec![], vec![], vec![]);
        for i in 0..6000 {
            let same = (i / 300) % 2 == 0;
            s.push(f64::from(normal(&mut rng)) * 0.15 + if same { 0.2 + gap } else { 0.2 });
            y.push(same);
            f.push(i / 600);
        }
        let r = lfw_protocol(&s, &y, &f, &[PAPER_FPR]).unwrap();
        curves.push(Series {
            name: format!("{name} (AUC {:.3})", r.auc),
            points: r.roc.iter().map(|p| (p.fpr, p.tpr)).collect(),
        });
    }
    for (file, log) in [("roc.png", false), ("roc_log.png", true)] {
        let p = dir.join(file);
        roc_chart(
            &p,
            "ROC on synthetic LFW-like pairs",
            &curves,
            log,
            ChartSize::new(700, 560),
        )
        .unwrap();
        let (w, h, len) = png_size(&p);
        assert_eq!((w, h), (700, 560));
        assert!(len > 10_000, "{file}: {len} bytes");
    }
}

#[test]
fn attribute_difference_bars() {
    let (_keep, dir) = out_dir();
    let attr =
        std::fs::read_to_string(d2ae_tests::shared_data().join("celeba-mini/list_attr_celeba.txt"))
            .unwrap();
    let names: Vec<&str> = attr.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(names.len(), 40);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let bars: Vec<(String, f64)> = names
        .iter()
        .map(|n| (n.to_string(), f64::from(normal(&mut rng)) * 4.0))
        .collect();
    let p = dir.join("attribute_diff.png");
    bar_chart(
        &p,
        "Attribute accuracy: f_P − f_T",
        "accuracy difference (points)",
        &bars,
        720,
    )
    .unwrap();
    let (w, h, len) = png_size(&p);
    assert_eq!((w, h), (720, bar_chart_height(40)));
    assert!(len > 10_000);
}

#[test]
fn histograms_grid_and_lines() {
    let (_keep, dir) = out_dir();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // 40 channels × 3000 samples: Gaussian, except every 7th bimodal and channel 5 uniform.
    let (n, d) = (3000, 40);
    let mut data = vec![0.0f32; n * d];
    for i in 0..n {
        for j in 0..d {
            data[i * d + j] = match j {
                5 => rng.random::<f32>() * 4.0 - 2.0,
                j if j % 7 == 3 => {
                    normal(&mut rng) * 0.5 + if rng.random::<bool>() { 1.5 } else { -1.5 }
                }
                j => normal(&mut rng) * (0.5 + j as f32 / 40.0) + j as f32 / 10.0,
            };
        }
    }
    let fits = channel_gaussianity(Matrix::new(&data, d).unwrap(), None);
    let p = dir.join("channels.png");
    channel_grid(
        &p,
        "f_T: first 36 channels",
        &fits,
        ChartSize::new(1200, 1200),
    )
    .unwrap();
    let (w, h, len) = png_size(&p);
    assert_eq!((w, h), (1200, 1200));
    assert!(len > 30_000, "{len}");

    let one = fit_channel(
        0,
        &data.iter().step_by(d).copied().collect::<Vec<_>>(),
        None,
    );
    let p = dir.join("channel0.png");
    let title = format!("channel 0: adj R² = {:.4}", one.adj_r2().unwrap());
    histogram_chart(
        &p,
        &title,
        "value",
        &one.histogram,
        one.fit.as_ref().map(|f| &f.curve),
        ChartSize::default(),
    )
    .unwrap();
    assert_eq!(png_size(&p).0, 800);

    let r2: Vec<f32> = fits
        .iter()
        .filter_map(|f| f.adj_r2())
        .map(|v| v as f32)
        .collect();
    let p = dir.join("adj_r2.png");
    histogram_chart(
        &p,
        "adjusted R² over channels",
        "adjusted R²",
        &Histogram::new(&r2, 20),
        None,
        ChartSize::new(640, 480),
    )
    .unwrap();
    assert_eq!(png_size(&p).1, 480);

    let steps: Vec<f64> = (0..200).map(|s| s as f64 * 50.0).collect();
    let series = vec![
        Series {
            name: "reconstruction".into(),
            points: steps
                .iter()
                .map(|&s| (s, 2.0 * (-s / 3000.0).exp() + 0.05))
                .collect(),
        },
        Series {
            name: "identity CE".into(),
            points: steps
                .iter()
                .map(|&s| (s, 7.0 * (-s / 1500.0).exp() + 0.3))
                .collect(),
        },
    ];
    let p = dir.join("losses.png");
    line_chart(
        &p,
        "training losses",
        "step",
        "loss",
        &series,
        true,
        ChartSize::new(800, 450),
    )
    .unwrap();
    assert_eq!(png_size(&p).1, 450);
    let p = dir.join("losses_linear.png");
    line_chart(
        &p,
        "training losses",
        "step",
        "loss",
        &series,
        false,
        ChartSize::new(800, 450),
    )
    .unwrap();
    assert!(png_size(&p).2 > 10_000);
}

#[test]
fn tsne_separates_clusters_and_scatter_shows_them() {
    let (_keep, dir) = out_dir();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // Three well-separated 32-D clusters of 100 points.
    let d = 32;
    let centres: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..d).map(|_| normal(&mut rng) * 5.0).collect())
        .collect();
    let mut data = vec![];
    let mut labels = vec![];
    for (c, centre) in centres.iter().enumerate() {
        for _ in 0..100 {
            data.extend(centre.iter().map(|&m| m + normal(&mut rng)));
            labels.push(c);
        }
    }
    let cfg = TsneConfig {
        perplexity: 20.0,
        epochs: 500,
        deterministic: true,
        ..TsneConfig::default()
    };
    let e = tsne_2d(Matrix::new(&data, d).unwrap(), &cfg).unwrap();
    assert_eq!(e.points.len(), 300);
    let acc = knn_accuracy(&e.points, &labels, 5);
    assert!(acc > 0.99, "kNN accuracy in the embedding {acc}");
    // Shuffled labels do not separate: the score can fail.
    let mut shuffled = labels.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.random_range(0..=i));
    }
    assert!(knn_accuracy(&e.points, &shuffled, 5) < 0.6);
    // Same seed, same embedding.
    assert_eq!(tsne_2d(Matrix::new(&data, d).unwrap(), &cfg).unwrap(), e);

    let names: Vec<String> = ["Alice", "Bob", "Carol"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let p = dir.join("tsne.png");
    scatter_chart(
        &p,
        "t-SNE of f_T by identity",
        &e.points,
        &labels,
        Some(&names),
        ChartSize::new(640, 640),
    )
    .unwrap();
    let (w, h, len) = png_size(&p);
    assert_eq!((w, h), (640, 640));
    assert!(len > 10_000);
}
