"""Exports: exact round trips in both formats and dtypes, the manifest, tampering refused, sampling from an export."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors

from lumiere_jax import export as export_lib
from lumiere_jax.data import video
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import checkpoint, main as train_main
from micro import micro_config
from test_cli import ROOT, _env


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 2-step micro run and the inference parameters (EMA and raw) of its restored state."""
  workdir = tmp_path_factory.mktemp('run')
  train_main.train(micro_config(**{'train.steps': 2}), workdir, devices=jax.devices()[:1])
  mesh = _mesh()
  params = {use_ema: jax.device_get(checkpoint.load_inference_params(workdir, mesh, use_ema=use_ema)[2])
            for use_ema in (True, False)}
  return workdir, params


def _mesh():
  return mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])


@pytest.mark.parametrize('fmt', export_lib.FORMATS)
@pytest.mark.parametrize('dtype, use_ema', [('float32', True), ('bfloat16', True), ('float16', True),
                                            ('float32', False)])
def test_an_export_round_trips_exactly(run, tmp_path, fmt, dtype, use_ema):
  workdir, params = run
  manifest = export_lib.export(workdir, tmp_path / 'export', use_ema=use_ema, dtype=dtype, fmt=fmt)
  assert manifest == json.loads((tmp_path / 'export' / 'manifest.json').read_text())
  expected = params[use_ema]
  assert {k: manifest[k] for k in ('stage', 'step', 'weights', 'dtype', 'format', 'tensors')} == dict(
      stage='base', step=2, weights='ema' if use_ema else 'raw', dtype=dtype, format=fmt, tensors=len(expected))
  assert manifest['parameters'] == sum(v.size for v in expected.values())
  config, loaded = export_lib.load_export(tmp_path / 'export', _mesh())
  assert config.stage == 'base' and config.train.steps == 2
  loaded = jax.device_get(loaded)
  assert loaded.keys() == expected.keys()
  for name, value in expected.items():
    want = value.astype(export_lib.DTYPES[dtype]).astype(np.float32)
    assert loaded[name].dtype == np.float32 and np.array_equal(loaded[name], want), name


def test_relative_paths_headers_and_failures(run, tmp_path, monkeypatch):
  """The README's relative `--out` works for orbax (which wants absolute paths); safetensors files carry the stage,
  step and digests in their header and the usual file mode; a failed write leaves nothing behind."""
  workdir, _ = run
  monkeypatch.chdir(tmp_path)
  export_lib.export(workdir, 'exports/base-orbax')
  assert (tmp_path / 'exports' / 'base-orbax' / 'manifest.json').is_file()
  assert export_lib.load_export('exports/base-orbax', _mesh())[1]  # and reads back from a relative path
  manifest = export_lib.export(workdir, 'exports/base-st', fmt='safetensors')
  path = tmp_path / 'exports' / 'base-st' / 'params.safetensors'
  with safetensors.safe_open(path, 'np') as f:
    header = f.metadata()
  assert {k: header[k] for k in ('stage', 'step', 'weights', 'sha256')} == dict(
      stage='base', step='2', weights='ema', sha256=manifest['sha256'])
  config_json = (path.parent / 'config.json').read_bytes()
  assert header['config_sha256'] == hashlib.sha256(config_json).hexdigest()
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask
  monkeypatch.setattr(export_lib, '_write_arrays', lambda *a, **k: (_ for _ in ()).throw(OSError('disk full')))
  with pytest.raises(OSError, match='disk full'):
    export_lib.export(workdir, 'exports/failed')
  assert sorted(p.name for p in (tmp_path / 'exports').iterdir()) == ['base-orbax', 'base-st']


def _flip_a_byte(path):
  data = bytearray(path.read_bytes())
  data[-7] ^= 0x01  # array bytes (safetensors keeps its header first)
  path.write_bytes(bytes(data))


@pytest.mark.parametrize('fmt', export_lib.FORMATS)
def test_a_tampered_export_is_refused(run, tmp_path, fmt):
  workdir, _ = run
  out = tmp_path / 'export'
  export_lib.export(workdir, out, fmt=fmt)
  if fmt == 'safetensors':
    _flip_a_byte(out / 'params.safetensors')
  else:  # rewrite the arrays with one value changed, as a well-formed but different orbax checkpoint
    with ocp.StandardCheckpointer() as checkpointer:
      arrays = checkpointer.restore(out / 'params')
      name = sorted(arrays)[0]
      arrays[name] = arrays[name] + 1
      shutil.rmtree(out / 'params')
      checkpointer.save(out / 'params', arrays)
  with pytest.raises(ValueError, match='do not match manifest.json'):
    export_lib.load_export(out, _mesh())


def test_export_refuses_a_non_empty_directory(run, tmp_path):
  (tmp_path / 'keep.txt').write_text('x')
  with pytest.raises(FileExistsError, match='not empty'):
    export_lib.export(run[0], tmp_path)


def _cli(module, *args):
  return subprocess.run([sys.executable, '-m', f'lumiere_jax.cli.{module}', *map(str, args)], cwd=ROOT,
                        env=_env(ROOT / '.cache' / 'data'), capture_output=True, text=True, timeout=600)


def test_sample_from_a_bfloat16_safetensors_export_writes_a_decodable_clip(run, tmp_path):
  out = tmp_path / 'export'
  exported = _cli('export', '--workdir', run[0], '--out', out, '--dtype', 'bfloat16', '--format', 'safetensors')
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert export_lib.read_manifest(out)['dtype'] == 'bfloat16'
  clip = tmp_path / 'clip.mp4'
  sample = _cli('sample', '--checkpoint', out, '--prompt', 'a red circle moving left', '--out', clip, '--steps', '2')
  assert sample.returncode == 0, sample.stderr[-3000:]
  assert 'step 2' in sample.stdout
  frames, fps = video.decode_video(clip.read_bytes())
  assert frames.shape == (8, 16, 16, 3) and fps == pytest.approx(16)
  both = _cli('sample', '--checkpoint', out, '--workdir', run[0], '--prompt', 'x')
  assert both.returncode != 0 and 'exactly one of --workdir' in both.stderr
