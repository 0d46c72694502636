"""pixeljax's benchmarks (not installed with the library; run from the repository root).

    python -m benchmarks.peers ...        one-pixel attack: pixeljax vs torchattacks vs SciPy DE
    python benchmarks/throughput.py ...   attack and candidate throughput vs the bare forward
    python benchmarks/xla_cpu_options.py  XLA:CPU options: speed and numbers
    python benchmarks/train_peers.py ...  training step: pixeljax vs PyTorch
    python benchmarks/conv_profile.py     per-layer convolution timings, XLA vs PyTorch
    python benchmarks/sparse_rs_peer.py   the Sparse-RS authors' PyTorch code on the same nets
    python benchmarks/check_torch_nets.py the PyTorch rebuilds (torch_nets.py) match pixeljax
    bash benchmarks/sparse_comparison.sh  issue 11's method comparison (experiments/one_pixel.py)

The peer benchmarks need the ``peers`` extra (``pip install -e '.[peers]'``: torch,
torchattacks, SciPy). ``third_party/`` holds vendored peer code, unchanged.
"""
