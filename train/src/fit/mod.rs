//! `d2ae-train fit`: the training loop (section 4.2 of the paper).
//!
//! loader batches → device → normalise → forward → eq. 6 loss → one backward → (all-reduce of
//! gradients across ranks) → one SGD step. Everything a resumed run needs to continue exactly is
//! in the checkpoint: weights and running statistics, momentum buffers, the loader's position and
//! the step. The randomness of statistical augmentation is re-seeded from (seed, step) at every
//! step, so it needs no saved generator state.
//!
//! The run directory (local or a bucket) holds `config.json`, `metrics.jsonl`, `val.jsonl`,
//! `val/step-N.png`, `summary.json` and `checkpoints/` (see docs/TRAINING.md).

pub mod amp;
pub mod cli;
pub mod config;
pub mod optim;
pub mod runlog;
pub mod tensor_io;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use d2ae_loader::tensor::DeviceFeeder;
use d2ae_loader::{Augment, BlockingLoader, LoaderConfig, LoaderState};
use d2ae_shard::{open_dataset, DatasetLocation, StoreOptions};
use indicatif::{ProgressBar, ProgressStyle};
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointDir, CheckpointMeta};
use crate::dist::{broadcast_parameters, Collective, GradSync, DEFAULT_BUCKET_BYTES};
use crate::model::{normalise, Ablation, D2ae, IdentityHead, ModelConfig, ParamGroup};
pub use config::{
    ConfigOverrides, IdentityHeadKind, TrainConfig, DEFAULT_COSINE_MARGIN, DEFAULT_COSINE_SCALE,
};
use optim::{Optimizer, OptimizerConfig};
use runlog::JsonlLog;
use validate::{validate, SeenIdentities, ValReport};

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct FitSummary {
    pub run: String,
    pub steps: u64,
    pub epochs_started: u64,
    pub images: u64,
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Share of wall time the trainer spent waiting for the loader.
    pub data_wait_share: f64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub last_val: Option<ValReport>,
    pub interrupted: bool,
    pub resumed_from: Option<u64>,
    pub samples_skipped: u64,
    pub checkpoint: Option<String>,
}

/// Parse `cpu`, `cuda` or `cuda:K`.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(k)) => Ok(Device::Cuda(k)),
            _ => bail!("unknown device {other:?}: use cpu, cuda or cuda:K"),
        },
    }
}

/// The model configuration a training configuration asks for.
pub fn model_config(cfg: &TrainConfig) -> Result<ModelConfig> {
    let ablation: Ablation = cfg.ablation.parse()?;
    let mut m = ModelConfig::preset(&cfg.preset)?.with_ablation(ablation);
    if cfg.image_size != 0 {
        m.image_size = cfg.image_size as i64;
    }
    if let Some(v) = cfg.lambda_t {
        m.lambda_t = v;
    }
    if let Some(v) = cfg.lambda_p {
        m.lambda_p = v;
    }
    if let Some(v) = cfg.lambda_adv {
        m.adversary_weight = Some(v);
    }
    if let Some(v) = cfg.lambda_x {
        // λ_X = recon_weight / (H·W): keep the user's λ_X exactly.
        m.recon_weight = v * (m.image_size * m.image_size) as f64;
    }
    if let Some(v) = cfg.feature_dim {
        m.branch.feature_dim = v;
    }
    if let Some(v) = cfg.classifier_noise {
        m.stat_aug.classifier_noise = v;
    }
    if let Some(v) = cfg.recon_face_weight {
        m.recon_face_weight = v;
    }
    if let Some(v) = cfg.branch_pool {
        m.branch.pool = v;
    }
    if let Some(v) = cfg.dispel_pool {
        // Only a reduction that differs from B_T's is recorded: the same model, one config.
        m.branch.dispel_pool = (v != m.branch.pool).then_some(v);
    }
    if let Some(v) = cfg.linear_image {
        m.decoder.linear_image = v;
    }
    if let Some(s) = cfg.stat_aug_noise {
        m.stat_aug.noise_scale = s;
    }
    if let Some(k) = cfg.dispel_linear_input {
        m.branch.dispel_linear_input = (k > 0).then_some(k);
    }
    match cfg.identity_head {
        Some(IdentityHeadKind::Cosine) => {
            m.identity_head = IdentityHead::Cosine {
                scale: cfg.cosine_scale.unwrap_or(DEFAULT_COSINE_SCALE),
                margin: cfg.cosine_margin.unwrap_or(DEFAULT_COSINE_MARGIN),
            }
        }
        Some(IdentityHeadKind::Linear) => m.identity_head = IdentityHead::Linear,
        None => {}
    }
    if (cfg.cosine_scale.is_some() || cfg.cosine_margin.is_some())
        && !matches!(m.identity_head, IdentityHead::Cosine { .. })
    {
        bail!("--cosine-scale and --cosine-margin need --identity-head cosine");
    }
    m.validate()?;
    Ok(m)
}

/// Data parallelism for [`fit`]: the collective and the gradient buckets over the model's
/// variables. `None` trains in one process.
pub struct Parallel {
    pub comm: Box<dyn Collective>,
}

/// Everything the loop needs besides the config: where to stop and how ranks talk.
pub struct FitContext {
    /// Set by Ctrl-C: finish the step, write a checkpoint, return.
    pub stop: Arc<AtomicBool>,
    /// Multi-process data parallelism, when world size > 1.
    pub parallel: Option<Parallel>,
    /// Continue from the newest checkpoint in the run directory.
    pub resume: bool,
    /// Draw a progress bar (rank 0 on a terminal).
    pub progress: bool,
}

struct RunDir {
    loc: DatasetLocation,
    /// Local directory where logs are appended (the run directory itself when local).
    staging: PathBuf,
}

impl RunDir {
    fn open(cfg: &TrainConfig) -> Result<RunDir> {
        let opts = StoreOptions {
            endpoint: cfg.endpoint.clone(),
            create_local: true,
            ..Default::default()
        };
        let loc = open_dataset(&cfg.out, &opts)
            .with_context(|| format!("opening the run directory {}", cfg.out))?;
        let staging = match &loc.local_dir {
            Some(dir) => dir.clone(),
            None => {
                let name: String = cfg
                    .out
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let dir = std::env::temp_dir().join(format!("d2ae-run-{name}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                dir
            }
        };
        Ok(RunDir { loc, staging })
    }

    fn is_local(&self) -> bool {
        self.loc.local_dir.is_some()
    }

    /// Write a small file atomically at the run root.
    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.loc
            .store
            .put(&self.loc.child(name), PutPayload::from(bytes))
            .await
            .with_context(|| format!("writing {}/{name}", self.loc.url))?;
        Ok(())
    }

    /// Copy staged logs to a bucket run directory (no-op when local).
    async fn upload_logs(&self) -> Result<()> {
        if self.is_local() {
            return Ok(());
        }
        for name in ["metrics.jsonl", "val.jsonl"] {
            let path = self.staging.join(name);
            if let Ok(bytes) = std::fs::read(&path) {
                self.put(name, bytes).await?;
            }
        }
        Ok(())
    }

    /// Bring a bucket run's logs to the staging directory before resuming.
    async fn download_logs(&self) -> Result<()> {
        if self.is_local() {
            return Ok(());
        }
        for name in ["metrics.jsonl", "val.jsonl"] {
            if let Ok(got) = self.loc.store.get(&self.loc.child(name)).await {
                let bytes = got.bytes().await?;
                std::fs::write(self.staging.join(name), &bytes)?;
            }
        }
        Ok(())
    }
}

fn loader_config(cfg: &TrainConfig, rank: usize, world: usize, image_size: u32) -> LoaderConfig {
    let mut lc = LoaderConfig::train(&cfg.train_split, cfg.batch_size / world, cfg.seed);
    lc.image_size = Some(image_size);
    lc.decode_threads = cfg.decode_threads.max(1);
    lc.shuffle_buffer = cfg.shuffle_buffer;
    lc.rank = rank;
    lc.world_size = world;
    lc.augment = Augment {
        hflip: cfg.hflip,
        max_shift_px: cfg.max_shift,
    };
    lc.store = StoreOptions {
        endpoint: cfg.endpoint.clone(),
        ..Default::default()
    };
    lc
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serialisable")
}

/// Train as `cfg` says. Returns the summary (rank 0's view).
pub fn fit(cfg: TrainConfig, mut ctx: FitContext) -> Result<FitSummary> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let device = parse_device(&cfg.device)?;
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
    if let Device::Cuda(k) = device {
        anyhow::ensure!(
            tch::Cuda::is_available() && (k as i64) < tch::Cuda::device_count(),
            "device cuda:{k} requested but libtorch sees {} CUDA device(s)",
            tch::Cuda::device_count()
        );
    }
    let (rank, world) = match &ctx.parallel {
        Some(p) => (p.comm.rank(), p.comm.world_size()),
        None => (0, 1),
    };
    anyhow::ensure!(
        cfg.batch_size.is_multiple_of(world),
        "batch_size {} does not split evenly over {world} ranks",
        cfg.batch_size
    );
    let is_root = rank == 0;
    let use_bf16 = amp::bf16_enabled(&cfg.bf16, device);
    let mcfg = model_config(&cfg)?;
    let image_size = mcfg.image_size as u32;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let run = RunDir::open(&cfg)?;
    let ckpts = CheckpointDir::new(run.loc.subdir("checkpoints"));

    // Resume state, if asked and present.
    let resumed = if ctx.resume {
        match rt.block_on(ckpts.load_latest()) {
            Ok(c) => Some(c),
            Err(checkpoint::CheckpointError::None { .. }) => {
                if is_root {
                    tracing::warn!("--resume: no checkpoint in {}, starting fresh", ckpts.url());
                }
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    if let Some(c) = &resumed {
        anyhow::ensure!(
            c.has_train_state,
            "{} is a model file, not a training checkpoint: it has no optimizer or loader state \
             to resume from; move it out of the checkpoints directory or use another --out",
            ckpts.url_of(c.meta.step)
        );
        anyhow::ensure!(
            c.meta.preset == cfg.preset,
            "the checkpoint in {} is a {} model, but this run asks for {}: use another --out or \
             --preset {}",
            ckpts.url(),
            c.meta.preset,
            cfg.preset,
            c.meta.preset
        );
        // Read through ModelConfig so that keys added since the checkpoint was written take
        // their defaults, as when the model is rebuilt from it.
        let saved: ModelConfig =
            serde_json::from_value(c.meta.model_config.clone()).with_context(|| {
                format!(
                    "the checkpoint in {} has an unreadable model config",
                    ckpts.url()
                )
            })?;
        let changed = checkpoint::config_differences(&to_json(&saved), &to_json(&mcfg));
        anyhow::ensure!(
            changed.is_empty(),
            "the checkpoint in {} was trained with another model configuration (checkpoint → this \
             run):\n  {}\nuse another --out, or the checkpoint's settings",
            ckpts.url(),
            changed.join("\n  ")
        );
    }
    let loader_state = match &resumed {
        Some(c) => Some(
            serde_json::from_value(c.meta.loader_state.clone())
                .context("the checkpoint's loader state does not fit this loader version")?,
        ),
        None => None,
    };
    let loader = BlockingLoader::open(
        &cfg.data,
        loader_config(&cfg, rank, world, image_size),
        loader_state.as_ref(),
    )
    .with_context(|| format!("opening the training data {}", cfg.data))?;
    let index = loader.index().clone();
    let num_identities = index.identities.len() as i64;
    anyhow::ensure!(
        num_identities >= 2,
        "{} has {num_identities} identities; identity training needs at least 2",
        cfg.data
    );
    let has_val = index.splits.contains_key(&cfg.val_split);
    let batches_per_epoch = loader.batches_per_epoch();
    anyhow::ensure!(
        batches_per_epoch > 0,
        "split {:?} of {} has fewer samples than one batch of {} per rank",
        cfg.train_split,
        cfg.data,
        cfg.batch_size / world
    );
    let total_steps = cfg.steps.unwrap_or(cfg.epochs * batches_per_epoch);

    // Model and optimizer.
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let model = D2ae::new(&vs.root(), &mcfg, num_identities)?;
    let mut opt = Optimizer::new(
        vs.variables(),
        OptimizerConfig {
            kind: cfg.optimizer,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
        },
    );
    for (part, mult) in [
        (ParamGroup::Decoder, cfg.decoder_lr_mult),
        (ParamGroup::ClassifierP, cfg.adversary_lr_mult),
    ] {
        if mult != 1.0 {
            let names = model
                .param_groups(&vs)
                .into_iter()
                .filter(|(group, _)| *group == part)
                .flat_map(|(_, params)| params.into_iter().map(|(name, _)| name));
            opt.scale_lr(names, mult);
        }
    }
    let mut step = 0u64;
    let resumed_from = resumed.as_ref().map(|c| c.meta.step);
    if let Some(c) = resumed {
        anyhow::ensure!(
            c.meta.num_identities == num_identities,
            "the checkpoint in {} was trained over {} identities, but {} has {}: use another \
             --out or the matching data",
            ckpts.url(),
            c.meta.num_identities,
            cfg.data,
            num_identities
        );
        checkpoint::load_variables(&vs, &c.model, &ckpts.url_of(c.meta.step))
            .context("restoring the model from the checkpoint")?;
        opt.load_state(c.optim)
            .map_err(anyhow::Error::msg)
            .context("restoring the optimizer from the checkpoint")?;
        step = c.meta.step;
    }
    let grad_sync = match &mut ctx.parallel {
        Some(p) => {
            broadcast_parameters(&vs, p.comm.as_mut())?;
            Some(GradSync::new(&vs, DEFAULT_BUCKET_BYTES)?)
        }
        None => None,
    };

    // Logs (rank 0).
    let mut metrics_log = None;
    let mut val_log = None;
    if is_root {
        if resumed_from.is_some() {
            rt.block_on(run.download_logs())?;
        }
        metrics_log = Some(JsonlLog::open(
            &run.staging.join("metrics.jsonl"),
            resumed_from,
        )?);
        val_log = Some(JsonlLog::open(
            &run.staging.join("val.jsonl"),
            resumed_from,
        )?);
        let resolved = json!({"train": to_json(&cfg), "model": to_json(&mcfg),
            "num_identities": num_identities, "batches_per_epoch": batches_per_epoch,
            "total_steps": total_steps, "world_size": world});
        rt.block_on(run.put("config.json", serde_json::to_vec_pretty(&resolved)?))?;
    }

    let bar = (is_root && ctx.progress).then(|| {
        let bar = ProgressBar::new(total_steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {per_sec} ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(step);
        bar
    });

    let save_checkpoint =
        |step: u64, epoch: u64, loader_state: &LoaderState, opt: &Optimizer| -> Result<String> {
            let meta = CheckpointMeta {
                step,
                epoch,
                num_identities,
                preset: cfg.preset.clone(),
                model_config: to_json(&mcfg),
                loader_state: to_json(loader_state),
                config: to_json(&cfg),
            };
            let model_vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
            let bytes = checkpoint::encode(&meta, &model_vars, &opt.state())?;
            rt.block_on(async {
                ckpts.save(step, bytes, cfg.keep_checkpoints).await?;
                run.upload_logs().await
            })?;
            Ok(format!(
                "{}/{}",
                ckpts.url(),
                checkpoint::checkpoint_name(step)
            ))
        };

    let started = Instant::now();
    let mut wait_total = Duration::ZERO;
    let (mut images_seen, mut first_loss, mut last_loss) = (0u64, None, None);
    let mut last_val = None;
    let mut epoch = step / batches_per_epoch;
    let mut last_ckpt = None;
    let mut interrupted = false;
    let mut last_saved_step = resumed_from;
    // Identities the training batches have shown: validation scores identity only on those.
    let mut trained_ids = SeenIdentities::new(num_identities as usize);
    let run_val = |model: &D2ae, step: u64, trained_ids: &SeenIdentities| -> Result<ValReport> {
        let mut lc = LoaderConfig::eval(&cfg.val_split, (cfg.batch_size / world).max(1));
        lc.image_size = Some(image_size);
        lc.decode_threads = cfg.decode_threads.max(1);
        lc.store.endpoint = cfg.endpoint.clone();
        let grid = run.staging.join(format!("val/step-{step:08}.png"));
        let report = validate(
            model,
            &cfg.data,
            lc,
            cfg.val_batches,
            device,
            step,
            Some(&grid),
            trained_ids,
        )?;
        if !run.is_local() {
            let bytes = std::fs::read(&grid).unwrap_or_default();
            if !bytes.is_empty() {
                rt.block_on(run.put(&format!("val/step-{step:08}.png"), bytes))?;
            }
        }
        Ok(report)
    };

    // Host→device copies (pinned and non-blocking on CUDA) run one batch ahead of the compute.
    let mut loader_state = loader.state();
    let mut feeder = DeviceFeeder::new(loader, device, 1);
    while step < total_steps {
        if stop_requested(&ctx.stop, ctx.parallel.as_mut())? {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        let Some(batch) = feeder.next() else {
            break;
        };
        let batch = batch.context("reading a training batch")?;
        loader_state = batch.state.clone();
        let waited = t0.elapsed();
        wait_total += waited;
        epoch = batch.meta.epoch;
        let lr = cfg.lr_at(epoch);
        // Statistical augmentation noise (eq. 5) depends only on (seed, step, rank).
        tch::manual_seed(
            (cfg.seed as i64).wrapping_mul(1_000_003) + (step * world as u64 + rank as u64) as i64,
        );
        let b = batch.meta.n as i64;
        trained_ids.mark(&batch.meta.identities);
        let images = normalise(&batch.images, device)?;
        let labels = batch.identities;
        opt.zero_grad();
        let terms = amp::bf16_autocast(use_bf16, || -> Result<_> {
            let out = model.forward_t(&images, true)?;
            Ok(model.losses(&out, &labels, &images)?)
        })?;
        terms.total.backward();
        let values = terms.values();
        if !values.total.is_finite() {
            bail!(
                "loss is not finite at step {}: total {} (L_T {}, L_adv {:?}, L_H {:?}, L_X {:?}, \
                 L̃_X {:?}); stopping without a checkpoint, the last good one is {}",
                step + 1,
                values.total,
                values.l_t,
                values.l_adv,
                values.l_h,
                values.l_x,
                values.l_x_aug,
                last_saved_step
                    .map(|s| format!("step {s}"))
                    .unwrap_or_else(|| "none".into())
            );
        }
        if let (Some(sync), Some(p)) = (grad_sync.as_ref(), ctx.parallel.as_mut()) {
            sync.sync(p.comm.as_mut())?;
        }
        opt.step(lr);
        if let Some(p) = ctx.parallel.as_mut() {
            sync_running_sigma(&vs, p.comm.as_mut())?;
        }
        step += 1;
        images_seen += (b as u64) * world as u64;
        first_loss.get_or_insert(values.total);
        last_loss = Some(values.total);
        let step_secs = t0.elapsed().as_secs_f64();
        if let Some(log) = metrics_log.as_mut() {
            let lm = feeder.loader().metrics();
            log.write(&json!({
                "step": step, "epoch": epoch, "lr": lr, "loss": values.total,
                "l_t": values.l_t, "l_adv": values.l_adv, "l_h": values.l_h,
                "l_x": values.l_x, "l_x_aug": values.l_x_aug,
                "acc_t": values.acc_t, "acc_p": values.acc_p,
                "images_per_sec": (b as f64 * world as f64) / step_secs,
                "step_ms": step_secs * 1e3, "data_wait_ms": waited.as_secs_f64() * 1e3,
                "samples_skipped": lm.samples_skipped,
            }))?;
        }
        if let Some(bar) = &bar {
            bar.set_position(step);
            bar.set_message(format!(
                "ep {epoch} loss {:.4} L_T {:.3} L_H {} L_X {} acc_T {:.2} wait {:.0}%",
                values.total,
                values.l_t,
                values.l_h.map_or("-".into(), |v| format!("{v:.3}")),
                values.l_x.map_or("-".into(), |v| format!("{v:.1}")),
                values.acc_t,
                100.0 * wait_total.as_secs_f64() / started.elapsed().as_secs_f64().max(1e-9)
            ));
        }
        let last = step == total_steps;
        if is_root && has_val && ((cfg.val_every > 0 && step.is_multiple_of(cfg.val_every)) || last)
        {
            let report = run_val(&model, step, &trained_ids)?;
            if let Some(log) = val_log.as_mut() {
                log.write(&to_json(&report))?;
            }
            last_val = Some(report);
        }
        if (cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every)) || last {
            if is_root {
                last_ckpt = Some(save_checkpoint(step, epoch, &loader_state, &opt)?);
                last_saved_step = Some(step);
            }
            if let Some(p) = ctx.parallel.as_mut() {
                p.comm.barrier()?;
            }
        }
    }
    if interrupted && last_saved_step != Some(step) && step > 0 {
        if is_root {
            last_ckpt = Some(save_checkpoint(step, epoch, &loader_state, &opt)?);
        }
        if let Some(p) = ctx.parallel.as_mut() {
            p.comm.barrier()?;
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let seconds = started.elapsed().as_secs_f64();
    let lm = feeder.loader().metrics();
    let summary = FitSummary {
        run: cfg.out.clone(),
        steps: step,
        epochs_started: epoch + 1,
        images: images_seen,
        seconds,
        images_per_sec: images_seen as f64 / seconds.max(1e-9),
        data_wait_share: wait_total.as_secs_f64() / seconds.max(1e-9),
        first_loss,
        last_loss,
        last_val,
        interrupted,
        resumed_from,
        samples_skipped: lm.samples_skipped,
        checkpoint: last_ckpt,
    };
    if is_root {
        rt.block_on(async {
            run.put("summary.json", serde_json::to_vec_pretty(&summary)?)
                .await?;
            run.upload_logs().await
        })?;
    }
    Ok(summary)
}

/// Whether any rank asked to stop (Ctrl-C): all ranks must leave the loop at the same step.
fn stop_requested(flag: &AtomicBool, parallel: Option<&mut Parallel>) -> Result<bool> {
    let local = flag.load(Ordering::SeqCst);
    let Some(p) = parallel else {
        return Ok(local);
    };
    let mut t = [Tensor::from_slice(&[if local { 1.0f32 } else { 0.0 }])];
    p.comm.all_reduce_mean(&mut t)?;
    Ok(t[0].double_value(&[0]) > 0.0)
}

/// Average the statistical-augmentation running σ over ranks, so every replica (and the
/// checkpoint rank 0 writes) holds the same estimate.
fn sync_running_sigma(vs: &nn::VarStore, comm: &mut dyn Collective) -> Result<()> {
    let mut sigmas: Vec<Tensor> = {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(name, t)| {
                (name.starts_with("stat_t.") || name.starts_with("stat_p."))
                    && t.kind() == Kind::Float
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.into_iter().map(|(_, t)| t).collect()
    };
    if !sigmas.is_empty() {
        tch::no_grad(|| comm.all_reduce_mean(&mut sigmas))?;
    }
    Ok(())
}

/// Path of the `n`-th validation grid of a local run directory.
pub fn val_grid_path(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(format!("val/step-{step:08}.png"))
}
