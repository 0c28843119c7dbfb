//! Whole-generator tests: determinism, the files' formats and counts, landmark placement,
//! attribute balance and identity independence.

use std::collections::BTreeMap;
use std::path::Path;

use super::factors::{IDENTITY_DEPENDENT, IDENTITY_INDEPENDENT};
use super::render::{LENS_ALPHA, LENS_TINT, PUPIL_COLOUR};
use super::*;

fn args(out: &Path) -> SynthArgs {
    SynthArgs {
        out: out.to_owned(),
        identities: 24,
        images_per_identity: 5,
        held_out_identities: HeldOut::Count(8),
        val_fraction: 0.2,
        size: 96,
        seed: 11,
        format: ImageFormat::Jpg,
        quality: 95,
        folds: 4,
        pairs_per_fold: 6,
        workers: Some(1),
        preview: false,
        overwrite: false,
        json: false,
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// All files under `dir` by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn synth_same_seed_same_bytes_whatever_the_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    run(&args(&a)).unwrap();
    run(&SynthArgs {
        workers: Some(3),
        ..args(&b)
    })
    .unwrap();
    run(&SynthArgs {
        seed: 12,
        ..args(&c)
    })
    .unwrap();
    let (ta, tb, tc) = (tree(&a), tree(&b), tree(&c));
    assert_eq!(ta.len(), 24 * 5 + 8, "120 images and 8 text files");
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert!(*v == tb[k], "{k} differs between 1 and 3 workers");
    }
    let differing = ta
        .iter()
        .filter(|(k, v)| k.starts_with("images/") && tc[*k] != **v)
        .count();
    assert_eq!(differing, 120, "another seed changes every image");
    // Re-running into an existing dataset is refused without --overwrite, then identical with it.
    let err = run(&args(&a)).unwrap_err().to_string();
    assert!(err.contains("--overwrite"), "{err}");
    run(&SynthArgs {
        overwrite: true,
        ..args(&a)
    })
    .unwrap();
    assert!(tree(&a) == ta);
}

#[test]
fn synth_files_parse_with_the_right_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let summary = run(&SynthArgs {
        format: ImageFormat::Png,
        preview: true,
        ..args(&dir)
    })
    .unwrap();
    assert_eq!(
        (
            summary.images,
            summary.train_images,
            summary.val_images,
            summary.test_images
        ),
        (120, 64, 16, 40)
    );
    // identity_CelebA.txt: 5 images of each of 24 identities, all files present and decodable.
    let ids: Vec<(String, u32)> = read(&dir, layout::IDENTITY_FILE)
        .lines()
        .map(|l| {
            let (f, i) = l.split_once(' ').unwrap();
            (f.to_owned(), i.parse().unwrap())
        })
        .collect();
    assert_eq!(ids.len(), 120);
    let mut per_id = BTreeMap::new();
    for (f, i) in &ids {
        *per_id.entry(*i).or_insert(0) += 1;
        assert!(f.ends_with(".png") && f.len() == 10, "{f}");
    }
    assert_eq!(per_id.len(), 24);
    assert!(per_id.values().all(|&n| n == 5));
    let first = image::open(dir.join("images").join(&ids[0].0))
        .unwrap()
        .to_rgb8();
    assert_eq!(first.dimensions(), (96, 96));
    let preview = image::open(dir.join(layout::PREVIEW_FILE)).unwrap();
    assert_eq!((preview.width(), preview.height()), (8 * 96, 4 * 96));

    // Partitions: identities 17..=24 are all test; the others have exactly 1 val image of 5.
    let parts: BTreeMap<String, u8> = read(&dir, layout::PARTITION_FILE)
        .lines()
        .map(|l| {
            let (f, p) = l.split_once(' ').unwrap();
            (f.to_owned(), p.parse().unwrap())
        })
        .collect();
    let mut val_per_id = BTreeMap::new();
    for (f, i) in &ids {
        let p = parts[f];
        if *i > 16 {
            assert_eq!(p, 2, "{f} of held-out identity {i}");
        } else {
            assert!(p < 2);
            *val_per_id.entry(*i).or_insert(0) += p as u32;
        }
    }
    assert!(val_per_id.values().all(|&v| v == 1), "{val_per_id:?}");

    // The attribute and factor tables: count, names with a trailing space, one row per image.
    for (name, cols) in [
        (layout::ATTRIBUTE_FILE, ATTRIBUTES.len()),
        (layout::FACTOR_FILE, FACTORS.len()),
    ] {
        let text = read(&dir, name);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "120");
        assert!(lines[1].ends_with(' ') && lines[1].split_whitespace().count() == cols);
        assert_eq!(lines.len(), 122);
        for (l, (f, _)) in lines[2..].iter().zip(&ids) {
            let fields: Vec<&str> = l.split_whitespace().collect();
            assert_eq!((fields[0], fields.len()), (f.as_str(), cols + 1));
            for v in &fields[1..] {
                let v: f32 = v.parse().unwrap();
                if name == layout::ATTRIBUTE_FILE {
                    assert!(v == 1.0 || v == -1.0);
                }
            }
        }
    }
    let landmarks = read(&dir, layout::LANDMARK_FILE);
    let lines: Vec<&str> = landmarks.lines().collect();
    assert_eq!(
        (lines[0], lines[1], lines.len()),
        ("120", layout::LANDMARK_HEADER, 122)
    );
    for l in &lines[2..] {
        let v: Vec<i32> = l.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 10);
        assert!(v.iter().all(|&c| (0..96).contains(&c)), "{l}");
        assert!(v[0] < v[2] && v[6] < v[8], "left before right: {l}");
    }

    // pairs.txt: 4 folds × (6 matched + 6 mismatched), held-out identities only, and the keys
    // file names the same images.
    let pairs = read(&dir, layout::PAIRS_FILE);
    let lines: Vec<&str> = pairs.lines().collect();
    assert_eq!(lines[0], "4\t6");
    assert_eq!(lines.len(), 1 + 4 * 12);
    let keys = read(&dir, layout::PAIR_KEYS_FILE);
    let keys: Vec<&str> = keys.lines().skip(1).collect();
    assert_eq!(keys.len(), 48);
    let files_of = |id: u32| -> Vec<&String> {
        ids.iter()
            .filter(|(_, i)| *i == id)
            .map(|(f, _)| f)
            .collect()
    };
    for (n, (l, k)) in lines[1..].iter().zip(&keys).enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        let (a, i, b, j) = if n % 12 < 6 {
            assert_eq!(f.len(), 3, "{l}");
            (f[0], f[1], f[0], f[2])
        } else {
            assert_eq!(f.len(), 4, "{l}");
            (f[0], f[1], f[2], f[3])
        };
        let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(a > 16 && b > 16, "pair over a training identity: {l}");
        assert_eq!(a == b, n % 12 < 6);
        let (i, j): (usize, usize) = (i.parse().unwrap(), j.parse().unwrap());
        let expected = format!(
            "{},images/{},images/{},{}",
            n / 12,
            files_of(a)[i - 1],
            files_of(b)[j - 1],
            (a == b) as u8
        );
        assert_eq!(*k, expected);
    }

    let meta: serde_json::Value = serde_json::from_str(&read(&dir, layout::META_FILE)).unwrap();
    assert_eq!(meta["seed"], 11);
    assert_eq!(meta["identity_independent"].as_array().unwrap().len(), 4);
    assert_eq!(meta["identities"].as_array().unwrap().len(), 24);
    assert_eq!(meta["held_out_identities"][0], 17);
}

fn plan(identities: u32, per: u32, seed: u64) -> Plan {
    Plan::new(&SynthArgs {
        identities,
        images_per_identity: per,
        seed,
        held_out_identities: HeldOut::Fraction(0.2),
        ..args(Path::new("unused"))
    })
    .unwrap()
}

fn px(pm: &tiny_skia::Pixmap, p: [f32; 2]) -> [f32; 3] {
    let c = pm.pixel(p[0] as u32, p[1] as u32).unwrap();
    [c.red(), c.green(), c.blue()].map(|v| v as f32 / 255.0)
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn synth_landmarks_lie_on_the_drawn_features() {
    let size = 256;
    let p = plan(50, 4, 3);
    for n in 0..200 {
        let s = Sample::new(3, &p, n, size);
        let drawn = render::draw(&s.identity, &s.image, &s.geometry, size);
        let [le, re, nose, lm, rm] = s.geometry.landmarks();
        // The eye landmarks are the pupil centres.
        let pupil = if s.image.eyeglasses {
            factors::mix(PUPIL_COLOUR, LENS_TINT, LENS_ALPHA)
        } else {
            PUPIL_COLOUR
        };
        for e in [le, re] {
            assert!(dist(px(&drawn, e), pupil) < 0.02, "image {n}: eye at {e:?}");
        }
        // The nose tip is on the tip's colour (skin mixed towards the lips), not plain skin.
        let tip = factors::mix(s.identity.skin, s.identity.lips, 0.22);
        assert!(
            dist(px(&drawn, nose), tip) < 0.03,
            "image {n}: nose at {nose:?}"
        );
        // Inside each mouth corner, on the line between the lips, is lip, teeth or mouth; half as
        // far outside the corner is (shaded) skin.
        for (m, t) in [(lm, 0.15), (rm, 0.85)] {
            let inner = s.geometry.to_pixels(s.geometry.mouth_line(t));
            let outer = [
                m[0] + (m[0] - inner[0]) * 0.5,
                m[1] + (m[1] - inner[1]) * 0.5,
            ];
            let (inside, outside) = (px(&drawn, inner), px(&drawn, outer));
            assert!(
                !is_skin(inside, s.identity.skin) && is_skin(outside, s.identity.skin),
                "image {n}: mouth corner {m:?}: inside {inside:?}, outside {outside:?}, skin {:?}",
                s.identity.skin
            );
        }
        // After lighting and noise the pupils are still the darkest thing around.
        let lit = s.render(size);
        for e in [le, re] {
            assert!(
                px(&lit, e).iter().all(|&v| v < 0.25),
                "image {n}: lit eye {:?}",
                px(&lit, e)
            );
        }
    }
}

/// Whether `c` is `skin` under the face's shading (a common factor on all channels).
fn is_skin(c: [f32; 3], skin: factors::Rgb) -> bool {
    let ratios = [0, 1, 2].map(|k| c[k] / skin[k].max(0.05));
    let (lo, hi) = ratios
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    hi - lo < 0.05 && (0.7..1.12).contains(&lo)
}

#[test]
fn synth_attributes_are_balanced() {
    let p = plan(20, 10, 5);
    let mut counts = [0usize; ATTRIBUTES.len()];
    for n in 0..200 {
        let s = Sample::new(5, &p, n, 64);
        for (c, a) in counts.iter_mut().zip(attribute_row(&s.identity, &s.image)) {
            *c += a as usize;
        }
    }
    for (name, c) in ATTRIBUTES.iter().zip(counts) {
        let share = c as f64 / 200.0;
        if IDENTITY_INDEPENDENT.contains(name) {
            assert!((0.3..=0.7).contains(&share), "{name}: {share}");
        } else {
            // Per-identity attributes over 20 identities vary more; they must still occur.
            assert!((0.1..=0.9).contains(&share), "{name}: {share}");
        }
    }
}

/// Pearson's chi-square statistic of an identities × {0, 1} contingency table.
fn chi_square(table: &[[f64; 2]]) -> f64 {
    let total: f64 = table.iter().map(|r| r[0] + r[1]).sum();
    let col = [0, 1].map(|k| table.iter().map(|r| r[k]).sum::<f64>());
    let mut chi = 0.0;
    for r in table {
        let row = r[0] + r[1];
        for k in 0..2 {
            let expected = row * col[k] / total;
            if expected > 0.0 {
                chi += (r[k] - expected).powi(2) / expected;
            }
        }
    }
    chi
}

#[test]
fn synth_image_attributes_do_not_depend_on_identity() {
    let (ids, per) = (40u32, 25u32);
    let p = plan(ids, per, 9);
    let mut tables = vec![vec![[0.0f64; 2]; ids as usize]; ATTRIBUTES.len()];
    for n in 0..p.files.len() {
        let s = Sample::new(9, &p, n, 64);
        let id = p.files[n].0 as usize;
        for (t, a) in tables.iter_mut().zip(attribute_row(&s.identity, &s.image)) {
            t[id][a as usize] += 1.0;
        }
    }
    // 39 degrees of freedom: the 0.1% critical value is 72.1.
    for (name, table) in ATTRIBUTES.iter().zip(&tables) {
        let chi = chi_square(table);
        if IDENTITY_INDEPENDENT.contains(name) {
            assert!(chi < 72.1, "{name} depends on identity: chi² = {chi}");
        } else {
            assert!(IDENTITY_DEPENDENT.contains(name));
            // Constant within each identity: every row is all 0 or all 1.
            assert!(table.iter().all(|r| r[0] == 0.0 || r[1] == 0.0), "{name}");
            assert!(chi > 500.0, "{name}: chi² = {chi}");
        }
    }
}

/// Mean absolute difference over the pixels of a 64 × 64 box-filtered version of two renders.
fn changed_pixels_at_64(a: &tiny_skia::Pixmap, b: &tiny_skia::Pixmap, threshold: f32) -> usize {
    let k = (a.width() / 64) as usize;
    let w = a.width() as usize;
    let down = |pm: &tiny_skia::Pixmap| -> Vec<f32> {
        let d = pm.data();
        let mut out = vec![0.0f32; 64 * 64];
        for y in 0..64 * k {
            for x in 0..64 * k {
                let i = (y * w + x) * 4;
                let lum = 0.3 * d[i] as f32 + 0.59 * d[i + 1] as f32 + 0.11 * d[i + 2] as f32;
                out[(y / k) * 64 + x / k] += lum / (k * k) as f32;
            }
        }
        out
    };
    let (da, db) = (down(a), down(b));
    da.iter()
        .zip(&db)
        .filter(|(x, y)| (*x - *y).abs() > threshold)
        .count()
}

#[test]
fn synth_facial_attributes_are_visible_at_64_px() {
    let p = plan(10, 4, 2);
    for n in 0..20 {
        let base = Sample::new(2, &p, n, 256);
        let with = |f: &dyn Fn(&mut ImageFactors, bool)| {
            let mut s = Sample::new(2, &p, n, 256);
            f(&mut s.image, false);
            s.geometry = FaceGeometry::new(&s.identity, &s.image, 256);
            let off = render::draw(&s.identity, &s.image, &s.geometry, 256);
            f(&mut s.image, true);
            s.geometry = FaceGeometry::new(&s.identity, &s.image, 256);
            let on = render::draw(&s.identity, &s.image, &s.geometry, 256);
            changed_pixels_at_64(&off, &on, 20.0)
        };
        let smile = with(&|i, v| i.smiling = v);
        let open = with(&|i, v| i.mouth_open = v);
        let glasses = with(&|i, v| i.eyeglasses = v);
        let hat = with(&|i, v| i.hat = v);
        let _ = &base;
        // A face is about 30 px wide at 64 px; these are counts of clearly changed pixels.
        assert!(smile >= 6, "image {n}: smile changes only {smile} pixels");
        assert!(
            open >= 8,
            "image {n}: opening the mouth changes only {open} pixels"
        );
        assert!(
            glasses >= 25,
            "image {n}: glasses change only {glasses} pixels"
        );
        assert!(hat >= 30, "image {n}: a hat changes only {hat} pixels");
    }
}

#[test]
fn held_out_parses_counts_and_fractions() {
    assert_eq!("40".parse::<HeldOut>(), Ok(HeldOut::Count(40)));
    assert_eq!("0.25".parse::<HeldOut>(), Ok(HeldOut::Fraction(0.25)));
    assert!("1.5".parse::<HeldOut>().is_err());
    assert!("x".parse::<HeldOut>().is_err());
    assert_eq!(HeldOut::Fraction(0.2).resolve(201), 40);
}

#[test]
fn impossible_pair_requests_fail_before_drawing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let err = run(&SynthArgs {
        pairs_per_fold: 500,
        ..args(&out)
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("--pairs-per-fold"), "{err:#}");
    assert!(!out.join("images").exists());
}
