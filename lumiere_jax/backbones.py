"""The spatial U-Net backbones a config can name (`model.backbone`), and DeepFloyd IF's shapes as data.

`lumiere`: our Imagen-like U-Net (models/unet.py), sized by `model.channels`, `channel_mults`, ...
`deepfloyd_if`: diffusers' `UNet2DConditionModel` as DeepFloyd IF configures it (models/deepfloyd_if.py), described
by `model.deepfloyd`, a dict of that class's config.json fields (`IF_UNET_DEFAULTS` completed by a preset or by the
config.json of real weights, `lumiere-convert deepfloyd`). Either backbone is inflated by the same STUNet rules.

The IF presets follow the published stage structure (stage I: 64 px, four levels, attention at 32/16/8 px, T5-XXL
text through `encoder_hid_proj`, attention-pooled text added to the time embedding, 6 output channels for epsilon and
the learned-range variance; stage II: 64 -> 256 px, five levels, the upsampled low-res image concatenated, its
noise-augmentation timestep through `class_embedding`). Their widths are ours, chosen to reproduce the published
parameter counts (IF-I-M 0.4B, -L 0.9B, -XL 4.3B; IF-II-M 0.45B, -L 1.2B; `BENCHMARKS.md`): converting real weights
always takes the architecture from their config.json. This module imports nothing of the package.
"""

BACKBONES = ('lumiere', 'deepfloyd_if')

# diffusers' defaults (UNet2DConditionModel.__init__) for the config.json keys that shape IF's architecture.
IF_UNET_DEFAULTS = dict(
    in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=None, mid_block_type='UNetMidBlock2DCrossAttn', up_block_types=None, only_cross_attention=False,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, mid_block_scale_factor=1.0, dropout=0.0,
    act_fn='silu', norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1280, encoder_hid_dim=None,
    encoder_hid_dim_type=None, attention_head_dim=8, num_attention_heads=None, class_embed_type=None,
    addition_embed_type=None, num_class_embeds=None, upcast_attention=False, resnet_time_scale_shift='default',
    resnet_skip_time_act=False, resnet_out_scale_factor=1.0, time_embedding_type='positional',
    time_embedding_dim=None, time_embedding_act_fn=None, timestep_post_act=None, time_cond_proj_dim=None,
    conv_in_kernel=3, conv_out_kernel=3, attention_type='default', class_embeddings_concat=False,
    mid_block_only_cross_attention=None, cross_attention_norm=None, addition_embed_type_num_heads=64)

T5_XXL_WIDTH = 4096  # IF's text encoder, T5-v1.1-XXL
IF_TEXT_LENGTH = 77  # IF's tokenizer settings: 77 tokens with the attention mask


def _if_unet(channels: int, mults: tuple[int, ...], layers: int | tuple[int, ...], attention_levels: int, *,
             text_width: int, super_resolution: bool, head_dim: int = 64) -> dict:
  """A complete `model.deepfloyd` dict: IF's block layout with the given widths. The coarsest `attention_levels`
  levels use SimpleCrossAttn blocks (self-attention with the text as added keys/values), the others plain resnets."""
  levels = len(mults)
  plain = levels - attention_levels
  return dict(
      IF_UNET_DEFAULTS,
      in_channels=6 if super_resolution else 3, out_channels=6, block_out_channels=tuple(channels * m for m in mults),
      layers_per_block=layers, attention_head_dim=head_dim, cross_attention_dim=4 * channels,
      down_block_types=('ResnetDownsampleBlock2D',) * plain + ('SimpleCrossAttnDownBlock2D',) * attention_levels,
      up_block_types=('SimpleCrossAttnUpBlock2D',) * attention_levels + ('ResnetUpsampleBlock2D',) * plain,
      mid_block_type='UNetMidBlock2DSimpleCrossAttn', encoder_hid_dim=text_width, encoder_hid_dim_type='text_proj',
      addition_embed_type='text', addition_embed_type_num_heads=64, act_fn='gelu',
      resnet_time_scale_shift='scale_shift', resnet_skip_time_act=True, time_embedding_act_fn='gelu',
      cross_attention_norm='group_norm', class_embed_type='timestep' if super_resolution else None)


def _stage_one(channels: int, **kwargs) -> dict:
  return _if_unet(channels, (1, 2, 3, 4), 3, 3, super_resolution=False, **kwargs)


def _stage_two(channels: int, **kwargs) -> dict:
  return _if_unet(channels, (1, 2, 4, 6, 8), (2, 2, 3, 5, 5), 2, super_resolution=True, **kwargs)


# Name -> (model.deepfloyd, image side in pixels, low-res factor (0: stage I)). `if_tiny` / `if_ii_tiny` are ours,
# for CPU tests and demos of the path.
IF_PRESETS = {
    'if_i_m': (_stage_one(192, text_width=T5_XXL_WIDTH), 64, 0),
    'if_i_l': (_stage_one(320, text_width=T5_XXL_WIDTH), 64, 0),
    'if_i_xl': (_stage_one(704, text_width=T5_XXL_WIDTH), 64, 0),
    'if_ii_m': (_stage_two(96, text_width=T5_XXL_WIDTH), 256, 4),
    'if_ii_l': (_stage_two(160, text_width=T5_XXL_WIDTH), 256, 4),
    'if_tiny': (dict(_if_unet(32, (1, 2), 1, 1, text_width=32, super_resolution=False, head_dim=16),
                     norm_num_groups=8, addition_embed_type_num_heads=4), 16, 0),
    'if_ii_tiny': (dict(_if_unet(32, (1, 2), 1, 1, text_width=32, super_resolution=True, head_dim=16),
                        norm_num_groups=8, addition_embed_type_num_heads=4), 64, 4),
}
