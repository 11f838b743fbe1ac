"""Scan a long strain file for chirps with the trained CPC+SNN detector, beside the matched filter.

Input (``cpc_snn.apply.inputs.<name>``): one strain file, GWOSC HDF5 or GWF (32 s, 4096 s, ...),
read as preprocessing reads one (:mod:`.gwosc`): the data-quality flags ``data.gwosc.dq_flags``
decide which stretches are scanned, NaN or zero-filled runs are gaps; known events and hardware
injections are *not* masked (finding them is the point). Each usable stretch is whitened with
its own median-Welch PSD and cut into windows of ``data.segment_duration`` every
``apply.stride`` s, as the training segments were.

Two detection statistics per window: the SNN's ``logit(chirp) - logit(noise)`` (the exported
detector, :func:`.network.load_detector`) and the matched filter's SNR over the bank of the
analysis (the optimal detector in Gaussian noise). Each gets the threshold that gave a
false-alarm probability of ``apply.fap`` (default ``analysis.bar_fap``) per window on the
*validation* split's noise segments (:func:`trigger_thresholds`, from the scores extract and
analyze wrote: a threshold is a choice made from data, so the test split never sets it); the false-alarm fraction of those thresholds on the
test split's noise segments is reported beside them as the independent check. Windows above a
threshold closer than ``apply.cluster`` s form one trigger.

Output (``results/cpc_snn/<run>/seed<k>/apply/<name>/``), m windows:
  gps_start.npy  [m] float64  GPS start of each window (s)
  statistic.npy  [m] float32  SNN detection statistic
  mf_snr.npy     [m] float32  matched-filter SNR (bank maximum)
  triggers.tsv               detector, gps_peak (window centre, s), gps_start, gps_end (first and
                              last window of the cluster), statistic, mf_snr, windows, known_event
  scan.png                   both statistics over GPS time, thresholds, triggers, known events
  apply.json                 input, windows, scanned seconds, thresholds (and the validation noise
                              segments that set them, their false-alarm fraction on the test noise),
                              trigger counts
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, load_npy, save_json, save_npy


def windows(path: Path, d: dict, stride: float):
    """(windows [m, N] whitened, their ASDs [m, N//2+1], GPS starts [m]) of the usable strain."""
    from neurotrain.systems.cpc_snn.gwosc import read_strain, segments

    g = {**d["gwosc"], "events": {}, "injection_flags": [], "stride": stride}  # scan events and injections
    s = read_strain(path, g)
    seg, asd, gps = segments(s, {**d, "gwosc": g})
    if not len(seg):
        raise NeurotrainError(path, f"no usable stretch of strain is long enough for a window of "
                                    f"{d['segment_duration']} s after dropping {g['edge']} s at each edge and a PSD "
                                    f"estimate over {g['psd_segment']} s")
    return seg, asd, gps


def clusters(gps: np.ndarray, stat: np.ndarray, above: np.ndarray, gap: float) -> list[np.ndarray]:
    """Indices of the windows above threshold, grouped where consecutive ones start <= ``gap`` s apart."""
    idx = np.flatnonzero(above)
    if not len(idx):
        return []
    order = idx[np.argsort(gps[idx], kind="stable")]
    breaks = np.flatnonzero(np.diff(gps[order]) > gap) + 1
    return np.split(order, breaks)


def trigger_thresholds(run: Path, fap: float) -> dict:
    """Thresholds at false-alarm probability ``fap`` per segment of the run folder ``run``,
    set on the validation split's noise-only segments: the SNN's ``outputs/val_noise_scores.npy``
    (extract) and the matched filter's ``metrics/mf_val_noise_scores.npy`` (analyze). Returns
    ``{"thresholds": {"snn": logit difference, "matched_filter": SNR}, "thresholds_set_on":
    {"split", "noise_segments"}, "fap_on_test_noise": {"snn", "matched_filter": fraction of the
    test noise segments above the threshold, "noise_segments"}}``; a segment strictly above a
    threshold is a detection (:func:`neurotrain.stats.detection_threshold`).

    Raises NeurotrainError (``apply.fap``) when the validation noise cannot resolve ``fap``
    (fewer than 1/fap segments)."""
    from neurotrain.stats import detection_threshold

    o, m = run / "outputs", run / "metrics"
    val = {"snn": load_npy(o / "val_noise_scores.npy"), "matched_filter": load_npy(m / "mf_val_noise_scores.npy")}
    n = len(val["snn"])
    if n * fap < 1:
        raise NeurotrainError("config key cpc_snn.apply.fap", f"{n} noise validation segments cannot resolve a "
                              f"false-alarm probability of {fap}")
    noise = load_npy(o / "labels.npy") == 0
    test = {"snn": load_npy(o / "scores.npy")[noise], "matched_filter": load_npy(m / "mf_scores.npy")[noise]}
    thr = {k: float(detection_threshold(v, fap)) for k, v in val.items()}
    return {"thresholds": thr, "thresholds_set_on": {"split": "validation", "noise_segments": n},
            "fap_on_test_noise": {**{k: float(np.mean(v > thr[k])) for k, v in test.items()},
                                  "noise_segments": int(noise.sum())}}


def apply(cfg: dict, run_dir: str, data_path: str, inputs: list[str], out_dir: str) -> dict:
    """Stage ``apply``: scan the strain file of ``inputs`` (one file) into ``out_dir``."""
    from neurotrain.systems.cpc_snn.analyze import MatchedFilter
    from neurotrain.systems.cpc_snn.data import load_processed
    from neurotrain.systems.cpc_snn.network import load_detector

    path, run = Path(inputs[0]), Path(run_dir)
    d, a = cfg["data"], cfg["apply"]
    det, params, config = load_detector(run / "export")
    N = int(config["data"]["segment_samples"])
    if int(round(d["segment_duration"] * d["sample_rate"])) != N or d["sample_rate"] != config["data"]["sample_rate"]:
        raise NeurotrainError("config key cpc_snn.data.segment_duration", f"windows of {d['segment_duration']} s at "
                                                                         f"{d['sample_rate']:g} Hz; the detector takes "
                                                                         f"{N} samples at {config['data']['sample_rate']:g} Hz")
    fap = a["fap"] if a["fap"] is not None else cfg["analysis"]["bar_fap"]
    chosen = trigger_thresholds(run, fap)  # refused before any window is read or scored
    thr = chosen["thresholds"]
    seg, asds, gps = windows(path, d, a["stride"])
    stat = det.scores(params, seg)
    proc = load_processed(data_path)
    attrs = {k: proc["attrs"][k] for k in ("sample_rate", "f_low", "f_high", "f_start")}
    mf = MatchedFilter(np.median(asds, axis=0), attrs, d["injection"], cfg["analysis"]["n_templates"])
    mf_snr = mf(seg).astype(np.float32)
    half = d["segment_duration"] / 2
    events = d["gwosc"]["events"]
    before, after = d["gwosc"]["event_window"]
    rows = []
    for name, values in (("snn", stat), ("matched_filter", mf_snr)):
        for c in clusters(gps, values, values > thr[name], a["cluster"]):
            k = c[np.argmax(values[c])]
            peak = float(gps[k] + half)
            near = [e for e, t in events.items() if t - before <= peak <= t + after]
            rows.append({"detector": name, "gps_peak": peak, "gps_start": float(gps[c].min()),
                         "gps_end": float(gps[c].max() + d["segment_duration"]), "statistic": float(stat[k]),
                         "mf_snr": float(mf_snr[k]), "windows": int(len(c)), "known_event": ",".join(near)})
    out = Path(out_dir)
    save_npy(out / "gps_start.npy", gps.astype(np.float64))
    save_npy(out / "statistic.npy", stat)
    save_npy(out / "mf_snr.npy", mf_snr)
    with atomic_path(out / "triggers.tsv") as tmp:
        cols = ["detector", "gps_peak", "gps_start", "gps_end", "statistic", "mf_snr", "windows", "known_event"]
        lines = ["\t".join(cols)] + ["\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
                                     for r in rows]
        tmp.write_text("\n".join(lines) + "\n")
    scanned = float(len(np.unique(np.round(gps / a["stride"]))) * a["stride"])
    summary = {"input": str(path), "windows": int(len(gps)), "window_s": d["segment_duration"], "stride_s": a["stride"],
               "gps_first": float(gps.min()), "gps_last": float(gps.max() + d["segment_duration"]),
               "scanned_s_approx": scanned, "fap_per_window": fap, **chosen,
               "triggers": {n: sum(r["detector"] == n for r in rows) for n in ("snn", "matched_filter")},
               "known_events_in_span": [e for e, t in events.items() if gps.min() <= t <= gps.max() + 2 * half],
               "known_events_triggered": sorted({e for r in rows for e in r["known_event"].split(",") if e}),
               "detector": str(run / "export")}
    _figure(out / "scan.png", gps + half, stat, mf_snr, thr, rows, events, summary)
    save_json(out / "apply.json", summary)
    return summary


def _figure(path: Path, t: np.ndarray, stat, mf_snr, thr: dict, rows: list, events: dict, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurotrain.plotting import save_figure

    t0 = float(np.floor(t.min()))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for ax, values, name, label in ((ax1, stat, "snn", "SNN statistic"), (ax2, mf_snr, "matched_filter",
                                                                           "matched-filter SNR")):
        ax.plot(t - t0, values, ".", ms=2, color="C0" if name == "snn" else "C2")
        ax.axhline(thr[name], color="C3", lw=1, ls="--", label=f"threshold (FAP {summary['fap_per_window']:g})")
        for r in rows:
            if r["detector"] == name:
                ax.axvline(r["gps_peak"] - t0, color="C3", lw=0.8, alpha=0.6)
        for e, te in events.items():
            if t.min() - 1 <= te <= t.max() + 1:
                ax.axvline(te - t0, color="k", lw=1, ls=":")
                ax.text(te - t0, ax.get_ylim()[1], e, fontsize=7, va="top", ha="right", rotation=90)
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize=8)
    ax2.set_xlabel(f"GPS time - {t0:.0f} (s), window centres")
    ax1.set_title(f"scan of {Path(summary['input']).name}: {summary['triggers']['snn']} SNN and "
                  f"{summary['triggers']['matched_filter']} matched-filter triggers", fontsize=9)
    save_figure(fig, path)
