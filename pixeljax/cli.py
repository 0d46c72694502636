"""What every experiment script shares: quiet start-up, one-line user errors, logging.

``cli.run(main)`` replaces ``absl.app.run(main)``: a ``UserError`` (bad model or data name,
bad path, shape or range, mismatched resume, ...) prints ``error: <message>`` on one line and
exits with status 2, with no traceback; any other exception is a bug and raises as usual.
"""
import logging
import os
import re
import sys

from absl import app

from pixeljax.errors import UserError


def log(message: str) -> None:
  """A status line on stderr (results go to stdout and to the workdir)."""
  print(message, file=sys.stderr, flush=True)


def quiet_backend_probes() -> None:
  """JAX logs a warning for each accelerator plug-in it probes and cannot start (e.g.
  "Unable to initialize backend 'tpu'"); on a CPU-only machine that is noise, not news."""
  for name in ("jax._src.xla_bridge", "jax.xla_bridge", "jax._src.compiler"):
    logging.getLogger(name).setLevel(logging.ERROR)
  logging.getLogger("matplotlib").setLevel(logging.WARNING)   # font-cache notices


def _parse_flags(argv):
  """absl's flag parsing, but a bad flag or config file is one ``error:`` line and exit 2
  (config_flags embeds the config file's traceback in its message; its last line is the
  error itself)."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = lines[-1] if "Traceback" in str(e) else " ".join(lines)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
  except _OVERRIDE_ERRORS as e:
    _unknown_setting(e, argv)


# ml_collections raises these for an override of a setting the config does not have.
_OVERRIDE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


def _unknown_setting(e: Exception, argv) -> None:
  # ml_collections' message quotes the key, perhaps as a repr with a "Did you mean" line.
  text = str(e).replace("\\n", "\n").replace("\\'", "'")
  detail = "; ".join(line.strip(" '\"") for line in text.splitlines()
                     if line.strip(" '\""))
  words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text.splitlines()[0] if text else ""))
  bad = [a.split("=")[0] for a in argv[1:]
         if a.startswith("--config.") and a.split("=")[0].rsplit(".", 1)[-1] in words]
  print(f"error: {bad[0] if bad else 'a flag'} names no setting of the config "
        f"({type(e).__name__}: {detail})", file=sys.stderr, flush=True)
  sys.exit(2)


def run(main) -> None:
  quiet_backend_probes()
  from pixeljax import compilation
  compilation.enable_cache()

  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
  app.run(wrapped, flags_parser=_parse_flags)


def repo_path(*parts: str) -> str:
  """A path inside the repository (configs/, checkpoints/), wherever the script is run from."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *parts)


def main(experiment, config_file: str, report=None) -> None:
  """The whole of an experiment script's ``__main__``: flags in, ``experiment`` called, a
  summary printed.

  Flags: ``--config`` (an ml_collections config file, default ``configs/<config_file>``;
  ``--config=configs/x.py:name`` picks a named setting, ``--config.key=value`` overrides one
  value), ``--workdir`` and ``--new_run``. The config is the single source of the run's
  settings: it claims the workdir (``config.json``), goes whole into ``results.json`` and is
  what ``experiment(config, workdir, log)`` reads. Flags are defined here, not at import, so
  experiment modules can be imported side by side (tests do)."""
  from absl import flags
  from ml_collections import config_flags

  from pixeljax.workdir import Workdir
  try:   # config_flags already reads the --config.* overrides of sys.argv here
    config_flag = config_flags.DEFINE_config_file(
        "config", repo_path("configs", config_file),
        "Config file (ml_collections); add :name for a named setting.", lock_config=True)
  except _OVERRIDE_ERRORS as e:
    _unknown_setting(e, sys.argv)
  flags.DEFINE_string("workdir", None, "Output folder (results, figures, resumable state).")
  flags.DEFINE_bool("new_run", False, "If --workdir holds a run with other settings, start a "
                    "new run beside it (<workdir>-2, ...) instead of refusing.")
  flags.mark_flag_as_required("workdir")

  def _main(argv):
    if len(argv) > 1:
      raise UserError(f"unexpected arguments {argv[1:]}; settings go in --config.<name>=value")
    config = config_flag.value
    runtime = config.get("runtime", None)
    if runtime is not None and runtime.get("distributed", False):
      from pixeljax import sharding
      sharding.initialize()
    if runtime is not None and "cpu_devices" in runtime:   # before the backend starts
      from pixeljax import sharding
      sharding.use_cpu_cores(runtime.cpu_devices)
    workdir = Workdir.open(flags.FLAGS.workdir, config, flags.FLAGS.new_run, log)
    if workdir.resumed:
      log(f"resuming the run in {workdir.path} (same settings)")
    results = experiment(config, workdir, log)
    if report is not None:
      print(report(results))
    log(f"results and figures in {workdir.path}/")

  run(_main)
