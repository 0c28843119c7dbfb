//! The loader's guarantees, end to end on small datasets written by `d2ae_loader::testing`.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use d2ae_loader::testing::{
    image_spec, synthetic_dataset, synthetic_samples, test_colours, write_dataset,
};
use d2ae_loader::{
    Augment, Batch, BlockingLoader, Layout, LoaderConfig, LoaderError, LoaderState, Remainder,
};

fn url(dir: &Path) -> String {
    dir.to_str().unwrap().to_owned()
}

fn run(dir: &Path, config: LoaderConfig) -> Vec<Batch> {
    BlockingLoader::open(&url(dir), config, None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn keys(batches: &[Batch]) -> Vec<String> {
    batches.iter().flat_map(|b| b.keys.clone()).collect()
}

fn train(epochs: u64, batch: usize, seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size: batch,
        seed,
        shuffle_buffer: 16,
        epochs: Some(epochs),
        image_size: Some(32),
        ..Default::default()
    }
}

#[test]
fn same_seed_same_batches_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 90, 20, 48).unwrap();
    let one = run(
        dir.path(),
        LoaderConfig {
            decode_threads: 1,
            ..train(2, 8, 5)
        },
    );
    let three = run(
        dir.path(),
        LoaderConfig {
            decode_threads: 3,
            readahead_shards: 1,
            ..train(2, 8, 5)
        },
    );
    assert_eq!(one.len(), 2 * 11);
    assert_eq!(
        one, three,
        "keys, labels and augmented pixels must not depend on threads"
    );
    let other_seed = run(dir.path(), train(2, 8, 6));
    assert_ne!(keys(&one), keys(&other_seed));
}

#[test]
fn epochs_differ_in_order_and_cover_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 64, 16, 32).unwrap();
    let batches = run(dir.path(), train(2, 8, 1));
    assert_eq!(batches.len(), 16);
    let (e0, e1) = batches.split_at(8);
    assert!(e0.iter().all(|b| b.epoch == 0) && e1.iter().all(|b| b.epoch == 1));
    assert_eq!(
        e1.iter().map(|b| b.batch_in_epoch).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    let (k0, k1) = (keys(e0), keys(e1));
    assert_ne!(k0, k1);
    let all: BTreeSet<String> = (0..64).map(|i| format!("s{i:06}")).collect();
    assert_eq!(k0.iter().cloned().collect::<BTreeSet<_>>(), all);
    assert_eq!(k1.iter().cloned().collect::<BTreeSet<_>>(), all);
    // Shuffled: not the stored order.
    assert_ne!(k0, all.iter().cloned().collect::<Vec<_>>());
}

#[test]
fn ranks_are_disjoint_covering_and_equal_in_batch_count() {
    // 2 shards, then 1, for 3 ranks: fewer shards than ranks.
    for per_shard in [60, 101] {
        ranks_split(per_shard);
    }
}

fn ranks_split(per_shard: usize) {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 101, per_shard, 32).unwrap();
    for remainder in [Remainder::Drop, Remainder::Pad] {
        let per_rank: Vec<Vec<Batch>> = (0..3)
            .map(|rank| {
                run(
                    dir.path(),
                    LoaderConfig {
                        rank,
                        world_size: 3,
                        remainder,
                        ..train(1, 8, 9)
                    },
                )
            })
            .collect();
        let expected = if remainder == Remainder::Drop {
            33 / 8
        } else {
            34usize.div_ceil(8)
        };
        for b in &per_rank {
            assert_eq!(b.len(), expected, "{remainder:?}");
            assert!(b.iter().all(|b| b.n == 8));
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        for b in &per_rank {
            for k in keys(b) {
                total += 1;
                seen.insert(k);
            }
        }
        match remainder {
            Remainder::Drop => {
                assert_eq!(total, 3 * 4 * 8);
                assert_eq!(seen.len(), total, "Drop: no sample on two ranks");
            }
            _ => {
                assert_eq!(total, 3 * 5 * 8);
                assert_eq!(seen.len(), 101, "Pad: every sample somewhere");
                // Each rank's ⌈101/3⌉ = 34 samples, then 6 repeats of its own first ones.
                for b in &per_rank {
                    let k = keys(b);
                    let own: HashSet<&String> = k[..34].iter().collect();
                    assert_eq!(own.len(), 34);
                    assert_eq!(k[34..], k[..6]);
                }
            }
        }
    }
    // Keep: every sample exactly once over the ranks, last batches short.
    let mut all = Vec::new();
    for rank in 0..3 {
        let b = run(
            dir.path(),
            LoaderConfig {
                rank,
                world_size: 3,
                ..LoaderConfig::eval("train", 8)
            },
        );
        all.extend(keys(&b));
    }
    all.sort();
    assert_eq!(
        all,
        (0..101).map(|i| format!("s{i:06}")).collect::<Vec<_>>()
    );
}

#[test]
fn a_rank_reads_only_the_shards_under_its_range() {
    let dir = tempfile::tempdir().unwrap();
    // 8 shards of 25, 4 ranks: each rank's 50 samples lie in 2 shards (3 when unaligned).
    synthetic_dataset(dir.path(), 200, 25, 32).unwrap();
    let total_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let mut keys_of_all = HashSet::new();
    for rank in 0..4 {
        let mut loader = BlockingLoader::open(
            &url(dir.path()),
            LoaderConfig {
                rank,
                world_size: 4,
                ..train(2, 8, 4)
            },
            None,
        )
        .unwrap();
        let batches: Vec<Batch> = loader.by_ref().map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2 * 6);
        keys_of_all.extend(keys(&batches[..6]));
        let m = loader.metrics();
        assert!(
            (4..=6).contains(&m.shards_opened),
            "rank {rank} opened {} shards in 2 epochs",
            m.shards_opened
        );
        assert!(
            m.bytes_read * 8 <= total_bytes * 2 * 3,
            "rank {rank} read {} of 2 × {total_bytes} bytes",
            m.bytes_read
        );
    }
    assert_eq!(keys_of_all.len(), 4 * 6 * 8, "ranks disjoint in epoch 0");
}

#[test]
fn eval_mode_visits_every_sample_once_in_index_order() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 45, 10, 32).unwrap();
    let batches = run(dir.path(), LoaderConfig::eval("train", 8));
    assert_eq!(
        batches.iter().map(|b| b.n).collect::<Vec<_>>(),
        vec![8, 8, 8, 8, 8, 5]
    );
    assert_eq!(
        keys(&batches),
        (0..45).map(|i| format!("s{i:06}")).collect::<Vec<_>>()
    );
    let b = &batches[1];
    // Labels from the metadata: identity i % 10, attribute Even, unknown attribute 0, factor i.
    assert_eq!(b.identities, (8..16).map(|i| i % 10).collect::<Vec<i64>>());
    assert_eq!(b.num_attributes, 2);
    assert_eq!(b.attributes_of(0), &[1, 0]);
    assert_eq!(b.attributes_of(1), &[-1, 0]);
    assert_eq!(b.factors[..2], [8.0, 9.0]);
    assert_eq!(b.sources[0], "id8/img8.jpg");
}

/// Mean of channel `c` over a column band of sample `i` in an NCHW batch.
fn band_mean(b: &Batch, i: usize, c: usize, x0: usize, x1: usize) -> f64 {
    let (w, h) = (b.width as usize, b.height as usize);
    let plane = &b.image(i)[c * w * h..(c + 1) * w * h];
    let mut sum = 0u64;
    for y in 0..h {
        for x in x0..x1 {
            sum += u64::from(plane[y * w + x]);
        }
    }
    sum as f64 / ((x1 - x0) * h) as f64
}

#[test]
fn pixels_decode_resize_flip_and_lay_out_correctly() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 24, 24, 64).unwrap();
    // 64 → 32 takes the ½ DCT scale.
    let mut config = LoaderConfig {
        image_size: Some(32),
        ..LoaderConfig::eval("train", 24)
    };
    let plain = run(dir.path(), config.clone());
    let b = &plain[0];
    assert_eq!(
        (b.n, b.height, b.width, b.images.len()),
        (24, 32, 32, 24 * 3 * 32 * 32)
    );
    for i in 0..24 {
        let (left, right) = test_colours(i);
        for c in 0..3 {
            assert!(
                (band_mean(b, i, c, 2, 12) - f64::from(left[c])).abs() < 6.0,
                "sample {i} channel {c}"
            );
            assert!(
                (band_mean(b, i, c, 20, 30) - f64::from(right[c])).abs() < 6.0,
                "sample {i} channel {c}"
            );
        }
    }
    // NHWC holds the same pixels interleaved.
    config.layout = Layout::Nhwc;
    let nhwc = run(dir.path(), config.clone());
    let (w, h) = (32usize, 32usize);
    for (i, y, x, c) in [(0, 0, 0, 0), (3, 10, 20, 1), (23, 31, 31, 2)] {
        assert_eq!(
            nhwc[0].image(i)[(y * w + x) * 3 + c],
            b.image(i)[c * w * h + y * w + x]
        );
    }
    // With flips on, some samples come out mirrored, and only mirrored.
    config.layout = Layout::Nchw;
    config.augment = Augment {
        hflip: true,
        max_shift_px: 0,
    };
    let flipped = run(dir.path(), config);
    let mut mirrored = 0;
    for i in 0..24 {
        let (left, _) = test_colours(i);
        let l = band_mean(&flipped[0], i, 0, 2, 12);
        let r = band_mean(&flipped[0], i, 0, 20, 30);
        if (l - f64::from(left[0])).abs() >= 6.0 {
            mirrored += 1;
            assert!(
                (r - f64::from(left[0])).abs() < 6.0,
                "sample {i} neither plain nor mirrored"
            );
        }
    }
    assert!((4..=20).contains(&mirrored), "{mirrored} of 24 mirrored");
}

#[test]
fn png_samples_decode_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    let samples = synthetic_samples(6, 16, 3, "train", "png");
    write_dataset(
        dir.path(),
        &[("train", samples)],
        4,
        image_spec(16, "png"),
        3,
    )
    .unwrap();
    let b = &run(
        dir.path(),
        LoaderConfig {
            layout: Layout::Nhwc,
            ..LoaderConfig::eval("train", 6)
        },
    )[0];
    for i in 0..6 {
        let (left, right) = test_colours(i);
        assert_eq!(&b.image(i)[..3], &left);
        assert_eq!(&b.image(i)[b.image_len() - 3..], &right);
    }
}

#[test]
fn resume_mid_epoch_yields_exactly_the_remaining_batches() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 70, 15, 32).unwrap();
    let config = LoaderConfig {
        augment: Augment {
            hflip: true,
            max_shift_px: 3,
        },
        ..train(3, 6, 11)
    };
    let mut full = BlockingLoader::open(&url(dir.path()), config.clone(), None).unwrap();
    assert_eq!(full.batches_per_epoch(), 11);
    let mut all = Vec::new();
    let mut states: Vec<LoaderState> = vec![full.state()];
    while let Some(b) = full.next() {
        all.push(b.unwrap());
        states.push(full.state());
    }
    assert_eq!(all.len(), 33);
    for cut in [4usize, 11, 17, 32] {
        let state = &states[cut];
        let json = serde_json::to_string(state).unwrap();
        let restored: LoaderState = serde_json::from_str(&json).unwrap();
        let again: Vec<Batch> = BlockingLoader::open(
            &url(dir.path()),
            LoaderConfig {
                decode_threads: 3,
                ..config.clone()
            },
            Some(&restored),
        )
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
        assert_eq!(again, all[cut..], "resume after batch {cut}");
    }
    assert_eq!((states[11].epoch, states[11].batches_done_in_epoch), (1, 0));
    assert_eq!((states[17].epoch, states[17].batches_done_in_epoch), (1, 6));
    // A different plan refuses to resume.
    let err = BlockingLoader::open(
        &url(dir.path()),
        LoaderConfig { seed: 12, ..config },
        Some(&states[4]),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, LoaderError::Resume(ref m) if m.contains("seed")),
        "{err}"
    );
}

/// A 3-shard dataset whose middle shard has broken samples: key s000012 a bad JPEG, s000013 no
/// JSON, s000014 bad JSON, s000015 a `.cls` that disagrees with the JSON.
fn dataset_with_corrupt_samples(dir: &Path) {
    let mut samples = synthetic_samples(30, 32, 5, "train", "jpg");
    samples[12].members[0].1 = b"\xff\xd8 not a jpeg".to_vec();
    samples[13].members.retain(|(n, _)| !n.ends_with(".json"));
    samples[14].members[2].1 = b"{\"key\": 1".to_vec();
    samples[15].members[1].1 = b"4".to_vec();
    write_dataset(dir, &[("train", samples)], 10, image_spec(32, "jpg"), 5).unwrap();
}

#[test]
fn corrupt_samples_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    dataset_with_corrupt_samples(dir.path());
    let mut loader =
        BlockingLoader::open(&url(dir.path()), LoaderConfig::eval("train", 7), None).unwrap();
    let batches: Vec<Batch> = loader.by_ref().map(|b| b.unwrap()).collect();
    let expected: Vec<String> = (0..30)
        .filter(|i| !(12..16).contains(i))
        .map(|i| format!("s{i:06}"))
        .collect();
    assert_eq!(keys(&batches), expected);
    let m = loader.metrics();
    assert_eq!(
        (m.samples_skipped, m.samples_lost, m.shards_failed),
        (4, 0, 0)
    );
    // Training keeps full batches: the broken slots repeat a readable sample of their batch.
    let mut train_loader = BlockingLoader::open(
        &url(dir.path()),
        LoaderConfig {
            shuffle: false,
            ..train(1, 10, 0)
        },
        None,
    )
    .unwrap();
    let t: Vec<Batch> = train_loader.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(t.len(), 3);
    assert!(t.iter().all(|b| b.n == 10));
    assert_eq!(t[1].filled, 4);
    assert_eq!(
        t[1].keys[2..6],
        ["s000011", "s000011", "s000011", "s000011"]
    );
    assert_eq!(train_loader.metrics().samples_filled, 4);
}

#[test]
fn a_truncated_shard_ends_with_an_error_logged_and_the_loader_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 60, 20, 32).unwrap();
    let shard = dir.path().join("train-000001.tar.zst");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let mut loader =
        BlockingLoader::open(&url(dir.path()), LoaderConfig::eval("train", 8), None).unwrap();
    let got = keys(&loader.by_ref().map(|b| b.unwrap()).collect::<Vec<_>>());
    let m = loader.metrics();
    assert_eq!(m.shards_failed, 1);
    let from_broken = got
        .iter()
        .filter(|k| ("s000020".."s000040").contains(&k.as_str()))
        .count();
    assert!(
        from_broken < 20,
        "some of shard 1 must be lost, got {from_broken}"
    );
    assert_eq!(m.samples_lost + m.samples_skipped, 20 - from_broken as u64);
    // Shards 0 and 2 are complete and in order around it.
    assert_eq!(
        got[..20],
        (0..20).map(|i| format!("s{i:06}")).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        got[got.len() - 20..],
        (40..60).map(|i| format!("s{i:06}")).collect::<Vec<_>>()[..]
    );

    // Split over 2 ranks, the broken shard is a boundary shard (rank 1 starts at its sample 10):
    // together they lose exactly what one rank lost, and nothing shifts.
    let mut lost = 0;
    let mut by_ranks = Vec::new();
    for rank in 0..2 {
        let mut loader = BlockingLoader::open(
            &url(dir.path()),
            LoaderConfig {
                rank,
                world_size: 2,
                ..LoaderConfig::eval("train", 8)
            },
            None,
        )
        .unwrap();
        by_ranks.extend(keys(
            &loader.by_ref().map(|b| b.unwrap()).collect::<Vec<_>>(),
        ));
        let m = loader.metrics();
        lost += m.samples_lost + m.samples_skipped;
    }
    assert_eq!(by_ranks, got);
    assert_eq!(lost, 20 - from_broken as u64);

    // Garbage in place of a zstd frame: same handling.
    std::fs::write(&shard, b"definitely not zstd").unwrap();
    let mut loader =
        BlockingLoader::open(&url(dir.path()), LoaderConfig::eval("train", 8), None).unwrap();
    assert_eq!(loader.by_ref().map(|b| b.unwrap().n).sum::<usize>(), 40);
    assert_eq!(loader.metrics().shards_failed, 1);
}

#[test]
fn a_missing_shard_is_retried_then_reported_to_the_consumer() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 40, 10, 32).unwrap();
    std::fs::remove_file(dir.path().join("train-000002.tar.zst")).unwrap();
    let config = LoaderConfig {
        fetch_attempts: 3,
        fetch_backoff: Duration::from_millis(20),
        ..LoaderConfig::eval("train", 5)
    };
    let start = Instant::now();
    let mut loader = BlockingLoader::open(&url(dir.path()), config, None).unwrap();
    let mut ok = 0;
    let err = loop {
        match loader.next().expect("an error before the end") {
            Ok(b) => ok += b.n,
            Err(e) => break e,
        }
    };
    assert_eq!(ok, 20, "the batches before the missing shard arrive first");
    let msg = err.to_string();
    assert!(
        matches!(err, LoaderError::Fetch { attempts: 3, .. }),
        "{msg}"
    );
    assert!(msg.contains("train-000002.tar.zst"), "{msg}");
    assert!(
        start.elapsed() >= Duration::from_millis(60),
        "two backoffs of 20 and 40 ms"
    );
    assert!(loader.next().is_none(), "nothing after the error");
    assert_eq!(loader.metrics().fetch_retries, 2);
}

#[test]
fn dropping_the_consumer_shuts_every_stage_down() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 200, 25, 32).unwrap();
    let mut loader = BlockingLoader::open(
        &url(dir.path()),
        LoaderConfig {
            epochs: None,
            ..train(1, 4, 3)
        },
        None,
    )
    .unwrap();
    let live = loader.live_stages();
    for _ in 0..3 {
        loader.next().unwrap().unwrap();
    }
    assert!(
        live.load(Ordering::SeqCst) >= 3,
        "decode, batch and order stages run"
    );
    let start = Instant::now();
    drop(loader);
    while live.load(Ordering::SeqCst) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} stages still running",
            live.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn more_samples_than_the_index_says_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let samples = synthetic_samples(12, 16, 2, "train", "jpg");
    let mut index = write_dataset(
        dir.path(),
        &[("train", samples.clone())],
        12,
        image_spec(16, "jpg"),
        2,
    )
    .unwrap();
    // The index claims 10 samples for a shard holding 12.
    index.splits.get_mut("train").unwrap().num_samples = 10;
    index.splits.get_mut("train").unwrap().shards[0].num_samples = 10;
    std::fs::write(dir.path().join("index.json"), index.to_json()).unwrap();
    let got = keys(&run(dir.path(), LoaderConfig::eval("train", 4)));
    assert_eq!(got, (0..10).map(|i| format!("s{i:06}")).collect::<Vec<_>>());
}

/// A shard cut right after a complete sample (here inside the next sample's first header) keeps
/// that sample: only samples with a member missing are lost.
#[test]
fn a_shard_cut_after_a_complete_sample_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let samples = synthetic_samples(3, 32, 10, "train", "jpg");
    write_dataset(
        dir.path(),
        &[("train", samples.clone())],
        3,
        image_spec(32, "jpg"),
        10,
    )
    .unwrap();
    // Rewrite the shard sample by sample, noting where the second sample ends.
    let mut writer = d2ae_shard::ShardWriter::new(Vec::new()).unwrap();
    let mut cut = 0;
    for (i, s) in samples.iter().enumerate() {
        let members: Vec<(&str, &[u8])> = s
            .members
            .iter()
            .map(|(name, data)| {
                let (_, ext) = d2ae_shard::split_member_name(name).unwrap();
                (ext, data.as_slice())
            })
            .collect();
        writer.append_sample(&s.key, &members).unwrap();
        if i == 1 {
            cut = writer.compressed_bytes() as usize;
        }
    }
    let (bytes, _) = writer.finish().unwrap();
    std::fs::write(dir.path().join("train-000000.tar.zst"), &bytes[..cut + 20]).unwrap();
    let mut loader =
        BlockingLoader::open(&url(dir.path()), LoaderConfig::eval("train", 8), None).unwrap();
    let got = keys(&loader.by_ref().map(|b| b.unwrap()).collect::<Vec<_>>());
    assert_eq!(got, ["s000000", "s000001"]);
    let m = loader.metrics();
    assert_eq!((m.shards_failed, m.samples_lost), (1, 1));
}
