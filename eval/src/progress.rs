//! The progress bar every long eval loop shows (rate and ETA), hidden when not wanted.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items counted in `unit`, labelled `what`; hidden unless `show`.
pub fn bar(len: u64, what: &str, unit: &str, show: bool) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg:>12}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}
