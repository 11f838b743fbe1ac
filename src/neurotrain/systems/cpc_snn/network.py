"""CPC encoder, spike bridge and spiking classifier, as pure JAX functions over parameter pytrees.

Each component is a small frozen dataclass holding its hyper-parameters, with ``init(key)`` ->
parameters (a dict of arrays) and ``apply(params, x)``; nothing holds state, so the training
steps are plain jitted functions of (parameters, optimizer state, batch, key).

- :class:`CPCEncoder` (van den Oord et al. 2018): strided 1-D convolutions with GELU (``norm=
  "layer"`` adds a layer norm over each frame's channels, which divides out the amplitude a
  chirp adds) from strain [B, N] to latent frames z [B, T, latent_dim]; a GRU context c_t over
  z_<=t; linear predictors W_k c_t of z_{t+k} for ``prediction_steps`` offsets k, starting at
  the first frame that shares no input sample with frame t (in white noise nothing else is
  predictable: only a signal is), scored by InfoNCE against the other sequences' frames at t+k
  and the same sequence's other frames.
- :class:`SpikeBridge`: per-feature affine map of the layer-normalised (``norm="layer"``) or raw
  (``"none"``) encoder features, then ON/OFF threshold spikes ``H(u - threshold)``,
  ``H(-u - threshold)`` per frame, [B, T, 2 D]; with ``levels`` > 1, one ON/OFF pair per
  threshold ``threshold + i * level_spacing``, a thermometer code of each feature's size,
  [B, T, 2 levels D].
  The features are the GRU context c_t (``features="context"``, the default, D = context_dim),
  the representation van den Oord et al. hand to downstream tasks when context helps, or the
  latent frames z_t (``"latent"``, D = latent_dim). A chirp spans tens of frames and the
  context accumulates it: TPR ratio 0.77 against 0.70 from z_t, in one comparison.
- :class:`SNNClassifier`: leaky integrate-and-fire layers (``hidden_sizes``), membrane
  ``v <- beta v + I_t + b``, spike ``H(v - 1)``, reset by subtraction of the (not
  differentiated) spike; a leaky non-spiking readout whose membrane's maximum (or mean) over
  time gives the class logits. Synapses may carry delays (``delay_taps``, ``delay_dilations``):
  layer l's input current is ``I_t = sum_j W_j s_in[t - j d_l]``, j < taps, a causal dilated
  convolution over the incoming spike frames (Hammouamri et al. 2023 learn such delays; here
  they are fixed and the weight of every delay is learned). One tap is the plain per-frame
  synapse. A chirp lasts 0.1-0.75 s, many frames; delays let the network integrate it.

Spikes are Heaviside in the forward pass and use the fast-sigmoid surrogate derivative
``1 / (1 + slope |v - threshold|)^2`` in the backward pass (Zenke & Ganguli 2018).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial

import jax
import numpy as np
import jax.numpy as jnp

from neurotrain.systems.cpc_snn.data import n_frames, receptive_field  # noqa: F401  (jax-free geometry)


def _dense_init(key, fan_in, fan_out, scale=1.0):
    return {"w": jax.random.normal(key, (fan_in, fan_out)) * (scale / jnp.sqrt(fan_in)), "b": jnp.zeros(fan_out)}


def _layer_norm(x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(x.var(-1, keepdims=True) + eps)


# --------------------------------------------------------------------------- surrogate spike
@partial(jax.custom_vjp, nondiff_argnums=(1,))
def spike(v, slope):
    """Heaviside(v) forward; fast-sigmoid surrogate gradient backward."""
    return (v > 0).astype(v.dtype)


def _spike_fwd(v, slope):
    return spike(v, slope), v


def _spike_bwd(slope, v, g):
    return (g / (1.0 + slope * jnp.abs(v)) ** 2,)


spike.defvjp(_spike_fwd, _spike_bwd)


def lif_step(v, current, beta: float, slope: float):
    """One leaky integrate-and-fire update: (membrane after reset, spike). Threshold 1, reset
    by subtraction of the spike, which is not differentiated (only the surrogate of the spike
    itself carries gradient)."""
    v = beta * v + current
    s = spike(v - 1.0, slope)
    return v - jax.lax.stop_gradient(s), s


# --------------------------------------------------------------------------- CPC encoder
@dataclass(frozen=True)
class CPCEncoder:
    latent_dim: int = 128
    channels: tuple = (32, 64, 64)
    kernels: tuple = (16, 8, 8, 4)
    strides: tuple = (4, 2, 2, 2)
    context_dim: int = 128
    prediction_steps: int = 4
    norm: str = "none"  # "layer": layer-normalise each frame's channels between convolutions

    def __post_init__(self):
        if len(self.kernels) != len(self.strides) or len(self.channels) != len(self.kernels) - 1:
            raise ValueError(f"encoder: {len(self.kernels)} kernels, {len(self.strides)} strides and {len(self.channels)} "
                             f"channels; it needs one kernel and stride per layer and one channel count per hidden layer")

    def init(self, key, x=None) -> dict:
        keys = jax.random.split(key, len(self.kernels) + 2 + self.prediction_steps)
        chans = (1,) + tuple(self.channels) + (self.latent_dim,)
        conv = []
        for i, k in enumerate(self.kernels):
            fan_in = chans[i] * k
            conv.append({"w": jax.random.normal(keys[i], (k, chans[i], chans[i + 1])) * jnp.sqrt(2.0 / fan_in),
                         "b": jnp.zeros(chans[i + 1])})
        D, H = self.latent_dim, self.context_dim
        kg = keys[len(self.kernels)]
        gru = {"wx": jax.random.normal(kg, (D, 3 * H)) / jnp.sqrt(D),
               "wh": jax.random.normal(jax.random.fold_in(kg, 1), (H, 3 * H)) / jnp.sqrt(H),
               "b": jnp.zeros(3 * H)}
        pred = jnp.stack([jax.random.normal(keys[len(self.kernels) + 2 + i], (H, D)) / jnp.sqrt(H)
                          for i in range(self.prediction_steps)])
        return {"conv": conv, "gru": gru, "predict": pred}

    def apply(self, params, x):
        """Latent frames z [B, T, latent_dim] of strain x [B, N]."""
        h = x[:, :, None]
        n = len(self.kernels)
        for i, (layer, s) in enumerate(zip(params["conv"], self.strides)):
            h = jax.lax.conv_general_dilated(h, layer["w"], (s,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
            h = h + layer["b"]
            if i < n - 1:
                h = jax.nn.gelu(_layer_norm(h) if self.norm == "layer" else h)
        return h

    def context(self, params, z):
        """GRU context c [B, T, context_dim] over z [B, T, D] (c_t sees z_<=t only)."""
        g = params["gru"]
        H = self.context_dim
        xs = jnp.einsum("btd,dh->tbh", z, g["wx"]) + g["b"]

        def step(h, xt):
            hh = h @ g["wh"]
            r = jax.nn.sigmoid(xt[:, :H] + hh[:, :H])
            u = jax.nn.sigmoid(xt[:, H:2 * H] + hh[:, H:2 * H])
            n = jnp.tanh(xt[:, 2 * H:] + r * hh[:, 2 * H:])
            h = (1 - u) * n + u * h
            return h, h

        _, cs = jax.lax.scan(step, jnp.zeros((z.shape[0], H), z.dtype), xs)
        return jnp.swapaxes(cs, 0, 1)

    def feature_dim(self, features: str) -> int:
        """Size of what the spike bridge encodes: the context c_t or the latents z_t."""
        return self.context_dim if features == "context" else self.latent_dim

    @property
    def first_prediction(self) -> int:
        """Smallest frame offset whose receptive field shares no sample with frame t's: nearer
        frames would be predictable from the shared samples alone, even in pure noise."""
        rf, stride = receptive_field(self.kernels, self.strides)
        return -(-rf // stride)

    def cpc_loss(self, params, z, c=None):
        """InfoNCE over ``prediction_steps`` future frames (offsets ``first_prediction`` + 0, 1,
        ...); returns (loss, accuracy). ``c``: the context of ``z`` if already computed."""
        c = self.context(params, z) if c is None else c
        B, T, _ = z.shape
        losses, accs = [], []
        k0 = self.first_prediction
        for k in range(k0, k0 + self.prediction_steps):
            p = jnp.einsum("bth,hd->btd", c[:, :T - k], params["predict"][k - k0])  # [B, T-k, D]
            tgt = z[:, k:]                                                          # [B, T-k, D]
            across = jnp.einsum("btd,ctd->btc", p, tgt)                             # other sequences, same time
            within = jnp.einsum("btd,bsd->bts", p, z)                               # same sequence, other times
            t_idx = jnp.arange(T - k)
            dup = jnp.arange(T)[None, :] == (t_idx + k)[:, None]                    # the positive, already in `across`
            within = jnp.where(dup[None], -jnp.inf, within)
            logits = jnp.concatenate([across, within], axis=-1)
            logp = jax.nn.log_softmax(logits, axis=-1)
            label = jnp.arange(B)[:, None]
            pos = jnp.take_along_axis(logp, jnp.broadcast_to(label[:, :, None], (B, T - k, 1)), -1)[..., 0]
            losses.append(-pos.mean())
            accs.append((jnp.argmax(logits, -1) == label).mean())
        return jnp.mean(jnp.stack(losses)), jnp.mean(jnp.stack(accs))


# --------------------------------------------------------------------------- spike bridge
@dataclass(frozen=True)
class SpikeBridge:
    threshold: float = 0.1
    surrogate_slope: float = 10.0
    latent_dim: int = 128  # size of the features it encodes (latent_dim or context_dim)
    features: str = "context"  # "context": the GRU context c_t; "latent": the latent frames z_t
    levels: int = 1  # thresholds per polarity: threshold + i * level_spacing, i < levels
    level_spacing: float = 0.5
    norm: str = "layer"  # "layer": layer-normalise each frame's features first; "none": the features as they are

    @property
    def out_dim(self) -> int:
        return 2 * self.levels * self.latent_dim

    @property
    def thresholds(self) -> tuple:
        return tuple(self.threshold + i * self.level_spacing for i in range(self.levels))

    def init(self, key, x=None) -> dict:
        return {"gain": jnp.ones(self.latent_dim), "bias": jnp.zeros(self.latent_dim)}

    def apply(self, params, z):
        """ON/OFF spikes [B, T, 2 levels latent_dim] of features z [B, T, latent_dim]: for each
        threshold (level), the ON spikes of every feature, then its OFF spikes."""
        u = (_layer_norm(z) if self.norm == "layer" else z) * params["gain"] + params["bias"]
        out = []
        for th in self.thresholds:
            out += [spike(u - th, self.surrogate_slope), spike(-u - th, self.surrogate_slope)]
        return jnp.concatenate(out, axis=-1)


# --------------------------------------------------------------------------- SNN classifier
@dataclass(frozen=True)
class SNNClassifier:
    num_classes: int = 2
    hidden_sizes: tuple = (512, 256, 128)
    input_dim: int = 256
    beta: float = 0.9
    readout_beta: float = 0.9
    surrogate_slope: float = 10.0
    weight_scale: float = 1.0
    readout: str = "max"
    current_norm: bool = True
    delay_taps: int = 1
    delay_dilations: tuple = ()  # frames between taps, per layer; () = 1 everywhere

    def __post_init__(self):
        if self.delay_dilations and len(self.delay_dilations) != len(self.hidden_sizes):
            raise ValueError(f"snn.delay_dilations has {len(self.delay_dilations)} entries for {len(self.hidden_sizes)} "
                             f"hidden layers")

    def dilation(self, layer: int) -> int:
        return int(self.delay_dilations[layer]) if self.delay_dilations else 1

    @property
    def delay_span(self) -> int:
        """Frames back that the last LIF layer's current can reach (1 = the current frame)."""
        return 1 + sum((self.delay_taps - 1) * self.dilation(i) for i in range(len(self.hidden_sizes)))

    def init(self, key, x=None) -> dict:
        sizes = (self.input_dim,) + tuple(self.hidden_sizes)
        keys = jax.random.split(key, len(sizes))
        k = self.delay_taps
        layers = []
        for i in range(len(sizes) - 1):  # with one tap, the same draws as a [in, out] dense layer
            layers.append({"w": jax.random.normal(keys[i], (k, sizes[i], sizes[i + 1])) * (self.weight_scale / jnp.sqrt(k * sizes[i])),
                           "b": jnp.zeros(sizes[i + 1])})
        if self.current_norm:
            for layer in layers:
                layer["g"] = jnp.full(layer["b"].shape, self.weight_scale)
        return {"layers": layers, "readout": _dense_init(keys[-1], sizes[-1], self.num_classes)}

    def run(self, params, spikes):
        """(logits [B, classes], spike trains per hidden layer [[B, T, n_l]]) of input spikes [B, T, in]."""
        x = jnp.swapaxes(spikes, 0, 1)  # [T, B, in]
        T = x.shape[0]
        trains = []
        for i, layer in enumerate(params["layers"]):
            d, k = self.dilation(i), self.delay_taps
            xp = jnp.concatenate([jnp.zeros(((k - 1) * d,) + x.shape[1:], x.dtype), x]) if k > 1 else x
            # tap j reads the input j * d frames back (zeros before the first frame)
            cur = sum(jnp.einsum("tbi,io->tbo", xp[(k - 1 - j) * d:(k - 1 - j) * d + T], layer["w"][j]) for j in range(k))
            if self.current_norm:
                cur = _layer_norm(cur) * layer["g"]
            cur = cur + layer["b"]

            step = partial(lif_step, beta=self.beta, slope=self.surrogate_slope)
            _, x = jax.lax.scan(step, jnp.zeros(cur.shape[1:], cur.dtype), cur)
            trains.append(jnp.swapaxes(x, 0, 1))
        ro = params["readout"]
        cur = jnp.einsum("tbi,io->tbo", x, ro["w"]) + ro["b"]

        def leak(v, i_t):
            v = self.readout_beta * v + (1 - self.readout_beta) * i_t
            return v, v

        _, vs = jax.lax.scan(leak, jnp.zeros(cur.shape[1:], cur.dtype), cur)
        return (vs.max(0) if self.readout == "max" else vs.mean(0)), trains

    def apply(self, params, spikes):
        return self.run(params, spikes)[0]


# --------------------------------------------------------------------------- the whole detector
@dataclass(frozen=True)
class Detector:
    """The three components with the composite loss of phase 3."""

    encoder: CPCEncoder = field(default_factory=CPCEncoder)
    bridge: SpikeBridge = field(default_factory=SpikeBridge)
    snn: SNNClassifier = field(default_factory=SNNClassifier)

    @classmethod
    def from_config(cls, m: dict) -> "Detector":
        e, c, b, s = m["encoder"], m["cpc"], m["spike_bridge"], m["snn"]
        enc = CPCEncoder(latent_dim=e["latent_dim"], channels=tuple(e["channels"]), kernels=tuple(e["kernels"]),
                         strides=tuple(e["strides"]), context_dim=c["context_dim"],
                         prediction_steps=c["prediction_steps"], norm=e["norm"])
        bridge = SpikeBridge(threshold=b["threshold"], surrogate_slope=s["surrogate_slope"],
                             latent_dim=enc.feature_dim(b["features"]), features=b["features"], levels=b["levels"],
                             level_spacing=b["level_spacing"], norm=b["norm"])
        snn = SNNClassifier(num_classes=s["num_classes"], hidden_sizes=tuple(s["hidden_sizes"]),
                            input_dim=bridge.out_dim, beta=s["beta"], readout_beta=s["readout_beta"],
                            surrogate_slope=s["surrogate_slope"], weight_scale=s["weight_scale"], readout=s["readout"],
                            current_norm=s["current_norm"], delay_taps=s["delay_taps"],
                            delay_dilations=tuple(s["delay_dilations"]))
        return cls(enc, bridge, snn)

    def init(self, key) -> dict:
        k1, k2, k3 = jax.random.split(key, 3)
        return {"encoder": self.encoder.init(k1), "bridge": self.bridge.init(k2), "snn": self.snn.init(k3)}

    def features(self, params, z):
        """What the bridge encodes: the latents z or their GRU context."""
        return self.encoder.context(params["encoder"], z) if self.bridge.features == "context" else z

    def forward(self, params, x):
        """(logits, latents z, spike trains of the bridge and every SNN layer)."""
        z = self.encoder.apply(params["encoder"], x)
        s = self.bridge.apply(params["bridge"], self.features(params, z))
        logits, trains = self.snn.run(params["snn"], s)
        return logits, z, [s] + trains

    def losses(self, params, x, y, cpc_weight: float, classification_weight: float,
               activity_weight: float = 0.0, min_rate: float = 0.0):
        """Composite loss ``cpc_weight * CPC + classification_weight * CE + activity_weight *
        sum_l max(0, min_rate - r_l)^2`` and its parts. ``y`` [B] is the class (integers) or, as
        floats in [0, 1], P(chirp) (soft labels: CE = -(y ln p_chirp + (1 - y) ln p_noise), and
        the accuracy counts y > 1/2 as a chirp). ``r_l`` is hidden LIF layer l's mean
        spikes per unit and frame over the batch (the activity regulariser keeps a layer from
        falling silent for good; its gradient reaches the weights through the surrogate). A zero
        weight skips that part's computation."""
        z = self.encoder.apply(params["encoder"], x)
        c = self.encoder.context(params["encoder"], z) if cpc_weight or self.bridge.features == "context" else None
        out = {}
        total = 0.0
        if cpc_weight:
            cpc, acc = self.encoder.cpc_loss(params["encoder"], z, c)
            out.update(cpc_loss=cpc, cpc_accuracy=acc)
            total = total + cpc_weight * cpc
        if classification_weight:
            f = c if self.bridge.features == "context" else z
            logits, trains = self.snn.run(params["snn"], self.bridge.apply(params["bridge"], f))
            logp = jax.nn.log_softmax(logits)
            if jnp.issubdtype(y.dtype, jnp.floating):  # P(chirp) targets: cross-entropy against soft labels
                ce = -(y * logp[:, 1] + (1.0 - y) * logp[:, 0]).mean()
                y = (y > 0.5).astype(jnp.int32)
            else:
                ce = -jnp.take_along_axis(logp, y[:, None], -1).mean()
            out.update(classification_loss=ce, accuracy=(jnp.argmax(logits, -1) == y).mean())
            total = total + classification_weight * ce
            if activity_weight:
                rates = jnp.stack([s.mean() for s in trains])
                act = jnp.sum(jnp.maximum(0.0, min_rate - rates) ** 2)
                out.update(activity_loss=act)
                total = total + activity_weight * act
        out["loss"] = total
        return total, out

    def score(self, params, x):
        """Detection statistic: logit(chirp) - logit(noise)."""
        logits = self.forward(params, x)[0]
        return logits[:, 1] - logits[:, 0]

    @cached_property
    def _jitted_logits(self):
        """The class logits of :meth:`forward`, jitted once per detector (not once per call)."""
        return jax.jit(lambda params, x: self.forward(params, x)[0])

    def logits(self, params, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Class logits [n, num_classes] float32 of segments ``x`` [n, samples] (whitened
        strain), jitted, in batches of ``batch`` segments (0 segments give an empty array)."""
        if not len(x):
            return np.zeros((0, self.snn.num_classes), np.float32)
        return np.concatenate([np.asarray(self._jitted_logits(params, jnp.asarray(x[i:i + batch])))
                               for i in range(0, len(x), batch)]).astype(np.float32)

    def scores(self, params, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """The detection statistic [n] float32 of :meth:`score` (logit(chirp) - logit(noise)) for
        segments ``x`` [n, samples], from :meth:`logits`: the validation noise, the test segments
        and the scanned windows are scored by one computation."""
        lg = self.logits(params, x, batch)
        return lg[:, 1] - lg[:, 0]


# --------------------------------------------------------------------------- export
EXPORT_PARAMS, EXPORT_CONFIG = "detector.npz", "detector.json"


def readable(keystr: str) -> str:
    """A parameter's path as ``encoder/conv/0/w`` (from jax's ``"['encoder']['conv'][0]['w']"``)."""
    import re

    return "/".join(re.findall(r"\['?([^'\]]+)'?\]", keystr))


def save_detector(folder, model_config: dict, params, data_attrs: dict) -> None:
    """Write the trained detector to ``folder``: ``detector.npz`` (one array per parameter, under
    its path, e.g. ``encoder/conv/0/w`` [kernel, in, out], ``snn/readout/w`` [hidden, 2]) and
    ``detector.json`` (``model``: the ``cpc_snn.model`` config that builds the network; ``data``:
    what its input must be: ``sample_rate`` Hz, ``segment_samples``, ``f_low``/``f_high`` Hz of
    the whitening band). Read it back with :func:`load_detector`."""
    import json
    from pathlib import Path

    from neurotrain.io import atomic_path
    from neurotrain.training.jax_loop import flatten

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / EXPORT_PARAMS) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{readable(k): v for k, v in flatten(params).items()})
    with atomic_path(folder / EXPORT_CONFIG) as tmp:
        tmp.write_text(json.dumps({"model": model_config, "data": data_attrs}, indent=2) + "\n")


def load_detector(folder):
    """``(detector, params, config)`` from a folder :func:`save_detector` wrote, e.g.
    ``results/cpc_snn/<run>/seed<k>/export``. ``detector.forward(params, x)`` takes whitened strain segments
    ``x`` [n, config["data"]["segment_samples"]] at ``config["data"]["sample_rate"]`` Hz and returns
    (logits [n, 2], CPC latents, spike trains); ``logits[:, 1] - logits[:, 0]`` is the detection
    statistic. Raises NeurotrainError naming the folder when a file or parameter is missing."""
    import json
    from pathlib import Path

    from neurotrain.errors import NeurotrainError
    from neurotrain.training.jax_loop import flatten, unflatten

    folder = Path(folder)
    for name in (EXPORT_PARAMS, EXPORT_CONFIG):
        if not (folder / name).is_file():
            raise NeurotrainError(folder / name, "not found (run the extract stage)")
    config = json.loads((folder / EXPORT_CONFIG).read_text())
    det = Detector.from_config(config["model"])
    like = det.init(jax.random.PRNGKey(0))
    with np.load(folder / EXPORT_PARAMS, allow_pickle=False) as z:
        arrays = {k: z[readable(k)] for k in flatten(like) if readable(k) in z.files}
    return det, unflatten(like, arrays, str(folder / EXPORT_PARAMS)), config
