//! The `manifest` layout: a CSV or JSONL file with one row per image. This is how users bring any
//! dataset whose folders do not say the identity.
//!
//! CSV (header required; `.csv`): `path` (or `file`, `image`), `identity`, and optionally
//! `landmarks` (10 numbers for 5 points or 4 for the 2 eyes, separated by spaces, commas or
//! semicolons), `split`, `attr:<Name>` columns (`1`/`true`/`yes` or `-1`/`0`/`false`/`no`) and
//! `factor:<Name>` columns (numbers). Empty cells mean "not given". Other columns (notes) are
//! ignored, so an existing table can serve as a manifest as it is.
//!
//! JSONL (`.jsonl`, `.ndjson`, `.json`): one object per line with the same keys; `landmarks` as
//! `[[x, y], ...]` or a flat list, `attributes` as `{name: bool | ±1 | 0}`, `factors` as
//! `{name: number}`; the identity may be a string or a number.
//!
//! The labelled person's face box (photo pixels, after EXIF orientation) may be given one way per
//! file (CSV) or row (JSONL), see [`BoxForm`]: a `box` column/key with the corners `x1 y1 x2 y2`
//! (JSONL: a list of 4, or an object with either of the next two key sets), columns `x1, y1, x2,
//! y2`, or columns `x, y, w, h` (also spelt `x_1, y_1, width, height`, CelebA's names). `bbox` is
//! refused: it means corners in some tools and `x, y, w, h` in others (COCO). With the detector the
//! box picks which detected face is aligned (as CelebA's `list_bbox_celeba.txt` does); malformed
//! numbers are a listing error here, while a box with no area or outside the photo is a per-photo
//! reject (`bad_box`) once the photo's size is known.
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
    face_box: Option<[f32; 4]>,
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
            face_box: row.face_box,
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
    let header_names: Vec<&str> = headers.iter().collect();
    let box_cols = BoxForm::from_keys(&header_names)
        .map_err(|m| SourceError::parse(path, 1, m))?
        .map(|form| form.map_names(|n| find(n).expect("box_form returns header names")));
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
        let face_box = match &box_cols {
            None => None,
            Some(BoxForm::List(c)) => match cell(*c) {
                "" => None,
                text => Some(csv_box_cell(text).map_err(|m| SourceError::parse(path, line, m))?),
            },
            Some(form) => form
                .values(|c| {
                    let c = cell(*c);
                    (!c.is_empty()).then(|| parse_number(c)).transpose()
                })
                .map_err(|m| SourceError::parse(path, line, m))?,
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
            face_box,
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
    let face_box = json_box(obj)?;
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
        face_box,
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

/// How a manifest gives the face box, decided from its column (CSV) or key (JSONL) names. `N` names
/// the place of each value: a column index or a key.
#[derive(Debug, Clone, PartialEq)]
enum BoxForm<N> {
    /// One `box` cell/key holding the corners `x1 y1 x2 y2`.
    List(N),
    /// `x1, y1, x2, y2`.
    Corners([N; 4]),
    /// `x, y, w, h` (or `x_1, y_1, width, height`): top-left corner and size.
    OriginSize([N; 4]),
}

const CORNER_NAMES: [&str; 4] = ["x1", "y1", "x2", "y2"];
/// Accepted spellings of `x, y, w, h`, in that order.
const ORIGIN_SIZE_NAMES: [&[&str]; 4] = [
    &["x", "x_1"],
    &["y", "y_1"],
    &["w", "width"],
    &["h", "height"],
];

impl<'a> BoxForm<&'a str> {
    /// The box form among `keys` (matched case-insensitively), `None` when there is none. The
    /// corner names must come together; `x, y, w, h` count only when all four are there (alone,
    /// `width, height` are usually the photo's size). Two forms at once, or `bbox`, are errors.
    fn from_keys(keys: &[&'a str]) -> Result<Option<Self>, String> {
        let find = |n: &str| keys.iter().copied().find(|k| k.eq_ignore_ascii_case(n));
        if find("bbox").is_some() {
            return Err(
                "`bbox` is ambiguous (corners or x, y, w, h): name it `box` for \
                        `x1 y1 x2 y2`, or use columns x, y, w, h"
                    .into(),
            );
        }
        let mut forms = Vec::new();
        if let Some(k) = find("box") {
            forms.push(BoxForm::List(k));
        }
        let corners = CORNER_NAMES.map(find);
        match corners.iter().flatten().count() {
            0 => {}
            4 => forms.push(BoxForm::Corners(corners.map(Option::unwrap))),
            _ => {
                return Err(format!(
                    "box columns {} must all be present",
                    CORNER_NAMES.join(", ")
                ))
            }
        }
        let origin_size = ORIGIN_SIZE_NAMES.map(|alts| alts.iter().find_map(|n| find(n)));
        if origin_size.iter().all(Option::is_some) {
            forms.push(BoxForm::OriginSize(origin_size.map(Option::unwrap)));
        }
        if forms.len() > 1 {
            return Err(format!(
                "the face box is given {} ways ({forms:?}); keep one",
                forms.len()
            ));
        }
        Ok(forms.pop())
    }
}

impl<N> BoxForm<N> {
    fn map_names<M>(self, f: impl Fn(N) -> M) -> BoxForm<M> {
        match self {
            BoxForm::List(n) => BoxForm::List(f(n)),
            BoxForm::Corners(ns) => BoxForm::Corners(ns.map(f)),
            BoxForm::OriginSize(ns) => BoxForm::OriginSize(ns.map(f)),
        }
    }

    /// The corners from separate values (`get` gives `None` for an empty cell / missing key):
    /// none given → no box; some missing → an error. Not for [`BoxForm::List`].
    fn values(
        &self,
        get: impl Fn(&N) -> Result<Option<f32>, String>,
    ) -> Result<Option<[f32; 4]>, String> {
        let (names, corners) = match self {
            BoxForm::List(_) => unreachable!("a list is parsed by its reader"),
            BoxForm::Corners(ns) => (ns, true),
            BoxForm::OriginSize(ns) => (ns, false),
        };
        let mut v = [0.0; 4];
        let mut given = 0;
        for (slot, name) in v.iter_mut().zip(names) {
            if let Some(x) = get(name)? {
                *slot = x;
                given += 1;
            }
        }
        match given {
            0 => Ok(None),
            4 if corners => Ok(Some(v)),
            4 => Ok(Some([v[0], v[1], v[0] + v[2], v[1] + v[3]])),
            n => Err(format!("the face box has {n} of its 4 values")),
        }
    }
}

/// A CSV `box` cell: `x1 y1 x2 y2`, separated by spaces, commas or semicolons.
fn csv_box_cell(text: &str) -> Result<[f32; 4], String> {
    let values = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|t| !t.is_empty())
        .map(parse_number)
        .collect::<Result<Vec<_>, _>>()?;
    <[f32; 4]>::try_from(values.as_slice())
        .map_err(|_| format!("box needs 4 numbers (x1 y1 x2 y2), got {}", values.len()))
}

/// A JSON number as a finite `f32`; `null` → `None`.
fn json_number(name: &str, v: Option<&Value>) -> Result<Option<f32>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|f| f as f32)
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("box value {name}: {v} is not a finite number")),
    }
}

/// A JSONL row's face box: `box` as a list of corners or an object of corner or `x, y, w, h`
/// keys, or those keys at the top level.
fn json_box(obj: &serde_json::Map<String, Value>) -> Result<Option<[f32; 4]>, String> {
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let Some(form) = BoxForm::from_keys(&keys)? else {
        return Ok(None);
    };
    let (obj, form) = match form {
        BoxForm::List(k) => match &obj[k] {
            Value::Null => return Ok(None),
            Value::Array(list) => {
                let v = list
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        json_number(&format!("[{i}]"), Some(x))?
                            .ok_or("box values must be numbers".to_owned())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return <[f32; 4]>::try_from(v.as_slice())
                    .map(Some)
                    .map_err(|_| format!("box needs 4 numbers [x1, y1, x2, y2], got {}", v.len()));
            }
            Value::Object(inner) => {
                let keys: Vec<&str> = inner.keys().map(String::as_str).collect();
                match BoxForm::from_keys(&keys)? {
                    Some(f @ (BoxForm::Corners(_) | BoxForm::OriginSize(_))) => (inner, f),
                    _ => return Err("a box object needs keys x1, y1, x2, y2 or x, y, w, h".into()),
                }
            }
            other => {
                return Err(format!(
                    "box must be [x1, y1, x2, y2] or an object, got {other}"
                ))
            }
        },
        f => (obj, f),
    };
    form.values(|k| json_number(k, obj.get(*k)))
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

    fn csv_boxes(text: &str) -> Result<Vec<Option<[f32; 4]>>, String> {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("list.csv");
        std::fs::write(&m, text).unwrap();
        load(&m)
            .map(|ds| ds.items.iter().map(|i| i.face_box).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn csv_box_in_each_form() {
        let want = Ok(vec![Some([10.0, 20.0, 50.0, 80.0]), None]);
        assert_eq!(
            csv_boxes("path,identity,box\na.jpg,x,\"10 20 50 80\"\nb.jpg,y,\n"),
            want
        );
        assert_eq!(
            csv_boxes("path,identity,box\na.jpg,x,10;20;50;80\nb.jpg,y,\n"),
            want
        );
        assert_eq!(
            csv_boxes("path,identity,X1,y1,x2,y2\na.jpg,x,10,20,50,80\nb.jpg,y,,,,\n"),
            want
        );
        assert_eq!(
            csv_boxes("path,identity,x,y,w,h\na.jpg,x,10,20,40,60\nb.jpg,y,,,,\n"),
            want
        );
        assert_eq!(
            csv_boxes("path,identity,x_1,y_1,width,height\na.jpg,x,10,20,40,60\nb.jpg,y,,,,\n"),
            want
        );
        // The photo's size alone is not a box; a degenerate box is kept for the per-photo check.
        assert_eq!(
            csv_boxes("path,identity,width,height\na.jpg,x,640,480\n"),
            Ok(vec![None])
        );
        assert_eq!(
            csv_boxes("path,identity,x,y,w,h\na.jpg,x,10,20,0,-5\n"),
            Ok(vec![Some([10.0, 20.0, 10.0, 15.0])])
        );
    }

    #[test]
    fn csv_box_errors_are_clear() {
        let err = |text: &str| csv_boxes(text).unwrap_err();
        let e = err("path,identity,bbox\na.jpg,x,1 2 3 4\n");
        assert!(
            e.contains("list.csv:1") && e.contains("`bbox` is ambiguous"),
            "{e}"
        );
        let e = err("path,identity,x1,y1,x2\na.jpg,x,1,2,3\n");
        assert!(e.contains("x1, y1, x2, y2 must all be present"), "{e}");
        let e = err("path,identity,box,x,y,w,h\na.jpg,x,1 2 3 4,1,2,3,4\n");
        assert!(e.contains("given 2 ways"), "{e}");
        let e = err("path,identity,box\na.jpg,x,1 2 3\n");
        assert!(e.contains("list.csv:2") && e.contains("got 3"), "{e}");
        let e = err("path,identity,x1,y1,x2,y2\na.jpg,x,1,2,,4\n");
        assert!(e.contains("list.csv:2") && e.contains("3 of its 4"), "{e}");
        let e = err("path,identity,box\na.jpg,x,1 2 nan 4\n");
        assert!(e.contains("not a finite number"), "{e}");
    }

    #[test]
    fn jsonl_box_in_each_form() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("list.jsonl");
        let rows = [
            r#"{"path":"a.jpg","identity":1,"box":[10,20,50,80]}"#,
            r#"{"path":"b.jpg","identity":1,"box":{"x1":10,"y1":20,"x2":50,"y2":80}}"#,
            r#"{"path":"c.jpg","identity":1,"box":{"x":10,"y":20,"width":40,"height":60}}"#,
            r#"{"path":"d.jpg","identity":1,"x":10,"y":20,"w":40,"h":60}"#,
            r#"{"path":"e.jpg","identity":1,"box":null}"#,
            r#"{"path":"f.jpg","identity":1}"#,
        ];
        std::fs::write(&m, rows.join("\n")).unwrap();
        let boxes: Vec<_> = load(&m).unwrap().items.iter().map(|i| i.face_box).collect();
        let b = Some([10.0, 20.0, 50.0, 80.0]);
        assert_eq!(boxes, vec![b, b, b, b, None, None]);

        for (row, want) in [
            (r#"{"path":"a.jpg","identity":1,"box":[1,2,3]}"#, "got 3"),
            (
                r#"{"path":"a.jpg","identity":1,"box":[1,2,"3",4]}"#,
                r#"box value [2]: "3" is not a finite number"#,
            ),
            (
                r#"{"path":"a.jpg","identity":1,"box":[1,null,3,4]}"#,
                "box values must be numbers",
            ),
            (
                r#"{"path":"a.jpg","identity":1,"box":{"x":1,"y":2}}"#,
                "a box object needs",
            ),
            (
                r#"{"path":"a.jpg","identity":1,"box":"1 2 3 4"}"#,
                "must be [x1, y1, x2, y2]",
            ),
            (
                r#"{"path":"a.jpg","identity":1,"bbox":[1,2,3,4]}"#,
                "`bbox` is ambiguous",
            ),
            (
                r#"{"path":"a.jpg","identity":1,"x1":1,"y1":2,"x2":3,"y2":null}"#,
                "3 of its 4",
            ),
        ] {
            std::fs::write(&m, row).unwrap();
            let e = load(&m).unwrap_err().to_string();
            assert!(e.contains("list.jsonl:1") && e.contains(want), "{row}: {e}");
        }
    }
}
