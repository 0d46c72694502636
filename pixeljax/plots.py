"""Figures as matplotlib ``Figure`` objects (Agg backend): nothing here computes a metric or
writes a file. Experiments save them with ``Workdir.save_figure`` (atomic PNG)."""
import textwrap
from typing import Dict, Optional, Sequence

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _done(fig):
  fig.tight_layout()
  return fig


def _finish_line_plot(fig, ax, title: str, legend_below: bool = False):
  ax.grid(alpha=0.3)
  if legend_below:   # long labels (a method's settings) would hide the curves inside
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
  else:
    ax.legend(fontsize=8)
  ax.set_title("\n".join(textwrap.wrap(title, 64)), fontsize=10)   # long settings wrap
  return _done(fig)


def adversarial_grid(images, records, class_names: Sequence[str],
                     max_images: int = 20, cols: int = 5, title: Optional[str] = None):
  """Successful adversarial images with "true -> adversarial (confidence)", each perturbed
  pixel circled."""
  plt = _plt()
  ok = np.nonzero(records.success)[0][:max_images]
  if len(ok) == 0:
    ok = np.arange(min(max_images, len(records.success)))
  rows = int(np.ceil(len(ok) / cols)) or 1
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, i in zip(axes.ravel(), ok):
    img = np.array(images[i], np.float32)
    for x, y, *col in records.pixels[i]:
      img[int(y), int(x)] = col
    img = img.astype(np.uint8)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray",
              interpolation="nearest")
    for x, y, *_ in records.pixels[i]:
      ax.add_patch(plt.Circle((x, y), 1.6, fill=False, color="red", lw=1.2))
    t, a = records.true_class[i], records.adversarial_class[i]
    ax.set_title(f"{class_names[t]} → {class_names[a]}\n{records.probs[i, a]:.1%}",
                 fontsize=8, color="black" if records.success[i] else "gray")
  if title:
    fig.suptitle(title, fontsize=10)
  return _done(fig)


def class_pair_heatmap(pairs: np.ndarray, class_names: Sequence[str],
                       title: str = "original → adversarial class (successful attacks)"):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 5.5))
  im = ax.imshow(pairs, cmap="viridis")
  k = len(class_names)
  ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
  ax.set_yticks(range(k), class_names, fontsize=8)
  ax.set_xlabel("adversarial class")
  ax.set_ylabel("original class")
  for i in range(k):
    for j in range(k):
      if pairs[i, j]:
        ax.text(j, i, int(pairs[i, j]), ha="center", va="center", fontsize=7, color="w")
  fig.colorbar(im, ax=ax)
  ax.set_title(title, fontsize=10)
  return _done(fig)


def success_vs_pixels(results: Dict[str, Dict[int, float]],
                      reference: Optional[Dict[str, Dict[int, float]]] = None,
                      title: str = "success rate vs number of pixels"):
  """``results``: {label: {pixels: success_rate}}; ``reference`` drawn dashed."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.8))
  for label, curve in results.items():
    ks = sorted(curve)
    ax.plot(ks, [100 * curve[k] for k in ks], "o-", label=label)
  for label, curve in (reference or {}).items():
    ks = sorted(curve)
    ax.plot(ks, [100 * curve[k] for k in ks], "x--", label=label, alpha=0.7)
  ax.set_xlabel("pixels changed")
  ax.set_ylabel("success rate (%)")
  ax.set_ylim(0, 100)
  return _finish_line_plot(fig, ax, title)


def success_vs_queries(curves: Dict[str, tuple], title: str = "success vs queries"):
  """``curves``: {label: (budgets, success fractions)}, one line each, log-scaled queries."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 3.8 + 0.2 * len(curves)))
  styles = ["-", "--", "-.", ":"]
  for i, (label, (budgets, success)) in enumerate(curves.items()):
    ax.plot(budgets, 100 * np.asarray(success), styles[i // 10 % len(styles)], label=label)
  ax.set_xscale("log")
  ax.set_xlabel("queries (candidates scored) per attack")
  ax.set_ylabel("attacks fooled within (%)")
  ax.set_ylim(0, 100)
  return _finish_line_plot(fig, ax, title, legend_below=True)


def gallery(images, class_names: Sequence[str], confidences,
            title: Optional[str] = None, cols: int = 5):
  """One image per class labelled with class and confidence (fooling images)."""
  plt = _plt()
  n = len(images)
  rows = int(np.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.7 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for i, ax in enumerate(axes.ravel()[:n]):
    img = np.clip(np.asarray(images[i]), 0, 255).astype(np.uint8)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_title(f"{class_names[i]}\n{confidences[i]:.4%}", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  return _done(fig)


def curves(x, series: Dict[str, Sequence[float]], xlabel: str, ylabel: str,
           title: str = "", logy: bool = False):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for label, ys in series.items():
    ax.plot(x, ys, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  return _finish_line_plot(fig, ax, title)
