"""The signal model of the CPC+SNN system: the Advanced LIGO design noise curve, the
leading-order (Newtonian) inspiral chirp, whitening, coloured Gaussian noise, the optimal SNR,
injections and the quadrature template bank of the matched filter.

Chirp: GW frequency f(tau) = (1/pi) (5 / (256 tau))^(3/8) (G M_c / c^3)^(-5/8) at time tau before
coalescence, amplitude ~ f^(2/3) (Peters & Mathews 1963; Maggiore, Gravitational Waves vol. 1,
ch. 4). Optimal SNR: rho^2 = 4 sum |h(f)|^2 / S(f) df over the band (the norm of the whitened
signal in units of the whitened noise SD). Noise: the zero-detuned high-power design curve
(Ajith 2011). Arrays are float64 unless stated; frequencies in Hz, times in s, masses in solar
masses.
"""

from __future__ import annotations

import numpy as np

MTSUN_S = 4.925490947641267e-06  # G M_sun / c^3 in seconds

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
        """Whitened, band-passed ``x`` [..., n] (float64). Row by row for stacked streams: one
        stream's spectrum alive at a time, not the whole strain's (the same numbers)."""
        if x.ndim > 1:
            out = np.empty(x.shape[:-1] + (self.n,))
            for index in np.ndindex(*x.shape[:-1]):
                out[index] = self(x[index])
            return out
        spectrum = np.fft.rfft(x)
        spectrum *= self.filter  # in place
        return np.fft.irfft(spectrum, n=self.n)


def colored_noise(asd: np.ndarray, n: int, fs: float, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` stretches of stationary Gaussian noise with one-sided ASD ``asd`` (rfft(n) grid)."""
    spectrum = np.fft.rfft(rng.standard_normal((count, n)), axis=-1)
    spectrum *= np.where(np.isfinite(asd), asd, 0.0) * np.sqrt(fs / 2.0)  # in place, as in Whitener
    return np.fft.irfft(spectrum, n=n, axis=-1)


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


def matched_filter_bank(asd: np.ndarray, attrs: dict, inj: dict, masses: np.ndarray):
    """(spectra [M, N] complex128, lags [L], scale): the conjugate spectra of the unit-norm
    analytic templates ``u_cos - i u_sin`` (the two phases of :func:`quadrature_templates`),
    whose content lies on the positive-frequency bins; the circular lags of the injected
    coalescence-time range; the whitener's scale. ``|ifft(fft(x) * spectra[m])[lags]| / scale``
    is the complex matched-filter SNR of template m at every coalescence time, in units of the
    whitened noise's SD (:class:`neurotrain.systems.cpc_snn.analyze.MatchedFilter`,
    :class:`ChirpPosterior`)."""
    N = (len(asd) - 1) * 2
    end, cos, sin = quadrature_templates(asd, attrs, inj, masses)
    unit = lambda t: t / np.linalg.norm(t, axis=1, keepdims=True)  # noqa: E731
    spectra = np.conj(np.fft.fft(unit(cos) - 1j * unit(sin), axis=1))
    lags = (np.arange(int(round(inj["tc_min"] * N)), end + 1) - end) % N
    scale = Whitener(asd, N, attrs["sample_rate"], attrs["f_low"], attrs["f_high"]).scale
    return spectra, lags, scale


class ChirpPosterior:
    """P(chirp | x) for whitened segments x [n, N] under the training injector's own model:
    unit-variance Gaussian noise, plus, with prior probability 1/2, a chirp of the family scaled
    to an optimal SNR A uniform on ``[snr_min, snr_max]``, phase uniform, chirp mass uniform in
    chirp time, coalescence time uniform over the injected range.

    The likelihood ratio of one template pair at one coalescence time is
    ``exp(A (rho_c cos phi + rho_s sin phi) - A^2 / 2)``, where rho_c, rho_s are the matched
    filter's SNRs of the two phases; over a uniform phase it is ``exp(-A^2 / 2) I0(A |rho|)``
    (the phase-marginalised likelihood: Thrane & Talbot 2019, PASA 36 e010, sec. 8). It is
    integrated over A by Gauss-Legendre quadrature and averaged over a grid of ``n_masses``
    templates uniform in chirp time and over the coalescence times (the complex matched-filter
    output at every ``N / M``-th sample, M the smallest power of two holding the band: the
    correlation's samples at the band's own rate, no information lost). The Bayes factor B gives
    the posterior ``B / (1 + B)`` (prior odds 1).

    This is the Bayes-optimal detector of the injector's family in Gaussian noise, so its
    posterior is the target that :class:`neurotrain.systems.cpc_snn.train.Injector`'s labels
    are noisy draws of: training on it (``training.soft_labels``) gives the cross-entropy's
    gradient the same expectation with less variance (Hinton, Vinyals & Dean 2015's soft targets,
    here from an exact teacher). It knows nothing but Gaussian noise: in real strain a glitch
    has a large B.
    """

    def __init__(self, asd: np.ndarray, attrs: dict, inj: dict, n_masses: int, nodes: int = 16):
        N = (len(asd) - 1) * 2
        f = np.fft.rfftfreq(N, 1 / attrs["sample_rate"])
        top = int(np.flatnonzero(band_mask(f, attrs["f_low"], attrs["f_high"]) > 0).max())
        self.M = M = min(N, 1 << int(np.ceil(np.log2(top + 1))))
        spectra, lags, scale = matched_filter_bank(asd, attrs, inj, chirp_masses(inj, n_masses))
        self.spectra = spectra[:, :M].astype(np.complex64)  # the band: the analytic templates' whole content
        self.lags = np.unique(np.floor(lags * M / N).astype(int)) % M
        self.norm = scale * N / M  # |ifft_M| is |ifft_N| x N / M at the shared times
        self.snr = (float(inj["snr_min"]), float(inj["snr_max"]))
        self.nodes = np.polynomial.legendre.leggauss(nodes)

    def snr_series(self, x: np.ndarray) -> np.ndarray:
        """|rho| [n, templates, times]: the complex matched-filter SNR of every template at every
        coalescence time of the grid (float32)."""
        import scipy.fft

        X = scipy.fft.rfft(np.asarray(x, np.float32), axis=-1)[:, :self.M]
        c = scipy.fft.ifft(X[:, None, :] * self.spectra[None], axis=-1, overwrite_x=True)[:, :, self.lags]
        return np.abs(c) / np.float32(self.norm)

    def log_bayes_factor(self, x: np.ndarray, snr_scale: float = 1.0, chunk: int = 256) -> np.ndarray:
        """ln B [n] (float64) of segments ``x`` [n, N], with the SNR prior's range times
        ``snr_scale`` (the training curriculum's), ``chunk`` segments at a time (the SNR series of
        one is templates x M complex values)."""
        if len(x) > chunk:
            return np.concatenate([self.log_bayes_factor(x[i:i + chunk], snr_scale, chunk)
                                   for i in range(0, len(x), chunk)])
        from scipy.special import i0e, logsumexp

        rho = self.snr_series(x).reshape(len(x), -1)
        lo, hi = self.snr[0] * snr_scale, self.snr[1] * snr_scale
        a, w = self.nodes
        amp = lo + (hi - lo) * (a + 1) / 2
        # ln g(rho) = ln E_A[exp(-A^2/2) I0(A rho)] on a fixed grid of rho (step 1/256: a segment's value
        # does not depend on the others in its batch), interpolated (ln I0(z) = ln i0e(z) + z)
        grid = np.arange(0.0, float(rho.max()) + 2 / 256, 1 / 256)
        z = grid[:, None] * amp[None, :]
        ln_g = logsumexp(np.log(i0e(z)) + z - amp ** 2 / 2, axis=1, b=w / 2)
        terms = np.interp(rho, grid, ln_g)
        return logsumexp(terms, axis=1) - np.log(terms.shape[1])

    def __call__(self, x: np.ndarray, snr_scale: float = 1.0) -> np.ndarray:
        """P(chirp | x) [n] (float32) with prior odds 1."""
        from scipy.special import expit

        return expit(self.log_bayes_factor(x, snr_scale)).astype(np.float32)


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
