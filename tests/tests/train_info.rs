//! `d2ae-train info`: the runtime report and a preset's size and cost, from the real binary.

use d2ae_tests::{cmd, run_ok};

#[test]
fn info_reports_runtime_and_the_paper_model_cost() {
    let out = run_ok(cmd("d2ae-train").args([
        "info",
        "--preset",
        "paper",
        "--num-identities",
        "1000",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rt = &v["runtime"];
    assert!(
        rt["torch_version"].as_str().unwrap().starts_with("2.13.0"),
        "{rt}"
    );
    assert!(rt["cuda_available"].is_boolean() && rt["cuda_device_count"].is_i64());
    assert!(rt["nccl_library"]
        .as_str()
        .unwrap()
        .ends_with("nvidia/nccl/lib/libnccl.so.2"));
    let m = &v["model"];
    assert_eq!(m["image_size"], 235);
    assert_eq!(m["num_identities"], 1000);
    let gmac = m["encoder_gmac"].as_f64().unwrap();
    assert!((3.4..4.0).contains(&gmac), "encoder {gmac} GMAC");
    assert!(m["total_params"].as_i64().unwrap() > 20_000_000);

    let text = run_ok(cmd("d2ae-train").args(["info", "--preset", "small"]));
    let text = String::from_utf8(text.stdout).unwrap();
    for want in [
        "torch version",
        "CUDA available",
        "NCCL library",
        "model `small`",
        "GMAC",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    let bad = cmd("d2ae-train")
        .args(["info", "--preset", "huge"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("huge") && err.contains("small, paper"),
        "{err}"
    );
}
