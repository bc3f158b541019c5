"""Continuous-time VP diffusion with v-prediction: schedules, loss, samplers and guidance (DESIGN section 1)."""

from lumiere_jax.diffusion.guidance import classifier_free_guidance, dynamic_threshold
from lumiere_jax.diffusion.losses import add_noise, diffusion_loss, eps_from_v, v_target, x0_from_v
from lumiere_jax.diffusion.samplers import SAMPLERS, sample
from lumiere_jax.diffusion.schedules import Schedule, alpha_sigma, cosine_logsnr
