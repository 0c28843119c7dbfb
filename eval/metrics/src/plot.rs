//! PNG charts for reports: ROC curves, per-attribute bars, histograms with a Gaussian overlay, a
//! 6×6 grid of channel distributions, labelled scatter plots and training curves.
//!
//! Text is drawn from DejaVu Sans embedded in the binary (the `dejavu` crate) through plotters'
//! `ab_glyph` backend, registered as the `sans-serif` family on first use: the machines that make
//! reports need not have any system font, and plotters' default `ttf` backend would need
//! fontconfig and installed fonts.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::gauss::{ChannelFit, GaussianCurve, Histogram as Hist};

const FONT: &str = "sans-serif";

/// Errors drawing or writing a chart.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    #[error("cannot draw chart {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("cannot load the embedded font: {0}")]
    Font(String),
    #[error("chart {path}: {message}")]
    Input { path: PathBuf, message: String },
}

/// Pixel size of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartSize {
    pub width: u32,
    pub height: u32,
}

impl ChartSize {
    pub const fn new(width: u32, height: u32) -> Self {
        ChartSize { width, height }
    }
}

impl Default for ChartSize {
    fn default() -> Self {
        ChartSize::new(800, 600)
    }
}

/// A named polyline (ROC curve, training curve).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn ensure_fonts() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for (style, name, bytes) in [
                (FontStyle::Normal, "regular", dejavu::sans::regular()),
                (FontStyle::Bold, "bold", dejavu::sans::bold()),
            ] {
                plotters::style::register_font(FONT, style, bytes)
                    .map_err(|_| format!("DejaVu Sans {name} did not parse"))?;
            }
            Ok(())
        })
        .clone()
        .map_err(PlotError::Font)
}

/// Turns any drawing error into [`PlotError::Draw`] naming the file.
fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn input_err(path: &Path, message: impl Into<String>) -> PlotError {
    PlotError::Input {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The colour of series or class `i`: matplotlib's tab10, then evenly spaced hues.
pub fn color(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    if i < TAB10.len() {
        let (r, g, b) = TAB10[i];
        return RGBColor(r, g, b);
    }
    // Golden-ratio hue steps keep neighbouring classes apart.
    let h = (i as f64 * 0.618_033_988_75).fract();
    let (r, g, b) = hsv_to_rgb(h, 0.75, 0.85);
    RGBColor(r, g, b)
}

fn hsv_to_rgb(h: f64, s: f64, v: f64) -> (u8, u8, u8) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    let (r, g, b) = match i as i32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    ((r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8)
}

/// Axis tick text: integers without decimals, small values with up to 4 significant digits and
/// no trailing zeros, very large or small ones in exponent form (plotters' default prints
/// `1000.0` and `0.0010000`).
pub fn tick_label(v: &f64) -> String {
    let v = *v;
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.0e}");
    }
    if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        return format!("{v:.0}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A range that contains `lo..hi` with a margin, and is never empty.
fn padded(lo: f64, hi: f64, frac: f64) -> Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    if hi > lo {
        let m = (hi - lo) * frac;
        lo - m..hi + m
    } else {
        lo - 0.5..hi + 0.5
    }
}

/// ROC curves of several features on one chart, FPR on a log axis from `1e-4` when `log_fpr`
/// (the paper's operating point FPR = 1e-3 is then marked), else linear.
pub fn roc_chart(
    path: &Path,
    title: &str,
    curves: &[Series],
    log_fpr: bool,
    size: ChartSize,
) -> Result<(), PlotError> {
    ensure_fonts()?;
    if log_fpr {
        let lo = 1e-4;
        let clamped: Vec<Series> = curves
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s.points.iter().map(|&(x, y)| (x.max(lo), y)).collect(),
            })
            .collect();
        line_chart_on(
            path,
            title,
            "false positive rate (log)",
            "true positive rate",
            &clamped,
            (lo..1.0).log_scale(),
            0.0..1.0,
            Some(1e-3),
            SeriesLabelPosition::UpperLeft,
            11,
            size,
        )
    } else {
        line_chart_on(
            path,
            title,
            "false positive rate",
            "true positive rate",
            curves,
            0.0..1.0,
            0.0..1.0,
            None,
            SeriesLabelPosition::LowerRight,
            11,
            size,
        )
    }
}

/// Lines from `(x, y)` series, e.g. training curves from the metrics log; `log_y` for losses.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
    size: ChartSize,
) -> Result<(), PlotError> {
    ensure_fonts()?;
    let pts = || series.iter().flat_map(|s| s.points.iter());
    if pts().next().is_none() {
        return Err(input_err(path, "no points to plot"));
    }
    let (xl, xh) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
        (l.min(p.0), h.max(p.0))
    });
    let x = padded(xl, xh, 0.02);
    if log_y {
        let pos: Vec<f64> = pts()
            .map(|p| p.1)
            .filter(|&v| v > 0.0 && v.is_finite())
            .collect();
        if pos.is_empty() {
            return Err(input_err(path, "log scale needs positive values"));
        }
        let (yl, yh) = pos
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        // Plotters' log axis labels only whole values here (1, 2, …): ticks below 1 stay blank.
        let (yl, yh) = if yh > yl {
            (yl / 1.2, yh * 1.2)
        } else {
            (yl / 2.0, yh * 2.0)
        };
        let kept: Vec<Series> = series
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s.points.iter().copied().filter(|p| p.1 > 0.0).collect(),
            })
            .collect();
        line_chart_on(
            path,
            title,
            x_label,
            y_label,
            &kept,
            x,
            (yl..yh).log_scale(),
            None,
            SeriesLabelPosition::UpperRight,
            // Log axes only label the decades' subdivisions when asked for many labels.
            24,
            size,
        )
    } else {
        let (yl, yh) = pts()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
        line_chart_on(
            path,
            title,
            x_label,
            y_label,
            series,
            x,
            padded(yl, yh, 0.05),
            None,
            SeriesLabelPosition::UpperRight,
            10,
            size,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn line_chart_on<X, Y>(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x: X,
    y: Y,
    mark_x: Option<f64>,
    legend: SeriesLabelPosition,
    y_labels: usize,
    size: ChartSize,
) -> Result<(), PlotError>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = draw_err(path);
    let root = BitMapBackend::new(path, (size.width, size.height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .y_labels(y_labels)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(&e)?;
    if let Some(mx) = mark_x {
        let (y0, y1) = (chart.y_range().start, chart.y_range().end);
        chart
            .draw_series(DashedLineSeries::new(
                [(mx, y0), (mx, y1)],
                6,
                4,
                RGBColor(120, 120, 120).stroke_width(1),
            ))
            .map_err(&e)?
            .label(format!("FPR = {mx}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(120, 120, 120)));
    }
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                s.points
                    .iter()
                    .copied()
                    .filter(|p| p.0.is_finite() && p.1.is_finite()),
                c.stroke_width(2),
            ))
            .map_err(&e)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// Height that gives each bar of [`bar_chart`] 20 pixels.
pub fn bar_chart_height(bars: usize) -> u32 {
    110 + 20 * bars as u32
}

/// Horizontal bars, one per named value, in the given order, positive ones blue and negative
/// ones red (e.g. the f_P − f_T attribute accuracy difference, the paper's Figure 5a). The
/// height is [`bar_chart_height`] so every name stays readable.
pub fn bar_chart(
    path: &Path,
    title: &str,
    value_label: &str,
    bars: &[(String, f64)],
    width: u32,
) -> Result<(), PlotError> {
    ensure_fonts()?;
    if bars.is_empty() {
        return Err(input_err(path, "no bars to plot"));
    }
    let e = draw_err(path);
    let n = bars.len();
    let (lo, hi) = bars
        .iter()
        .fold((0.0f64, 0.0f64), |(l, h), b| (l.min(b.1), h.max(b.1)));
    let root = BitMapBackend::new(path, (width, bar_chart_height(n))).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let label_width = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(4) as u32 * 8 + 16;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(label_width)
        .build_cartesian_2d(padded(lo, hi, 0.05), -0.5..(n as f64 - 0.5))
        .map_err(&e)?;
    let formatter = |y: &f64| {
        let i = y.round();
        if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            // Top to bottom in the given order.
            names[n - 1 - i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(value_label)
        .x_label_formatter(&tick_label)
        .y_labels(n + 1)
        .y_label_formatter(&formatter)
        .disable_y_mesh()
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(&e)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let y = (n - 1 - i) as f64;
            let c = if *v >= 0.0 { color(0) } else { color(3) };
            Rectangle::new([(0.0, y - 0.38), (*v, y + 0.38)], c.filled())
        }))
        .map_err(&e)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, -0.5), (0.0, n as f64 - 0.5)],
            BLACK.stroke_width(1),
        )))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// A histogram with an optional fitted Gaussian drawn over it (the paper's Figure 8 shows
/// histograms of adjusted R² over channels; with a curve this is one channel's fit).
pub fn histogram_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    hist: &Hist,
    curve: Option<&GaussianCurve>,
    size: ChartSize,
) -> Result<(), PlotError> {
    ensure_fonts()?;
    let e = draw_err(path);
    let root = BitMapBackend::new(path, (size.width, size.height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (x, ymax) = hist_ranges(hist, curve);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x, 0.0..ymax)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("count")
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(&e)?;
    draw_hist(path, &mut chart, hist, curve, 2)?;
    if curve.is_some() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

fn hist_ranges(hist: &Hist, curve: Option<&GaussianCurve>) -> (Range<f64>, f64) {
    let w = if hist.width > 0.0 { hist.width } else { 1.0 };
    let hi = hist.lo + w * hist.counts.len() as f64;
    let peak = hist.counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let peak = curve.map_or(peak, |c| peak.max(c.amplitude));
    (padded(hist.lo, hi, 0.02), peak * 1.1)
}

type Chart2d<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn draw_hist(
    path: &Path,
    chart: &mut Chart2d<'_, '_>,
    hist: &Hist,
    curve: Option<&GaussianCurve>,
    stroke: u32,
) -> Result<(), PlotError> {
    let io_kind = draw_err(path);
    let w = if hist.width > 0.0 { hist.width } else { 1.0 };
    let bar = RGBColor(158, 202, 225);
    chart
        .draw_series(hist.counts.iter().enumerate().map(|(i, &c)| {
            let x0 = hist.lo + i as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w, c as f64)], bar.filled())
        }))
        .map_err(&io_kind)?;
    if let Some(c) = curve {
        let hi = hist.lo + w * hist.counts.len() as f64;
        let steps = 200;
        let red = color(3);
        chart
            .draw_series(LineSeries::new(
                (0..=steps).map(|k| {
                    let x = hist.lo + (hi - hist.lo) * k as f64 / steps as f64;
                    (x, c.eval(x))
                }),
                red.stroke_width(stroke),
            ))
            .map_err(&io_kind)?
            .label(format!(
                "Gaussian fit (μ = {:.3}, σ = {:.3})",
                c.mean, c.std
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    }
    Ok(())
}

/// The distributions of the first 36 channels as a 6×6 grid of small histograms with their
/// Gaussian fits, each titled with its channel and adjusted R² (the paper's Figure 7).
pub fn channel_grid(
    path: &Path,
    title: &str,
    fits: &[ChannelFit],
    size: ChartSize,
) -> Result<(), PlotError> {
    ensure_fonts()?;
    if fits.is_empty() {
        return Err(input_err(path, "no channels to plot"));
    }
    let e = draw_err(path);
    let root = BitMapBackend::new(path, (size.width, size.height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root.titled(title, (FONT, 24)).map_err(&e)?;
    let cells = root.split_evenly((6, 6));
    for (cell, fit) in cells.iter().zip(fits.iter().take(36)) {
        let (x, ymax) = hist_ranges(&fit.histogram, fit.fit.as_ref().map(|f| &f.curve));
        let caption = match &fit.fit {
            Some(f) => format!("ch {}  adj R² {:.3}", fit.channel, f.adj_r2),
            None => format!("ch {}  (constant)", fit.channel),
        };
        let mut chart = ChartBuilder::on(cell)
            .caption(caption, (FONT, 13))
            .margin(4)
            .x_label_area_size(16)
            .build_cartesian_2d(x, 0.0..ymax)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_x_mesh()
            .disable_y_axis()
            .x_labels(3)
            .x_label_formatter(&tick_label)
            .label_style((FONT, 10))
            .draw()
            .map_err(&e)?;
        draw_hist(
            path,
            &mut chart,
            &fit.histogram,
            fit.fit.as_ref().map(|f| &f.curve),
            1,
        )?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Points coloured by integer label, e.g. a t-SNE embedding by identity or attribute (the
/// paper's Figures 1b and 4). With `names`, a legend lists up to 20 classes.
pub fn scatter_chart(
    path: &Path,
    title: &str,
    points: &[[f32; 2]],
    labels: &[usize],
    names: Option<&[String]>,
    size: ChartSize,
) -> Result<(), PlotError> {
    ensure_fonts()?;
    if points.is_empty() || points.len() != labels.len() {
        return Err(input_err(
            path,
            format!("{} points with {} labels", points.len(), labels.len()),
        ));
    }
    let e = draw_err(path);
    let fold = |k: usize| {
        points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
                (l.min(f64::from(p[k])), h.max(f64::from(p[k])))
            })
    };
    let ((xl, xh), (yl, yh)) = (fold(0), fold(1));
    let root = BitMapBackend::new(path, (size.width, size.height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(padded(xl, xh, 0.05), padded(yl, yh, 0.05))
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .label_style((FONT, 12))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(&e)?;
    let max_label = labels.iter().copied().max().unwrap_or(0);
    let legend = names.filter(|n| n.len() > max_label && max_label < 20);
    for class in 0..=max_label {
        let c = color(class);
        let pts = points
            .iter()
            .zip(labels)
            .filter(|(_, &l)| l == class)
            .map(|(p, _)| Circle::new((f64::from(p[0]), f64::from(p[1])), 3, c.mix(0.8).filled()));
        let drawn = chart.draw_series(pts).map_err(&e)?;
        if let Some(names) = legend {
            drawn
                .label(names[class].clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
        }
    }
    if legend.is_some() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        let t = |v: f64| tick_label(&v);
        assert_eq!(
            [
                t(0.0),
                t(1000.0),
                t(-2.0),
                t(0.001),
                t(0.25),
                t(1.5),
                t(0.1 + 0.2),
                t(1e-4),
                t(3e6)
            ],
            ["0", "1000", "-2", "0.001", "0.25", "1.5", "0.3", "1e-4", "3e6"]
        );
    }
}
