//! Aligned text tables for people: columns padded to their widest cell, numbers right-aligned.
//!
//! Markdown pipes would read well on GitHub but badly in a terminal; this is the terminal form
//! ([`Table::to_markdown`] gives the other).

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of string cells with a header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; the first column is left-aligned, the others right
    /// (labels, then numbers), until [`Table::align`] says otherwise.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        let align = (0..headers.len())
            .map(|i| if i == 0 { Align::Left } else { Align::Right })
            .collect();
        Table {
            headers,
            align,
            rows: Vec::new(),
        }
    }

    /// Set the alignment of column `col`.
    pub fn align(mut self, col: usize, align: Align) -> Table {
        if let Some(a) = self.align.get_mut(col) {
            *a = align;
        }
        self
    }

    /// Append a row; missing cells are blank and extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        let mut r: Vec<String> = cells.into_iter().map(Into::into).collect();
        r.resize(self.headers.len(), String::new());
        self.rows.push(r);
        self
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.headers.len())
            .map(|c| {
                std::iter::once(&self.headers[c])
                    .chain(self.rows.iter().map(|r| &r[c]))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn line(&self, cells: &[String], widths: &[usize], sep: &str) -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .zip(&self.align)
            .map(|((c, &w), a)| match a {
                Align::Left => format!("{c:<w$}"),
                Align::Right => format!("{c:>w$}"),
            })
            .collect();
        parts.join(sep).trim_end().to_owned()
    }

    /// The table as text: header, a rule of dashes, rows; columns two spaces apart.
    pub fn render(&self) -> String {
        let w = self.widths();
        let mut out = self.line(&self.headers, &w, "  ");
        out.push('\n');
        let rule: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
        out.push_str(&rule.join("  "));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&self.line(r, &w, "  "));
            out.push('\n');
        }
        out
    }

    /// The table as GitHub Markdown, with the same alignment.
    pub fn to_markdown(&self) -> String {
        let w: Vec<usize> = self.widths().iter().map(|&n| n.max(3)).collect();
        let esc = |s: &String| s.replace('|', "\\|");
        let row = |cells: &[String]| {
            let c: Vec<String> = cells.iter().map(esc).collect();
            format!("| {} |", self.line(&c, &w, " | "))
        };
        let mut out = row(&self.headers);
        out.push('\n');
        let rule: Vec<String> = w
            .iter()
            .zip(&self.align)
            .map(|(&n, a)| match a {
                Align::Left => format!(":{}", "-".repeat(n - 1)),
                Align::Right => format!("{}:", "-".repeat(n - 1)),
            })
            .collect();
        out.push_str(&format!("| {} |\n", rule.join(" | ")));
        for r in &self.rows {
            out.push_str(&row(r));
            out.push('\n');
        }
        out
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// `mean ± std` as percentages with two decimals, the usual LFW form (`99.20 ± 0.31`).
pub fn percent_pm(mean: f64, std: f64) -> String {
    format!("{:.2} ± {:.2}", 100.0 * mean, 100.0 * std)
}

/// A fraction as a percentage with two decimals.
pub fn percent(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_pad() {
        let mut t = Table::new(["feature", "acc %", "TPR %"]);
        t.row(["f_T", &percent_pm(0.992, 0.0031), &percent(0.5)]);
        t.row(["f_C (concat)", "98.00 ± 1.00"]);
        assert_eq!(
            t.render(),
            "feature              acc %  TPR %\n\
             ------------  ------------  -----\n\
             f_T           99.20 ± 0.31  50.00\n\
             f_C (concat)  98.00 ± 1.00\n"
        );
        assert_eq!(t.len(), 2);
        let md = t.align(2, Align::Left).to_markdown();
        assert!(md.starts_with("| feature      |        acc % | TPR % |\n| :----------- | -----------: | :---- |\n"), "{md}");
    }
}
