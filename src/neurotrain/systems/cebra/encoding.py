"""How a CEBRA training step computes its embeddings (``cebra.training.batch_encoding``).

CEBRA's solvers pass every sampled window through the encoder on its own: a step of 3 sessions
x 512 samples encodes 3 x 3 x 512 windows of ``len(offset)`` bins (reference, positive and
negative), and the convolutions of overlapping windows are computed again for each. The
encoders are convolutional without padding, so the embedding of the window around time t is
the encoder's output at position ``t - offset.left`` of the whole session run through it at
once (a convolution is the same at every position). ``"session"`` encoding runs each session's
training sequence through its encoder once per step and reads the sampled time points from it:
the same embeddings (bit for bit in the forward pass; the gradients sum the same terms in
another order) at a cost set by the session's length rather than by the number of windows.
It pays off when the samples cover most of the session: with the default 3 x 512 windows per
session and the ``offset10-model``, a session of 3000 bins is encoded 3.5x faster, one of 6000
bins 1.9x, one of 10 000 bins as fast, one of 12 000 bins 1.2x slower (measurements on 2 CPU
threads, :data:`AUTO_BINS_PER_WINDOW`).

- ``windows``: CEBRA's own solver step.
- ``session``: as above; refused (config key named) for an encoder whose sequence output does
  not reproduce its window outputs (a batch-statistics layer, a stride, padding).
- ``auto``: ``session`` when every session has at most :data:`AUTO_BINS_PER_WINDOW` training
  bins per window of a step and the encoders pass the check, else ``windows``.

Loader, sampling, criterion and optimizer stay CEBRA's: the loader draws the same time indices;
the datasets hand them over instead of gathering windows (:func:`use_session_encoding`).
"""

from __future__ import annotations

import copy
import logging

import torch

import cebra.data
import cebra.solver

from neurotrain.errors import NeurotrainError

log = logging.getLogger("neurotrain.train.cebra")

# One session's encoder forward and backward, 3 x 512 windows of the offset10-model with 256 units, 2
# threads (AMD EPYC): window by window 250-285 ms at any length; the whole session 74 ms at 3000
# bins, 148 at 6000, 188 at 8000, 255 at 10 000. Break-even near 6.5 bins per window.
AUTO_BINS_PER_WINDOW = 6


def _index_batch(index, session: int | None = None) -> cebra.data.Batch:
    """The time indices of a step (reference, positive, negative) in place of their windows."""
    pick = (lambda x: x) if session is None else (lambda x: x[session])
    return cebra.data.Batch(reference=pick(index.reference), positive=pick(index.positive),
                            negative=pick(index.negative), index=getattr(index, "index", None),
                            index_reversed=getattr(index, "index_reversed", None))


class _IndexCollection(cebra.data.DatasetCollection):
    """A ``DatasetCollection`` whose batches hold time indices, one ``Batch`` per session."""

    def load_batch(self, index):
        return [_index_batch(index, i) for i in range(self.num_sessions)]


class _IndexSession(cebra.data.TensorDataset):
    """A single-session ``TensorDataset`` whose batches hold time indices."""

    def load_batch(self, index):
        return _index_batch(index)


def _encode(model: torch.nn.Module, session, batch: cebra.data.Batch) -> tuple[torch.Tensor, ...]:
    """Embeddings [n, D] of the windows around the reference, positive and negative time indices
    of ``batch``, from one pass of ``model`` over the ``(dataset, sequence [1, C, T])`` of a session."""
    dataset, sequence = session
    out = model(sequence)[0].t()  # [T - len(offset) + 1, D]: row j is the window starting at bin j

    def rows(times):  # the first bin of each window as CEBRA's dataset cuts it (it clamps the index)
        return out.index_select(0, dataset.expand_index(times.to(out.device))[:, 0])  # deterministic backward

    return rows(batch.reference), rows(batch.positive), rows(batch.negative)


class SessionMultiSessionSolver(cebra.solver.MultiSessionSolver):
    """CEBRA's multi-session solver, each session encoded once per step (see the module)."""

    sessions: list  # per session (dataset, its sequence [1, C, T]), set by use_session_encoding

    def _inference(self, batches):
        refs, poss, negs = [], [], []
        for batch, model, session in zip(batches, self.model, self.sessions):
            ref, pos, neg = _encode(model, session, batch)
            refs.append(ref)
            poss.append(pos)
            negs.append(neg)
        ref, pos, neg = (torch.stack(x, dim=0) for x in (refs, poss, negs))
        pos = self._mix(pos, batches[0].index_reversed)  # as CEBRA: positives matched across sessions
        d = neg.shape[2]
        return cebra.data.Batch(reference=ref.view(-1, d), positive=pos.view(-1, d), negative=neg.view(-1, d))


class SessionSingleSessionSolver(cebra.solver.SingleSessionSolver):
    """CEBRA's single-session solver, the session encoded once per step (see the module)."""

    sessions: list

    def _inference(self, batch):
        return cebra.data.Batch(*_encode(self.model, self.sessions[0], batch))


def reproduces_windows(model: torch.nn.Module, n_features: int, length: int = 64) -> bool:
    """Whether ``model`` in training mode, run over a sequence, gives at every position its output
    for the window there (checked on a random sequence of ``length`` bins, on a copy: a batch
    norm's running statistics or a dropout's draws do not touch the model). Batch statistics,
    dropout, strides and padding all fail it."""
    offset = model.get_offset()
    width = len(offset)
    if length < width + 2:
        return False
    g = torch.Generator().manual_seed(0)
    x = torch.randn(length, n_features, generator=g)
    windows = torch.stack([x[i:i + width] for i in range(length - width + 1)]).transpose(1, 2)
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        one = probe(windows)
        try:
            seq = probe(x.t()[None])[0].t()
        except RuntimeError:
            return False
    return seq.shape == one.shape and bool(torch.allclose(seq, one, rtol=1e-4, atol=1e-5))


def use_session_encoding(mode: str, solver, collection, models, batch_size: int) -> bool:
    """Switch ``solver`` and ``collection`` (built by train.make_solver / make_datasets) to
    session encoding when ``mode`` (``cebra.training.batch_encoding``) asks for it; returns
    whether it did. Raises NeurotrainError naming the key when ``session`` is asked for an
    encoder that does not reproduce its windows."""
    if mode == "windows":
        return False
    single = collection.num_sessions == 1
    sessions = [collection.get_session(i) for i in range(collection.num_sessions)]
    windows = 3 * batch_size
    if mode == "auto" and any(len(s.neural) > AUTO_BINS_PER_WINDOW * windows for s in sessions):
        return False
    if not all(reproduces_windows(m, s.neural.shape[1]) for m, s in zip(models, sessions)):
        if mode == "session":
            raise NeurotrainError("config key cebra.training.batch_encoding",
                                  "'session' needs an encoder whose output over a whole sequence equals its output "
                                  "window by window (no batch statistics, stride or padding); use 'windows'")
        return False
    solver.__class__ = SessionSingleSessionSolver if single else SessionMultiSessionSolver
    solver.sessions = [(s, s.neural.t()[None].contiguous()) for s in sessions]  # (dataset, [1, C, T])
    if single:
        sessions[0].__class__ = _IndexSession
    else:
        collection.__class__ = _IndexCollection
    log.info("batch encoding: each session's %s training bins encoded once per step (%d windows per session)",
             "/".join(str(len(s.neural)) for s in sessions), windows)
    return True
