"""Evaluation: FVD and IS on UCF101 zero-shot, computed the way the reference implementations compute them."""
