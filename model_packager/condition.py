"""Condition-monitoring physics for vibration windows: rates, shaft speed, orders, envelope, ISO zones.

Pure NumPy, shared by the trainer and the agent (the agent's baseline scores these features, a
package may declare them in its ``SignalPreprocessing.condition``). What is here:

- ``resample_plan`` / ``resample``: a waveform tag's rate against the model's. A clean ratio
  (``to/from = up/down`` with small integers, the tag at least as fast as the model) is resampled
  by FFT (an ideal low-pass: no aliasing); anything else is refused naming both rates.
- ``Bearing``: rolling-element geometry -> defect frequencies as orders of shaft speed
  (BPFO, BPFI, BSF, FTF; the textbook formulas, contact angle included).
- ``estimate_speed_hz``: shaft speed from the spectrum (harmonic sum over 1x..4x, in a stated range)
  when no speed tag is given; mains hum is set aside unless its lines look like a shaft's (a 2-pole
  motor's 1x sits within 1.5 Hz of mains).
- ``velocity_rms_mm_s`` and ``iso_zone``: velocity RMS over 10-1000 Hz (ISO 10816/20816) from
  acceleration, and its severity zone A/B/C/D: a model-free rule that works on day one.
- ``condition_features``: one window -> the named features in ``FEATURES`` (order amplitudes,
  envelope-spectrum prominence at each defect frequency, high-frequency energy, statistics);
  without a bearing's geometry, the envelope's strongest non-integer-order line and its +-1x
  sidebands stand in for the outer and inner race.
  Amplitudes are logs, prominences are ratios to the envelope spectrum's own floor, so that a
  per-asset baseline (edge_agent.baseline) can compare them across speeds and sensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

G = 9.80665
MAINS_HZ = (50.0, 60.0)
MAX_RATIO_TERM = 1024  # up/down above this is not a "clean" ratio (e.g. 10001 Hz -> 10000 Hz)

# ISO 10816-3 (and 20816-3) zone boundaries A/B, B/C, C/D in mm/s RMS, 10-1000 Hz.
ISO_CLASSES: dict[str, tuple[float, float, float]] = {
    "group2_rigid": (1.4, 2.8, 4.5),  # 15-300 kW machines on rigid foundations (the default)
    "group2_flexible": (2.3, 4.5, 7.1),
    "group1_rigid": (2.3, 4.5, 7.1),  # 300 kW-50 MW
    "group1_flexible": (3.5, 7.1, 11.0),
}

FEATURES = [
    "rms",
    "kurtosis",
    "crest",
    "hf_rms",
    "velocity_rms",
    "order_1x",
    "order_2x",
    "order_3x",
    "orders_4_8",
    "env_bpfo",
    "env_bpfi",
    "env_bsf",
    "env_ftf",
]
AMPLITUDE_FEATURES = ("hf_rms", "velocity_rms", "order_1x", "order_2x", "order_3x", "orders_4_8")
FAULT_FEATURES = {  # which features name which fault (the baseline's model-free diagnosis)
    "imbalance": ("order_1x",),
    "misalignment": ("order_2x", "order_3x", "orders_4_8"),
    "bearing_outer": ("env_bpfo",),
    "bearing_inner": ("env_bpfi",),
}


class RateError(ValueError):
    """A waveform's sample rate cannot feed the model (one line naming both rates and the fix)."""


def resample_plan(from_hz: float, to_hz: float, what: str = "the waveform") -> tuple[int, int]:
    """(up, down) with to/from = up/down, or RateError naming both rates."""
    if not (math.isfinite(from_hz) and math.isfinite(to_hz) and from_hz > 0 and to_hz > 0):
        raise RateError(
            f"{what}: sample rates must be finite and > 0 (tag {from_hz:g} Hz, model {to_hz:g} Hz)"
        )
    if from_hz == to_hz:
        return 1, 1
    if from_hz < to_hz:
        raise RateError(
            f"{what} is sampled at {from_hz:g} Hz but the model takes {to_hz:g} Hz: a slower tag lacks "
            f"the content up to {to_hz / 2:g} Hz the model was trained on; sample the tag at "
            f"{to_hz:g} Hz or faster, or use a model trained at {from_hz:g} Hz"
        )
    frac = Fraction(to_hz / from_hz).limit_denominator(MAX_RATIO_TERM)
    if abs(float(frac) * from_hz - to_hz) > 1e-9 * to_hz or frac.numerator > MAX_RATIO_TERM:
        raise RateError(
            f"{what} is sampled at {from_hz:g} Hz but the model takes {to_hz:g} Hz, and "
            f"{from_hz:g}/{to_hz:g} is not a clean ratio to resample by; set the tag's rate to a "
            f"multiple the model's rate divides cleanly (e.g. {2 * to_hz:g} Hz) or use a model trained "
            f"at {from_hz:g} Hz"
        )
    return frac.numerator, frac.denominator


def input_samples(n_out: int, up: int, down: int) -> int:
    """Samples at the tag's rate needed for ``n_out`` samples at the model's rate."""
    return -(-n_out // up) * down


def resample(x: np.ndarray, up: int, down: int, n_out: int | None = None) -> np.ndarray:
    """Resample by up/down with the FFT (ideal low-pass at the lower Nyquist); ``len(x)`` should be a
    multiple of ``down``. Mean and linear trend are taken out first (no wrap-around step)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if up == down:
        return x[:n_out] if n_out else x
    n = len(x)
    m = n * up // down
    t = np.arange(n)
    slope, icpt = np.polyfit(t, x, 1) if n > 1 else (0.0, float(x.mean()))
    r = x - (slope * t + icpt)
    spec = np.fft.rfft(r)
    keep = m // 2 + 1
    out_spec = np.zeros(keep, dtype=complex)
    k = min(keep, len(spec))
    out_spec[:k] = spec[:k]
    if m % 2 == 0 and k == keep:
        out_spec[-1] = out_spec[-1].real  # the new Nyquist bin holds a real value
    y = np.fft.irfft(out_spec, m) * (m / n)
    ty = np.arange(m) * (down / up)
    y = y + slope * ty + icpt
    return y[:n_out] if n_out else y


@dataclass(frozen=True)
class Bearing:
    """Rolling-element bearing geometry (from its datasheet)."""

    n_elements: int
    ball_d_mm: float
    pitch_d_mm: float
    contact_angle_deg: float = 0.0

    def orders(self) -> dict[str, float]:
        """Defect frequencies as multiples of shaft speed (inner race rotating, outer fixed)."""
        r = self.ball_d_mm / self.pitch_d_mm * math.cos(math.radians(self.contact_angle_deg))
        n = self.n_elements
        return {
            "bpfo": n / 2 * (1 - r),
            "bpfi": n / 2 * (1 + r),
            "bsf": self.pitch_d_mm / (2 * self.ball_d_mm) * (1 - r * r),
            "ftf": 0.5 * (1 - r),
        }


DEFAULT_BEARING = Bearing(9, 7.94, 39.04)  # a 6205 deep-groove ball bearing (a reference)


def _spectrum(x: np.ndarray, pad: int = 4) -> tuple[np.ndarray, int]:
    """Amplitude spectrum of the Hann-windowed, zero-padded signal, and its bin width factor (bins per Hz * fs)."""
    n = len(x)
    w = np.hanning(n)
    nfft = 1 << int(math.ceil(math.log2(n * pad)))
    mag = np.abs(np.fft.rfft((x - x.mean()) * w, nfft)) * (2.0 / w.sum())
    return mag, nfft


def _peak(mag: np.ndarray, nfft: int, fs: float, f: float, tol_hz: float) -> float:
    if f <= 0 or f >= fs / 2:
        return 0.0
    lo = max(1, int(math.floor((f - tol_hz) * nfft / fs)))
    hi = min(len(mag) - 1, int(math.ceil((f + tol_hz) * nfft / fs)))
    return float(mag[lo : hi + 1].max()) if hi >= lo else 0.0


HARMONIC_WEIGHTS = ((1, 1.0), (2, 0.8), (3, 0.6), (4, 0.4))  # a shaft's 1x..4x in the speed search
NEAR_MAINS_HZ = 2.5  # a shaft this close to mains shares its lines with the hum in a 0.2-s window
LINE_RATIO = 3.0  # a spectral line: at least this many times the median amplitude within 25 Hz
HUM_LIKE_WEIGHT = 0.3  # a near-mains series with a hum's pattern counts this much against a shaft elsewhere
LONE_RATIO = 0.1  # a 1x this much weaker than the lines near mains is no shaft's (side lobes, noise)
NO_1X_RATIO = 0.1  # a 1x this much weaker than its 2x line is no shaft's: the shaft is at 2 f0


def _harmonic_score(white: np.ndarray, cands: np.ndarray, df: float) -> np.ndarray:
    score = np.zeros(len(cands))
    for h, wgt in HARMONIC_WEIGHTS:
        b = np.clip(np.round(cands * h / df).astype(int), 0, len(white) - 1)
        b2 = np.clip(b + 1, 0, len(white) - 1)
        b0 = np.clip(b - 1, 0, len(white) - 1)
        score += wgt * np.maximum(np.maximum(white[b], white[b2]), white[b0])
    return score


def _at(white: np.ndarray, fr: float, df: float) -> float:
    """The whitened spectrum's largest value within a bin of ``fr`` (0 beyond it)."""
    b = int(round(fr / df))
    if b >= len(white):
        return 0.0
    return float(white[max(0, b - 1) : b + 2].max())


def _line(mag: np.ndarray, fr: float, df: float) -> tuple[float, float]:
    """The amplitude spectrum's peak within two bins of ``fr``, and that peak over the median within 25 Hz."""
    b = int(round(fr / df))
    if b + 3 > len(mag):
        return 0.0, 0.0
    peak = float(mag[max(0, b - 2) : b + 3].max())
    w = int(25.0 / df)
    return peak, peak / (float(np.median(mag[max(1, b - w) : b + w + 1])) + 1e-18)


def waveform_rate_floor_hz(top_rpm: float) -> float:
    """The lowest sample rate at which the condition features see the fastest shaft searched (its 1x at ``top_rpm``):
    a slower signal is an overall level (a 4-20 mA transmitter's RMS logged once a second), not a waveform. The
    trainer refuses such a dataset and the agent a baseline on such a model by this one rule."""
    return 2 * top_rpm / 60


def estimate_speed_hz(x: np.ndarray, fs: float, lo_hz: float = 5.0, hi_hz: float = 100.0) -> float:
    """Shaft speed from the spectrum: the fundamental whose harmonics 1x..4x carry the most
    (whitened) energy, searched between lo_hz and hi_hz. ``x`` is one window or several (2-D, their
    power spectra averaged: steadier). Mains hum (50/60 Hz and harmonics) is set aside, unless the
    lines near a mains frequency look like a shaft's and nothing elsewhere does (``_near_mains``); a
    pick whose 1x is no line beside its 2x is doubled (``_no_1x``). A speed tag is better when there is one."""
    xs = np.atleast_2d(np.asarray(x, dtype=np.float64))
    specs = [_spectrum(row, pad=8) for row in xs]
    nfft = specs[0][1]
    mag = np.sqrt(np.mean([m * m for m, _ in specs], axis=0))
    df = fs / nfft
    res = fs / xs.shape[1]
    # whiten: divide by a running median so a resonance or a noise slope does not win
    k = max(3, int(max(12.0, 3 * res) / df) | 1)
    lmag = np.log(mag + 1e-12)
    pad = np.pad(lmag, k // 2, mode="edge")
    idx = np.arange(len(lmag))[:, None] + np.arange(0, k, max(1, k // 15))[None, :]
    floor = np.median(pad[idx], axis=1)
    raw = np.clip(lmag - floor, 0, None)
    white = raw.copy()
    f = np.arange(len(white)) * df
    for mains in MAINS_HZ:  # mains hum (exactly 50/60 Hz and harmonics) is not a shaft; motors slip
        white[np.abs(f - mains * np.round(f / mains)) < max(0.3, df)] = 0.0
    cands = np.arange(lo_hz, hi_hz, df / 2)
    score = _harmonic_score(white, cands, df)
    for mains in MAINS_HZ:  # hum leaks around its lines: a candidate there wins only when clearly better
        score[np.abs(cands - mains) < max(1.5, 2 * df)] *= 0.5
    f0 = float(cands[int(np.argmax(score))])
    while (
        2 * f0 <= hi_hz
        and _at(white, f0, df) < 0.3 * _at(white, 2 * f0, df)
        and _at(white, 3 * f0, df) < 0.3 * _at(white, 2 * f0, df)
    ):
        f0 *= 2  # a subharmonic: its odd harmonics (1x, 3x) are empty, so the shaft is at 2 f0
    f0 = _near_mains(f0, raw, mag, cands, df, res)
    f0 = _no_1x(f0, mag, df, res, hi_hz)
    # refine on the 1x peak
    b = int(round(f0 / df))
    lo, hi = max(1, b - 2), min(len(mag) - 2, b + 2)
    j = lo + int(np.argmax(mag[lo : hi + 1]))
    a, bb, c = mag[j - 1], mag[j], mag[j + 1]
    den = a - 2 * bb + c
    delta = 0.5 * (a - c) / den if den != 0 else 0.0
    return float((j + np.clip(delta, -0.5, 0.5)) * df)


def _prominent(mag: np.ndarray, fr: float, df: float, res: float) -> tuple[float, float]:
    """The amplitude spectrum's peak within two bins of ``fr``, and that peak over the median within 25 Hz
    outside the window's main lobe (+-2.5 resolutions: a strong line's own lobe does not raise its floor)."""
    b = int(round(fr / df))
    if b < 1 or b + 3 > len(mag):
        return 0.0, 0.0
    peak = float(mag[max(0, b - 2) : b + 3].max())
    g, w = int(2.5 * res / df), int(max(25.0, 5 * res) / df)
    ring = np.concatenate([mag[max(1, b - w) : max(1, b - g)], mag[b + g + 1 : b + w + 1]])
    return peak, (peak / (float(np.median(ring)) + 1e-18) if ring.size else 0.0)


def _no_1x(f0: float, mag: np.ndarray, df: float, res: float, hi_hz: float) -> float:
    """``f0``, or twice it when its 1x is no line next to its 2x, judged on the amplitude spectrum.

    The search scores a whitened (log, running-median) spectrum, where a strong low-frequency 1x counts
    little: its own lobe (+-2 resolutions, 10 Hz in a 0.2-s window) raises its floor, while the noise
    near 0 Hz, whitened against the spectrum's edge, looks like lines. So a 4-pole motor (24-25 Hz) was
    found at half its speed, where nothing turns. A pick whose 1x is no line and under NO_1X_RATIO of its
    2x line (a line: LINE_RATIO over the median outside its lobe) is no shaft's: the shaft is at 2 f0. A 1x
    that is a line is kept: a 2-pole motor's 100-Hz magnetic line (twice the line frequency, normal running)
    lies within two bins of its 2x and is often ten times a well-balanced rotor's 1x."""
    one, p1 = _prominent(mag, f0, df, res)
    if 2 * f0 <= hi_hz:
        two, p2 = _prominent(mag, 2 * f0, df, res)
        if p2 >= LINE_RATIO and one < NO_1X_RATIO * two and p1 < LINE_RATIO:
            return 2 * f0
    return f0


def _near_mains(
    f0: float, raw: np.ndarray, mag: np.ndarray, cands: np.ndarray, df: float, res: float
) -> float:
    """The hum-suppressed choice ``f0``, or the best candidate within NEAR_MAINS_HZ of a mains frequency
    (scored on the spectrum with the hum left in) when that explains the spectrum better.

    A 0.2-s window cannot tell a 2-pole motor's 1x (48.5-50.5 Hz) from 50-Hz hum by frequency, so the
    lines' pattern decides: a shaft's series has its 1x strongest and even harmonics (2x or 4x) present;
    hum is led by its 2x line (magnetostriction) or has odd harmonics only, and then counts only
    HUM_LIKE_WEIGHT. The near-mains series wins when its (weighted) mean harmonic evidence beats the
    incumbent's evidence on the harmonics that do not fall on that mains frequency's lines, or when the
    incumbent (not itself near mains) has no 1x line of its own: its 1x under LONE_RATIO of the lines
    near mains (a side lobe, noise), or no peak at all next to a 1x-led series. It never wins when it
    is a harmonic of the incumbent (a 24.6-Hz shaft's 2x at 49.2 Hz, with a 1x line at 24.6 Hz).
    """
    wsum = sum(w for _, w in HARMONIC_WEIGHTS)
    for mains in MAINS_HZ:
        near = np.abs(cands - mains) <= NEAR_MAINS_HZ
        if not near.any():
            continue
        c = cands[near]
        s = _harmonic_score(raw, c, df)
        cm = float(c[int(np.argmax(s))])
        if abs(cm - f0) <= 2 * df:
            continue
        one, two, four = (_line(mag, h * cm, df) for h in (1, 2, 4))
        led_by_1x = one[1] >= LINE_RATIO and one[0] >= two[0]
        shaft_like = led_by_1x and max(two[1], four[1]) >= LINE_RATIO
        near_ev = (1.0 if shaft_like else HUM_LIKE_WEIGHT) * float(s.max()) / wsum
        kept = [
            (h, w) for h, w in HARMONIC_WEIGHTS if abs(h * f0 - mains * max(1, round(h * f0 / mains))) > res
        ]
        ind = sum(w * _at(raw, h * f0, df) for h, w in kept) / sum(w for _, w in kept) if kept else 0.0
        k = round(cm / f0)
        if (
            k >= 2
            and abs(cm - k * f0) <= max(2 * df, 0.02 * cm)
            and _at(raw, f0, df) >= 0.5 * _at(raw, cm, df)
            and _line(mag, f0, df)[0] >= 0.3 * one[0]
        ):
            continue  # the near-mains line is the incumbent's k-th harmonic
        lone = min(abs(f0 - m) for m in MAINS_HZ) > NEAR_MAINS_HZ and (
            # the incumbent's 1x is no line next to these (a window's side lobes, noise) ...
            _line(mag, f0, df)[0] < LONE_RATIO * max(one[0], two[0])
            # ... or no peak at all next to a 1x-led line
            or (led_by_1x and _at(raw, f0, df) < 0.5 * _at(raw, cm, df))
        )
        if near_ev > ind or lone:
            f0 = cm
    return f0


def acceleration_g(x: np.ndarray, fs: float, units: str, mv_per_g: float | None = None) -> np.ndarray:
    """A window of a sensor that does not give acceleration in g or m/s2, as acceleration in g: a velocity
    sensor's ``mm/s`` differentiated (in the spectrum, its DC dropped), an accelerometer read in ``mV``
    divided by its sensitivity ``mv_per_g`` (its bias dropped). Read as g as they are, a healthy
    machine's 0.9-1.4 mm/s made 40-80 mm/s of ISO velocity (zone D), or 85-140 mm/s at 100 mV/g."""
    a = np.asarray(x, dtype=np.float64).ravel()
    if units == "mV":
        if not mv_per_g or mv_per_g <= 0:
            raise ValueError("units mV needs the sensor's sensitivity (mv_per_g)")
        return (a - a.mean()) / mv_per_g
    if units == "mm/s":
        spec = np.fft.rfft(a - a.mean())
        f = np.fft.rfftfreq(a.size, 1 / fs)
        return np.fft.irfft(spec * (2j * np.pi * f), a.size) / 1000.0 / G
    raise ValueError(
        f"units {units!r}: not a velocity or voltage to convert (g and m/s2 are used as they are)"
    )


def velocity_rms_mm_s(
    x: np.ndarray, fs: float, units: str = "g", band: tuple[float, float] = (10.0, 1000.0)
) -> float:
    """Velocity RMS (mm/s) over ``band`` from an acceleration window (``units``: g or m/s2)."""
    a = (np.asarray(x, dtype=np.float64) - np.mean(x)) * (G if units == "g" else 1.0)
    n = len(a)
    spec = np.fft.rfft(a)
    f = np.fft.rfftfreq(n, 1 / fs)
    sel = (f >= band[0]) & (f <= band[1])
    v = np.zeros_like(spec)
    v[sel] = spec[sel] / (2j * np.pi * f[sel])
    # Parseval for rfft: one-sided energy, doubled except DC / Nyquist
    energy = 2 * np.sum(np.abs(v[1:]) ** 2) / n**2
    return float(np.sqrt(energy) * 1000.0)


def iso_zone(v_mm_s: float, machine_class: str = "group2_rigid") -> str:
    ab, bc, cd = ISO_CLASSES[machine_class]
    return "A" if v_mm_s < ab else "B" if v_mm_s < bc else "C" if v_mm_s < cd else "D"


def _analytic_envelope(x: np.ndarray, fs: float, lo: float, hi: float) -> np.ndarray:
    n = len(x)
    spec = np.fft.fft(x - x.mean())
    f = np.fft.fftfreq(n, 1 / fs)
    h = np.zeros(n)
    h[(f >= lo) & (f <= hi)] = 2.0  # band-pass and analytic signal in one step
    env = np.abs(np.fft.ifft(spec * h))
    return env


def _envelope_prominence(x: np.ndarray, fs: float, freqs: dict[str, float], f_r: float) -> dict[str, float]:
    """Per defect frequency: the highest (over a few demodulation bands) mean log-prominence of its
    first three harmonics in the envelope spectrum above that spectrum's median floor."""
    nyq = fs / 2
    bands = [
        (0.1 * nyq, 0.95 * nyq),
        (0.1 * nyq, 0.3 * nyq),
        (0.25 * nyq, 0.55 * nyq),
        (0.5 * nyq, 0.95 * nyq),
    ]
    best = {k: -np.inf for k in freqs}
    for lo, hi in bands:
        env = _analytic_envelope(x, fs, lo, hi)
        mag, nfft = _spectrum(env, pad=4)
        df = fs / nfft
        top = min(len(mag) - 1, int(max(12 * f_r, 6 * max(freqs.values()), 200.0) / df))
        floor = float(np.median(mag[max(1, int(2.0 / df)) : top])) + 1e-12
        tol = max(1.5 * fs / len(x), 0.0) / 2 + 0.01 * f_r
        for name, fd in freqs.items():
            vals = []
            for h in (1, 2, 3):
                p = _peak(mag, nfft, fs, h * fd, tol + 0.01 * h * fd)
                if name == "bpfi":  # inner race: modulated by the shaft, sidebands at +-1x
                    p = max(
                        p,
                        0.7
                        * max(
                            _peak(mag, nfft, fs, h * fd - f_r, tol), _peak(mag, nfft, fs, h * fd + f_r, tol)
                        ),
                    )
                vals.append(np.log(p / floor + 1e-3))
            best[name] = max(best[name], float(np.mean(vals)))
    return best


def _log_at(mx: np.ndarray, df: float, floor: float, f: np.ndarray) -> np.ndarray:
    return np.log(mx[np.clip(np.round(f / df).astype(int), 0, len(mx) - 1)] / floor + 1e-3)


def _envelope_blind(x: np.ndarray, fs: float, f_r: float) -> dict[str, float]:
    """No bearing geometry: the strongest envelope line at a non-integer order in 2x-11x (a race
    defect) and its +-1x sidebands (an inner race turns with the shaft, so its impacts are modulated).
    ``bpfo`` = the line's prominence over its sidebands (a clean line: outer race), ``bpfi`` = the
    sidebands' prominence; ``bsf``/``ftf`` are not observable without geometry (0)."""
    nyq = fs / 2
    bands = [
        (0.1 * nyq, 0.95 * nyq),
        (0.1 * nyq, 0.3 * nyq),
        (0.25 * nyq, 0.55 * nyq),
        (0.5 * nyq, 0.95 * nyq),
    ]
    orders = np.arange(2.0, 11.0, 0.02)
    orders = orders[np.abs(orders - np.round(orders)) > 0.06]
    best = (-np.inf, 0.0, 0.0)
    for lo, hi in bands:
        env = _analytic_envelope(x, fs, lo, hi)
        mag, nfft = _spectrum(env, pad=4)
        df = fs / nfft
        top = min(len(mag) - 1, int(max(25 * f_r, 200.0) / df))
        floor = float(np.median(mag[max(1, int(2.0 / df)) : top])) + 1e-12
        w = max(1, int(round((0.75 * fs / len(x) + 0.01 * f_r) / df)))
        mx = np.max([np.roll(mag, k) for k in range(-w, w + 1)], axis=0)  # peak within +-w bins
        line = (_log_at(mx, df, floor, orders * f_r) + _log_at(mx, df, floor, 2 * orders * f_r)) / 2
        k = int(np.argmax(line))
        if line[k] > best[0]:
            sb = float(_log_at(mx, df, floor, np.array([orders[k] - 1, orders[k] + 1]) * f_r).max())
            best = (float(line[k]), sb, float(orders[k]))
    return {"bpfo": best[0] - max(best[1], 0.0), "bpfi": best[1], "bsf": 0.0, "ftf": 0.0}


# No sensor reads more, in any unit (a shock accelerometer's 1e5 g, a 32-bit ADC's 2e9 counts): a window beyond it
# is a corrupt payload or a wrong data type, and its fourth powers (the kurtosis) overflowed the float (OverflowError
# out of the baseline from 1e77 on, a counted baseline error, each such window); the sensor check refuses it
WINDOW_MAX_ABS = 1e15


def condition_features(
    x: np.ndarray,
    fs: float,
    speed_hz: float | None = None,
    bearing: Bearing | None = None,
    units: str = "g",
    speed_range_hz: tuple[float, float] = (5.0, 100.0),
) -> dict[str, float]:
    """One window -> {feature: value} for ``FEATURES`` plus ``speed_hz`` (given or estimated),
    ``speed_estimated`` (1.0/0.0) and ``velocity_mm_s`` (linear, for the ISO zone)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 64 or not np.all(np.isfinite(x)):
        raise ValueError("a condition window needs at least 64 finite samples")
    if float(np.abs(x).max()) > WINDOW_MAX_ABS:
        raise ValueError(
            f"a condition window's samples are within +-{WINDOW_MAX_ABS:g} (no sensor reads more)"
        )
    c = x - x.mean()
    estimated = speed_hz is None or not speed_hz > 0
    f_r = (
        float(speed_hz)
        if speed_hz is not None and not estimated
        else estimate_speed_hz(c, fs, *speed_range_hz)
    )
    var = float(np.mean(c * c)) + 1e-18
    rms = math.sqrt(var)
    mag, nfft = _spectrum(c)
    res = fs / len(c)
    tol = max(res, 0.03 * f_r)
    orders = [_peak(mag, nfft, fs, k * f_r, tol) for k in range(1, 9)]
    spec = np.abs(np.fft.rfft(c)) ** 2
    f = np.fft.rfftfreq(len(c), 1 / fs)
    hf = float(np.sqrt(2 * spec[f >= min(1000.0, 0.2 * fs)].sum()) / len(c))
    v = velocity_rms_mm_s(c, fs, units)
    if bearing is None:
        env = _envelope_blind(c, fs, f_r)
    else:
        env = _envelope_prominence(c, fs, {k: o * f_r for k, o in bearing.orders().items()}, f_r)
    eps = 1e-9
    return {
        "rms": math.log(rms + eps),
        "kurtosis": float(np.mean(c**4) / var**2),
        "crest": float(np.max(np.abs(c)) / rms),
        "hf_rms": math.log(hf + eps),
        "velocity_rms": math.log(v + 1e-6),
        "order_1x": math.log(orders[0] + eps),
        "order_2x": math.log(orders[1] + eps),
        "order_3x": math.log(orders[2] + eps),
        "orders_4_8": math.log(math.sqrt(sum(o * o for o in orders[3:])) + eps),
        "env_bpfo": env["bpfo"],
        "env_bpfi": env["bpfi"],
        "env_bsf": env["bsf"],
        "env_ftf": env["ftf"],
        "speed_hz": f_r,
        "speed_estimated": 1.0 if estimated else 0.0,
        "velocity_mm_s": v,
    }


def relative_to_rms(feats: dict[str, float]) -> dict[str, float]:
    """The amplitude features (logs) as log ratios to the window's RMS: a sensor's gain, its mounting
    and the machine's overall level cancel; ``rms`` itself and the shape features are unchanged."""
    return {k: (v - feats["rms"] if k in AMPLITUDE_FEATURES else v) for k, v in feats.items()}


def feature_vector(feats: dict[str, float]) -> np.ndarray:
    return np.asarray([feats[k] for k in FEATURES], dtype=np.float64)
