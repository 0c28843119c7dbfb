//! The `manifest` layout: a CSV or JSONL file with one row per image. This is how users bring any
//! dataset whose folders do not say the identity.
//!
//! CSV (header required; `.csv`): `path` (or `file`, `image`), `identity`, and optionally
//! `landmarks` (10 numbers for 5 points or 4 for the 2 eyes, separated by spaces, commas or
//! semicolons), `split`, `attr:<Name>` columns (`1`/`true`/`yes` or `-1`/`0`/`false`/`no`) and
//! `factor:<Name>` columns (numbers). Empty cells mean "not given". Other columns (a `box`, notes)
//! are ignored, so an existing table can serve as a manifest as it is.
//!
//! JSONL (`.jsonl`, `.ndjson`, `.json`): one object per line with the same keys; `landmarks` as
//! `[[x, y], ...]` or a flat list, `attributes` as `{name: bool | ±1 | 0}`, `factors` as
//! `{name: number}`; the identity may be a string or a number.
//!
//! Paths are relative to the manifest's folder (absolute paths are used as they are). The
//! `source` recorded for a row is its path as written (minus a leading `./`), so keys stay stable
//! when the whole tree moves.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{points_from_flat, Layout, Points, SourceDataset, SourceError, SourceItem};

const PATH_COLUMNS: &[&str] = &["path", "file", "image"];

/// One row before attribute and factor names are known for the whole file.
struct Row {
    source: String,
    identity: String,
    landmarks: Option<Points>,
    split: Option<String>,
    attributes: BTreeMap<String, bool>,
    factors: BTreeMap<String, f32>,
}

/// Read a CSV or JSONL manifest.
pub fn load(path: &Path) -> Result<SourceDataset, SourceError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (rows, attr_names, factor_names) = match ext.as_str() {
        "csv" => read_csv(path)?,
        "jsonl" | "ndjson" | "json" => read_jsonl(path)?,
        _ => {
            return Err(SourceError::Invalid {
                path: path.to_owned(),
                message: "a manifest must end in .csv or .jsonl (or .ndjson/.json)".into(),
            })
        }
    };
    let root = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let items = rows
        .into_iter()
        .map(|row| SourceItem {
            face_box: None,
            path: root.join(&row.source),
            attributes: attr_names
                .iter()
                .map(|n| row.attributes.get(n).copied())
                .collect(),
            factors: factor_names
                .iter()
                .map(|n| row.factors.get(n).copied())
                .collect(),
            source: row.source,
            identity: row.identity,
            landmarks: row.landmarks,
            split: row.split,
        })
        .collect();
    Ok(SourceDataset {
        layout: Layout::Manifest,
        root,
        items,
        attributes: attr_names,
        factors: factor_names,
    })
}

fn clean_source(raw: &str) -> String {
    let s = raw.trim().replace('\\', "/");
    s.strip_prefix("./").map(str::to_owned).unwrap_or(s)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "-1" | "0" | "false" | "no" => Ok(false),
        other => Err(format!(
            "attribute value {other:?} is not 1/true/yes or -1/0/false/no"
        )),
    }
}

fn parse_number(v: &str) -> Result<f32, String> {
    v.trim()
        .parse::<f32>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("{v:?} is not a finite number"))
}

/// Remember `name` in first-seen order.
fn note_name(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_owned());
    }
}

type Parsed = (Vec<Row>, Vec<String>, Vec<String>);

fn read_csv(path: &Path) -> Result<Parsed, SourceError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| csv_error(path, 1, e))?;
    let headers = reader.headers().map_err(|e| csv_error(path, 1, e))?.clone();
    let find = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let path_col = PATH_COLUMNS.iter().find_map(|c| find(c)).ok_or_else(|| {
        SourceError::parse(
            path,
            1,
            format!("no image path column (one of {})", PATH_COLUMNS.join(", ")),
        )
    })?;
    let identity_col =
        find("identity").ok_or_else(|| SourceError::parse(path, 1, "no `identity` column"))?;
    let landmarks_col = find("landmarks");
    let split_col = find("split");
    let attr_cols: Vec<(usize, String)> = prefixed(&headers, "attr:");
    let factor_cols: Vec<(usize, String)> = prefixed(&headers, "factor:");

    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| csv_error(path, line, e))?;
        let cell = |c: usize| record.get(c).unwrap_or("").trim();
        let source = clean_source(cell(path_col));
        if source.is_empty() {
            return Err(SourceError::parse(path, line, "empty image path"));
        }
        let identity = cell(identity_col).to_owned();
        if identity.is_empty() {
            return Err(SourceError::parse(
                path,
                line,
                format!("no identity for {source}"),
            ));
        }
        let landmarks = match landmarks_col.map(cell).filter(|c| !c.is_empty()) {
            None => None,
            Some(text) => {
                let values = text
                    .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
                    .filter(|t| !t.is_empty())
                    .map(parse_number)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| SourceError::parse(path, line, m))?;
                Some(points_from_flat(&values).map_err(|m| SourceError::parse(path, line, m))?)
            }
        };
        let split = split_col
            .map(cell)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let mut attributes = BTreeMap::new();
        for (c, name) in &attr_cols {
            if !cell(*c).is_empty() {
                let v = parse_bool(cell(*c)).map_err(|m| SourceError::parse(path, line, m))?;
                attributes.insert(name.clone(), v);
            }
        }
        let mut factors = BTreeMap::new();
        for (c, name) in &factor_cols {
            if !cell(*c).is_empty() {
                let v = parse_number(cell(*c)).map_err(|m| SourceError::parse(path, line, m))?;
                factors.insert(name.clone(), v);
            }
        }
        rows.push(Row {
            source,
            identity,
            landmarks,
            split,
            attributes,
            factors,
        });
    }
    let names = |cols: Vec<(usize, String)>| cols.into_iter().map(|(_, n)| n).collect();
    Ok((rows, names(attr_cols), names(factor_cols)))
}

fn prefixed(headers: &csv::StringRecord, prefix: &str) -> Vec<(usize, String)> {
    headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_prefix(prefix).map(|n| (i, n.trim().to_owned())))
        .collect()
}

fn csv_error(path: &Path, line: usize, e: csv::Error) -> SourceError {
    let line = e.position().map(|p| p.line() as usize).unwrap_or(line);
    SourceError::parse(path, line, e.to_string())
}

fn read_jsonl(path: &Path) -> Result<Parsed, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| SourceError::io(path, e))?;
    let mut rows = Vec::new();
    let mut attr_names = Vec::new();
    let mut factor_names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| SourceError::parse(path, n, format!("invalid JSON: {e}")))?;
        let row = json_row(&value).map_err(|m| SourceError::parse(path, n, m))?;
        row.attributes
            .keys()
            .for_each(|k| note_name(&mut attr_names, k));
        row.factors
            .keys()
            .for_each(|k| note_name(&mut factor_names, k));
        rows.push(row);
    }
    Ok((rows, attr_names, factor_names))
}

fn json_row(value: &Value) -> Result<Row, String> {
    let obj = value.as_object().ok_or("each line must be a JSON object")?;
    let source = PATH_COLUMNS
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .map(clean_source)
        .filter(|s| !s.is_empty())
        .ok_or("no image path (`path`, `file` or `image`)")?;
    let identity = match obj.get("identity") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("no identity (string or number) for {source}")),
    };
    let landmarks = match obj.get("landmarks") {
        None | Some(Value::Null) => None,
        Some(v) => Some(json_points(v)?),
    };
    let split = obj.get("split").and_then(Value::as_str).map(str::to_owned);
    let mut attributes = BTreeMap::new();
    if let Some(attrs) = obj.get("attributes").and_then(Value::as_object) {
        for (name, v) in attrs {
            let b = match v {
                Value::Bool(b) => *b,
                Value::Number(n) => parse_bool(&n.to_string())?,
                Value::String(s) => parse_bool(s)?,
                Value::Null => continue,
                other => return Err(format!("attribute {name}: {other} is not a boolean")),
            };
            attributes.insert(name.clone(), b);
        }
    }
    let mut factors = BTreeMap::new();
    if let Some(fs) = obj.get("factors").and_then(Value::as_object) {
        for (name, v) in fs {
            let f = v
                .as_f64()
                .map(|f| f as f32)
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("factor {name}: {v} is not a finite number"))?;
            factors.insert(name.clone(), f);
        }
    }
    Ok(Row {
        source,
        identity,
        landmarks,
        split,
        attributes,
        factors,
    })
}

fn json_points(v: &Value) -> Result<Points, String> {
    let list = v.as_array().ok_or("landmarks must be a list")?;
    let mut flat = Vec::new();
    for item in list {
        match item {
            Value::Array(pair) => flat.extend(pair.iter().map(|x| x.as_f64().map(|f| f as f32))),
            other => flat.push(other.as_f64().map(|f| f as f32)),
        }
    }
    let flat: Vec<f32> = flat
        .into_iter()
        .collect::<Option<_>>()
        .ok_or("landmarks must be numbers")?;
    points_from_flat(&flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_csv_with_optional_columns() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("list.csv");
        std::fs::write(
            &m,
            "file,identity,landmarks,split,attr:Smiling,factor:light,note\n\
             ./a/1.jpg,ann,\"10 20 30 20\",val,yes,0.5,first\n\
             b/2.png,bob,,,-1,,\n",
        )
        .unwrap();
        let ds = load(&m).unwrap();
        assert_eq!(ds.layout, Layout::Manifest);
        assert_eq!(ds.attributes, vec!["Smiling"]);
        assert_eq!(ds.factors, vec!["light"]);
        let a = &ds.items[0];
        assert_eq!(a.source, "a/1.jpg");
        assert_eq!(a.path, dir.path().join("a/1.jpg"));
        assert_eq!(a.landmarks, Some(vec![[10.0, 20.0], [30.0, 20.0]]));
        assert_eq!(a.split.as_deref(), Some("val"));
        assert_eq!(a.attributes, vec![Some(true)]);
        assert_eq!(a.factors, vec![Some(0.5)]);
        let b = &ds.items[1];
        assert_eq!((b.landmarks.is_none(), b.split.is_none()), (true, true));
        assert_eq!(b.attributes, vec![Some(false)]);
        assert_eq!(b.factors, vec![None]);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("list.csv");
        std::fs::write(&m, "path,identity,landmarks\na.jpg,x,1 2 3\n").unwrap();
        let err = load(&m).unwrap_err().to_string();
        assert!(err.contains("list.csv:2") && err.contains("got 3"), "{err}");
        std::fs::write(&m, "path,who\na.jpg,x\n").unwrap();
        assert!(load(&m)
            .unwrap_err()
            .to_string()
            .contains("no `identity` column"));
    }

    #[test]
    fn reads_jsonl_with_nested_and_flat_landmarks() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("list.jsonl");
        std::fs::write(
            &m,
            r#"{"path":"x/1.jpg","identity":42,"landmarks":[[1,2],[3,4]],"attributes":{"Male":1,"Smiling":false},"factors":{"hue":0.25}}

{"image":"x/2.jpg","identity":"bob","landmarks":[1,2,3,4,5,6,7,8,9,10],"split":"test","attributes":{"Young":"yes"}}
"#,
        )
        .unwrap();
        let ds = load(&m).unwrap();
        assert_eq!(ds.attributes, vec!["Male", "Smiling", "Young"]);
        assert_eq!(ds.items[0].identity, "42");
        assert_eq!(ds.items[0].attributes, vec![Some(true), Some(false), None]);
        assert_eq!(ds.items[0].factors, vec![Some(0.25)]);
        assert_eq!(ds.items[1].landmarks.as_ref().unwrap().len(), 5);
        assert_eq!(ds.items[1].attributes, vec![None, None, Some(true)]);
        assert_eq!(ds.items[1].split.as_deref(), Some("test"));

        std::fs::write(&m, "{\"path\":\"a.jpg\"}\n").unwrap();
        let err = load(&m).unwrap_err().to_string();
        assert!(
            err.contains("list.jsonl:1") && err.contains("no identity"),
            "{err}"
        );
    }
}
