"""Your model, your answer: a width-transfer study on any PyTorch model, from one Python file.

A *model file* defines (nothing else is read from it)::

    def build(width: int) -> torch.nn.Module     # the same family at every width
    def batches(seed: int) -> Iterator           # training batches; the same sequence for a given seed
    def val_batches() -> list                    # fixed held-out batches
    def loss(model, batch) -> torch.Tensor       # optional; default: model(**batch).loss for a dict batch
                                                 # (the Hugging Face convention), else model(batch)

``wdscale sweep --model FILE.py`` and ``wdscale study --model FILE.py`` then run on it as on the built-in models:
the run id holds the file's sha256 (an edited file retrains; the same file and config never does), the model is
named after the file, and every reader (report, the pages, ``tour --store``, ``inspect``) works on the records.

mu-P is done for the user, in one place (``Member``):

* classes from shapes against ``build(base_width)`` (``rules.classify_model``, microsoft/mup's ``set_base_shapes``
  idea), with ``overrides`` (``NAME=CLASS``) first;
* init: each class re-drawn as ``rules.Resolved`` says (``init="mup"``), or the model's own
  (``init="keep"``: ``torch.manual_seed(seed); build(width)``);
* the readout's 1/m forward multiplier: a forward hook on the module that produces the logits (under a tied
  embedding, the readout's use of the weight, never the lookup);
* ``torch.optim.AdamW(param_groups(...), betas=(0.9, 0.95))``: per class lr and weight_decay; torch multiplies
  weight_decay by lr, so the per-step decay is lr*wd and tau = 1/(lr*wd) steps.

Members train one of two ways, whichever is *measured* faster on the machine at hand (``choose_path``, cached):
``loop`` (each member its own module and torch AdamW, stepped in turn on the same batch: literally the plain
loop) or ``batched`` (torch.func: ``stack_module_state`` + ``vmap`` over the members, per-member AdamW on the stacked
tensors).  Tied weights stay tied in both (``named_parameters`` holds a tie once; the reparametrization re-ties
it).  A model vmap cannot batch (an op without a batching rule, random ops such as dropout, in-place buffer updates
such as BatchNorm's running stats) falls back to ``loop`` with a one-line notice.  tests/test_own.py checks that
member i equals the plain loop in both paths.

The rooms, each importing only those above it in this list (no cycles):

* ``modelfile``: the file's identity (sha256, name, ``--override``; no import of the file) and reading it;
* ``mup``: mu-P on the user's modules (classes, readout hook, init), ``Member``, the class table, preflight;
* ``members``: the two member paths and the measured choice between them;
* ``train``: the member training loop, with its checkpoints;
* ``coord``: the coordinate check on the user's own modules.

This package re-exports their public names: ``from wdscale.models.own import load`` and friends.
"""
from __future__ import annotations

from .modelfile import (CLASSES, INITS, ModelFile, add_own_args, batches_of, build_model, check, file_digest, load,
                        model_file_paths, model_name, parse_overrides)
from .mup import (Member, attach_readout_hook, check_loss, class_rows, classes, fan_in_of, format_class_rows,
                      preflight, print_classes, readout_modules, reinit, shape_reference)
from .members import BATCHED_MIN_SPEEDUP, PATHS, PROBE_STEPS, choose_path, measure_paths
from .train import train_members
from .coord import coord_check, coord_slopes

__all__ = [
    "CLASSES", "INITS", "ModelFile", "add_own_args", "batches_of", "build_model", "check", "file_digest", "load",
    "model_file_paths", "model_name", "parse_overrides",
    "Member", "attach_readout_hook", "check_loss", "class_rows", "classes", "fan_in_of", "format_class_rows",
    "preflight", "print_classes", "readout_modules", "reinit", "shape_reference",
    "BATCHED_MIN_SPEEDUP", "PATHS", "PROBE_STEPS", "choose_path", "measure_paths",
    "train_members",
    "coord_check", "coord_slopes",
]
