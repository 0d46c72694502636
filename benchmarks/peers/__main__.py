"""``python -m benchmarks.peers ...`` (from the repository root), or ``python
benchmarks/peers ...``: the peer benchmark's command line (``benchmarks.peers.driver``)."""
import os
import sys

if not __package__:      # run as a folder (python benchmarks/peers): find the repository
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__)))))

from benchmarks.peers.driver import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
