"""A strain file in GWOSC's HDF5 layout, for the cpc_snn tests (preprocessing, GWF, scanning)."""

import h5py
import numpy as np

from neurotrain.systems.cpc_snn.waveforms import Whitener, aligo_psd, colored_noise, optimal_snr, place_chirp

GPS0 = 1126259447.0  # the start of GWOSC's 32 s file around GW150914
DQ_NAMES = ("DATA", "CBC_CAT1", "CBC_CAT2", "CBC_CAT3", "BURST_CAT1", "BURST_CAT2", "BURST_CAT3")


def gwosc_file(path, seconds=40.0, rate=4096.0, nan_at=None, dataset=True, gps=GPS0, dq_fail=(), zeros_at=None,
                all_nan=False, quality=True, hw_injection=(), chirp_at=None, chirp_snr=0.0):
    """A strain file in GWOSC's HDF5 layout (meta/, quality/simple with a 1 Hz DQmask and its
    short names, quality/injections, strain/Strain with Xstart/Xspacing/Xunits/Yunits), holding
    aLIGO-design noise: ``dq_fail`` seconds fail CBC_CAT2, ``hw_injection`` seconds hold a CBC
    hardware injection (NO_CBC_HW_INJ cleared), ``nan_at``/``zeros_at`` start a 100-sample NaN
    gap or a 1000-sample zero-filled gap; ``chirp_at`` adds a chirp coalescing that many seconds
    into the file at optimal SNR ``chirp_snr``."""
    n = int(seconds * rate)
    f = np.fft.rfftfreq(n, 1 / rate)
    x = colored_noise(np.sqrt(aligo_psd(f)), n, rate, np.random.default_rng(3), 1)[0]
    if chirp_at is not None:  # a chirp (chirp mass 30) coalescing chirp_at s into the file, at optimal SNR chirp_snr
        h = place_chirp(30.0, chirp_at, 0.0, rate, 30.0, n)
        x += chirp_snr / optimal_snr(h, Whitener(np.sqrt(aligo_psd(f)), n, rate, 30.0, 500.0)) * h
    x += 1e-19 * np.sin(2 * np.pi * 0.3 * np.arange(n) / rate)  # a slow drift, as real strain has
    if nan_at is not None:
        x[nan_at:nan_at + 100] = np.nan
    if zeros_at is not None:
        x[zeros_at:zeros_at + 1000] = 0.0
    if all_nan:
        x[:] = np.nan
    dur = int(np.ceil(seconds))
    with h5py.File(path, "w") as fh:
        meta = fh.create_group("meta")
        for k, v in dict(Description=b"Strain data time series from LIGO", DescriptionURL=b"http://losc.ligo.org/",
                         Detector=b"H1", Duration=dur, GPSstart=int(gps), Observatory=b"H",
                         Type=b"StrainTimeSeries", UTCstart=b"2015-09-14T09:50:30").items():
            meta[k] = v
        if quality:
            q = fh.create_group("quality/simple")
            mask = np.full(dur, 127, np.int32)
            for sec in dq_fail:
                mask[sec] &= ~(1 << DQ_NAMES.index("CBC_CAT2"))
            dq = q.create_dataset("DQmask", data=mask)
            dq.attrs.update(Xstart=int(gps), Xspacing=1.0, Xunits=b"second", Npoints=dur, Bits=len(DQ_NAMES),
                            Description=b"simple data quality mask")
            q["DQShortnames"] = np.array([n.encode() for n in DQ_NAMES])
            q["DQDescriptions"] = np.array([f"{n} description".encode() for n in DQ_NAMES])
            inj = fh.create_group("quality/injections")
            injmask = np.full(dur, 0b11, np.int32)  # NO_CBC_HW_INJ, NO_BURST_HW_INJ: no injection
            for sec in hw_injection:
                injmask[sec] &= ~1
            im = inj.create_dataset("Injmask", data=injmask)
            im.attrs.update(Xstart=int(gps), Xspacing=1.0, Xunits=b"second", Npoints=dur)
            inj["InjShortnames"] = np.array([b"NO_CBC_HW_INJ", b"NO_BURST_HW_INJ"])
            inj["InjDescriptions"] = np.array([b"no CBC injection", b"no burst injection"])
        if dataset:
            ds = fh.create_dataset("strain/Strain", data=x)
            ds.attrs.update(Xspacing=1 / rate, Xstart=gps, Xunits=b"second", Xlabel=b"GPS time", Yunits=b"",
                            Ylabel=b"Strain", Npoints=n)
