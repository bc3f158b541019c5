"""Training data: record schema and writer (`records`), H.264 video I/O (`video`), the embedded moving-shapes set
(`synthetic`), per-clip transforms (`transforms`), caption tokenizers (`tokenizers`) and the grain input pipeline
(`pipeline`)."""
