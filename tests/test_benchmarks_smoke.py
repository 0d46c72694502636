"""The benchmarks stay runnable: their package's size rule, command lines, and the peer
benchmark's pixeljax worker (the library's ``attack`` with the evaluator's public row count)."""
import argparse
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def test_benchmark_files_are_small_and_count_through_public_hooks():
  files = [f for f in glob.glob(os.path.join(BENCHMARKS, "**", "*.py"), recursive=True)
           if os.sep + "third_party" + os.sep not in f]
  assert files
  for f in files:
    with open(f) as fh:
      text = fh.read()
    assert text.count("\n") < 450, f
    for private in ("_probs", "dataclasses.replace(", "sparse.incremental", "eval_batch"):
      assert private not in text, (f, private)


def test_peers_command_line():
  out = subprocess.run([sys.executable, "-m", "benchmarks.peers", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "--pixeljax_full_net" in out.stdout
  from benchmarks.peers import driver
  args = driver.parse(["--num_images", "2", "--popsize", "20", "--generations", "2"])
  assert (args.num_images, args.popsize, args.generations) == (2, 20, 2)


def test_throughput_execution_specs():
  sys.path.insert(0, BENCHMARKS)
  import throughput
  assert throughput.parse_execution("auto") == {}
  assert throughput.parse_execution("call_size=0,incremental=0") == dict(call_size=0,
                                                                         incremental=False)
  with pytest.raises(SystemExit):
    throughput.parse_execution("eval_batch=400")


def test_peers_pixeljax_worker_counts_rows(cifar_lenet):
  from benchmarks.peers.workers_jax import worker_pixeljax
  args = argparse.Namespace(
      ids=[0, 1], model=cifar_lenet.name, data="cifar10_samples", popsize=10, generations=2,
      rule="first_success", seed=0, pixeljax_cpu_devices=0, pixeljax_full_net=False,
      pixeljax_warm_rerun=False, pixeljax_count_forward=True)
  out = worker_pixeljax(args)
  s = out["summary"]
  assert s["counted_run_identical"]
  assert out["settings"]["execution"]["incremental"]          # the engine's choice on CPU
  queries = sum(r["queries"] for r in out["per_image"])
  # Every query is one executed row; finished attacks ride along in the loop of the others.
  assert s["forwards_executed_total"] >= queries > 0
  assert s["forwards_executed_total"] % (2 * args.popsize) == 0
  assert np.isfinite(s["seconds_per_image"])
