r"""Peer benchmark of the one-pixel attack: pixeljax vs torchattacks vs a SciPy DE loop.

Every tool attacks the SAME correctly classified exact CIFAR-10 test images with the SAME
weights, population, generation count, pixel count (1, untargeted) and stopping rule, each IN
ITS OWN PROCESS (a subprocess of this driver, one after the other), so machine noise hits all
alike and no framework's thread pools run beside another's.

    .venv/bin/python -m benchmarks.peers --model cifar10_lenet_hyperparticle        # 20 images
    .venv/bin/python -m benchmarks.peers --model cifar10_resnet20_akamaster         # 10 images
    .venv/bin/python -m benchmarks.peers --model cifar10_lenet_hyperparticle \
        --tools pixeljax,scipy --rules first_success --num_images 50 --out runs/peers/x.json

(from the repository root; ``python benchmarks/peers ...``, the folder, runs it too). Files:
``driver`` (command line, spawning, table), ``workers_jax`` (select, pixeljax, forward_jax),
``workers_torch`` (torchattacks, forward_torch), ``workers_scipy`` (scipy), ``common``.

Prints one table and writes one JSON (atomically, ``pixeljax.workdir.write_json``; default
``runs/peers/<model>.json``) with the settings, the image ids, each tool's summary and
per-image rows, the bare forward throughput of both frameworks and every worker's environment.

Images. ``--num_images`` (default 20 for the LeNet, 10 for a ResNet) drawn exactly as pixeljax's
experiments draw them: ``pixeljax.select_images`` on the zoo model (``models.load``) over the
1,017 exact images, seed ``--seed`` (0). A ``select`` worker does the draw
and also checks that the PyTorch rebuild (``benchmarks/torch_nets.py``) classifies every drawn
image correctly too (it records any disagreement over the 1,017 images).

Stopping rules (``--rules``, both by default), the same for every tool that can express it:
  * ``paper``: stop once a candidate's true-class probability is < 5% (Su et al.);
  * ``first_success``: stop at the first misclassified candidate (torchattacks' rule).
Success = the candidate each tool finally returns is misclassified (top-1 != label).

Tools (``--tools``):
  * ``pixeljax``: ``pixeljax.attack(models.load(model), images, labels, PRNGKey(seed),
    PixelAttackConfig(method="de", strategy="rand1", popsize, generations, stop=rule))``,
    every image in ONE call, image ids = indices into the 1,017 images (as the experiments):
    the library call, whose engine picks its fastest exact evaluation (``Execution``:
    incremental, windows, call size, calls dealt to the CPU devices), recorded in the worker's
    settings (``execution``); ``--pixeljax_full_net`` insists on the whole net per candidate
    (``execution=dict(incremental=False)``). Importing pixeljax splits the CPU into one JAX
    device per core, as its experiments do (``--pixeljax_cpu_devices`` N: N devices; 1: one),
    and the attack runs on the mesh it uses by default (``sharding.default_mesh``). Run twice:
    the timed call, then an untimed call whose model is
    ``evaluator_for(model, 1, "de", mesh, execution, count_rows=f)``, the evaluator's public
    counting hook: ``f`` gets the rows of every model call the compiled program executes
    (padding rows and rows that finished but ride along in a vmapped loop included; the final
    full-net check of the reported images excluded; a model call run by every device of a
    dealing mesh -- one no larger than the call size -- counts once per device); both calls
    must give identical records. "queries" are pixeljax's own count (candidates it scored,
    what its budget limits). Compile seconds: jax.monitoring's trace + lowering +
    backend-compile durations during the timed call (no persistent compilation cache).
    ``--pixeljax_warm_rerun`` adds a second identical timed call (compile = first - second).
  * ``torchattacks``: ``torchattacks.OnePixel(model, pixels=1, steps=generations,
    popsize=popsize, inf_batch=popsize)``, one image per call, as its API is used, on the
    PyTorch rebuild (input [0, 1] -> the net's [0, 255] by a x255 wrapper, not rounded: its
    colours are continuous). numpy's global RNG (which its DE uses: ``seed=None``) is seeded per
    image with ``SeedSequence([seed, image_id])``. Only ``first_success``: its stopping rule is
    hard-wired (``_attack_success``: stop when the population's BEST member is misclassified),
    so p_true < 5% is not expressible without rewriting the attack; it is reported only under
    its native rule. What its source says (torchattacks 3.5.1, ``attacks/onepixel.py`` and its
    ``_differential_evolution.py``, Hyperparticle's batched copy of SciPy's old DE):
      - ``popsize`` is the TOTAL population: ``popmul = int(popsize / 5)`` and the solver builds
        ``popmul * 5`` members, so popsize=400 gives 400 (a popsize not divisible by 5 is
        rounded down; this driver requires multiples of 5 so every tool gets the same size);
      - best1bin, dithered F ~ U(0.5, 1) per generation, recombination 1, ``init="random"``
        (uniform), deferred (per-generation) updating, ``atol=-1`` (never converges),
        ``polish=False``; x, y in [0, 32) truncated, colours in [0, 1] continuous;
      - the stop check runs only AFTER each generation (never after the initial population),
        and re-evaluates the best member in a separate 1-image forward: 1 extra query per
        generation. Queries = popsize + generations_run * (popsize + 1), at most 40,500 for
        400 x 100 (pixeljax and SciPy: at most popsize * (generations + 1) = 40,400);
      - it does early-stop per image (each image gets its own DE run and callback).
  * ``scipy``: ``scipy.optimize.differential_evolution`` per image, called as Hyperparticle's
    Keras reimplementation calls it (one-pixel-attack-keras ``attack.py``): bounds
    (0, 32), (0, 32), (0, 256) x 3, ``popsize = max(1, popsize // 5)`` (SciPy multiplies by the
    5 dimensions: popsize 400 -> 400 members), ``maxiter = generations``, ``recombination=1``,
    ``atol=-1``, ``polish=False``, default best1bin / dithered F / Latin-hypercube init, and
    their batched evaluation (their modified SciPy scores a whole generation per call): here
    ``vectorized=True, updating="deferred"``. Candidates are truncated to integers as theirs
    (``astype(int)``). ``rng = default_rng([seed, image_id])``. The rule is checked on EVERY
    scored candidate (same rule as pixeljax), and the callback ends the run after that
    generation; because SciPy calls the callback only after a generation, a rule met by the
    initial population makes the objective skip the model for the next generation's batch
    (returning +inf, no queries), so the run stops after popsize queries as pixeljax does. The
    returned candidate is the lowest-p_true one (= SciPy's best member), or under
    ``first_success`` the lowest-p_true fooling one of the batch that first fooled (as pixeljax).

Counting: for the PyTorch tools every forward of the net goes through a counting wrapper
(images forwarded, calls, the first query whose output is misclassified); checks of the final
adversarial images are made outside it. Seconds per image: wall time of the attack only (model
and data loading excluded; pixeljax: one batched call / n, compile included, also reported
without it). Evals/s = counted queries / attack seconds. Bare forward throughput, each in its own
process, batch = popsize: ``jax.jit(classifier.predict)`` and the torch net under
``torch.inference_mode()`` on a channels_last tensor; best and median of timed repeats. The
same images also as pixeljax's attacks on windows run their model calls (calls of 50 dealt to
the CPU devices: ``Evaluator.images`` of ``evaluator_for(model, 1, "de", mesh,
execution=dict(call_size=50, devices=D, incremental=False, window=False))``) and as torch in
calls of 50, so each framework's best way of running the net is on record.

Threads: each framework's default (``--torch_threads`` sets torch's intra-op threads), or one
thread for both with ``--single_thread`` (torch.set_num_threads(1); XLA:CPU without its Eigen
pool; OMP/MKL/OpenBLAS 1). Recorded per worker, with the load average before and after. On a
machine whose cores are busy with other work, torch's default OpenMP pool collapses: on 2 shared
cores (load ~2.5) the LeNet forward ran 435 evals/s at batch 40 and 3,031 at batch 400 with its
default 2 threads vs 16,182 and 12,638 with 1 thread, while jit(predict) ran ~7-8k either way;
use ``--single_thread`` unless the machine is idle, and say which was used.

Hidden flags for smoke tests: ``--popsize``, ``--generations``, ``--forward_seconds``.
"""
