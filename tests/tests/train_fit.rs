//! `d2ae-train fit` end to end: real photos ingested by `d2ae-ingest`, the `small` preset on the
//! CPU, losses falling, exact resume after SIGKILL, a run on the local S3 server, and the faults
//! users hit (no index, mismatched checkpoint, diverging loss).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use d2ae_tests::{cmd, run_fails, run_ok, run_python, shared_data, S3Server};
use serde_json::Value;

/// The CelebA mini set (5 identities × 4 photos), detected and aligned by d2ae-ingest: made once
/// per test binary.
fn celeba_dataset() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("d2ae-train-data")
            .tempdir()
            .unwrap()
            .keep();
        let out = dir.join("celeba");
        run_ok(
            cmd("d2ae-ingest")
                .arg(shared_data().join("celeba-mini"))
                .arg("--out")
                .arg(&out)
                .args(["--layout", "celeba", "--detector"])
                .arg(shared_data().join("models/yunet/yunet_s_640_640.onnx")),
        );
        assert!(out.join("index.json").exists());
        out
    })
}

fn fit(data: &str, out: &str, extra: &[&str]) -> Command {
    let mut c = cmd("d2ae-train");
    c.args(["fit", "--data", data, "--out", out])
        .args(["--preset", "small", "--batch-size", "8", "--threads", "2"])
        .args(["--decode-threads", "2", "--val-every", "0", "--no-progress"])
        .args(extra);
    c
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn small_preset_learns_on_real_photos() {
    let data = celeba_dataset().to_str().unwrap().to_owned();
    let run = tempfile::tempdir().unwrap();
    let out = run_ok(&mut fit(
        &data,
        run.path().to_str().unwrap(),
        &[
            "--steps",
            "40",
            "--checkpoint-every",
            "20",
            "--lr",
            "0.02",
            // celeba-mini is all one partition: validate on the training images.
            "--val-split",
            "train",
            "--json",
        ],
    ));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["steps"], 40);
    let m = metrics(run.path());
    assert_eq!(m.len(), 40);
    let steps: Vec<u64> = m.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>());
    for key in [
        "loss",
        "l_t",
        "l_adv",
        "l_h",
        "l_x",
        "l_x_aug",
        "data_wait_ms",
    ] {
        assert!(m[0][key].is_number(), "{key} missing in {}", m[0]);
    }
    let series = |k: &str| -> Vec<f64> { m.iter().map(|r| r[k].as_f64().unwrap()).collect() };
    let (loss, l_t) = (series("loss"), series("l_t"));
    assert!(
        mean(&loss[30..]) < 0.9 * mean(&loss[..5]),
        "total loss did not fall: {loss:?}"
    );
    assert!(
        mean(&l_t[30..]) < 0.8 * mean(&l_t[..5]),
        "L_T did not fall: {l_t:?}"
    );
    // Checkpoints at 20 and 40, the resolved config and the summary are in the run directory.
    let ckpts: Vec<String> = std::fs::read_dir(run.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        ckpts.contains(&"step-00000040.safetensors".to_string()),
        "{ckpts:?}"
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(run.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["train"]["preset"], "small");
    assert_eq!(config["num_identities"], 5);
    // Validation images of the training people: both classifiers are scored on all of them.
    let val = std::fs::read_to_string(run.path().join("val.jsonl")).unwrap();
    let last: Value = serde_json::from_str(val.lines().last().unwrap()).unwrap();
    assert!(last["identity_images"].as_u64().unwrap() >= 1, "{last}");
    assert_eq!(last["identity_images"], last["images"], "{last}");
    assert!(
        last["acc_t"].is_number() && last["acc_p"].is_number(),
        "{last}"
    );
}

#[test]
fn killed_run_resumes_to_the_same_losses() {
    killed_run_resumes(&[]);
}

/// Adam's moments and step count travel in the checkpoint too.
#[test]
fn killed_adam_run_resumes_to_the_same_losses() {
    killed_run_resumes(&["--optimizer", "adam", "--lr", "0.001"]);
}

fn killed_run_resumes(extra: &[&str]) {
    let data = celeba_dataset().to_str().unwrap().to_owned();
    let args = [
        &["--steps", "12", "--checkpoint-every", "4", "--seed", "7"],
        extra,
    ]
    .concat();
    let whole = tempfile::tempdir().unwrap();
    run_ok(&mut fit(&data, whole.path().to_str().unwrap(), &args));

    let broken = tempfile::tempdir().unwrap();
    let broken_dir = broken.path().to_str().unwrap().to_owned();
    let mut child = fit(&data, &broken_dir, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let target = broken.path().join("checkpoints/step-00000008.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !target.exists() {
        assert!(Instant::now() < deadline, "no checkpoint at step 8");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    run_ok(&mut fit(
        &data,
        &broken_dir,
        &[&args[..], &["--resume"]].concat(),
    ));

    let (a, b) = (metrics(whole.path()), metrics(broken.path()));
    assert_eq!(a.len(), 12);
    assert_eq!(b.len(), 12, "resumed log must have one line per step");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["step"], y["step"]);
        for key in ["loss", "l_t", "l_adv", "l_h", "l_x"] {
            let (u, v) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (u - v).abs() <= 1e-4 * u.abs().max(1.0),
                "step {} {key}: uninterrupted {u} vs resumed {v}",
                x["step"]
            );
        }
    }
}

#[test]
fn trains_from_and_checkpoints_to_the_local_s3_server() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("train");
    let data_url = format!("s3://{bucket}/data");
    run_ok(
        cmd("d2ae-ingest")
            .arg(shared_data().join("celeba-mini"))
            .args(["--out", &data_url, "--endpoint", &s3.endpoint])
            .args(["--layout", "celeba", "--detector"])
            .arg(shared_data().join("models/yunet/yunet_s_640_640.onnx")),
    );
    let run_url = format!("s3://{bucket}/runs/r1");
    let out = run_ok(&mut fit(
        &data_url,
        &run_url,
        &[
            "--steps",
            "6",
            "--checkpoint-every",
            "3",
            "--endpoint",
            &s3.endpoint,
            "--json",
        ],
    ));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["steps"], 6);
    assert!(summary["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("runs/r1/checkpoints/step-00000006.safetensors"));
    // Resuming from the bucket continues at step 6.
    let out = run_ok(&mut fit(
        &data_url,
        &run_url,
        &[
            "--steps",
            "8",
            "--checkpoint-every",
            "3",
            "--endpoint",
            &s3.endpoint,
            "--json",
            "--resume",
        ],
    ));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resumed_from"], 6);
    assert_eq!(summary["steps"], 8);
    // The bucket holds the logs with one line per step.
    let got = run_python(
        "import boto3, sys\n\
         s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='testing',\n\
             aws_secret_access_key='testing', region_name='us-east-1')\n\
         body = s3.get_object(Bucket=sys.argv[2], Key='runs/r1/metrics.jsonl')['Body'].read()\n\
         keys = [o['Key'] for o in s3.list_objects_v2(Bucket=sys.argv[2], Prefix='runs/r1/checkpoints/')['Contents']]\n\
         print(len(body.splitlines()), ' '.join(keys))",
        &[&s3.endpoint, &bucket],
    );
    let got = String::from_utf8_lossy(&got.stdout);
    let (lines, keys) = got.trim().split_once(' ').unwrap();
    assert_eq!(lines, "8", "{got}");
    assert!(
        keys.contains("runs/r1/checkpoints/step-00000008.safetensors"),
        "{keys}"
    );
}

#[test]
fn faults_are_reported_clearly() {
    let data = celeba_dataset().to_str().unwrap().to_owned();
    // No index.json at the data URL.
    let empty = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let err = run_fails(&mut fit(
        empty.path().to_str().unwrap(),
        run.path().to_str().unwrap(),
        &["--steps", "1"],
    ));
    assert!(err.contains("index.json"), "{err}");

    // A diverging loss stops the run, names the step and writes no checkpoint.
    let run = tempfile::tempdir().unwrap();
    let err = run_fails(&mut fit(
        &data,
        run.path().to_str().unwrap(),
        &[
            "--steps",
            "20",
            "--lr",
            "1e12",
            "--checkpoint-every",
            "1000",
        ],
    ));
    assert!(err.contains("not finite at step"), "{err}");
    assert!(
        !run.path().join("checkpoints").exists()
            || std::fs::read_dir(run.path().join("checkpoints"))
                .unwrap()
                .count()
                == 0
    );

    // Resuming with another preset is refused, naming both.
    let run = tempfile::tempdir().unwrap();
    run_ok(&mut fit(
        &data,
        run.path().to_str().unwrap(),
        &["--steps", "2"],
    ));
    let err = run_fails(
        cmd("d2ae-train")
            .args([
                "fit",
                "--data",
                &data,
                "--out",
                run.path().to_str().unwrap(),
            ])
            .args([
                "--preset",
                "paper",
                "--batch-size",
                "2",
                "--steps",
                "3",
                "--resume",
                "--no-progress",
            ]),
    );
    assert!(err.contains("small") && err.contains("paper"), "{err}");

    // So is resuming the same preset with a model flag changed, naming the setting; the loss
    // weights too are part of the model's configuration.
    let err = run_fails(&mut fit(
        &data,
        run.path().to_str().unwrap(),
        &[
            "--steps",
            "3",
            "--resume",
            "--dispel-pool",
            "flatten",
            "--lambda-p",
            "0.5",
        ],
    ));
    assert!(
        err.contains("branch.dispel_pool: (default) → \"flatten\"")
            && err.contains("lambda_p: 0.1 → 0.5")
            && !err.contains("tensor"),
        "{err}"
    );
    // Unchanged settings still resume.
    run_ok(&mut fit(
        &data,
        run.path().to_str().unwrap(),
        &["--steps", "3", "--resume"],
    ));

    // A file-size limit smaller than a checkpoint (`ulimit -f`, here 4 MiB): a clear error naming
    // the checkpoint, not a kill by SIGXFSZ, and no partial file left beside the checkpoints.
    let run = tempfile::tempdir().unwrap();
    let train = fit(&data, run.path().to_str().unwrap(), &["--steps", "2"]);
    let args: Vec<String> = train
        .get_args()
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 8192; exec '{}' {}",
            train.get_program().to_str().unwrap(),
            args.join(" ")
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(out.status.code().is_some(), "killed by a signal: {err}");
    assert!(
        err.contains("step-00000002.safetensors") && err.contains("File too large"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(run.path().join("checkpoints"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
