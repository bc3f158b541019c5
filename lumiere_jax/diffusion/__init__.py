"""VP diffusion (DESIGN section 1): schedules (continuous cosine log-SNR; IF's discrete cosine), parameterizations
(v; eps with learned-range variance), the training loss, DDIM / ancestral / DDPM samplers and guidance."""

from lumiere_jax.diffusion.guidance import classifier_free_guidance, dynamic_threshold
from lumiere_jax.diffusion.losses import add_noise, diffusion_loss, eps_from_v, v_target, x0_from_v
from lumiere_jax.diffusion.parameterization import Parameterization
from lumiere_jax.diffusion.samplers import SAMPLERS, sample
from lumiere_jax.diffusion.schedules import DiscreteSchedule, Schedule, alpha_sigma, cosine_logsnr
