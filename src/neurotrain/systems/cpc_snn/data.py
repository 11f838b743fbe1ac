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

GWOSC (``data.source: gwosc``): strain files in GWOSC's HDF5 layout (dataset ``strain/Strain``
with attributes ``Xstart`` and ``Xspacing``), fetched with their md5. The noise PSD is
estimated from each file (Welch, ``gwosc.psd_segment`` s), the strain is decimated to
``sample_rate``, and the chirps are injected into the whitened real noise (SNR against the
file's own PSD), so the segments have labels like the embedded ones.

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
===========  ================  ===========================================================

Attributes: ``sample_rate``, ``f_low``, ``f_high``, ``f_start``, ``source``, ``source_sha256``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, read_hdf5, sha256_file
from neurotrain.splits import random_split

MTSUN_S = 4.925490947641267e-06  # G M_sun / c^3 in seconds
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- noise and chirps
def aligo_psd(f: np.ndarray, f_min: float = 10.0) -> np.ndarray:
    """One-sided PSD (1/Hz) of Advanced LIGO at design sensitivity, the analytic fit of Ajith
    (2011, PRD 84 084037, eq. 4.7); infinite below ``f_min`` (no power is synthesised there)."""
    f = np.asarray(f, dtype=np.float64)
    x = np.maximum(f, 1e-3) / 215.0
    s = 1e-49 * (x ** -4.14 - 5.0 * x ** -2 + 111.0 * (1 - x ** 2 + x ** 4 / 2) / (1 + x ** 2 / 2))
    return np.where(f >= f_min, s, np.inf)


def band_mask(f: np.ndarray, f_low: float, f_high: float, edge: float = 4.0) -> np.ndarray:
    """Band-pass gain: 1 inside ``[f_low, f_high]``, cosine edges ``edge`` Hz wide, 0 outside."""
    g = np.zeros_like(f, dtype=np.float64)
    inside = (f >= f_low) & (f <= f_high)
    g[inside] = 1.0
    lo = (f > f_low - edge) & (f < f_low)
    g[lo] = 0.5 - 0.5 * np.cos(np.pi * (f[lo] - (f_low - edge)) / edge)
    hi = (f > f_high) & (f < f_high + edge)
    g[hi] = 0.5 + 0.5 * np.cos(np.pi * (f[hi] - f_high) / edge)
    return g


def isco_frequency(chirp_mass: float) -> float:
    """GW frequency at the innermost stable circular orbit of an equal-mass binary (Hz)."""
    total = chirp_mass * 4 ** 0.6
    return 1.0 / (6 ** 1.5 * np.pi * total * MTSUN_S)


def time_to_coalescence(f: float, chirp_mass: float) -> float:
    return 5.0 / 256.0 * (np.pi * f) ** (-8 / 3) * (chirp_mass * MTSUN_S) ** (-5 / 3)


def chirp(chirp_mass: float, fs: float, f_start: float, phase: float = 0.0) -> np.ndarray:
    """Newtonian inspiral from ``f_start`` to ISCO, sampled at ``fs``; ends at coalescence
    (last sample), peak amplitude 1. Tukey on-ramp over 3 cycles, off-ramp over 1 cycle."""
    mc = chirp_mass * MTSUN_S
    f_isco = isco_frequency(chirp_mass)
    if f_start >= f_isco:
        raise ValueError(f"f_start {f_start} Hz is above the ISCO frequency {f_isco:.1f} Hz of chirp mass {chirp_mass}")
    tau0, tau1 = time_to_coalescence(f_start, chirp_mass), time_to_coalescence(f_isco, chirp_mass)
    tau = tau0 - np.arange(int(np.floor((tau0 - tau1) * fs)) + 1) / fs
    f = (5.0 / (256.0 * tau)) ** 0.375 * mc ** -0.625 / np.pi
    phi = -2.0 * (tau / (5.0 * mc)) ** 0.625 + phase
    h = (f / f_isco) ** (2 / 3) * np.cos(phi)
    cycles = np.cumsum(f) / fs
    on = cycles < 3.0
    h[on] *= 0.5 - 0.5 * np.cos(np.pi * cycles[on] / 3.0)
    back = (cycles[-1] - cycles) < 1.0
    h[back] *= 0.5 - 0.5 * np.cos(np.pi * (cycles[-1] - cycles[back]))
    return h


class Whitener:
    """Whitening + band-pass of stretches of ``n`` samples at ``fs`` against an ASD on
    ``rfft(n)``'s grid, scaled so that stationary noise with that ASD has unit variance per
    sample. The band-pass leaves fewer than ``n`` degrees of freedom, so a unit-norm template
    correlated with that noise has SD ``scale`` (not 1): SNRs divide by it."""

    def __init__(self, asd: np.ndarray, n: int, fs: float, f_low: float, f_high: float):
        self.n, self.fs = n, fs
        self.f = np.fft.rfftfreq(n, 1 / fs)
        if asd.shape != self.f.shape:
            raise ValueError(f"ASD has {asd.shape[0]} bins, expected {self.f.shape[0]}")
        gain = band_mask(self.f, f_low, f_high)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(np.isfinite(asd) & (asd > 0), gain / asd, 0.0)
        # white noise of one-sided PSD S has per-sample variance S fs / 2; bins weighted as in rfft
        weights = np.full(self.f.shape, 2.0)
        weights[0] = 1.0
        if n % 2 == 0:
            weights[-1] = 1.0
        var = np.sum(weights * gain ** 2) / n  # per-sample variance of band-passed unit-PSD noise
        self.scale = 1.0 / np.sqrt(var)
        self.filter = inv * np.sqrt(2.0 / fs) * self.scale

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.fft.irfft(np.fft.rfft(x, axis=-1) * self.filter, n=self.n, axis=-1)


def colored_noise(asd: np.ndarray, n: int, fs: float, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` stretches of stationary Gaussian noise with one-sided ASD ``asd`` (rfft(n) grid)."""
    white = rng.standard_normal((count, n))
    amp = np.where(np.isfinite(asd), asd, 0.0) * np.sqrt(fs / 2.0)
    return np.fft.irfft(np.fft.rfft(white, axis=-1) * amp, n=n, axis=-1)


def optimal_snr(h: np.ndarray, whitener: Whitener) -> float:
    """Optimal SNR of strain ``h`` (length ``whitener.n``): sqrt(4 sum |h(f)|^2 / S(f) df) over the band."""
    return float(np.linalg.norm(whitener(h)) / whitener.scale)


# --------------------------------------------------------------------------- injections
def draw_injections(inj: dict, n_seg: int, fs: float, seg_len: int, rng: np.random.Generator) -> dict:
    """Per-segment injection parameters: label, SNR, chirp mass, coalescence time, phase."""
    label = (rng.random(n_seg) < inj["signal_fraction"]).astype(np.int8)
    snr = np.where(label == 1, rng.uniform(inj["snr_min"], inj["snr_max"], n_seg), 0.0)
    # uniform in tau0 ~ M_c^(-5/3) (the flat direction of the chirp family), within the mass range
    lo, hi = inj["chirp_mass_min"] ** (-5 / 3), inj["chirp_mass_max"] ** (-5 / 3)
    mc = np.where(label == 1, rng.uniform(hi, lo, n_seg) ** (-3 / 5), 0.0)
    tc = np.where(label == 1, rng.uniform(inj["tc_min"], inj["tc_max"], n_seg) * seg_len / fs, np.nan)
    phase = np.where(label == 1, rng.uniform(0, 2 * np.pi, n_seg), 0.0)
    return {"label": label, "snr": snr, "chirp_mass": mc, "tc": tc, "phase": phase}


def place_chirp(mc: float, tc: float, phase: float, fs: float, f_start: float, length: int) -> np.ndarray:
    """A unit-peak chirp ending (coalescing) at ``tc`` s into a stretch of ``length`` samples."""
    h = chirp(mc, fs, f_start, phase)
    end = int(round(tc * fs))
    start = end - len(h) + 1
    if start < 0 or end >= length:
        raise ValueError(f"chirp of mass {mc:.1f} ({len(h) / fs:.2f} s) does not fit before tc={tc:.3f} s")
    out = np.zeros(length)
    out[start:end + 1] = h
    return out


def chirp_masses(inj: dict, n: int) -> np.ndarray:
    """``n`` chirp masses over the injected range, uniform in chirp time tau0 ~ M_c^(-5/3)."""
    lo, hi = inj["chirp_mass_min"] ** (-5 / 3), inj["chirp_mass_max"] ** (-5 / 3)
    return np.linspace(hi, lo, n) ** (-3 / 5) if n > 1 else np.array([inj["chirp_mass_min"]])


def quadrature_templates(asd: np.ndarray, attrs: dict, inj: dict, masses: np.ndarray):
    """(coalescence index, cos [M, N], sin [M, N]): whitened chirps of each mass in two phases,
    coalescing at ``tc_max`` of an N-sample segment, each scaled to optimal SNR 1."""
    fs = attrs["sample_rate"]
    N = (len(asd) - 1) * 2
    w = Whitener(asd, N, fs, attrs["f_low"], attrs["f_high"])
    end = int(round(inj["tc_max"] * N))
    out = {0.0: [], np.pi / 2: []}
    for m in masses:
        for phase, rows in out.items():
            h = place_chirp(m, end / fs, phase, fs, attrs["f_start"], N)
            rows.append(w(h) / optimal_snr(h, w))
    return end, np.asarray(out[0.0]), np.asarray(out[np.pi / 2])


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


def inject(segments: np.ndarray, params: dict, whiten_seg: Whitener, fs: float, f_start: float) -> np.ndarray:
    """Strain amplitudes that give each injection its SNR; adds the chirps to ``segments``
    (strain, [n, N]) in place. Returns the amplitude per segment (0 for noise)."""
    n, N = segments.shape
    amp = np.zeros(n)
    for i in np.flatnonzero(params["label"] == 1):
        h = place_chirp(params["chirp_mass"][i], params["tc"][i], params["phase"][i], fs, f_start, N)
        amp[i] = params["snr"][i] / optimal_snr(h, whiten_seg)
        segments[i] += amp[i] * h
    return amp


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
def read_gwosc(path: str | Path) -> tuple[np.ndarray, float, float]:
    """(strain [n] float64, sample rate, GPS start) from a GWOSC HDF5 file."""

    def reader(fh):
        if "strain" not in fh or "Strain" not in fh["strain"]:
            raise NeurotrainError(path, "no dataset strain/Strain (not a GWOSC strain file)")
        ds = fh["strain"]["Strain"]
        if "Xspacing" not in ds.attrs:
            raise NeurotrainError(path, "strain/Strain has no Xspacing attribute (sample spacing)")
        return (np.asarray(ds[()], np.float64), 1.0 / float(ds.attrs["Xspacing"]),
                float(ds.attrs.get("Xstart", np.nan)))

    return read_hdf5(path, reader, "GWOSC HDF5 strain file")


def welch_asd(x: np.ndarray, fs: float, seg_s: float, f_out: np.ndarray) -> np.ndarray:
    from scipy.signal import welch

    nper = int(round(seg_s * fs))
    f, p = welch(x, fs=fs, nperseg=nper, noverlap=nper // 2, window="hann", detrend="constant")
    return np.sqrt(np.interp(f_out, f, p))


def _gwosc_segments(cfg: dict, paths: list[Path]):
    d, g = cfg["data"], cfg["data"]["gwosc"]
    fs, N = d["sample_rate"], int(round(d["segment_duration"] * d["sample_rate"]))
    all_seg, all_asd = [], []
    for p in paths:
        x, rate, _ = read_gwosc(p)
        if abs(rate - g["sample_rate"]) > 1e-6 * rate:
            raise NeurotrainError(p, f"sample rate {rate:g} Hz, but config key cpc_snn.data.gwosc.sample_rate is "
                                     f"{g['sample_rate']:g} Hz")
        bad = ~np.isfinite(x)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise NeurotrainError(p, f"strain has {int(bad.sum())} NaN/Inf samples (a data gap) from sample {i} "
                                     f"(t = {i / rate:.3f} s); use a file without gaps")
        q = rate / fs
        if abs(q - round(q)) > 1e-9 or round(q) < 1:
            raise NeurotrainError(p, f"sample rate {rate:g} Hz is not an integer multiple of "
                                     f"cpc_snn.data.sample_rate {fs:g} Hz")
        if round(q) > 1:
            from scipy.signal import decimate

            x = decimate(x, int(round(q)), ftype="fir", zero_phase=True)
        drop = int(round(g["edge"] * fs))
        if len(x) - 2 * drop < max(N, int(g["psd_segment"] * fs)):
            raise NeurotrainError(p, f"{len(x) / fs:.1f} s of strain is too short for segments of {N / fs} s after "
                                     f"dropping {g['edge']} s at each edge and a PSD estimate over {g['psd_segment']} s")
        L = len(x)
        f_L = np.fft.rfftfreq(L, 1 / fs)
        asd_L = welch_asd(x, fs, g["psd_segment"], f_L)
        asd_L[f_L < d["f_low"] - 4] = np.inf
        w = Whitener(asd_L, L, fs, d["f_low"], d["f_high"])
        white = w(x * _tukey(L, drop))[drop:L - drop]
        stride = int(round(g["stride"] * fs))
        starts = np.arange(0, len(white) - N + 1, stride)
        all_seg.append(np.stack([white[s:s + N] for s in starts]))
        f_N = np.fft.rfftfreq(N, 1 / fs)
        a = welch_asd(x, fs, g["psd_segment"], f_N)
        a[f_N < d["f_low"] - 4] = np.inf
        all_asd.append(np.repeat(a[None], len(starts), 0))
    return np.concatenate(all_seg), np.concatenate(all_asd)


def _tukey(n: int, ramp: int) -> np.ndarray:
    w = np.ones(n)
    if ramp > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        w[:ramp], w[n - ramp:] = r, r[::-1]
    return w


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
        n_seg = int(truth["n_segments"])
        seg = white.reshape(-1, N)[:n_seg]
        params = {k: truth[k] for k in ("label", "snr", "chirp_mass", "tc")}
        split = truth["split"]
        asd_N = np.sqrt(aligo_psd(f_N))
        source, sha = "embedded", sha256_file(folder / "strain.npy")
    else:
        rng = np.random.default_rng(d["injection"]["seed"])
        for p in raws:
            if not p.is_file():
                raise NeurotrainError(p, "GWOSC strain file not found")
        seg, asds = _gwosc_segments(cfg, raws)
        n_seg = len(seg)
        params = draw_injections(d["injection"], n_seg, fs, N, rng)
        for i in np.flatnonzero(params["label"] == 1):
            w = Whitener(asds[i], N, fs, d["f_low"], d["f_high"])
            h = place_chirp(params["chirp_mass"][i], params["tc"][i], params["phase"][i], fs,
                            d["injection"]["f_start"], N)
            seg[i] += params["snr"][i] / optimal_snr(h, w) * w(h)
        split = random_split(n_seg, d["val_fraction"], d["test_fraction"], rng, "config key cpc_snn.data", "segments")
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
            fh.attrs.update(sample_rate=float(fs), f_low=float(d["f_low"]), f_high=float(d["f_high"]),
                            f_start=float(d["injection"]["f_start"]), source=source, source_sha256=sha)


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
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in fh.attrs.items()}
        return out

    data = read_hdf5(path, reader, "processed cpc_snn HDF5")
    if data["strain"].ndim != 2 or len(data["label"]) != len(data["strain"]):
        raise NeurotrainError(path, "strain must be [segments, samples] with one label per segment")
    if not np.isfinite(data["strain"]).all():
        raise NeurotrainError(path, "strain has NaN/Inf samples")
    return data
