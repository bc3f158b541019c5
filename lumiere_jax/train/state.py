"""The train state: a plain pytree of arrays, created already sharded on the mesh.

    {'step': int32, 'rng': uint32[2] key data,
     'params': trainable parameters, 'frozen': frozen parameters (flat dicts, see models/params.py),
     'ema': exponential moving average of the trainable parameters, 'opt_state': optax state over 'params'}

`TrainSetup` derives everything the state needs from a config and a mesh: the model spec, which paths train, the
optimizer and the shardings; `init` jits the initialisation with those out_shardings, so no parameter is ever
materialised whole on one device.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lumiere_jax import models
from lumiere_jax.models import params as params_lib
from lumiere_jax.parallel import sharding as sharding_lib
from lumiere_jax.train import optim


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  config: object
  mesh: jax.sharding.Mesh
  spec: params_lib.ModelSpec
  trainable: tuple[str, ...]
  frozen: tuple[str, ...]
  tx: optax.GradientTransformation
  param_shardings: dict  # path -> NamedSharding, all parameters

  @classmethod
  def create(cls, config, mesh):
    spec = models.model_spec(config)
    trainable, frozen = models.split_trainable(config, spec.shapes)
    shardings = sharding_lib.param_shardings(spec, mesh, config.mesh.axis_rules)
    return cls(config, mesh, spec, tuple(trainable), tuple(frozen), optim.make_optimizer(config.train), shardings)

  def _subset(self, tree, keys):
    return {k: tree[k] for k in keys}

  def state_shardings(self) -> dict:
    trainable = self._subset(self.param_shardings, self.trainable)
    abstract_opt = jax.eval_shape(self.tx.init, self._subset(self.spec.shapes, self.trainable))
    replicated = sharding_lib.replicated(self.mesh)
    opt = optax.tree_map_params(self.tx, lambda _, s: s, abstract_opt, trainable,
                                transform_non_params=lambda _: replicated)
    return dict(step=replicated, rng=replicated, params=trainable,
                frozen=self._subset(self.param_shardings, self.frozen), ema=trainable, opt_state=opt)

  def abstract_state(self) -> dict:
    """ShapeDtypeStructs carrying this mesh's shardings: the restore target for orbax."""
    shapes = jax.eval_shape(self._init_fn, 0)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, self.state_shardings())

  def _init_fn(self, seed):
    model = models.build_model(self.config, rngs=nnx.Rngs(self.config.seed))
    flat = params_lib.flat_params(model)
    params = self._subset(flat, self.trainable)
    return dict(step=jnp.zeros((), jnp.int32),
                rng=jax.random.key_data(jax.random.PRNGKey(seed)),
                params=params, frozen=self._subset(flat, self.frozen),
                ema=jax.tree.map(lambda p: p + 0.0, params),
                opt_state=self.tx.init(params))

  def init(self, pretrained: dict | None = None) -> dict:
    """A fresh, sharded state; `pretrained` (flat params, `config.model.init_from`) overrides the frozen parameters
    by path, and the trainable ones it holds (with their EMA), once `models.adapt_pretrained` made it this stage's.

    A pretrained text encoder (T5) always comes from `config.text.checkpoint`, the rest from `pretrained`; a model
    without one (`models.holds_text_encoder`) reads no T5 weights.
    """
    state = jax.jit(self._init_fn, static_argnums=0, out_shardings=self.state_shardings())(self.config.seed + 1)
    loaded = {}
    keys = [k for k in self.frozen if k.startswith(models.TEXT_PREFIX)]
    if keys and self.config.text.encoder in models.PRETRAINED_TEXT_ENCODERS:
      loaded = self._placed(models.pretrained_text_params(self.config.text), keys, 'config.text.checkpoint')
    if pretrained is not None:
      pretrained = models.adapt_pretrained(self.config, pretrained, self.spec.shapes)
      loaded.update(self._placed(pretrained, [k for k in self.frozen if k not in loaded], 'config.model.init_from'))
      trained = self._placed(pretrained, [k for k in self.trainable if k in pretrained], 'config.model.init_from')
      state['params'].update(trained)
      state['ema'].update(jax.tree.map(jnp.copy, trained))  # its own buffers: the step donates params and EMA
    state['frozen'].update(loaded)
    return state

  def _placed(self, pretrained: dict, keys: list[str], source: str) -> dict:
    """`pretrained[k]` for each of `keys`, checked against the model's shape and put on its sharding."""
    missing = [k for k in keys if k not in pretrained]
    if missing:
      raise ValueError(f'{source}: the checkpoint lacks {len(missing)} parameters this run does not train, '
                       f'e.g. {missing[:3]} (was it trained with the same model config?)')
    placed = {}
    for key in keys:
      want = self.spec.shapes[key]
      if pretrained[key].shape != want.shape:
        raise ValueError(f'{source}: parameter {key} has shape {pretrained[key].shape}, expected {want.shape}')
      placed[key] = jax.device_put(jnp.asarray(pretrained[key], want.dtype), self.param_shardings[key])
    return placed


def inference_params(state: dict, use_ema: bool = True) -> dict:
  """All parameters of the model as used for sampling and export: frozen plus (EMA of) trainable."""
  return {**state['frozen'], **(state['ema'] if use_ema else state['params'])}
