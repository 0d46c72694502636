"""Multi-process campaigns with jax.distributed: 2 processes x 2 CPU devices on this machine
(coordinator on 127.0.0.1) give the records of a single-process run."""
import os
import socket
import subprocess
import sys
import time

import numpy as np

from pixeljax.sparse import PixelAttackConfig, campaign, exhaustive_one_pixel

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_processes(tmp_path, num_processes: int, devices_per_process: int,
                   timeout_s: float = 300.0, folders=None, fail=False, env_extra=None):
  """Starts ``num_processes`` workers joined by jax.distributed; returns their saved records.
  Kills all of them as soon as one fails (the survivors would otherwise wait ~100 s for the
  dead peer's heartbeat to time out) or when ``timeout_s`` runs out. ``folders``: each
  process's campaign folder (default: one, shared). ``fail``: every worker is to exit with
  an error; returns their outputs instead."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                              "JAX_LOCAL_DEVICE_IDS"))}
  env.update(JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices_per_process}").strip())
  env.update(env_extra or {})
  port = _free_port()
  folder = str(tmp_path / "campaign")
  folders = folders or [folder] * num_processes
  procs, logs, outs = [], [], []
  try:
    for i in range(num_processes):
      outs.append(str(tmp_path / f"records_{i}.npz"))
      logs.append(open(tmp_path / f"process_{i}.log", "w+"))
      procs.append(subprocess.Popen(
          [sys.executable, WORKER, str(i), str(num_processes), str(port), folders[i], outs[i]],
          env=env, stdout=logs[i], stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in procs):
      if not fail and any(p.poll() not in (None, 0) for p in procs):
        break
      if time.monotonic() > deadline:
        raise TimeoutError(f"workers still running after {timeout_s:.0f} s")
      time.sleep(0.2)
    codes = [p.poll() for p in procs]
    if fail and 0 not in codes and None not in codes:
      texts = []
      for log in logs:
        log.seek(0)
        texts.append(log.read())
      return texts, folder
    if codes != [0] * num_processes:
      raise RuntimeError(f"worker exit codes {codes}")
  except BaseException:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for p in procs:
      p.wait()
    for i, log in enumerate(logs):
      log.seek(0)
      print(f"--- process {i} output ---\n{log.read()[-6000:]}", file=sys.stderr)
    raise
  finally:
    for log in logs:
      log.close()
  return [dict(np.load(path)) for path in outs], folder


def test_two_processes_match_one_process(tmp_path, cifar_lenet, cifar_samples):
  ds = cifar_samples
  ref = campaign.run(cifar_lenet.predict, ds.images[:8], ds.labels[:8], ds.index[:8],
                     PixelAttackConfig(pixels=1, popsize=40, generations=3), 0,
                     str(tmp_path / "single"), 10, attacks_per_call=4, progress=False,
                     # call_size 0: what the engine chooses on the workers' 4-device mesh
                     execution=dict(call_size=0))
  ref = ref.as_dict()
  results, folder = _run_processes(tmp_path, num_processes=2, devices_per_process=2)
  bound = exhaustive_one_pixel(cifar_lenet.predict, ds.images[:3], ds.labels[:3])
  for got in results:
    assert int(got.pop("process_count")) == 2 and int(got.pop("device_count")) == 4
    # The exhaustive bound, its images sharded over both processes' devices, is the bound.
    for name in bound:
      value = got.pop(f"bound_{name}")
      if name == "lowest_true_prob":
        np.testing.assert_allclose(value, bound[name], rtol=0, atol=1e-6)
      else:
        np.testing.assert_array_equal(value, bound[name], err_msg=name)
    assert set(got) == set(ref)
    for name in ref:
      if name in ("probs", "prior_probs"):
        # Same program, but XLA:CPU's float rounding varies by ~1 ulp with the number of
        # devices in a process, so probabilities agree to 1e-6, not bit for bit.
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-6, err_msg=name)
      else:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
  # Process 0 wrote the chunks; they hold the same attacks as the single-process run's.
  assert sorted(f for f in os.listdir(folder) if f.startswith("chunk_")) == sorted(
      f for f in os.listdir(tmp_path / "single") if f.startswith("chunk_"))

  # Resumed with process 1's folder on a disk of its own (empty): process 0 would skip the
  # chunks it sees while process 1 redid them, and the collectives would stop matching (a
  # hang). Every process names the problem instead, before any work.
  outputs, _ = _run_processes(tmp_path, num_processes=2, devices_per_process=2, fail=True,
                              folders=[folder, str(tmp_path / "not_shared")])
  for text in outputs:
    assert ("a multi-process run needs its workdir on a disk every process shares" in text
            and "saved parts per process: [2, 0]" in text), text[-3000:]

  # Process 1 holds other pixels for an image (another host's copy of the data): every
  # process says so before any work, rather than sharding different rows under one name.
  (tmp_path / "other").mkdir()
  outputs, _ = _run_processes(tmp_path / "other", num_processes=2, devices_per_process=2,
                              fail=True, env_extra=dict(PIXELJAX_TEST_OTHER_IMAGES="1"))
  for text in outputs:
    assert "the processes differ in what they attack" in text, text[-3000:]

  # Process 0 cannot save its first chunk (a full disk): every process stops at once, process
  # 0 with its error and process 1 saying why, rather than process 1 waiting ~100 s in the
  # next chunk's collective for a peer that is gone.
  (tmp_path / "full").mkdir()
  t0 = time.monotonic()
  outputs, _ = _run_processes(tmp_path / "full", num_processes=2, devices_per_process=2,
                              fail=True, env_extra=dict(PIXELJAX_TEST_DISK_FULL="1"))
  assert "No space left on device (simulated)" in outputs[0], outputs[0][-3000:]
  assert "process 0 could not save the run's work" in outputs[1], outputs[1][-3000:]
  assert time.monotonic() - t0 < 60
