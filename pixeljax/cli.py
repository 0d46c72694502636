"""What every experiment script shares: quiet start-up, one-line user errors, logging, and
the record of what made a result (code version, command line).

``cli.run(main)`` replaces ``absl.app.run(main)``: a ``UserError`` (bad model or data name,
bad path, shape or range, mismatched resume, a folder in use, ...) or a failing disk prints
``error: <message>`` on one line and exits with status 2, with no traceback; Ctrl-C prints
``interrupted: ...; rerun the same command to resume`` and exits with 130 (a run's saved work
is kept, and a rerun resumes from it); any other exception is a bug and raises as usual.
"""
import errno
import functools
import logging
import os
import re
import subprocess
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
  except OSError as e:   # an override applied to a config file that failed to load
    _config_unreadable(e)


def _config_unreadable(e: OSError) -> None:
  """One line for a ``--config`` file that cannot be read: ml_collections defers the error
  until the config is used (or an override is applied) and words it over several lines."""
  found = re.search(r"\[Errno \d+\] ([^:\n]+): '([^'\n]+)'", str(e))
  if found:
    message = f"config file {found.group(2)}: {found.group(1)}"
  else:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = f"config file not loaded: {lines[-1] if lines else type(e).__name__}"
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


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


# What a run has saved so far, for the line Ctrl-C prints (``note_saved``).
_saved = {"note": "", "rerun": "rerun the same command to resume"}
# OSErrors of the machine rather than of the code: a full disk, a read-only or foreign folder.
_USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def note_saved(note: str, rerun: str = "rerun the same command to resume") -> None:
  """Tells Ctrl-C's message what the run has saved so far, e.g. "40 of 200 generations
  saved": the user learns what a rerun keeps (``rerun``: what a rerun does, for a run that
  saves nothing on the way)."""
  _saved["note"], _saved["rerun"] = note, rerun


def _interrupted() -> None:
  note = f"{_saved['note']}; " if _saved["note"] else ""
  print(f"interrupted: {note}{_saved['rerun']}", file=sys.stderr, flush=True)
  sys.exit(130)


def run(main) -> None:
  """``absl.app.run(main)`` with one line, no traceback, for a user's mistake (exit 2) and
  for Ctrl-C (exit 130)."""
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    except OSError as e:
      if e.errno not in _USER_ERRNOS:
        raise
      print(f"error: {e.filename or 'a file'}: {e.strerror}", file=sys.stderr, flush=True)
      sys.exit(2)
    except KeyboardInterrupt:
      _interrupted()

  try:
    quiet_backend_probes()
    from pixeljax import compilation
    compilation.enable_cache()
    app.run(wrapped, flags_parser=_parse_flags)
  except KeyboardInterrupt:
    _interrupted()


@functools.lru_cache(maxsize=None)
def code_version() -> dict:
  """{commit, dirty, version}: the git commit and whether tracked code differs from it, when
  the package runs from a checkout (None without git), and the installed version. Read once,
  when first asked (``main`` asks at the start, before the run could change the files)."""
  import importlib.metadata as md
  try:
    version = md.version("pixeljax")
  except md.PackageNotFoundError:
    version = None
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return dict(_git_state(root), version=version)


def _git_state(root: str) -> dict:
  """{commit, dirty} of the checkout at ``root`` (None, None without git).

  ``results/`` and ``checkpoints/`` do not count as code: a run started while an earlier
  run's results are still uncommitted would otherwise be labelled dirty, and a checkpoint is
  recorded by its own hash among a run's inputs."""
  out = dict(commit=None, dirty=None)
  if not os.path.exists(os.path.join(root, ".git")):
    return out
  git = lambda *args: subprocess.run(["git", "-C", root, *args], capture_output=True,
                                     text=True, timeout=10, stdin=subprocess.DEVNULL)
  try:
    head = git("rev-parse", "HEAD")
    if head.returncode == 0:
      status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                   ":(exclude)results", ":(exclude)checkpoints")
      out.update(commit=head.stdout.strip(),
                 dirty=bool(status.stdout.strip()) if status.returncode == 0 else None)
  except (OSError, subprocess.SubprocessError):   # no git, or it hangs
    pass
  return out


def named_config(argv=None):
  """The ``--config`` argument as given (``configs/fooling.py:mnist_cppn``), or None for the
  script's default config."""
  argv = sys.argv if argv is None else argv
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def run_info() -> dict:
  """What results.json records of how it was made: the code's version and the command."""
  return dict(code=code_version(), command=list(sys.argv), named_config=named_config())


def versions() -> dict:
  """Library versions and devices, the code's version and the command (``run_info``),
  written beside results (not compared on resume)."""
  import importlib.metadata as md
  import jax
  out = {}
  for pkg in ("pixeljax", "jax", "jaxlib", "flax", "numpy"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  out["backend"] = jax.default_backend()
  out["devices"] = jax.device_count()
  out["processes"] = jax.process_count()
  out["xla_flags"] = os.environ.get("XLA_FLAGS", "")   # some change the float results
  # The nets pin HIGHEST (PixelClassifier.logits); other products follow this global default.
  out["matmul_precision"] = jax.config.jax_default_matmul_precision
  out.update(run_info())
  return out


def repo_path(*parts: str) -> str:
  """A path inside the repository (configs/, checkpoints/), wherever the script is run from."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *parts)


def main(experiment, config_file: str, report=None, migrate=None, extendable=()) -> None:
  """The whole of an experiment script's ``__main__``: flags in, ``experiment`` called, a
  summary printed.

  Flags: ``--config`` (an ml_collections config file, default ``configs/<config_file>``;
  ``--config=configs/x.py:name`` picks a named setting, ``--config.key=value`` overrides one
  value), ``--workdir`` and ``--new_run``. The config is the single source of the run's
  settings: it claims the workdir (``config.json``), goes whole into ``results.json`` and is
  what ``experiment(config, workdir, log)`` reads. ``migrate`` and ``extendable`` go to
  ``Workdir.open``. The workdir is held (locked) until the run ends. Flags are defined here,
  not at import, so experiment modules can be imported side by side (tests do)."""
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
    try:
      config = config_flag.value
      runtime = config.get("runtime", None)
    except OSError as e:   # the config file failed to load (ml_collections waits until now)
      _config_unreadable(e)
    if runtime is not None and runtime.get("distributed", False):
      from pixeljax import sharding
      sharding.initialize()
    if runtime is not None and "cpu_devices" in runtime:   # before the backend starts
      from pixeljax import sharding
      sharding.use_cpu_cores(runtime.cpu_devices)
    code_version()      # read before the run, which might outlast an edit of the code
    workdir = Workdir.open(flags.FLAGS.workdir, config, flags.FLAGS.new_run, log,
                           migrate=migrate, extendable=extendable)
    try:
      if workdir.resumed and not workdir.pending:
        log(f"resuming the run in {workdir.path} (same settings)")
      results = experiment(config, workdir, log)
      workdir.finish()
    finally:
      workdir.close()
    if report is not None:
      print(report(results))
    log(f"results and figures in {workdir.path}/")

  run(_main)
