"""Offline dataset tools behind `lumiere-data`: a video collection -> training shards (`prepare`, reading its inputs
with `inputs` and its videos with `video_reader`), and caption pre-embedding of shards (`embed_captions`). Training
never imports this package: it reads the shards through `lumiere_jax.data`."""
