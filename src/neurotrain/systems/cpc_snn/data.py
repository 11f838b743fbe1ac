"""CPC+SNN data: detector strain with and without injected inspiral chirps, whitened and cut
into labelled segments.

Both sources are long strain streams processed the same way: whiten (divide by the noise
amplitude spectral density), band-pass ``[f_low, f_high]``, scale to unit noise variance, cut
into segments of ``segment_duration`` s. Half of the segments (``injection.signal_fraction``)
carry one injected chirp.

Embedded generator (``data/raw/cpc_snn/embedded/``): coloured Gaussian noise from the analytic
Advanced LIGO design curve (Ajith 2011, zero-detuned high power), synthesised in the frequency
domain in streams of ``segments_per_stream`` segments, with the injections already added in
strain. ``strain.npy`` [streams, samples] float64, ``psd.npz`` (f, psd: the curve on the
stream's frequency grid), ``truth.npz`` (per segment: label, snr, chirp_mass, tc, phase,
amplitude, split).

GWOSC (``data.source: gwosc``): strain files read with gwpy (:mod:`.gwosc`: GWOSC's HDF5
layout, or GWF frames), downloaded with their md5 or given as local paths. Only science-quality
stretches away from known events are used; each is decimated to ``sample_rate`` and whitened
with its own PSD (Welch, ``gwosc.psd_segment`` s), and the chirps are injected into the whitened
real noise (SNR against that PSD), so the segments have labels like the embedded ones. They are
split in contiguous time blocks with a gap of one segment (:func:`neurotrain.splits.block_split`).

Chirp family: the leading-order (Newtonian) inspiral of an equal-mass binary with chirp mass
M_c: GW frequency f(tau) = (1/pi) (5 / (256 tau))^(3/8) (G M_c / c^3)^(-5/8) at time tau before
coalescence, amplitude ~ f^(2/3), from ``f_start`` (a 3-cycle Tukey on-ramp) to the innermost
stable circular orbit of the total mass (a 1-cycle off-ramp). The optimal SNR is
rho^2 = 4 sum |h(f)|^2 / S(f) df over the band, i.e. the norm of the whitened signal in units of
the whitened noise SD; each injection is scaled to an SNR drawn uniformly from
``[snr_min, snr_max]``.

Processed HDF5 (``data/processed/cpc_snn.h5``):

===========  ================  ===========================================================
dataset      shape             content
===========  ================  ===========================================================
strain       [n, N] float32    whitened, band-passed segment (noise SD 1 per sample)
label        [n] int8          1 if a chirp is injected
snr          [n] float32       optimal SNR of the injection (0 for noise)
chirp_mass   [n] float32       solar masses (0 for noise)
tc           [n] float32       coalescence time from segment start, s (NaN for noise)
split        [n] int8          0 train, 1 validation, 2 test
asd_whiten   [N//2+1] float64  the ASD each segment was whitened with, on rfft(N)'s grid
gps_start    [n] float64       GPS time of each segment's first sample (NaN: embedded)
===========  ================  ===========================================================

Attributes: ``sample_rate``, ``f_low``, ``f_high``, ``f_start``, ``source``, ``source_sha256``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, check_arrays, read_hdf5, sha256_file
from neurotrain.splits import block_split, random_split
from neurotrain.systems.cpc_snn.waveforms import (aligo_psd, colored_noise, draw_injections, inject, isco_frequency,
                                                optimal_snr, place_chirp, time_to_coalescence, Whitener)

SPLITS = ("train", "val", "test")


def check_injection_config(cfg: dict, where: str = "config key cpc_snn.data") -> None:
    d = cfg["data"]
    inj, fs, T = d["injection"], d["sample_rate"], d["segment_duration"]
    if d["f_high"] >= fs / 2:
        raise NeurotrainError(f"{where}.f_high", f"{d['f_high']} Hz is not below the Nyquist frequency {fs / 2} Hz")
    if not d["f_low"] < d["injection"]["f_start"] < d["f_high"]:
        raise NeurotrainError(f"{where}.injection.f_start", "must lie between f_low and f_high")
    if inj["chirp_mass_min"] > inj["chirp_mass_max"] or inj["snr_min"] > inj["snr_max"] or inj["tc_min"] > inj["tc_max"]:
        raise NeurotrainError(f"{where}.injection", "each *_min must not exceed its *_max")
    longest = time_to_coalescence(inj["f_start"], inj["chirp_mass_min"])
    if longest > inj["tc_min"] * T:
        raise NeurotrainError(f"{where}.injection", f"the longest chirp (chirp mass {inj['chirp_mass_min']}, from "
                                                    f"{inj['f_start']} Hz) lasts {longest:.2f} s, longer than the "
                                                    f"earliest coalescence time {inj['tc_min'] * T:.2f} s")
    if isco_frequency(inj["chirp_mass_max"]) <= inj["f_start"]:
        raise NeurotrainError(f"{where}.injection.chirp_mass_max", "its ISCO frequency is below f_start")


def generate_embedded(cfg: dict, out_dir: str | Path) -> None:
    """Stage ``generate``: coloured aLIGO noise streams with injections, the PSD and the truth."""
    check_injection_config(cfg)
    d = cfg["data"]
    e = d["embedded"]
    fs, N = d["sample_rate"], int(round(d["segment_duration"] * d["sample_rate"]))
    per = e["segments_per_stream"]
    n_seg = e["n_segments"]
    n_streams = -(-n_seg // per)
    L = per * N
    rng = np.random.default_rng(e["seed"])
    f_stream = np.fft.rfftfreq(L, 1 / fs)
    psd = aligo_psd(f_stream)
    strain = colored_noise(np.sqrt(psd), L, fs, rng, n_streams)
    seg = strain.reshape(n_streams * per, N)[:n_seg]
    params = draw_injections(d["injection"], n_seg, fs, N, rng)
    seg_whitener = Whitener(np.sqrt(aligo_psd(np.fft.rfftfreq(N, 1 / fs))), N, fs, d["f_low"], d["f_high"])
    amp = inject(seg, params, seg_whitener, fs, d["injection"]["f_start"])
    strain.reshape(n_streams * per, N)[:n_seg] = seg
    split = random_split(n_seg, d["val_fraction"], d["test_fraction"], rng, "config key cpc_snn.data", "segments")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "strain.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, strain[:, :], allow_pickle=False)
    with atomic_path(out / "psd.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, f=f_stream, psd=psd, sample_rate=np.float64(fs))
    with atomic_path(out / "truth.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **params, amplitude=amp, split=split, n_segments=np.int64(n_seg))


# --------------------------------------------------------------------------- GWOSC
def _gwosc_segments(cfg: dict, paths: list[Path]):
    """(segments, ASDs, GPS starts) of every file, read and cut by :mod:`.gwosc`."""
    from neurotrain.systems.cpc_snn.gwosc import read_strain, segments

    d = cfg["data"]
    parts = [segments(read_strain(p, d["gwosc"]), d) for p in paths]
    seg, asd, gps = (np.concatenate([x[i] for x in parts]) for i in range(3))
    if not len(seg):
        raise NeurotrainError(paths[0], f"no usable stretch of strain is long enough for a segment of "
                                        f"{d['segment_duration']} s after dropping {d['gwosc']['edge']} s at each "
                                        f"edge and a PSD estimate over {d['gwosc']['psd_segment']} s")
    return seg, asd, gps


# --------------------------------------------------------------------------- preprocess
def preprocess_raw(cfg: dict, raw: list[str] | str, out: str | Path) -> None:
    """Stage ``preprocess``: whiten, band-pass and cut the strain into labelled segments."""
    d = cfg["data"]
    check_injection_config(cfg)
    fs, N = d["sample_rate"], int(round(d["segment_duration"] * d["sample_rate"]))
    raws = [Path(r) for r in ([raw] if isinstance(raw, (str, Path)) else raw)]
    f_N = np.fft.rfftfreq(N, 1 / fs)
    if d["source"] == "embedded":
        folder = raws[0]
        for name in ("strain.npy", "psd.npz", "truth.npz"):
            if not (folder / name).is_file():
                raise NeurotrainError(folder / name, "missing from the embedded dataset; rerun generate_dataset")
        strain = np.load(folder / "strain.npy", allow_pickle=False)
        with np.load(folder / "psd.npz", allow_pickle=False) as z:
            f_L, psd, rate = z["f"], z["psd"], float(z["sample_rate"])
        with np.load(folder / "truth.npz", allow_pickle=False) as z:
            truth = {k: z[k] for k in z.files}
        if rate != fs:
            raise NeurotrainError(folder / "psd.npz", f"sample rate {rate:g} Hz differs from cpc_snn.data.sample_rate "
                                                      f"{fs:g} Hz; rerun generate_dataset")
        if not np.isfinite(strain).all():
            raise NeurotrainError(folder / "strain.npy", "strain has NaN/Inf samples")
        L = strain.shape[1]
        if L % N or len(f_L) != L // 2 + 1:
            raise NeurotrainError(folder / "strain.npy", f"stream length {L} is not a whole number of {N}-sample "
                                                         f"segments matching psd.npz; rerun generate_dataset")
        white = Whitener(np.sqrt(psd), L, fs, d["f_low"], d["f_high"])(strain)
        del strain  # not needed any more: its 8 bytes per sample are not part of the peak below
        n_seg = int(truth["n_segments"])
        seg = white.reshape(-1, N)[:n_seg]
        params = {k: truth[k] for k in ("label", "snr", "chirp_mass", "tc")}
        split = truth["split"]
        asd_N = np.sqrt(aligo_psd(f_N))
        gps = np.full(n_seg, np.nan)
        source, sha = "embedded", sha256_file(folder / "strain.npy")
    else:
        rng = np.random.default_rng(d["injection"]["seed"])
        seg, asds, gps = _gwosc_segments(cfg, raws)
        # contiguous time blocks with a gap of one segment: test noise never overlaps training noise
        split = block_split(gps, d["segment_duration"], d["val_fraction"], d["test_fraction"],
                            "config key cpc_snn.data", "segments", unit="s")
        keep = split >= 0
        seg, asds, gps, split = seg[keep], asds[keep], gps[keep], split[keep]
        n_seg = len(seg)
        params = draw_injections(d["injection"], n_seg, fs, N, rng)
        for i in np.flatnonzero(params["label"] == 1):
            w = Whitener(asds[i], N, fs, d["f_low"], d["f_high"])
            h = place_chirp(params["chirp_mass"][i], params["tc"][i], params["phase"][i], fs,
                            d["injection"]["f_start"], N)
            seg[i] += params["snr"][i] / optimal_snr(h, w) * w(h)
        asd_N = np.median(asds, axis=0)
        source = "gwosc"
        import hashlib

        hh = hashlib.sha256()
        for p in raws:
            hh.update(sha256_file(p).encode())
        sha = hh.hexdigest()
    if seg.shape[1] < min_segment_samples(cfg):
        raise NeurotrainError("config key cpc_snn.data.segment_duration",
                              f"segments of {seg.shape[1]} samples are shorter than the CPC encoder's receptive field "
                              f"plus its prediction horizon ({min_segment_samples(cfg)} samples)")
    if not np.isfinite(seg).all():
        raise NeurotrainError(raws[0], "whitening produced NaN/Inf (check the PSD and the band)")
    check_enough_noise(cfg, np.asarray(params["label"]), np.asarray(split), raws[0])
    with atomic_path(out) as tmp:
        import h5py

        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("strain", data=seg.astype(np.float32))
            fh.create_dataset("label", data=params["label"].astype(np.int8))
            fh.create_dataset("snr", data=params["snr"].astype(np.float32))
            fh.create_dataset("chirp_mass", data=params["chirp_mass"].astype(np.float32))
            fh.create_dataset("tc", data=params["tc"].astype(np.float32))
            fh.create_dataset("split", data=np.asarray(split, np.int8))
            fh.create_dataset("asd_whiten", data=asd_N)
            fh.create_dataset("gps_start", data=np.asarray(gps, np.float64))
            fh.attrs.update(sample_rate=float(fs), f_low=float(d["f_low"]), f_high=float(d["f_high"]),
                            f_start=float(d["injection"]["f_start"]), source=source, source_sha256=sha)


def check_enough_noise(cfg: dict, label: np.ndarray, split: np.ndarray, where) -> None:
    """The quality bar's false-alarm probability ``analysis.bar_fap`` needs at least
    ``1 / bar_fap`` noise segments in the test split to be resolved (the smallest FAP measurable
    on n noise segments is 1/n); refused at preprocessing, before any training."""
    fap = cfg["analysis"]["bar_fap"]
    have, need = int(((split == 2) & (label == 0)).sum()), int(np.ceil(1 / fap - 1e-9))
    if have < need:
        raise NeurotrainError(where, f"the test split holds {have} noise segments; the quality bar's false-alarm "
                                     f"probability {fap:g} (config key cpc_snn.analysis.bar_fap) needs at least {need}: "
                                     "use more or longer strain files, a larger test_fraction or a larger bar_fap")


def receptive_field(kernels, strides) -> tuple[int, int]:
    """(receptive field in samples, total stride) of the encoder's convolution stack."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


def n_frames(n_samples: int, kernels, strides) -> int:
    """Latent frames the encoder makes of ``n_samples`` (valid convolutions)."""
    t = n_samples
    for k, s in zip(kernels, strides):
        t = (t - k) // s + 1
    return t


def min_segment_samples(cfg: dict) -> int:
    """Shortest segment the CPC encoder can train on: its receptive field plus enough frames
    for the farthest prediction (which starts past the receptive field's overlap)."""
    m = cfg["model"]
    rf, stride = receptive_field(m["encoder"]["kernels"], m["encoder"]["strides"])
    first = -(-rf // stride)
    return rf + stride * (first + m["cpc"]["prediction_steps"])


def load_processed(path: str | Path) -> dict:
    """The processed HDF5 as a dict of arrays plus ``attrs``."""

    def reader(fh):
        out = {k: fh[k][()] for k in ("strain", "label", "snr", "chirp_mass", "tc", "split", "asd_whiten")}
        out["gps_start"] = fh["gps_start"][()] if "gps_start" in fh else np.full(len(out["label"]), np.nan)
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in fh.attrs.items()}
        return out

    data = read_hdf5(path, reader, "processed cpc_snn HDF5")
    if data["strain"].ndim != 2 or len(data["label"]) != len(data["strain"]):
        raise NeurotrainError(path, "strain must be [segments, samples] with one label per segment")
    check_arrays(path, data, finite=("strain", "snr", "chirp_mass"), codes={"split": (0, 1, 2),  # asd: Inf off-band
                                                                                      "label": (0, 1)})
    return data
