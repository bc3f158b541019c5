"""The one Lumiere config: `--config configs/lumiere.py:stage=base,size=tiny`.

Arguments (comma-separated `key=value`):
  stage: t2i | base | ssr | conditional
                               which model trains (DESIGN section 5); conditional: the base model fine-tuned on
                               masked videos (i2v, inpainting, cinemagraphs) from a base run (`model.init_from`).
  size:  tiny | small | paper  shapes; `tiny` trains on 2 CPU cores in minutes.
  sr:    0 | 1                 a super-resolution model (`SR_SIZES`): always for ssr; `stage=t2i,sr=1` is the image
                               SR model whose spatial weights the ssr stage starts from (`model.init_from`).
  backbone: lumiere | if_i_m | if_i_l | if_i_xl | if_ii_m | if_ii_l | if_tiny | if_ii_tiny
                               the spatial U-Net (`lumiere_jax/backbones.py`): ours, or DeepFloyd IF's stage I (base,
                               t2i, conditional) / stage II (ssr, t2i sr=1) shapes with IF's diffusion (epsilon,
                               learned-range variance, 1000 discrete cosine steps, DDPM sampling) and T5-XXL text.

Any field can then be overridden with `--config.train.steps=10`. The returned config is locked: an unknown key or a
value of the wrong type fails at once, naming the field; `lumiere_jax.validation.validate` checks the rest before
any compile.

`paper` follows the published video shape (128x128, 80 frames at 16 fps, four spatial and four temporal
down-samplings: 80 -> 40 -> 20 -> 10 -> 5 frames). The paper does not publish widths; ours approximate an Imagen-scale
pixel U-Net (channels 256 x (1, 2, 3, 4, 4), 3 residual blocks per level).
"""

import ml_collections
from ml_collections import config_dict

from lumiere_jax import backbones, stages
from lumiere_jax import config as config_lib

# Per size: model shape, clip shape, batch and steps per stage.
# Widths of `paper` are our approximation (see the module docstring).
SIZES = {
    'tiny': dict(
        image_size=16, num_frames=8, channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(4,), num_heads=2, norm_groups=8, temporal_attention_depth=1,
        text_width=64, text_depth=2, text_heads=2, text_max_length=32,
        batch_size=8, steps=dict(t2i=1200, base=2400, conditional=1200),
    ),
    'small': dict(
        image_size=64, num_frames=16, channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=2,
        attention_resolutions=(16, 8), num_heads=4, norm_groups=16, temporal_attention_depth=2,
        text_width=256, text_depth=4, text_heads=4, text_max_length=64,
        batch_size=32, steps=dict(t2i=50_000, base=20_000, conditional=10_000),
    ),
    'paper': dict(
        image_size=128, num_frames=80, channels=256, channel_mults=(1, 2, 3, 4, 4), num_res_blocks=3,
        attention_resolutions=(32, 16, 8), num_heads=8, norm_groups=32, temporal_attention_depth=4,
        text_width=1024, text_depth=12, text_heads=16, text_max_length=128,
        batch_size=256, steps=dict(t2i=500_000, base=500_000, conditional=100_000),
    ),
}


# Super-resolution models (stage ssr, and t2i with sr=1): what replaces the size's entries above. The low-res input
# is image_size // sr_factor on a side (the base stage's output); `window` frames per model call in training and in
# MultiDiffusion sampling, consecutive windows sharing `overlap`. Windows tile a clip exactly when
# (frames - overlap) is a multiple of (window - overlap): tiny 8 frames in windows of 4, small 16 in 9, paper 80 in 15
# (6 windows); otherwise the last window starts early and overlaps its neighbour by more. Widths of `paper` are our
# approximation.
SR_SIZES = {
    'tiny': dict(
        image_size=64, sr_factor=4, window=4, overlap=2, channels=16, channel_mults=(1, 2, 2, 2),
        attention_resolutions=(8,), batch_size=8, steps=dict(t2i=1200, ssr=1200),
    ),
    'small': dict(
        image_size=256, sr_factor=4, window=9, overlap=2, channels=64, channel_mults=(1, 2, 2, 4, 4),
        attention_resolutions=(16,), batch_size=16, steps=dict(t2i=50_000, ssr=20_000),
    ),
    'paper': dict(
        image_size=1024, sr_factor=8, window=15, overlap=2, channels=128, channel_mults=(1, 2, 4, 8, 8),
        num_res_blocks=2, attention_resolutions=(64,), batch_size=64, steps=dict(t2i=500_000, ssr=500_000),
    ),
}


def _parse_arg(arg: str) -> dict[str, str]:
  """Parses `stage=base,size=tiny[,sr=1][,backbone=...]`, rejecting unknown keys and values; `sr` defaults per stage
  and must match an IF preset's stage (I: no super-resolution, II: super-resolution)."""
  parsed = config_lib.parse_arg(
      arg, {'stage': 'base', 'size': 'tiny', 'sr': '', 'backbone': 'lumiere'},
      {'stage': tuple(stages.STAGES), 'size': tuple(SIZES), 'sr': ('', '0', '1'),
       'backbone': ('lumiere', *backbones.IF_PRESETS)})
  allowed = tuple(str(int(sr)) for sr in stages.STAGES[parsed['stage']].super_resolution)
  parsed['sr'] = parsed['sr'] or allowed[0]
  if parsed['sr'] not in allowed:
    raise ValueError(f'config argument sr={parsed["sr"]!r}: stage {parsed["stage"]} allows {allowed}')
  if parsed['backbone'] in backbones.IF_PRESETS:
    want = '1' if backbones.IF_PRESETS[parsed['backbone']][2] else '0'
    if parsed['sr'] != want:
      raise ValueError(f'config argument backbone={parsed["backbone"]}: an IF stage {"II" if want == "1" else "I"} '
                       f'model, for {"super-resolution (sr=1, stage ssr)" if want == "1" else "sr=0"} stages')
  return parsed


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  args = _parse_arg(arg)
  stage = stages.STAGES[args['stage']]
  sr = args['sr'] == '1'
  conditioning = stages.SUPERRES if sr else stage.conditioning
  size = {**SIZES[args['size']], **(SR_SIZES[args['size']] if sr else {})}
  num_levels = len(size['channel_mults'])
  c = ml_collections.ConfigDict()
  c.stage = args['stage']
  c.size = args['size']
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      backbone='lumiere',  # the spatial U-Net: 'lumiere' (models/unet.py) or 'deepfloyd_if' (model.deepfloyd)
      image_size=size['image_size'],
      # Frames per clip; the t2i stage trains on single frames (num_frames is ignored there), the ssr stage on
      # windows of sr.window frames (num_frames: the clip length it upsamples when sampling its own test clips).
      num_frames=size['num_frames'],
      in_channels=3,
      out_channels=3,
      # Channels of a conditioning video concatenated to the noisy input (0: none; super-resolution: 3, the upsampled
      # low-res clip; the conditional stage: 4, masked video and mask) and whether its noise-augmentation level is
      # an input of the model.
      cond_channels=conditioning.channels,
      cond_noise_level=conditioning.noise_level,
      channels=size['channels'],
      channel_mults=size['channel_mults'],
      num_res_blocks=size['num_res_blocks'],
      # Spatial resolutions (pixels on a side) whose levels get self-attention and text cross-attention.
      attention_resolutions=size['attention_resolutions'],
      num_heads=size['num_heads'],
      norm_groups=size['norm_groups'],
      dropout=0.0,
      # One flag per spatial resize (len(channel_mults) - 1): whether a temporal down/up-sampling follows it. The SSR
      # has none: it runs on windows of any length.
      temporal_downsample=(not sr,) * (num_levels - 1),
      # Temporal self-attention blocks stacked at the coarsest level (the bottleneck). 0: (2+1)D convolutions there
      # too, as in the SSR, which inflates the image SR model with temporal convolutions only.
      temporal_attention_depth=0 if sr else size['temporal_attention_depth'],
      # Compute dtype; parameters, optimizer moments and EMA are always float32. bfloat16 from `small` up (the paper
      # shape does not fit a v5p chip in float32, BENCHMARKS.md); float32 at `tiny`, where the tests need exactness.
      dtype='float32' if args['size'] == 'tiny' else 'bfloat16',
      remat_policy='none',  # 'none' or a name in jax.checkpoint_policies, e.g. 'nothing_saveable'
      # remat_policy applies to the remat_levels finest levels (-1: all, and the middle); remat_coarse_policy to
      # the others, so the coarse levels keep their small activations while level 0 recomputes (BENCHMARKS.md).
      remat_levels=-1,
      remat_coarse_policy='none',
      # Attention kernel: 'auto' (cuDNN flash attention on GPU in bf16/fp16, Pallas splash attention on TPU, XLA
      # elsewhere), 'xla', 'cudnn' (GPU) or 'splash' (TPU).
      attention='auto',
      # Temporal layers: 'auto' (the measured winner of the platform, stunet.TEMPORAL_LAYOUT_BY_PLATFORM),
      # 'transpose' (pixels folded into batch) or 'video' (computed in the (B, T, H, W, C) layout).
      temporal_layout='auto',
      # base / ssr stage: t2i (ssr: image SR, `stage=t2i,sr=1`) workdir (latest checkpoint), checkpoint step
      # directory or export to take spatial weights from; conditional stage: a base run, every weight
      # (models/widen.py). Required while those weights stay frozen; 'none' keeps them random on purpose.
      init_from='',
  ))

  c.text = ml_collections.ConfigDict(dict(
      # 'builtin': small transformer over byte tokens (the embedded default), trained or frozen per train.trainable;
      # 't5': a Hugging Face T5 encoder checkpoint (text.checkpoint), always frozen, as in the paper.
      encoder='builtin',
      # t5: a directory with the Hugging Face config.json and model.safetensors (or a sharded index); '' for builtin.
      checkpoint='',
      # t5 without a checkpoint: a published architecture (models/t5.py ARCHITECTURES, e.g. 't5-v1_1-xxl') for what
      # reads only shapes (lumiere-aot, size tables); training, embedding captions and sampling need the checkpoint.
      architecture='',
      # '' = the encoder's own (bytes for builtin, <checkpoint>/spiece.model for t5), 'bytes' (ByT5 ids for t5) or
      # the path of a SentencePiece .model file (t5).
      tokenizer='',
      max_length=size['text_max_length'],
      width=size['text_width'],  # t5: must equal the checkpoint's d_model
      depth=size['text_depth'],  # builtin only, as is num_heads
      num_heads=size['text_heads'],
  ))

  c.diffusion = ml_collections.ConfigDict(dict(
      logsnr_min=-15.0,
      logsnr_max=15.0,
      # Added to the cosine log-SNR (Hoogeboom et al. 2023 use 2*log(64/resolution)); 0 = plain cosine.
      logsnr_shift=0.0,
      text_dropout=0.1,  # fraction of training captions replaced by the empty caption (classifier-free guidance)
      # 'cosine_logsnr' (continuous time, the fields above) or 'squaredcos_cap_v2' (num_timesteps discrete DDPM steps,
      # DeepFloyd IF's); what the network predicts: 'v' or 'eps'; its variance: 'fixed' or 'learned_range' (twice
      # the channels, improved DDPM's interpolation; discrete schedule only), trained with vlb_weight x the bound.
      schedule='cosine_logsnr',
      num_timesteps=1000,
      parameterization='v',
      variance='fixed',
      vlb_weight=0.001,
  ))

  # Super-resolution (stage ssr; t2i with sr=1). The model reads the high-res clip's area down-sampling by `factor`,
  # bilinearly up-sampled back, concatenated to its input; noise-conditioning augmentation noises it to a time drawn
  # uniformly in [0, train_augment] in training and to `sample_augment` when sampling (0 = clean), the level being an
  # input of the model. `window` frames per model call (training clips; MultiDiffusion windows, `overlap` frames
  # shared by consecutive ones).
  c.sr = ml_collections.ConfigDict(dict(
      factor=size['sr_factor'] if sr else 0,  # 0: not a super-resolution model
      train_augment=0.5,
      sample_augment=0.1,
      window=size['window'] if sr else 0,
      overlap=size['overlap'] if sr else 0,
  ))

  # Conditional stage: per training clip a mask kind (data/masks.py) drawn with probability proportional to these
  # weights (our choice; the paper does not publish its mixture). `unconditional` keeps plain text-to-video alive.
  c.conditional = ml_collections.ConfigDict(dict(
      i2v=0.3, inpaint_box=0.2, inpaint_stroke=0.2, cinemagraph=0.15, unconditional=0.15,
  ))

  c.sample = ml_collections.ConfigDict(dict(
      sampler='ddim',  # ddim | ancestral | ddpm (diffusers' DDPMScheduler steps; discrete schedule only)
      steps=50,
      eta=0.0,  # DDIM stochasticity: 0 deterministic, 1 = ancestral
      guidance=3.0,  # classifier-free guidance scale; 1 = conditional only
      dynamic_threshold=0.0,  # percentile in (0, 1) for Imagen's dynamic thresholding; 0 = plain clip to [-1, 1]
      dynamic_threshold_max=config_dict.placeholder(float),  # cap of the threshold (IF: 1.5 stage I); None: no cap
      timestep_spacing='leading',  # ddpm: the inference timesteps, 'leading' (IF's), 'trailing' or 'linspace' 
      prompts=('a red circle moving right', 'a blue square moving left', 'a green triangle moving down',
               'a yellow circle moving up'),
      every_steps=0,  # periodic samples during training; 0 = only at the end
      fps=16,
  ))

  c.data = ml_collections.ConfigDict(dict(
      # 'synthetic' (procedural moving shapes, built on first use), a glob of ArrayRecord shards in our schema, or
      # 'tfds:name/config' (a TFDS dataset prepared in array_record format).
      source='synthetic',
      # Where the synthetic set is written; '' = $LUMIERE_DATA_DIR or ~/.cache/lumiere_jax.
      synthetic_dir='',
      synthetic_clips=2048,
      # TFDS sources: split, data_dir ('' = TFDS's default) and which features hold the clip (encoded video bytes
      # or uint8 frames), the caption and the frame rate (data.tfds_fps when the dataset has no such feature).
      tfds_split='train',
      tfds_data_dir='',
      tfds_video_key='video',
      tfds_caption_key='caption',
      tfds_fps_key='fps',
      tfds_fps=0.0,
      fps=16,  # clips are resampled to this frame rate
      # A source shorter than the clip: 'skip' (a bad record), 'loop' or 'pad' (repeat the last frame).
      short_clips='skip',
      crop='random',  # training crop of the shortest-side square: 'random' or 'center' (evaluation: always centre)
      # Records carry precomputed caption embeddings (`text_emb`, e.g. T5 outputs): use them, skip the text encoder.
      text_embeddings=False,
      shuffle_seed=0,
      # A checkpoint whose data position was saved by another number of processes: False refuses to resume (the
      # exact next batch does not exist in another layout); True resumes at the same point of the same epoch, in the
      # new layout's order (`pipeline.position_for_process_count`).
      resume_on_other_process_count=False,
      num_workers=0,  # grain worker processes; 0 decodes in the main process
      max_bad_fraction=0.05,  # stop when more than this fraction of records read so far was bad; < 1
      # ... judged once a process has read this many records (and at the end of finite data): one bad record among
      # the first few says nothing about the data.
      min_records_for_bad_fraction=200,
      # t2i only: a second source of single images (`lumiere-data prepare --images` shards, WebDataset `.tar` globs
      # or `tfds:name`), mixed with `source` so that `image_fraction` of the examples are images ('' = none);
      # images with a side under `image_min_size` or more than `image_max_pixels` declared are bad records.
      image_source='',
      image_fraction=0.5,
      image_min_size=8,
      image_max_pixels=8192 * 8192,
      tfds_image_key='image',
  ))

  steps = size['steps'][args['stage']]
  c.train = ml_collections.ConfigDict(dict(
      batch_size=size['batch_size'],  # global, over all processes
      steps=steps,
      learning_rate=2e-3 if args['size'] == 'tiny' else 1e-4,
      # None (the default): scaled to train.steps by `lumiere_jax.train.intervals` (min(1000, steps / 10) warmup
      # steps, a log line every min(25, steps / 10), a checkpoint every min(200, steps / 5)), so overriding
      # train.steps alone gives a consistent short run; a value set here is used as it is.
      warmup_steps=config_dict.placeholder(int),
      weight_decay=0.0,
      grad_clip=1.0,
      ema_decay=0.999 if args['size'] != 'tiny' else 0.99,
      # Which parameters the optimizer updates: 'unet' (all but the text encoder), 'all', 'temporal' (the STUNet's
      # new temporal layers only), 'conditional' (those and the widened input convolution) or a regex over parameter
      # paths. The text encoder stays frozen by default, as the paper's T5 does: trained on single frames (t2i), the
      # built-in one learns to erase the words about motion that the base stage needs (BENCHMARKS.md, demo), while
      # its random initial features keep every word apart.
      trainable=stage.trainable,
      log_every=config_dict.placeholder(int),
      checkpoint_every=config_dict.placeholder(int),
      keep_checkpoints=3,
      # A step with a NaN/Inf loss or gradient leaves parameters, optimizer and EMA unchanged: 'skip' counts it and
      # goes on (stopping after `max_nonfinite_in_a_row` such steps in a row), 'stop' ends the job at the first one.
      nonfinite='skip',
      max_nonfinite_in_a_row=10,
      # 'a,b': a jax.profiler trace of steps a..b-1 in the TensorBoard directory ('' = none).
      profile_steps='',
  ))

  # Optional Weights & Biases logging beside TensorBoard (needs the `wandb` extra); '' = off.
  c.logging = ml_collections.ConfigDict(dict(
      wandb_project='',
      wandb_entity='',
  ))

  # A small FVD during training: every `fvd_every_steps` steps (0 = never), `fvd_num_videos` videos of the UCF101
  # zero-shot protocol (configs/eval_ucf101.py: class-frequency prompts, the first 16 frames or all if fewer) against
  # the train-split statistics of the UCF101 copy at `fvd_ucf101_dir` (official layout), cached on first use.
  c.eval = ml_collections.ConfigDict(dict(
      fvd_every_steps=0,
      fvd_num_videos=256,
      fvd_ucf101_dir='',
  ))

  # Mesh axes and sizes; -1 takes the devices that are left. Data parallelism runs over `data` and `fsdp`.
  c.mesh = ml_collections.ConfigDict(dict(
      data=-1,
      fsdp=1,
      tensor=1,
      # Context parallelism: devices one clip's frames are split over (a positive divisor of the training clip's
      # frames; no -1), with one-frame halo exchanges at the temporal convs. For SSR windows too big for one device.
      context=1,
      # Logical axis name -> mesh axes. Names not listed are replicated.
      axis_rules=(
          ('batch', ('data', 'fsdp')),
          ('embed', 'fsdp'),
          ('mlp', 'tensor'),
          ('heads', 'tensor'),
          ('vocab', 'tensor'),
      ),
      # Fail when more than this fraction of parameter bytes is replicated on every device of a >1-device mesh.
      max_replicated_fraction=1.0,
  ))

  if args['backbone'] in backbones.IF_PRESETS:
    _use_deepfloyd(c, args['backbone'])
  c.lock()
  return c


def _use_deepfloyd(c: ml_collections.ConfigDict, preset: str) -> None:
  """Switches `c` to a DeepFloyd IF backbone: its U-Net shape, image size, text (T5-XXL: its architecture named, its
  weights through `text.checkpoint`; the tiny presets keep the built-in encoder), diffusion and sampler (IF's
  pipeline settings)."""
  unet, image_size, sr_factor = backbones.IF_PRESETS[preset]
  levels = len(unet['block_out_channels'])
  c.model.update(backbone='deepfloyd_if', image_size=image_size,
                 temporal_downsample=(not sr_factor,) * (levels - 1))
  c.model.deepfloyd = ml_collections.ConfigDict(unet)
  if unet['encoder_hid_dim'] == backbones.T5_XXL_WIDTH:
    c.text.update(encoder='t5', architecture='t5-v1_1-xxl', width=backbones.T5_XXL_WIDTH,
                  max_length=backbones.IF_TEXT_LENGTH)
  else:
    c.text.width = unet['encoder_hid_dim']
  c.diffusion.update(schedule='squaredcos_cap_v2', parameterization='eps', variance='learned_range')
  # IF's pipelines: 100 DDPM steps, guidance 7, thresholding at the 95th percentile capped at 1.5 (stage I) or 1
  # (stage II); stage II noises its low-res input to timestep 250 (time 0.251).
  c.sample.update(sampler='ddpm', steps=100, guidance=7.0, dynamic_threshold=0.95,
                  dynamic_threshold_max=1.0 if sr_factor else 1.5)
  if sr_factor:
    c.sr.update(factor=sr_factor, sample_augment=0.251)
