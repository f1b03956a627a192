"""A per-asset baseline learned at the edge during commissioning, then scoring against it.

Lifecycle (one JSON file per pipeline, ``<data_dir>/baseline/<pipeline>.json``, written atomically:
temporary file, fsync, rename; so a kill -9 leaves the previous version whole):

    learning --(``windows`` learned or ``duration_s`` passed)--> ready --(relearn)--> learning
       ^ feature set changed (other sample rate, window length, bearing, features): discarded, event

While learning, each window's condition features (``model_packager.condition``) are kept (progress is
saved every few windows, so a restart resumes). When done: per speed band (``speed_band_pct`` wide)
and per feature, a median and a robust scale (MAD); the score of a window is the largest one-sided
z (rises only) over the features of its speed band; the threshold is set on out-of-fold scores of the
learned windows (blocked cross-validation) at the stated false-alarm rate after ``confirm_windows``
consecutive windows. A window is diagnosed (model-free) by the fault family whose features rose most
(``condition.FAULT_FEATURES``). Relearn: ``edge-agent baseline relearn PIPELINE`` leaves a request
file beside the baseline, which the pipeline picks up at its next window (or at start).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.files import atomic_write_json, read_json_state, why_unread
from edge_agent.maintenance.sensor import SETTLE_MIN_TURNS, slide_ratio
from edge_agent.maintenance.sensor import check as sensor_check
from edge_agent.maintenance.settings import BaselineSettings
from model_packager.condition import (
    AMPLITUDE_FEATURES,
    FAULT_FEATURES,
    FEATURES,
    Bearing,
    acceleration_g,
    condition_features,
    estimate_speed_hz,
    feature_vector,
    iso_zone,
)
from model_packager.health import (
    common_rise,
    confirmed_quantile,
    growth,
    out_of_fold_threshold,
    rise,
    rise_z,
    robust_stats,
    scoring_scale,
)
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)

# 2: learned and thresholded with relative scoring (``health.rise_z``); a format-1 file (learned
# before) loads and is scored as it was learned and thresholded, on absolute levels
FORMAT = 2
FORMATS = (1, 2)
CONDITION_VERSION = "condition-1"
SAVE_EVERY = 10  # windows between progress saves while learning
MIN_BAND_WINDOWS = 20
SPEED_WINDOWS = 20  # windows whose averaged spectrum gives the asset's speed (no speed tag)
# the tracked speed follows a window's estimate only when the last SPEED_AGREE_WINDOWS estimates agree
# within SPEED_AGREE (a turning shaft's line moves little between windows; an estimate made of noise
# lands anywhere in the searched range)
SPEED_AGREE_WINDOWS = 5
SPEED_AGREE = 0.02
# a window is judged at one operating point (ISO 13373 / 20816 practice: a steady speed). A speed that
# changed more than this share across the window (the speed tag at this and the previous window, their
# change scaled to the window's length) smears every order line and
# envelope line over the spectrum, and the window read as a fault on a healthy machine (a gearbox ramping
# 5-8 % in a window: 35 of 85 such windows NG, bearing lines). Such a window is neither learned nor
# judged: UNSURE ("the speed changed ..."), counted towards no alarm
SPEED_STEADY = 0.02
# where one window does not resolve the shaft (MIN_SHAFT_BINS), a window's own estimate is used only
# within this of the tracked speed; beyond it the estimate was noise (a slow fan: anywhere in the
# +-15 % searched, 0.53-1.25x the true speed), and the window is taken at the tracked speed instead (at
# its own, a quarter to half of a healthy slow fan's windows fell in a speed band never commissioned:
# UNSURE, not judged). A resolved shaft's window keeps its own estimate (a restart at another speed is
# found at once)
WINDOW_AGREE = 0.04
# a window whose level slides this far (``sensor.slide_ratio``: healthy and faulty windows of four generators at
# most 1.74, bench/_bearing_signals.py's up to 4.9) is left out of the averaged spectrum the speed is found from (``_learn_speed``): a sensor settling
# after its power-up (7.1 down to 3.9 over its first second on the simulator) pulled it to the range's low end
SPEED_SLIDE_RATIO = 2.0
SPEED_MIN_STEADY = 5  # ... unless fewer first windows than this are left
# a shaft whose 1x lies below this many bins of the window's resolution (sample rate / window: 4.9 Hz
# for 2,048 samples at 10 kHz, so 880 rpm) may not be resolved by one window: its 1x-3x lines merge
MIN_SHAFT_BINS = 3.0
# the speed's confidence, found while commissioning (no speed tag): the share of the first windows whose
# own estimate (searched +-15 % around the averaged one) lands within WINDOW_AGREE of it. An unresolved
# shaft's land anywhere (slow fans: 0.1-0.35); a resolved one's agree (0.5-1.0: an 857-rpm machine 0.5,
# gearboxes and fans above 1,000 rpm 0.6-1.0). Below MIN_CONFIDENCE with the shaft under MIN_SHAFT_BINS,
# or under LOST_SHAFT_BINS whatever it is (the 1x inside the window's lobe around 0 Hz), the speed is
# noise: the asset is judged on the features that need none (RMS, kurtosis, crest, high band,
# velocity), its orders and envelope lines not used
MIN_CONFIDENCE = 0.4
LOST_SHAFT_BINS = 2.0
# a window over the threshold whose impulsiveness sits in one place of it is a lone impulse: a knock from outside
# the machine (a press or a hammer next door, through the floor), not a fault. A fault at the shaft's orders (a
# race's, a ball's impacts at BPFO/BPFI/BSF x the shaft, a looseness's at 1x and its harmonics, an imbalance's and
# a misalignment's lines) repeats at least once a turn, so in a window of IMPULSE_TURNS turns or more it is spread
# over the window. The window is cut into IMPULSE_SEGMENTS pieces; a lone impulse holds IMPULSE_SHARE or more of the
# window's excess fourth moment (over its pieces' median) in one run of loud pieces (each a tenth of the loudest's
# excess or more) no longer than half the window. Such a window is UNSURE (external_impulse), counted, and neither
# counts towards an alarm nor ends a run of windows towards one: with windows 8-12 s apart a press knocking every
# 3 s put a knock in 6-9 % of them, pairs in a row by chance, and 90-477 alarm episodes a day on healthy machines.
# A knock is a lone event: where IMPULSE_REPEATS or more of the last IMPULSE_HISTORY windows judged were told as
# knocks, they keep coming, and the window is judged as any other (counted towards an alarm). A steady line was
# told as a lone impulse on half the windows or more (a 1x near 50 Hz beating with a 50-Hz pickup; a plain 1x near
# the pieces' rate, 16 fs / n), so a fault there whose every window was over the threshold never alarmed. The cost:
# knocks from outside in 6 windows of 8 or more (a press locked to the window period) alarm after about 7 windows;
# at 9 % of windows knocked at random, a knock is counted on 1 window in 100,000 and an alarm (confirm_windows 2,
# windows 10 s apart) comes about once in 4 months (simulated, 3 million windows); at 20 %, about once a day
IMPULSE_HISTORY = 8
IMPULSE_REPEATS = 6
IMPULSE_SEGMENTS = 16
IMPULSE_SHARE = 0.8
IMPULSE_TURNS = 2.0
# the features that need the shaft speed (amplitudes at its orders, envelope lines at defect orders)
SPEED_FEATURES = tuple(k for k in FEATURES if k.startswith(("order", "env_")))
_FEATURE_INDEX = {k: i for i, k in enumerate(FEATURES)}
_RMS = _FEATURE_INDEX["rms"]
# a misalignment's rises whose orders 4-8 lead its 2x and 3x by this many deviations are a looseness's (diagnose).
# Measured on two generators other than simulators/vibration.py (bench/_bearing_signals.py machines with a
# looseness of 1x-10x and half orders, clipped; the 2026-12-05 probe generator's four machine kinds): looseness
# windows named so 77 % and 75 % (all were 'misalignment' before, some 'bearing_inner'), misalignment and
# imbalance windows named looseness 0 of 331 and 0 of 400; a lead of 3 took 8 misalignment windows
LOOSENESS_LEAD = 4.0
# the features a sensor's gain moves (logs of amplitudes); the others (kurtosis, crest, envelope
# prominences) are ratios it leaves alone
_AMPLITUDE_INDEX = np.asarray([_FEATURE_INDEX[k] for k in ("rms", *AMPLITUDE_FEATURES)])
# the amplitudes without the orders (a baseline that does not use them holds them at 0: left in, their
# tiny spread outweighed the rest in the common factor and no gain change or low level was seen)
_FREE_AMPLITUDE_INDEX = np.asarray(
    [_FEATURE_INDEX[k] for k in ("rms", *AMPLITUDE_FEATURES) if k not in SPEED_FEATURES]
)
SCALE_MIN = 3.0  # a common factor of every amplitude this large (or 1/this) is a scale, not a machine
# ... and a gain scales the spectrum's noise floor (``spectral_floor``) by the same factor, where a fault adds energy
# at the machine's lines and their harmonics and leaves the floor where it was. A common factor the floor did not
# follow at least FLOOR_FOLLOW of the way (in logs, from its speed band's commissioned median) is the machine's,
# judged: a misalignment, a looseness, an imbalance grown until every amplitude rose 3x or more read as 'scale'
# and went UNSURE, the sicker the machine the less it alarmed (bench/_unseen_machines.py's compressor: its
# misalignment UNSURE in 4-5 of 6 windows at severity 1-2). Measured on three generators (docs/maintenance.md)
FLOOR_FOLLOW = 0.5
# Only a RISE is vetoed so: an analog gain change before the ADC (a sensor that lost or gained sensitivity, an
# amplifier's range) moves the lines but not the floor where the DAQ's own noise or quantisation sets it, so a
# fall the floor did not follow is still 'scale' (it was read OK, as a quieter healthy machine). A rise on a floor
# within QUANT_STEPS of the window's quantisation floor (the floor a step of the ADC alone gives) is left 'scale'
# too: that floor cannot follow an analog gain. A rise over a floor of the DAQ's analog noise is not told apart.
QUANT_STEPS = 3.0
# An amplitude whose commissioned level, or the window's, lies within QUANT_STEPS of the level the ADC's step
# alone gives it (``quantisation_levels``: a band above the machine's content, the high band of a quiet machine
# on a 12-bit DAQ) holds no machine to scale: an analog gain of k moves it anywhere between 1 and k (the floor
# stays where the ADC puts it, the machine's part under it moves by k), and a units error by k exactly. So it is
# left out of the common factor, and the shape check asks of it only that it moved between 1 and the common
# factor; a fault's energy added there (more than the factor) still changes the shape. Weighed in by its tiny
# spread (the ADC's noise is steady), such a band pulled the factor of a x10 gain to x5.9 and vetoed it as a
# change of shape: the healthy machine read NG (imbalance, misalignment) in 8 of 8 windows. Used only when
# QUANT_CLEAR amplitudes or more stand clear of the floor (a stop or a dead sensor puts them all on it)
QUANT_CLEAR = 2
# white quantisation-noise windows whose features give an amplitude's level on the floor (their mean)
QUANT_NOISE_SEEDS = 4
# A rise of the amplitudes clear of the ADC's floor, found with those on it left out (``QUANT_STEPS``), is a
# sensor's gain only if one of those on it rose too: by QUANT_ROSE of its commissioned spreads or more and by
# QUANT_FOLLOW of the common factor (logs) or more. A gain lifts the machine's part under the floor with the rest;
# a fault that lifts every machine line alike leaves that band about where the ADC holds it. Measured (12-bit
# +-5 V at 100 mV/g, the DAQ's own noise 0.3 of a code, the high band on the floor; 3 machines x 8 windows): a gain
# x2 / x3 / x5 / x10 moved the high band 2.3-4.7 / 7.2-9.5 / 14.7-17.8 / 28-31 spreads, 0.15-0.35 / 0.28-0.38 /
# 0.42-0.53 / 0.53-0.66 of the factor; every line x3-x8 -0.9-12.6 spreads (a quantised line's distortion lands
# there) but at most 0.30 of it. Without it a fault growing x3-x6 on every line read 'scale' (UNSURE, its alarm
# and ISO zone alarm muted). A rise no band on the floor followed so is weighed as before the floor was left out
# (every band in the factor and in the shape check): a gain the floor hides more of (x3 on that DAQ; 10-bit:
# 0.05-0.18) reads as it did then, and so does an 8-bit pump's whose floor bands weighed little
QUANT_ROSE = 3.0
QUANT_FOLLOW = 0.4
LOW_LEVEL = 10.0  # amplitudes this many times below the commissioned ones: no running machine to judge
# A stop without a speed tag, told from the signal: besides the common fall of ``LOW_LEVEL``, each of
# the broadband levels (RMS, high band, velocity) fell at least STOP_BAND_FALL times (a stopped machine's
# level falls to the noise floor across the bands together) and the spectrum lost its commissioned
# shape (a sensor's gain or units scale every level and keep the shape: ``low_level`` as before)
STOP_BAND_FALL = 3.0
# ... the shape: a window whose every feature is within this many deviations of the commissioned ones once
# the common factor is taken off kept the shape (healthy windows so scaled: 1.5-5; a stop's: 8-11)
SHAPE_KEPT = 6.0
# with a temperature tag: a stop cools the machine. A spell of low windows whose temperature, after
# TEMP_GRACE_S, has not fallen TEMP_FALL (degrees Celsius, or Kelvin; times DEGREES_F in Fahrenheit's, over
# temperature_scale in the tag's counts: read in them, a Fahrenheit tag's 5 were 2.8 C, a PLC INT's in tenths
# 0.5 C) from its highest in the spell, and either
# rose TEMP_FALL (the machine heats: it runs) or stays within TEMP_COLD of the commissioned running
# temperature, is a dead or detached sensor on a running machine; one TEMP_COLD or more below it and
# steady is a machine at rest (the agent started during a long stop)
TEMP_FALL = 1.0
TEMP_COLD = 5.0
TEMP_GRACE_S = 600.0
DEGREES_F = 1.8  # Fahrenheit's degrees in one of Celsius'
# a stop told from the vibration alone (no temperature tag) held this long is said once (a warning): a
# sensor cut or fallen off reads the plant's floor like a stopped machine, and would be held for good
STOP_SAY_S = 24 * 3600.0
# a level this many times below the sensor's floor at the machine's recognised stops: no live sensor
FLOOR_FALL = 10.0
# a window whose spread (standard deviation) is within this many quantisation steps: a dead input
# flickering over a few codes (its bias and the ADC's noise), not a sensor reading a stopped machine
DEAD_STEPS = 2.0
# The spectrum's floor octave by octave (``octave_floors``: bands at 1/64-1/32-...-1/4-0.4 of the sample rate):
# a velocity signal (mm/s) read as acceleration, or the other way, tilts it by f^-1 (f^+1) against the commissioned
# one, a factor 2 an octave (log 0.69), on every octave alike, where a fault adds lines (a few bins of an octave's
# median) or lifts the structure's resonances (one or two octaves). A window whose floor fell from each octave to
# the next by TILT_FALL (log, min-max) against the commissioned: a velocity signal read as acceleration (it read NG,
# imbalance or unspecified, on 18-19 of 20 windows of independently generated healthy motors and pumps). A rise by
# as much (acceleration given to a velocity sensor's pipeline: NG on 112 of 120 windows) is what a race defect grown
# to failure does to a velocity sensor's floor too (steps of 0.3-0.7 an octave, from the lowest octave up: 140 of
# 1,200 bearing-fault windows of 40 machines), so a rise is the units' only where the shaft's 1x (a line no
# bearing fault lowers) fell by TILT_1X_FALL or more and by as much as the tilt, carried from the lowest octave down
# to the 1x, says (within TILT_1X_MATCH, logs): an acceleration in m/s2 read as mm/s reads a line at f 2*pi*f/1000
# times (a 25-Hz 1x 0.16x, the floor at 220 Hz 1.4x). None of those 1,200 windows did; 94 of 120 m/s2 and 100 of
# 120 g windows did (a g signal mostly reads low_level before). Not an accelerometer in mV (100 mV/g) read as mm/s:
# its 1x rises (0.064 f), and so it is judged as before.
TILT_FALL = (0.3, 1.1)
TILT_1X_FALL = 2.5
TILT_1X_MATCH = 0.7
# A fall (a velocity signal read as acceleration) is the units' only where the shaft's 1x moved with it, as the
# unit's 1/f from the lowest octave's middle down to the 1x says (within TILT_1X_FALL_MATCH, logs; where the speed is
# known): mm/s read as g reads a 25-Hz 1x 60 times, the floor at 220 Hz 7 times. A broadband fault over a floor alike
# in velocity (the usual acceleration floor, rising with f below the structure's resonance: rub, cavitation, a
# bearing's random impacting) tilts the floor as much and leaves the 1x: it read 'scale' on every window of an
# independent generator that read NG before (0.05 g broadband at 1,480-2,970 rpm), the fault never alarmed. The
# sweep's generator's velocity signals read as g or m/s2: 338 of 360 windows still 'scale' (340 without the check)
TILT_1X_FALL_MATCH = 1.0
_OCTAVE_EDGES = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 0.4)  # of the sample rate
# Mains pickup (a cable along a motor's leads, a screen grounded at both ends): lines exactly at the grid frequency
# and its odd harmonics, where the shaft's orders are elsewhere. From one window it read as the machine (NG
# misalignment, imbalance, looseness, ISO zone D on 210 of 240 windows of 12 machines of an outside generator). A
# window over the threshold (or counting towards an ISO zone alarm) is judged again with those lines taken out (least
# squares at MAINS_HZ x MAINS_HARMONICS); if it is then under, the pickup explains the rise: UNSURE, sensor fault
# mains_pickup, naming the frequency. A fault that stands without the lines stays over the threshold and is judged
# as it is. Only where the shaft's speed is known (a speed tag, or the commissioned one) and never across a shaft's
# line: where one of its orders (_SHAFT_ORDERS) lies within MAINS_CLEAR of the window's resolution (sample rate /
# samples) of a grid line, the line is taken out only if the spectrum's peak there is at the grid's frequency
# (within MAINS_NARROW Hz) and the order MAINS_APART Hz or more from it, and then fitted together with a line at the
# order, which is left in. A shaft's order (0.5x-10x) within a bin of the grid's own frequency (a 2-pole motor's 1x,
# a 4-pole motor's 2x near synchronous speed), or a line whose peak is the shaft's, is one line with the grid's in a
# 0.2-s window: judged as it is (a real imbalance or misalignment is never taken for the pickup, however far off the
# speed tag is; a pickup there still reads as the machine). Where the fundamental is not taken out, the window is
# judged as it is.
MAINS_HZ = (50.0, 60.0)
MAINS_HARMONICS = (1, 3, 5, 7)
MAINS_CLEAR = 1.0
MAINS_NARROW = 0.2
MAINS_APART = 0.5
# ... and only if the lines explain most of the rise: without them the score is at most this share of the window's
# (a window just over the threshold, a fault beginning, fell under it with any content taken out: an imbalance run
# of a pump lost its first NG windows)
MAINS_EXPLAINS = 0.5
# A grid line that is one with a shaft's order (the rule above: the order within MAINS_APART of it, or the peak there
# the shaft's) is the machine's as well as the grid's on any order, the 3x and higher too: left in, and where it is the
# grid's own frequency the window is judged as it is. Taking such lines out with the pickup's others (where
# another of its lines stood clear) hid real faults three ways: a 12-vane fan's blade pass on 150 Hz at 750 rpm made a
# 4x fault with no pickup read mains_pickup 12 of 12; a 3x grown under a pickup at 980-1,005 rpm, 5-30 of 30; a
# gearbox pump's vane pass on 50 Hz under a pickup, 3 of 3, all NG with alarms alone. A line stands MAINS_STANDS
# times or more over the median within MAINS_AROUND bins about it (``_stands``)
MAINS_STANDS = 10.0
MAINS_AROUND = 10
# A pickup is told only where the grid's own frequency stands in the window (``_stands``, its peak within MAINS_DRIFT
# of it: a grid runs within 1 %): with no line at 50/60 Hz at all, a machine's line that is not a whole order below the
# 10x (a bearing tone, a vane pass through a gearbox, a 12-vane fan's blade pass) grown on 150/180/250/300/350 Hz was
# fitted out as the pickup's harmonic and the fault read mains_pickup, no alarm, with no pickup anywhere
MAINS_DRIFT = 0.5
# ... and never on a grid line the machine showed at commissioning (standing within MAINS_DRIFT in MAINS_SEEN of the
# learned windows or more: ``mains_seen``): a belt-driven fan whose 1x sits on 50 Hz, its imbalance grown 10-20x with
# no pickup anywhere, read mains_pickup 12 of 12 windows, no alarm, 'not the machine'. Such a line is left in; where
# it is the grid's own frequency no pickup is told on that grid (its window judged as it is)
MAINS_SEEN = 0.5
# (a line standing this many times over its neighbourhood's median: a fan's 1x of 0.01 g on 50 Hz beside the tests'
# rotor stood 3.5-10 times in a window, no line there 0.1-2.6 times)
MAINS_SEEN_STANDS = 4.0
# (the learned windows' spectra padded to 1/8 of a bin: 0.6 Hz at 10 kHz x 2,048, enough for MAINS_DRIFT)
MAINS_SEEN_PAD = 8
# the grid's frequencies tried within MAINS_DRIFT of 50/60 Hz for the pickup's fit are this many bins apart, and this
# many Hz at most (``_grid_frequency``)
MAINS_FIT_STEP = 0.25
# ... and a shaft's order is one with the grid's own frequency (never told from it, the rule above) within a bin of it
# or within MAINS_DRIFT and this share of the order's frequency (the speed tag's error), whichever is wider: the grid's
# frequency is fitted on the line standing within MAINS_DRIFT of it (``_stands``), the machine's where no pickup is
# there. Within a bin only, at a fine resolution (3.2-s windows, 0.31-Hz bins)
# a 2-pole motor's imbalance at 2,990 rpm (49.83 Hz), the tag at 2,960 (49.33 Hz, two bins off), was fitted as the
# grid's line and taken out with its harmonics, the shaft's 3x, 5x and 7x: mains_pickup, no alarm
MAINS_TAG_OFF = 0.02
# A machine's line that is no whole order of the shaft the speed is given for (a belt-driven fan's 1x and blade pass,
# a gear's mesh, a bearing's tone) crosses 50/60 Hz and their harmonics as a drive's speed changes: at a speed where
# it sat on the grid's frequency it was taken for the pickup, and grown (an imbalance of the fan x3-x6 at 1,350 rpm,
# its 1x on 50 Hz, no pickup anywhere) read UNSURE mains_pickup, no alarm, 12 of 12 windows. The baseline so records
# the lines its learned windows show under the grid's highest harmonic as orders of the shaft (``machine_orders``): a
# line standing MACHINE_LINE_STANDS times over the spectrum about it, at one order (within half a bin at each
# window's speed) in MACHINE_ORDER_SHARE of the learned windows where that order lies in the searched range,
# MACHINE_ORDER_MIN windows or more, moving with the speed by MAINS_STAYED_BINS bins or more across them (a line that
# stays put while the speed changes, the grid's, is at one order only at one speed). Such an order is the machine's
# line wherever the speed puts it, as the shaft's orders are (the MAINS_CLEAR rule). A fan's 1x at a tenth of its
# usual level at commissioning is still recorded; one absent then is not, and grown on a grid line it is taken for
# the pickup (one window cannot tell the two)
MACHINE_LINE_STANDS = 3.0
MACHINE_ORDER_SHARE = 0.3
MACHINE_ORDER_MIN = 3
# A grid line standing in learned windows whose speeds are this many bins apart at its frequency or more stayed put
# while the shaft's speed moved: no machine's line (a line of the machine moves with the speed), a cable's pickup the
# drive was commissioned with; not recorded in ``mains_seen`` (recorded, a pure 50 Hz pickup grown later read NG
# with alarms until relearned)
MAINS_STAYED_BINS = 2.0
# A pickup is told only once the grid's line has stood, at least half as strong, in a judged window at a speed that
# puts any line of the machine MAINS_STAYED_BINS bins from where it is now: a line of the machine moves with the speed,
# the grid's stays. One window cannot tell a pickup from a line the machine did not show at commissioning (a bearing's
# tone, a fan's 1x at 1/30 of its usual level) grown onto the grid's line, and such a fault read mains_pickup, no alarm.
# The evidence is kept in memory (MAINS_EVIDENCE windows a grid frequency) and forgotten at a window judged for a
# pickup whose grid line does not stand: after a restart, or on a machine at one fixed speed, a pickup is not told
# and reads NG with alarms, as a fault there would
MAINS_EVIDENCE = 256
# A window over the threshold whose level slides across it (a sensor's bias settling or drifting, a DC ramp: the
# slide ``slide_ratio`` at least SPEED_SLIDE_RATIO, under the sensor check's ``settling`` bound) and that, judged again
# with its least-squares line taken off, is under the threshold and MAINS_EXPLAINS of its score or less, is the
# sensor's ('settling', UNSURE), where the window holds ``sensor.SETTLE_MIN_TURNS`` shaft turns or more (a slow shaft's
# 1x looks like a trend). A ramp of 5-10x the window's spread read NG as a fault (imbalance, unspecified)
# A baseline commissioned across a speed range (a VFD's: the highest speed SPEED_FIT_SPAN times the lowest or more,
# the speed known) pools speeds whose levels differ (a fan's 1x at 3,000 rpm 10x the one at 900 rpm), so its spreads
# are wide, and a window at one end of the range stands far from the pooled median whatever the machine does: a
# looseness's orders (0.5x-10x) at 2,950 rpm lifted the amplitudes 3-6x over that median, the shape within those
# spreads, and read 'scale' (UNSURE, sensor, no alarm) on 4-5 of 5 windows. Each amplitude's level is so recorded as
# a line in the log of the speed (``speed_levels``: least squares over the commissioned windows, and the spread
# about it, each amplitude's weight), and a common factor is a gain only if the window's amplitudes moved from the
# levels its own speed gives by SPEED_FIT_FACTOR of SCALE_MIN or more (logs, the same way). Measured on an
# independent generator (a fan commissioned over 900-3,000 rpm, 3 seeds, 5 speeds, 4 windows each): gains x3,
# x9.81, 1/3 and 1/9.81 'scale' or 'low_level' as before (x3 and 1/3 by log 1.01-1.18 from those levels), looseness
# windows 'scale' 17 -> 1 of 240 (by 0.11-0.71), imbalance 1 -> 0 of 60, faults NG as before
# A units error or a gain at another load than the commissioned one: the load moves the machine's lines against
# each other (a gearbox at 0.7 load: its 1x-3x and mesh lines 1.3-2x off the common factor, tens of the commissioned
# spreads), so the shape check vetoed the factor and the window read NG (imbalance, unspecified: 48 of 180 windows of
# the outside sweep's m/s2-as-g and mV-as-g at loads 0.7/1.3). Such a window is still the sensor's ('scale') when the
# gain-invariant features (kurtosis, crest, envelope prominences) are as commissioned (within the threshold), no
# amplitude is more than LOAD_LINES (log) off the common factor, and the spectrum's floor (``octave_floors``) moved by
# that factor on every octave alike: each octave within LOAD_FLOOR_EVEN of their mean, the mean within
# LOAD_FLOOR_AGREE of the factor. A fault lifts the floor unevenly, or changes the kurtosis and envelope (a bearing
# fault's floor rising 2.3-7x on every octave within 0.5: its kurtosis 100-1,100 deviations off). Measured on the
# sweep's generator (12 machines, Baseline alone, loads 0.7/1.0/1.3): units windows NG 30 -> 1 of 288, fault windows
# (5 kinds x 3 severities, 2,160) and healthy ones (144) unchanged; through the agent's pipeline (4 machines, m/s2 or
# mV read as g or m/s2 at load 0.7): NG 45 -> 0 of 240, every fault run's first alarm and labels as before
LOAD_LINES = 0.8
LOAD_FLOOR_EVEN = 0.4
LOAD_FLOOR_AGREE = 0.3
SPEED_FIT_SPAN = 1.25
SPEED_FIT_FACTOR = 0.75
# Such a baseline judges every window against the levels its speed gives too (``level_rise``; ``level_threshold``:
# out-of-fold, each block of the commissioned windows scored against the line and spreads the others give): within the
# pooled spreads an imbalance x3 read OK at every speed of a fan's 900-3,000 rpm (its 1x 7 deviations off the line, a
# healthy window 1.6 at most), misalignment and looseness mid-range half the time. Those rises count over the larger of
# that threshold, the pooled one and LEVEL_MIN_RISE: one window a speed at commissioning does not show a line that
# beats with another near it (a fan's 2x at 2,950 rpm beside the motor's 100 Hz: 0.5-0.66 log about its level, 4.4
# deviations, on a healthy machine). With a speed tag, the windows of the range's bottom (a fan at 900-1,140 rpm: 1/10
# of the top's vibration or less) were left out as stops (``_stopped`` tells those by the tag), their speeds never
# judged (UNSURE 'not commissioned'); they are kept in the line, and judged by it alone (the pooled statistics, which
# the sensor's checks use, are learned without them as before). Asked again against the levels, a window the pooled
# check finds no gain in read 'scale' for a gain x3 mid-range, and for 17 looseness windows of 192 (rising-order
# commissioning, NG else): not done. Two generators (a fan, a VFD blower), 3 seeds, commissioned in random and in rising speed order: no fault window lost, no healthy window NG
# added (7 and 2 of 636, before and after), imbalance x3 NG 0 -> 16-48 of 48 windows (a generator, an order)
LEVEL_MIN_RISE = 5.0
# a speed band's own statistics judge speeds up to this factor beyond the band's (the relative scoring takes the level's
# change); further off, by the levels against the speed (``speed_levels``) or not at all: healthy fans, blowers and
# pumps commissioned mostly at one speed read NG from 1.7x that band's speed on, none within 1.6x
BAND_REACH = 1.5
# A file learned before ``bands_pooled`` holding one band: that band's statistics are its own (not pooled over every
# speed) where it holds fewer windows than were learned (``windows`` less the outliers) and its amplitudes' spread is
# under this many times the levels' spread about the speed line (pooled over speeds a band's spread carries the speed's
# change). Commissionings of 4 generators (a fan, a blower, a pump, a geared fan), 6 patterns: own bands 0.85-2.25,
# pooled 2.48-27; the count alone took 4 of 20 pooled for own (windows left out as stops)
OWN_SPREAD = 2.4
_SHAFT_ORDERS = tuple(0.5 * k for k in range(1, 21))  # 0.5x-10x: a looseness lifts half orders and harmonics
_UNIT_FACTORS = (  # factor (window / commissioned) -> the usual mix-up
    (9.80665, "m/s2 read as g?"),
    (1 / 9.80665, "g read as m/s2?"),
    (1000.0, "mg or mm/s2 read as g or m/s2?"),
    (1 / 1000.0, "g or m/s2 read as mg or mm/s2?"),
)


def baseline_path(data_dir: str | Path, pipeline: str) -> Path:
    return Path(data_dir) / "baseline" / f"{pipeline}.json"


def kept_path(path: Path) -> Path:
    """Beside a baseline file: the copy of its latest commissioned format-2 baseline. Releases that read
    format 1 only (2026-12-01 and earlier) take a format-2 file for unreadable and write a new learning
    over it (reason "unreadable file"); this copy, under a name they never read, lets the next start of
    a newer release restore what was commissioned (``_load``) after such a rollback."""
    return path.with_name(path.name + ".format2")


def relearn_path(data_dir: str | Path, pipeline: str) -> Path:
    return Path(data_dir) / "baseline" / f"{pipeline}.relearn"


def repaired_path(data_dir: str | Path, pipeline: str) -> Path:
    """A repair reported from the command line: remaining life starts a new run (the baseline stays)."""
    return Path(data_dir) / "baseline" / f"{pipeline}.repaired"


# a relearn or repair request: a reason and a state (the command line writes ~100 B)
REQUEST_MAX_BYTES = 64 * 1024
# what a baseline file (``<pipeline>.json``, its ``.format2`` copy, ``<pipeline>@<state>.json``, the index
# ``<pipeline>.states.json``) may hold, read at most. The largest one the agent writes is a baseline learning
# at the largest settings: ``windows`` 20,000 (a process state's baseline learns up to 20,000 whatever
# ``windows`` says), each window's 13 features, speed, temperature and spectral floor kept until the end, each
# number at most 24 characters of JSON: ~8.1 MB. A commissioned one holds at most 1,001 speed bands of 27 numbers
# (~0.7 MB), the index ~20 KB. Four times the largest: a file past it is none the agent wrote (a link to
# something else, a file grown by a tool), and read whole it could fill the gateway's memory
BASELINE_MAX_BYTES = 32 * 1024 * 1024


def read_baseline(path: Path) -> Any:
    """The JSON document of a baseline file, read bounded (``edge_agent.files.read_json_state``, at most
    ``BASELINE_MAX_BYTES``, a regular file only). The data folder is a disk anyone with the gateway's shell
    can edit: read whole, a named pipe there waited for ever (the pipeline's start, or ``edge-agent baseline
    status``, with it), a link to ``/dev/zero`` or a file of gigabytes filled the memory, and a deep nesting
    raised RecursionError out of the start. ``FileNotFoundError`` when there is none; another ``OSError`` or
    ``ValueError`` saying why it is not read (``why_unread``), as for a file that is not JSON."""
    return read_json_state(path, BASELINE_MAX_BYTES)


def _opt_float(v: Any) -> float | None:
    return None if v is None else _number(v)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):  # float() takes a string of a number only
        raise TypeError(f"{type(v).__name__}")
    return float(v)


def _threshold(v: Any) -> float | None:
    """A threshold: NaN, infinite or 0 judged no window (a fault read OK), a negative one every window NG."""
    t = _opt_float(v)
    if t is not None and not 0.0 < t < math.inf:
        raise ValueError(f"{t}")
    return t


def _finite(v: Any, size: int | None = None, positive: bool = False) -> np.ndarray:
    """Numbers of a learned statistic: a NaN median, spread or speed span judged no window again (a fault read OK,
    without a word), a spread of 0 every window NG (a learned spread is never under ``SCALE_FLOOR``'s share)."""
    a = np.asarray(_numbers(v, size))
    if not np.isfinite(a).all() or (positive and (a <= 0).any()):
        raise ValueError(f"{'not a positive number' if positive else 'not finite'}: {a.tolist()!r:.60}")
    return a


def _text(v: Any, allowed: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str) or (allowed is not None and v not in allowed):
        raise TypeError(f"{v!r:.40}")
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{type(v).__name__}, not true or false")
    return v


def _numbers(v: Any, size: int | None = None) -> list[float]:
    if not isinstance(v, list) or (size is not None and len(v) != size):
        raise TypeError(
            f"{type(v).__name__} of {len(v) if isinstance(v, list) else '-'}, not a list of {size or 'n'}"
        )
    return [_number(x) for x in v]


def _fields(d: dict) -> dict[str, Any]:
    """A baseline file's fields (``Baseline.to_dict``) as the baseline's attributes, each of its type, and
    ``learning_s`` (None: saved before it). ValueError naming the field when one is not of its type (a hand edit,
    another writer, a damaged disk): such a file is set aside as an unreadable one is, where a field of the wrong
    type raised TypeError out of the pipeline's start."""
    n = len(FEATURES)
    nf = len(d["features"]) if isinstance(d.get("features"), list) else None
    parse: dict[str, Callable[[Any], Any]] = {
        "state": lambda v: _text(v, ("learning", "ready")),
        "started_at": _number,
        "learning_s": _opt_float,
        "learned_at": _opt_float,
        "reason": _text,
        "threshold": _threshold,
        "speed_hz": _opt_float,
        "speed_spans_hz": lambda v: [tuple(_finite(r, 2).tolist()) for r in v] if v else None,
        "orders": bool,  # a file saved before it: orders used, as learned
        "temp_running": _opt_float,
        "stop_floor": _opt_float,
        "outliers": lambda v: int(_number(v)),
        "temps": _numbers,
        "floors": _numbers,
        "floor_bands": lambda v: {int(k): _number(x) for k, x in (v or {}).items()},
        "octaves": lambda v: [None if o is None else _numbers(o) for o in v or []],
        "floor_octaves": lambda v: _numbers(v) if v else None,
        "steps": lambda v: [None if x is None else _number(x) for x in v],
        "quant_step": _opt_float,
        "rows": lambda v: [_numbers(r) for r in v],
        "speeds": _numbers,
        "bands": lambda v: {
            int(k): (
                # of another length than the file's features: every window raised (another feature set: told after)
                _finite(b["median"], nf),
                _finite(b["scale"], nf, positive=True),
                int(_number(b["n"])),
            )
            for k, b in v.items()
        },
        "speed_levels": lambda v: (
            None
            if v is None
            else tuple(_finite(v[k], n, positive=k == "spread") for k in ("slope", "level", "spread"))
        ),
        "level_threshold": _threshold,
        "level_spans_hz": lambda v: [tuple(_finite(r, 2).tolist()) for r in v] if v else None,
        "bands_pooled": lambda v: None if v is None else _flag(v),
        "mains_lines": lambda v: [_numbers(r) for r in v],
        "mains_seen": lambda v: None if v is None else _numbers(v),
        "machine_lines": lambda v: [_numbers(r) for r in v],
        "machine_orders": lambda v: None if v is None else _finite(v, None, positive=True).tolist(),
    }
    defaults: dict[str, Any] = {"reason": "", "orders": True, "outliers": 0, "bands": {}}
    defaults |= {
        k: [] for k in ("temps", "floors", "steps", "rows", "speeds", "mains_lines", "machine_lines")
    }
    out: dict[str, Any] = {}
    for name, fn in parse.items():
        try:
            out[name] = fn(d.get(name, defaults.get(name)) if name != "state" else d[name])
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise ValueError(f"field {name!r} is not of its type ({exc})") from None
    out["speed_spans"] = out.pop("speed_spans_hz")
    out["level_spans"] = out.pop("level_spans_hz")
    if out["level_threshold"] is not None and out["speed_levels"] is None:
        raise ValueError("field 'level_threshold' is not of its type (no speed_levels to judge by)")
    return out


def read_request(path: Path) -> dict:
    """A relearn or repair request (``relearn_path``, ``repaired_path``) as the object it holds, ``{}`` when it
    holds none. Read bounded, from the data folder anyone with the gateway's shell can edit: a named pipe there
    waited for ever in the window's own thread, and a JSON list (``.get`` of it) or a deep nesting raised out of
    every window's processing, the request never removed."""
    from devices.base import valid_text

    try:
        d = read_json_state(path, REQUEST_MAX_BYTES)
    except (OSError, ValueError):
        return {}
    # its text (the reason) goes into an event, the outbox and the cloud: a "\ud800" a hand or a tool wrote is
    # U+FFFD there, as a device's text is (a lone surrogate is no character: strict JSON readers refuse it)
    return {k: valid_text(v) for k, v in d.items()} if isinstance(d, dict) else {}


def feature_set_id(
    settings: BaselineSettings, sample_rate_hz: float, window_samples: int, model_features: dict | None = None
) -> str:
    """What the learned statistics depend on: a different id discards them."""
    b = settings.bearing
    d = {
        "condition": CONDITION_VERSION,
        "features": FEATURES,
        "fs": float(sample_rate_hz),
        "n": int(window_samples),
        "bearing": b.model_dump() if b else None,
        "units": settings.units,
        "model": model_features or {},
    }
    return "sha256:" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def index_path(path: Path) -> Path:
    """Beside ``<pipeline>.json``: ``<pipeline>.states.json``, the index of the baselines per process state
    (``baseline.state_tag``, ``states.StateBaselines``)."""
    return path.with_name(f"{path.stem}.states.json")


def learned_under(settings: BaselineSettings, state: str | None = None) -> dict:
    """The settings a saved baseline was learned under, beyond its feature set (``feature_set_id``): the
    process state (``state_tag``, the state's name and range), the shaft speed's source and the speed bands
    its statistics are keyed by. Saved with each baseline; a file learned under others is not used
    (``Baseline._load``): its statistics describe other windows, or are keyed by other bands. A renamed
    speed tag is the same speed (only tag or estimated counts); a renamed state tag is another tag. The
    first state that holds wins: the ranges of states listed before this one that overlap it take those
    values first (a catch-all state last), so they are part of what it learned on; another order of states
    that do not overlap changes nothing."""
    rng: list | str | None = None
    first: list | None = None
    if state is not None:
        sts = list(settings.states or ())
        i = next((j for j, x in enumerate(sts) if x.name == state), None)
        rng = [sts[i].min, sts[i].max] if i is not None else "whole value"
        if i is not None:
            first = [[x.min, x.max] for x in sts[:i] if _overlap(x, sts[i])]
    return {
        "state_tag": settings.state_tag,
        "state": state,
        "state_range": rng,
        "state_taken_first_by": first,
        "speed": f"tag ({settings.speed_unit})" if settings.speed_tag else "estimated",
        "speed_band_pct": settings.speed_band_pct,
    }


def _overlap(a, b) -> bool:
    """Two process states' ranges (``[min, max)``, either end open) share a value."""
    lo = max(-math.inf if a.min is None else a.min, -math.inf if b.min is None else b.min)
    return lo < min(math.inf if a.max is None else a.max, math.inf if b.max is None else b.max)


def under_changes(saved: dict, now: dict) -> str:
    """The settings that differ between two ``learned_under`` records, one line (empty: none)."""
    if not isinstance(saved, dict):  # a damaged record (valid JSON, not an object): learned under unknown
        return f"learned_under unreadable (a {type(saved).__name__}, not a mapping)"
    return "; ".join(
        f"{k} {saved.get(k)!r} then, {now.get(k)!r} now" for k in now if k in saved and saved[k] != now[k]
    )


def _level_threshold(x: np.ndarray, log_speed: np.ndarray, far: float, confirm: int) -> float:
    """The threshold of rises against the levels a speed gives (``speed_levels``) from out-of-fold scores: the
    commissioned windows in ``k`` folds by turns of their speeds' order, each scored against the line and the spreads
    about it the others give. Not blocks in time as ``out_of_fold_threshold`` (the pooled threshold, which these rises
    must pass too, takes the drift): a drive commissioned in rising speed steps held out one end of its range, the line
    drawn on the other, and the threshold rose 40 % (an imbalance x3 read OK again)."""
    k = 5 if len(x) >= 50 else 2
    oof = np.empty(len(x))
    order = np.argsort(log_speed, kind="stable")
    for idx in (order[i::k] for i in range(k)):
        rest = np.ones(len(x), dtype=bool)  # (np.setdiff1d imports numpy.ma: 1.2 MB on a lean agent)
        rest[idx] = False
        slope, level = np.polyfit(log_speed[rest], x[rest], 1)
        spread = robust_stats(x[rest] - (np.outer(log_speed[rest], slope) + level))[1]
        at = np.outer(log_speed[idx], slope) + level
        oof[idx] = np.clip(level_rise(x[idx], at, spread, robust_stats(x[rest])[1]), 0, None).max(axis=1)
    return confirmed_quantile(oof, far, confirm)


# kurtosis, crest, envelope prominences (not np.setdiff1d: it imports numpy.ma, 1.2 MB, at the agent's start)
_RATIO_INDEX = np.asarray([i for i in range(len(FEATURES)) if i not in set(_AMPLITUDE_INDEX.tolist())])


def level_rise(x: np.ndarray, at: np.ndarray, spread: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Rows' rises (``rise_z``, relative) against the levels their speeds give (``speed_levels``), the RMS's too
    taken over the window's common level (against the tight spreads about those levels a sensor's gain x3 or a load
    25 % up lifted the RMS alone 7 deviations, an NG, where the pooled spreads held it), and the ratios (kurtosis,
    crest, envelope) in spreads no tighter than the ``pooled`` ones (a fan's kurtosis at the range's bottom, the load
    25 % down, stood 11 deviations off its line, 3 in the pooled spread)."""
    spread = spread.copy()
    spread[_RATIO_INDEX] = np.maximum(spread[_RATIO_INDEX], pooled[_RATIO_INDEX])
    z = rise_z(x, at, spread, True)
    d = np.atleast_2d(x) - at
    z[:, _RMS] = np.minimum(z[:, _RMS], (d[:, _RMS] - common_rise(d)) / scoring_scale(spread)[_RMS])
    return z


def _band(speed_hz: float, pct: float) -> int:
    return int(math.floor(math.log(max(speed_hz, 1e-3)) / math.log1p(pct / 100.0)))


_stats, _score = robust_stats, rise  # the names the bench and older callers use


def _speed_spans(speeds: np.ndarray, apart: float) -> list[tuple[float, float]]:
    """The commissioned speeds as ranges: sorted, a speed within ``apart`` times the one before joins its
    range (a machine commissioned at two program speeds has two; one drifting over its range, one)."""
    spans: list[tuple[float, float]] = []
    for s in np.sort(speeds):
        if spans and s <= spans[-1][1] * apart:
            spans[-1] = (spans[-1][0], float(s))
        else:
            spans.append((float(s), float(s)))
    return spans


def _settling_window(w: np.ndarray, turns: float) -> bool:
    """The sensor check names ``w`` a sensor settling, its shaft turning ``turns`` times in it."""
    found = sensor_check(w, shaft_turns=turns)
    return found is not None and found.kind == "settling"


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n)


def _dft_peak(xw: np.ndarray, t: np.ndarray, lo: float, step: float, count: int) -> float:
    """The largest |DFT| of ``xw`` (sampled at times ``t``, s) at ``count`` frequencies ``lo``, ``lo`` + ``step``, ...
    One frequency at a time, each the last turned by a step: a few arrays of the window's size (the frequencies x
    samples at once were ~100 MB for one window of 65,536 samples at 2,560 Hz, 0.01-Hz steps)."""
    y = xw * np.exp(-2j * np.pi * lo * t)
    turn = np.exp(-2j * np.pi * step * t)
    top = abs(complex(y.sum()))
    for _ in range(count - 1):
        y *= turn
        top = max(top, abs(complex(y.sum())))
    return top


def hann_spectrum(w: np.ndarray) -> np.ndarray | None:
    """The window's amplitude spectrum, its mean taken off and Hann-windowed (``spectral_floor``, ``octave_floors``
    and ``padded_spectrum`` read it: one transform where a window needs two); None for a window under 64 samples or
    not finite."""
    c = np.asarray(w, dtype=np.float64).ravel()
    if c.size < 64 or not np.isfinite(c).all():
        return None
    return np.abs(np.fft.rfft((c - c.mean()) * _hann(c.size)))


def spectral_floor(w: np.ndarray, mag: np.ndarray | None = None) -> float:
    """The log of the median of the window's amplitude spectrum (Hann-windowed, DC left out): the level of its
    broadband floor, which a line (a shaft order, a mesh, a harmonic) moves little as it holds a few bins of
    the window's hundreds. A sensor's gain or units scale it with everything else (``FLOOR_FOLLOW``). ``mag``: the
    window's ``hann_spectrum`` when made already."""
    mag = hann_spectrum(w) if mag is None else mag
    if mag is None:  # no window to take it from (features given): NaN, not used
        return math.nan
    return math.log(float(np.median(mag[1:])) + 1e-12)


def speed_tag_stopped(settings: BaselineSettings, scalars: dict[str, float] | None) -> bool:
    """The speed tag says the shaft is not turning: it reads 0, or below ``speed_range_rpm``."""
    v = (scalars or {}).get("_shaft_speed")
    if settings.speed_tag is None or v is None or not math.isfinite(v):
        return False
    rpm = v if settings.speed_unit == "rpm" else 60.0 * v
    return rpm < settings.speed_range_rpm[0]


def octave_floors(w: np.ndarray, mag: np.ndarray | None = None) -> list[float] | None:
    """The log of the median of the window's amplitude spectrum (Hann-windowed) in each of five octaves
    (``_OCTAVE_EDGES``, fractions of the sample rate: the same octaves at any rate); None for a window too
    short (under 512 samples) or not finite. See ``TILT_FALL``. ``mag``: its ``hann_spectrum`` if made."""
    size = np.asarray(w).size
    mag = hann_spectrum(w) if mag is None and size >= 512 else mag
    if size < 512 or mag is None:
        return None
    k = [round(e * size) for e in _OCTAVE_EDGES]
    return [math.log(float(np.median(mag[a:b])) + 1e-300) for a, b in zip(k[:-1], k[1:], strict=True)]


def line_peak(padded: tuple[np.ndarray, np.ndarray], hz: float, within: float) -> float:
    """The frequency (Hz) of the strongest line within ``within`` of ``hz`` in a window's ``padded_spectrum``."""
    f, mag = padded
    lo, hi = np.searchsorted(f, [hz - within, hz + within])
    return float(f[lo + int(np.argmax(mag[lo:hi]))]) if hi > lo else math.nan


def _stands(
    padded: tuple[np.ndarray, np.ndarray], hz: float, clear: float, narrow: float = MAINS_NARROW
) -> bool:
    """Whether a narrow line at ``hz`` (its peak within ``narrow``) stands MAINS_STANDS times or more over the median
    of the ``padded_spectrum`` within MAINS_AROUND bins (``clear``, a bin's width) of it."""
    f, mag = padded
    lo, hi = np.searchsorted(f, [hz - MAINS_AROUND * clear, hz + MAINS_AROUND * clear])
    at = line_peak(padded, hz, clear)
    if hi <= lo or not abs(at - hz) <= narrow:
        return False
    return float(mag[np.searchsorted(f, at)]) >= MAINS_STANDS * float(np.median(mag[lo:hi]))


def grid_lines(
    x: np.ndarray,
    fs: float,
    padded: tuple[np.ndarray, np.ndarray] | None = None,
    speed_hz: float | None = None,
) -> list[float]:
    """The grid's lines (``MAINS_HZ`` x ``MAINS_HARMONICS``) a learned window shows: its spectrum's peak within
    MAINS_DRIFT of one MAINS_SEEN_STANDS times the median within MAINS_AROUND bins about it or more (the machine's own
    line there, or a pickup it was commissioned with). With the shaft's speed (Hz) known, not where the strongest point
    within a bin lies more than MAINS_DRIFT off and on a shaft's order (``_SHAFT_ORDERS``, within a bin): that is the
    skirt of the shaft's line (a drive's 2x passing 4-5 Hz from 50 Hz at commissioning was recorded, and no pickup on
    it was ever told: NG with alarms every window), which the judging keeps apart from the grid's by its order."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 64 or not np.isfinite(x).all():
        return []
    f, mag = padded or padded_spectrum(x, fs, MAINS_SEEN_PAD)
    bin_hz = fs / x.size
    around = MAINS_AROUND * MAINS_CLEAR * bin_hz
    drift = MAINS_DRIFT + 0.5 * float(f[1] - f[0])  # (the peak's resolution in the padded spectrum)
    shaft = np.asarray(_SHAFT_ORDERS) * speed_hz if speed_hz and speed_hz > 0 else None
    out = []
    for h in sorted({k * m for m in MAINS_HZ for k in MAINS_HARMONICS if k * m < 0.4 * fs}):
        lo, a, b, hi = np.searchsorted(f, [h - around, h - MAINS_DRIFT, h + MAINS_DRIFT, h + around])
        if not (b > a and float(mag[a:b].max()) >= MAINS_SEEN_STANDS * float(np.median(mag[lo:hi]))):
            continue
        at = line_peak((f, mag), h, bin_hz)
        if shaft is not None and abs(at - h) > drift and bool((np.abs(shaft - at) <= bin_hz).any()):
            continue  # the shaft's line a bin or so off, its skirt over the grid's frequency
        out.append(h)
    return out


def _seen_spectrum(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray] | None:
    """A learned window's ``padded_spectrum`` (MAINS_SEEN_PAD) for ``grid_lines`` and ``window_lines``; None for no
    waveform (features given) or one not finite."""
    x = np.asarray(x, dtype=np.float64).ravel()
    return padded_spectrum(x, fs, MAINS_SEEN_PAD) if x.size >= 64 and np.isfinite(x).all() else None


def window_lines(
    x: np.ndarray, fs: float, padded: tuple[np.ndarray, np.ndarray] | None = None
) -> list[float]:
    """The lines (Hz) a learned window shows up to the grid's highest harmonic (``MAINS_HZ`` x ``MAINS_HARMONICS``)
    and MAINS_AROUND bins over it: local peaks of its ``padded_spectrum`` (MAINS_SEEN_PAD) standing
    MACHINE_LINE_STANDS times or more over the median within MAINS_AROUND bins about them (``machine_orders``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 64 or not np.isfinite(x).all():
        return []
    top = max((k * m for m in MAINS_HZ for k in MAINS_HARMONICS if k * m < 0.4 * fs), default=0.0)
    if not top:
        return []
    f, mag = padded or padded_spectrum(x, fs, MAINS_SEEN_PAD)
    bin_hz = fs / x.size
    hi = min(int(np.searchsorted(f, top + (MAINS_AROUND + 1) * bin_hz)), mag.size)
    # a peak: the largest within a bin either side (one line's main lobe is 2 bins wide with the Hann window)
    reach, around = MAINS_SEEN_PAD, MAINS_AROUND * MAINS_SEEN_PAD
    if hi <= 2 * reach + 1 or mag.size < 2 * around + 1:
        return []
    top_near = np.lib.stride_tricks.sliding_window_view(mag[:hi], 2 * reach + 1).max(axis=1)
    mid = mag[reach : hi - reach]
    peaks = np.flatnonzero((mid >= top_near) & (mid > 0)) + reach
    # the median about each bin's centre (every MAINS_SEEN_PAD-th point), the ends held
    step = mag[: hi + around : reach]
    k = 2 * MAINS_AROUND + 1
    if step.size < k:
        return []
    floor = np.median(np.lib.stride_tricks.sliding_window_view(step, k), axis=1)
    at = np.clip(np.round(peaks / reach).astype(int) - MAINS_AROUND, 0, floor.size - 1)
    keep = (f[peaks] >= 0.5 * bin_hz) & (mag[peaks] >= MACHINE_LINE_STANDS * floor[at])
    return [round(float(v), 3) for v in f[peaks[keep]]]


def machine_orders(lines: list[list[float]], speeds: list[float], bin_hz: float) -> list[float]:
    """The orders of the shaft (``MACHINE_LINE_STANDS``) at which the learned windows' ``window_lines`` stand in
    MACHINE_ORDER_SHARE of the windows where the order lies under their highest line searched, MACHINE_ORDER_MIN or
    more, and that moved with the speed by MAINS_STAYED_BINS bins or more across them (a line staying put, the
    grid's or its 100 Hz, is at one order only at one speed); none within half a bin of a shaft's order
    (``_SHAFT_ORDERS``), one per line. A line is at an order in a window where it lies within half a bin of the order
    times the window's speed."""
    top = max(k * m for m in MAINS_HZ for k in MAINS_HARMONICS) + MAINS_AROUND * bin_hz
    pairs = [
        (i, h, s)
        for i, (r, s) in enumerate(zip(lines, speeds, strict=True))
        if math.isfinite(s) and s > 0
        for h in r
        if h > 0.5 * bin_hz
    ]
    if not pairs:
        return []
    win, hz, at_speed = (np.asarray(c, dtype=np.float64) for c in zip(*pairs, strict=True))
    order = hz / at_speed
    sp = np.asarray([s for s in speeds if math.isfinite(s) and s > 0])
    step = 0.25 * bin_hz / float(sp.max())  # candidates a quarter of a bin apart at the fastest speed
    shaft = np.asarray(_SHAFT_ORDERS)
    # A line at an order lies within half a bin at the slowest speed of it: only the lines so near an order are
    # tried, and only the orders with as many such lines as the windows they must stand in. Every order tried
    # against every line cost (windows x lines)^2: 28 s at 2,000 windows of 30 lines, 5 min at 20,000
    by = np.argsort(order, kind="stable")
    sorted_order, sorted_sp = order[by], np.sort(sp)
    reach = 0.5 * bin_hz / float(sp.min()) * (1 + 1e-9)
    cand = np.unique(np.round(order / step)) * step
    lo = np.searchsorted(sorted_order, cand - reach, "left")
    hi = np.searchsorted(sorted_order, cand + reach, "right")
    # at most the windows each order lies under ``top`` in
    under = np.searchsorted(sorted_sp, top / cand * (1 - 1e-9), "right")
    room = (hi - lo) >= np.maximum(MACHINE_ORDER_MIN, MACHINE_ORDER_SHARE * under)
    found: list[tuple[int, float, np.ndarray]] = []
    for o, a, b in zip(cand[room], lo[room], hi[room], strict=True):
        near = by[a:b]
        hit = near[np.abs(hz[near] - o * at_speed[near]) <= 0.5 * bin_hz]
        wins = np.unique(win[hit])
        if wins.size < max(MACHINE_ORDER_MIN, MACHINE_ORDER_SHARE * int((o * sp <= top).sum())):
            continue
        moved = o * float(np.ptp(at_speed[hit])) if hit.size else 0.0
        if moved < MAINS_STAYED_BINS * bin_hz:
            continue  # a line that stayed put while the speed moved (the grid's, its 100 Hz), or one speed's
        found.append((int(wins.size), float(np.median(order[hit])), hit))
    out: list[float] = []
    taken = np.zeros(hz.size, dtype=bool)
    for _, o, hit in sorted(found, key=lambda c: -c[0]):  # the best seen first; its lines are no other's
        if taken[hit].any() or np.abs(shaft - o).min() * float(np.median(at_speed[hit])) <= 0.5 * bin_hz:
            taken[hit] = True
            continue  # one of a line already recorded, or the shaft's own order (MAINS_CLEAR's rule)
        taken[hit] = True
        out.append(round(o, 4))
    return sorted(out)


def _stayed(h: float, lines: list[list[float]], speeds: list[float], bin_hz: float) -> bool:
    """Whether the grid line ``h`` stood in learned windows (``grid_lines``) whose speeds put one order of the shaft
    MAINS_STAYED_BINS bins apart at ``h`` or more: it stayed put while the speed moved (MAINS_STAYED_BINS)."""
    at = [s for r, s in zip(lines, speeds, strict=True) if h in r and math.isfinite(s) and s > 0]
    return len(at) >= 2 and h * (max(at) - min(at)) / float(np.median(at)) >= MAINS_STAYED_BINS * bin_hz


def _grid_lines_fit(
    x: np.ndarray, t: np.ndarray, grid: float, ks: list[int], keep: list[float]
) -> tuple[float, np.ndarray, np.ndarray]:
    """The residual's energy, the coefficients and the basis of the least-squares fit of ``x`` by lines at ``grid``
    times ``ks`` (sine, cosine), lines at ``keep`` (Hz) and a constant, in that order, each sample weighted by the
    Hann window. Unweighted, the lines not in the fit (the shaft's 1x 4-5 bins off, its harmonics) leaked into it
    through the window's edges: the grid's frequency came out 0.05-0.09 Hz off and its line's amplitude a few % off
    on a pure, strong pickup, and what that left at 50 Hz a healthy machine's 2x (55 Hz, a bin off, its line read
    within a bin) never showed: the window, the pickup taken out, still scored 3-4 over a threshold of 2.8, and a
    steady pickup on a healthy drive alarmed on every window. Weighted, such lines leak a thousandth as much."""
    basis = np.column_stack(
        [fn(2 * math.pi * h * t) for h in [k * grid for k in ks] + keep for fn in (np.sin, np.cos)]
        + [np.ones_like(t)]
    )
    w = _hann(t.size)
    wb = basis * w[:, None]
    # least squares by the normal equations (a few columns: an SVD of the whole window cost 20 ms)
    coef = np.linalg.lstsq(wb.T @ basis, wb.T @ x, rcond=None)[0]
    r = x - basis @ coef
    return float(np.sum(w * r * r)), coef, basis


def _grid_frequency(x: np.ndarray, t: np.ndarray, mains: float, keep: list[float]) -> float:
    """The grid's frequency within MAINS_DRIFT of ``mains`` whose line (with the shaft's at ``keep``, Hz) fits ``x``
    best: frequencies MAINS_FIT_STEP bins apart (MAINS_FIT_STEP Hz at most) tried a step past MAINS_DRIFT, the best
    refined by a parabola through it and its neighbours. A grid runs within 1 %
    of its frequency; a pickup looked for at 50 Hz's multiples on a grid at 49.6-49.8 Hz had its 149 Hz line taken for
    a shaft's, and the healthy machine read NG with alarms."""
    step = min(MAINS_FIT_STEP, MAINS_FIT_STEP / (t[1] - t[0]) / t.size)
    half = math.ceil(MAINS_DRIFT / step) + 1
    at = mains + step * np.arange(-half, half + 1)
    left = [_grid_lines_fit(x, t, f, [1], keep)[0] for f in at]
    i = int(np.argmin(left))
    best = float(at[i])
    if 0 < i < len(at) - 1:
        a, b, c = left[i - 1], left[i], left[i + 1]
        bend = a - 2 * b + c
        if bend > 0:
            best += 0.5 * (a - c) / bend * step
    return min(max(best, mains - MAINS_DRIFT), mains + MAINS_DRIFT)


def _without(
    x: np.ndarray, t: np.ndarray, mains: float, beside: list[float], fs: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ``padded_spectrum`` of ``x`` with the shaft's lines at ``beside`` (Hz, within two bins of the grid's)
    taken out, as fitted together with the grid's line (``_grid_frequency``): whether the grid's line stands is read
    without them. A 2x a bin off pulled the peak there 0.5-1.3 Hz from 50 Hz (a drive at 1,320 or 1,650 rpm, its 2x at
    44 or 55 Hz): no grid line stood, the pickup's evidence was forgotten every few windows and never gathered, and a
    steady pickup on a healthy drive alarmed on most windows. Only whether a pickup is looked for hangs on it: the
    shaft's lines stay in the window judged."""
    grid = _grid_frequency(x, t, mains, beside)
    _, coef, basis = _grid_lines_fit(x, t, grid, [1], beside)
    shaft = basis[:, 2 : 2 + 2 * len(beside)] @ coef[2 : 2 + 2 * len(beside)]
    return padded_spectrum(x - shaft, fs)


def _not_pickup(lines: list[float]) -> list[float]:
    """A learned window's ``grid_lines`` less a pickup's: where the grid's frequency and its 3rd harmonic both stand,
    that grid's lines are a cable's pickup the machine was commissioned with, not the machine's (recorded, a pickup
    grown 2-4x on a healthy machine at 1,790 rpm read NG with alarms, 4-6 of 9 windows, where it was told before)."""
    return [
        h
        for h in lines
        if not any(h / m in MAINS_HARMONICS and m in lines and 3 * m in lines for m in MAINS_HZ)
    ]


def padded_spectrum(x: np.ndarray, fs: float, pad: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The window's frequencies and amplitude spectrum (Hann), zero-padded to 1/``pad`` of a bin."""
    n = pad * x.size
    return np.fft.rfftfreq(n, 1 / fs), np.abs(np.fft.rfft((x - x.mean()) * _hann(x.size), n))


def units_tilt(octaves: list[float] | None, commissioned: list[float] | None) -> float | None:
    """The octave-to-octave step (log) of the window's floor against the commissioned one when it is a unit's 1/f
    (``TILT_FALL``): a fall (negative) for a velocity signal read as acceleration, a rise for the reverse; else
    None."""
    if octaves is None or commissioned is None or len(octaves) != len(commissioned):
        return None
    steps = np.diff(np.asarray(octaves) - np.asarray(commissioned))
    size = np.abs(steps)
    if (
        bool(np.all(np.sign(steps) == np.sign(steps[0])))
        and TILT_FALL[0] <= size.min() <= size.max() <= TILT_FALL[1]
    ):
        return float(steps.mean())
    return None


def quantisation_step(w: np.ndarray) -> float | None:
    """The window's quantisation step (the ADC's code, in the window's units), or None when the window is not
    quantised (the steps between its distinct values are not multiples of one). How many of its samples repeat
    a value is not asked: a signal spread over more codes (an analog gain's rise on a 16-bit ADC) is as
    quantised as before; a float window passes the lattice test only as float32 data with a DC offset, its step
    far below any real floor (no check skipped)."""
    c = np.asarray(w, dtype=np.float64).ravel()
    if c.size < 64 or not np.isfinite(c).all():
        return None
    v = np.unique(c)
    if v.size < 2:
        return None
    d = np.diff(v)
    q = float(d.min())
    if q <= 0 or float(np.abs(d / q - np.round(d / q)).max()) > 0.01:
        return None
    return q


# the ADC's step as its noise lies in the window being judged, when the window cannot tell it: a window
# resampled from a faster DAQ (``Window.adc_step``, from its raw samples) lies on no lattice of codes
_WINDOW_STEP: ContextVar[float | None] = ContextVar("window_adc_step", default=None)


@contextlib.contextmanager
def adc_step(step: float | None) -> Iterator[None]:
    """The window processed inside holds the noise of an ADC step ``step`` (``Window.adc_step``; None: told
    from the window's values, ``quantisation_step``)."""
    token = _WINDOW_STEP.set(step)
    try:
        yield
    finally:
        _WINDOW_STEP.reset(token)


def window_step(w: np.ndarray) -> float | None:
    """The ADC's step of the window being processed: the one its pipeline told (``adc_step``: a resampled
    window's, from its raw samples) or else the window's own ``quantisation_step``."""
    given = _WINDOW_STEP.get()
    return given if given is not None else quantisation_step(w)


def resampled_step(raw: np.ndarray, up: int, down: int) -> float | None:
    """The ADC's step of a window resampled by up/down (``model_packager.condition.resample``, an ideal low-pass
    at the model's Nyquist) from its ``raw`` samples, as the quantisation noise it leaves at the model's rate.
    Resampling keeps a code's size (the window's units) but no lattice; what it changes is the noise: white
    over the DAQ's band, q**2/12, only the part below the model's Nyquist is kept, up/down of it. That is the
    noise of a step q * sqrt(up/down) at the model's rate (not q * up/down: the floor is an amplitude). None:
    the raw samples are not quantised."""
    q = quantisation_step(raw)
    return None if q is None else q * math.sqrt(up / down)


def _multiple(ratio: float) -> bool:
    """``ratio`` is a whole number (1, 2, ...) within 1 %: two steps of one lattice."""
    return ratio >= 0.99 and abs(ratio - round(ratio)) <= 0.01 * round(ratio)


def _common_step(steps: list[float | None]) -> float | None:
    """The ADC's step of the commissioned windows kept: the smallest of their ``quantisation_step``, the others
    whole multiples of it (a window whose signal skipped a code); None if none is quantised. A window that is
    not (a stop's few codes, a non-finite sample) is passed over: one such window lost the step, silently."""
    got = [v for v in steps if v is not None]
    if not got:
        return None
    q = min(got)
    return q if all(_multiple(v / q) for v in got) else None


def quantisation_floor(w: np.ndarray) -> float | None:
    """The ``spectral_floor`` a white quantisation noise of the window's step (``quantisation_step``) alone
    would give (log), or None when the window is not quantised. The median of a Hann-windowed spectrum of white
    noise of deviation s is s * sqrt(0.375 * N * ln 2); a step q leaves s = q / sqrt(12)."""
    q = window_step(w)
    if q is None:
        return None
    n = np.asarray(w).size
    return math.log(q / math.sqrt(12.0) * math.sqrt(0.375 * n * math.log(2.0)) + 1e-12)


def lone_impulse(w: np.ndarray, segments: int = IMPULSE_SEGMENTS) -> bool:
    """The window's impulsiveness sits in one place of it (``IMPULSE_SHARE`` of its excess fourth moment in one
    run of loud pieces, at most half the window): one impulse, not impacts repeated through it."""
    c = np.asarray(w, dtype=np.float64).ravel()
    size = c.size // segments
    if size < 4:
        return False
    c = c - c.mean()
    e4 = (c[: size * segments].reshape(segments, size) ** 4).mean(axis=1)
    ex = np.clip(e4 - float(np.median(e4)), 0.0, None)
    total = float(ex.sum())
    if not math.isfinite(total) or total <= 0:
        return False
    loud = ex >= 0.1 * float(ex.max())
    best, best_len, run, run_sum = 0.0, 0, 0, 0.0
    for i in range(segments):
        if not loud[i]:
            run, run_sum = 0, 0.0
            continue
        run, run_sum = run + 1, run_sum + float(ex[i])
        if run_sum > best:
            best, best_len = run_sum, run
    return best >= IMPULSE_SHARE * total and best_len <= segments // 2


def diagnose(rises: dict[str, float], bearing_rise: float = 3.0, z: np.ndarray | None = None) -> str:
    """The fault family whose features rose most, bearing families first: race impacts also lift the
    raw spectrum's floor (and so every order amplitude), while imbalance and misalignment do not put
    peaks at the bearing's defect frequencies in the envelope spectrum. With the window's rises per feature
    (``z``), a misalignment whose orders 4-8 rose ``LOOSENESS_LEAD`` deviations more than its 2x and 3x is
    ``looseness``: a loose joint rattles out a train of harmonics (1x-10x), a misaligned coupling pulls at 2x and
    3x above the higher orders."""
    bearing = {k: v for k, v in rises.items() if k.startswith("bearing_")}
    if bearing and max(bearing.values()) >= bearing_rise:
        return max(bearing, key=bearing.__getitem__)
    if max(rises.values()) < 2.0:
        return "unspecified"
    fam = max(rises, key=rises.__getitem__)
    if fam == "misalignment" and z is not None:
        high = float(z[_FEATURE_INDEX["orders_4_8"]])
        if (
            high - max(float(z[_FEATURE_INDEX["order_2x"]]), float(z[_FEATURE_INDEX["order_3x"]]))
            >= LOOSENESS_LEAD
        ):
            return "looseness"
    return fam


def isolated_outliers(x: np.ndarray, k_mad: float | None, max_share: float) -> np.ndarray:
    """Which commissioning windows (rows in the order learned) to leave out: each scored against the
    robust statistics of them all (relative rises, as judged), its log-score more than ``k_mad`` robust
    deviations (MAD) above the median, and alone: neither neighbour is such a window (a run of them is a
    state of the machine, kept). When more than ``max_share`` of the windows are such, none is left out:
    they are the machine's own (a conveyor's idler knocking in one window of five)."""
    n = len(x)
    keep_all = np.zeros(n, dtype=bool)
    if k_mad is None or n < 2 * MIN_BAND_WINDOWS:
        return keep_all
    med, sc = robust_stats(x)
    ls = np.log(rise(x, med, sc, True) + 1e-6)
    mid = float(np.median(ls))
    mad = 1.4826 * float(np.median(np.abs(ls - mid)))
    high = ls > mid + k_mad * max(mad, 0.05)
    before = np.concatenate([[False], high[:-1]])
    after = np.concatenate([high[1:], [False]])
    alone = high & ~before & ~after
    if alone.sum() > max_share * n:
        return keep_all
    return alone


@dataclass
class Verdict:
    state: str  # learning | ready
    score: float | None = None  # largest rise over the baseline, in robust z
    threshold: float | None = None
    anomalous: bool = False  # this window over the threshold
    alarm: bool = False  # confirm_windows in a row over it
    fault: str | None = None  # model-free diagnosis while anomalous
    rises: dict[str, float] = field(default_factory=dict)  # the fault families' rises
    progress: float = 0.0  # learning: 0..1
    speed_hz: float | None = None
    speed_estimated: bool = True
    velocity_mm_s: float | None = None
    iso_zone: str | None = None
    iso_alarm: bool = False  # confirm_windows in a row at or above iso_alarm_zone (one transient is not)
    extrapolated: bool = False  # a speed outside the commissioned ones: not judged
    unsteady: str | None = None  # the speed changed across the window (SPEED_STEADY): not judged, why
    external_impulse: bool = False  # over the threshold by a lone impulse (a knock from outside): not counted
    growth: float | None = None  # the largest amplitude growth over the baseline (x times), the health index
    sensor: str | None = None  # why the window is the sensor's, not the machine's (not judged)
    sensor_kind: str | None = (
        None  # scale (the units or gain changed) | low_level (no machine in it) | mains_pickup
    )
    stopped: bool = False  # the machine is stopped (speed tag, or the signal): not judged, not the sensor's
    stop_reason: str | None = None  # how the stop was told (the result's reason)
    process_state: str | None = None  # the state_tag's state of this window (state_tag set)
    not_learned: str | None = None  # why the window is not judged: its process state is not learned

    def to_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "state",
                "score",
                "threshold",
                "anomalous",
                "alarm",
                "fault",
                "progress",
                "speed_hz",
                "speed_estimated",
                "velocity_mm_s",
                "iso_zone",
                "iso_alarm",
                "extrapolated",
                "unsteady",
                "external_impulse",
                "growth",
                "sensor",
                "sensor_kind",
                "stopped",
                "stop_reason",
                "process_state",
                "not_learned",
            )
        }
        for k in ("score", "threshold", "speed_hz", "velocity_mm_s", "progress", "growth"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 4)
        for k in ("process_state", "not_learned"):  # only with a state_tag
            if d[k] is None:
                del d[k]
        return d


def _running_rms(log_speed: np.ndarray, rms: np.ndarray, running: np.ndarray) -> np.ndarray:
    """The running windows' log RMS against the log speed (a least-squares line; their median over a span too
    narrow for one), at every window's speed."""
    ls, r = log_speed[running], rms[running]
    if ls.max() - ls.min() < math.log(SPEED_FIT_SPAN):
        return np.full_like(rms, float(np.median(r)))
    slope, level = np.polyfit(ls, r, 1)
    return np.asarray(slope * log_speed + level)


class Baseline:
    """One asset's baseline. ``process(waveform, scalars)`` per window (worker thread, not reentrant)."""

    def __init__(
        self,
        settings: BaselineSettings,
        sample_rate_hz: float,
        window_samples: int,
        *,
        path: Path | None = None,
        pipeline: str = "?",
        model_features: dict | None = None,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.time,
        under: dict | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.s = settings
        # what it is learned under (``learned_under``): a process state's baseline is given its own
        self.under = under if under is not None else learned_under(settings)
        self.fs = float(sample_rate_hz)
        self.n = int(window_samples)
        self.path = path
        self.pipeline = pipeline
        self.on_event = on_event or (lambda evt: None)
        self.clock = clock
        # the time learned is counted on a monotonic clock (``learning_s``); an injected clock (tests, a replay
        # at the data's time) is both
        self.monotonic = monotonic or (time.monotonic if clock is time.time else clock)
        self.fid = feature_set_id(settings, self.fs, self.n, model_features)
        b = settings.bearing
        self.bearing = Bearing(b.n_elements, b.ball_d_mm, b.pitch_d_mm, b.contact_angle_deg) if b else None
        self.speed_hz: float | None = None  # tracked shaft speed (estimated)
        self._over = 0
        self._iso_over = 0  # windows in a row at or above iso_alarm_zone
        self._last_zone: str | None = None
        self._judged_zone: str | None = None  # the zone of the last window judged as the machine's
        self._last_speed: tuple[float, float] | None = None  # the previous window's speed (Hz) and end time
        self.unsteady_windows = 0  # windows not judged nor learned since the start: the speed changed
        self.external_impulses = 0  # windows over the threshold by a lone impulse since the start
        self._knocks: deque[bool] = deque(maxlen=IMPULSE_HISTORY)  # the last windows judged: told as knocks
        self._iso_knocks: deque[bool] = deque(maxlen=IMPULSE_HISTORY)  # the same for the ISO zone's rule
        self.unsaved: str | None = None  # why the last save failed (a full disk): saved again at each window
        self._new_learning("first start")
        self._load()

    # ---- state ------------------------------------------------------------------------------
    def _new_learning(self, reason: str) -> None:
        self.state = "learning"
        self.started_at = self.clock()
        self._learned = (0.0, self.monotonic())  # seconds learned before this mark, and the monotonic mark
        self.learned_at: float | None = None
        # per grid frequency, (speed Hz, fundamental's amplitude) of judged windows where its line stood (MAINS_EVIDENCE)
        self.grid_stood: dict[float, list[tuple[float, float]]] = {}
        self.rows: list[list[float]] = []
        self.speeds: list[float] = []
        self.bands: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        # the commissioned speeds (Hz) as ranges, those within a speed band of each other merged; None:
        # learned before the record (bands only)
        self.speed_spans: list[tuple[float, float]] | None = None
        # amplitudes also scored against the window's common level (False: a baseline learned before,
        # format 1, scored on absolute levels as it was learned and thresholded)
        self.relative = True
        self.threshold: float | None = None
        self.reason = reason
        self.speed_hz = None
        self._first: list[np.ndarray] = []  # the first windows, for the shaft speed (estimated speed only)
        self._first_steps: list[float | None] = []  # their ADC steps (``window_step``)
        # the order and envelope features are used (False: a speed found in the spectrum that one window
        # cannot resolve; those features are held at 0 and the asset is judged without them)
        self.orders = True
        self.temps: list[float] = []  # the running windows' temperatures while learning (temperature_tag)
        self.floors: list[float] = []  # the learned windows' spectral floors (``spectral_floor``)
        # the learned windows' ``octave_floors`` (None where a window gives none), and their commissioned median
        # (None: learned before the record, or too few: the units' tilt is not looked for, as before)
        self.octaves: list[list[float] | None] = []
        self.floor_octaves: list[float] | None = None
        # the learned windows' ``grid_lines``, and the grid lines the machine showed at commissioning (MAINS_SEEN of
        # them; None: learned before the record, every grid line taken for a pickup's as before)
        self.mains_lines: list[list[float]] = []
        self.mains_seen: list[float] | None = None
        # the learned windows' ``window_lines``, and the orders of the shaft the machine's lines stood at
        # (``machine_orders``; None: learned before the record, only the shaft's whole and half orders known)
        self.machine_lines: list[list[float]] = []
        self.machine_orders: list[float] | None = None
        # commissioned across a speed range (``SPEED_FIT_SPAN``): each feature's level as a line in the log of the
        # speed (slope, level at 1 Hz, spread about it); None: one speed, the speed unknown, or learned before it
        self.speed_levels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # every window judged against those levels too, over this threshold (out-of-fold), at these speeds (the
        # commissioned ones, the range's bottom included); None: learned before it (the pooled statistics alone)
        self.level_threshold: float | None = None
        self.level_spans: list[tuple[float, float]] | None = None
        # whether ``bands`` holds one entry of statistics pooled over every commissioned speed (no band had
        # MIN_BAND_WINDOWS of its own) or each band's own; None: learned before the record (``_off_bands``)
        self.bands_pooled: bool | None = None
        # the learned windows' ``quantisation_step`` (None: not quantised)
        self.steps: list[float | None] = []
        # the ADC's step the machine was commissioned on (``quantisation_levels``); None: not quantised, or
        # learned before the record (no amplitude taken as on the ADC's floor, as before)
        self.quant_step: float | None = None
        # per speed band (the keys of ``bands``), the median of the commissioned windows' ``spectral_floor``;
        # empty: learned before the record (a common factor of the amplitudes is a scale whatever the floor
        # did, as before)
        self.floor_bands: dict[int, float] = {}
        self.temp_running: float | None = None  # the commissioned running temperature (median)
        self.stop_floor: float | None = None  # log RMS the sensor reads at a recognised stop
        self._said_no_floor = False  # logged once: a ready baseline learned without floor_bands
        self._said_no_step = False  # logged once: a quantised signal, a ready baseline without quant_step
        # the last ``_sensor_suspect`` found 'scale' with amplitudes on the ADC's floor left out (the ISO zone
        # alarm is not cleared then: a fault lifting every line alike is not ruled out)
        self.floor_scale = False
        # the levels the window's speed gives (``speed_levels``) where ``_sensor_suspect`` found the window the
        # machine's by them (a common factor against the pooled levels, none against these): scored by both
        self.level_at: np.ndarray | None = None
        # (step, speed band) -> the amplitudes' levels the quantisation step alone gives (``quantisation_levels``)
        self._quant_levels: dict[tuple[float, int], np.ndarray] = {}
        # a spell of low windows: its start time and its lowest and highest temperature so far
        self._spell: tuple[float, float, float] | None = None
        self._spell_mono = 0.0  # its start on the monotonic clock: its length (a wall clock's step is not)
        self._said_long_stop = False  # this spell's long stop was said
        self._estimates: list[float] = []  # the last windows' speed estimates (tracking, no speed tag)
        self.outliers = 0  # commissioning windows left out as isolated outliers (isolated_outliers)

    def _event(self, kind: EventKind, **kw) -> None:
        evt = Event(kind, t=self.clock(), pipeline=self.pipeline, **kw)
        log.info("pipeline %s: %s %s", self.pipeline, kind, {k: v for k, v in kw.items() if k != "t"})
        try:
            self.on_event(evt)
        except Exception:
            log.exception("baseline event %s could not be recorded", kind)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT if self.relative else 1,
            "pipeline": self.pipeline,
            "feature_set": self.fid,
            "learned_under": self.under,
            "features": FEATURES,
            "state": self.state,
            "started_at": self.started_at,
            "learning_s": round(self.learning_s(), 3) if self.state == "learning" else None,
            "learned_at": self.learned_at,
            "target_windows": self.s.windows,
            "duration_s": self.s.duration_s,
            "reason": self.reason,
            "false_alarm_rate": self.s.false_alarm_rate,
            "confirm_windows": self.s.confirm_windows,
            "threshold": self.threshold,
            "speed_hz": self.speed_hz,
            "speed_spans_hz": None if self.speed_spans is None else [list(r) for r in self.speed_spans],
            "orders": self.orders,
            "temp_running": self.temp_running,
            "stop_floor": self.stop_floor,
            "outliers": self.outliers,
            "temps": self.temps if self.state == "learning" else [],
            "floors": self.floors if self.state == "learning" else [],
            "floor_bands": {str(k): v for k, v in self.floor_bands.items()},
            "octaves": self.octaves if self.state == "learning" else [],
            "mains_lines": self.mains_lines if self.state == "learning" else [],
            "mains_seen": self.mains_seen,
            "machine_lines": self.machine_lines if self.state == "learning" else [],
            "machine_orders": self.machine_orders,
            "floor_octaves": self.floor_octaves,
            "speed_levels": None
            if self.speed_levels is None
            else dict(
                zip(("slope", "level", "spread"), (a.tolist() for a in self.speed_levels), strict=True)
            ),
            "level_threshold": self.level_threshold,
            "level_spans_hz": None if self.level_spans is None else [list(r) for r in self.level_spans],
            "bands_pooled": self.bands_pooled,
            "steps": self.steps if self.state == "learning" else [],
            "quant_step": self.quant_step,
            "rows": self.rows if self.state == "learning" else [],
            "speeds": self.speeds if self.state == "learning" else [],
            "bands": {
                str(k): {"median": m.tolist(), "scale": sc.tolist(), "n": n}
                for k, (m, sc, n) in self.bands.items()
            },
            "windows": len(self.rows)
            if self.state == "learning"
            else sum(n for *_, n in self.bands.values()),
        }

    def save(self) -> None:
        """The baseline to its file. A write the disk refuses (full, read-only, an I/O error) is said once and
        tried again at each window until it is written, the baseline in memory serving meanwhile: raised, it
        lost the window's verdict and, at the end of commissioning, the ``baseline_learned`` event and the
        learned baseline itself (nothing saves a ready baseline again; a restart went on learning)."""
        if self.path is None:
            return
        d = self.to_dict()
        try:
            atomic_write_json(self.path, d)
            if self.state == "ready" and self.relative:  # commissioned (rare: not rewritten while scoring)
                atomic_write_json(kept_path(self.path), d)
        except OSError as exc:
            if self.unsaved is None:
                log.warning(
                    "pipeline %s: baseline %s (%s) not saved: %s; it serves from memory and is saved again "
                    "at each window until the disk takes it (a restart before then goes back to what the file "
                    "holds)",
                    self.pipeline,
                    self.path,
                    self.state,
                    exc,
                )
            self.unsaved = str(exc)
            return
        if self.unsaved is not None:
            log.warning("pipeline %s: baseline %s (%s) saved again", self.pipeline, self.path, self.state)
            self.unsaved = None

    def _restore_kept(self, d: dict) -> tuple[dict, dict[str, Any]]:
        """``d`` (the baseline file as read), or the commissioned format-2 baseline kept beside it when ``d``
        is what a release reading format 1 only wrote over that baseline (format 1, learning anew because
        the file was "unreadable"): that release was run on this data folder after this one (a rollback). With
        its fields (``_fields``: ValueError for a damaged ``d``)."""
        assert self.path is not None
        if d.get("format") != 1 or d.get("reason") != "unreadable file":
            return d, _fields(d)
        kept = self._kept_copy(f"the learning begun over {self.path.name} goes on")
        if kept is None:
            return d, _fields(d)
        k = kept[0]
        log.warning(
            "pipeline %s: baseline %s was written over by an older release that could not read it (format %d); "
            "the commissioned baseline kept in %s (learned %s) is restored",
            self.pipeline,
            self.path,
            FORMAT,
            kept_path(self.path),
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(k.get("learned_at") or 0))),
        )
        atomic_write_json(self.path, k)
        return kept

    def _kept_copy(self, otherwise: str) -> tuple[dict, dict[str, Any]] | None:
        """The commissioned baseline kept beside the file (``kept_path``) when it can serve this config (ready,
        format 2, the same features and settings), with its fields (``_fields``), else None (``otherwise``: what
        happens then, for the warning of a copy that cannot be read)."""
        assert self.path is not None
        kept = kept_path(self.path)
        try:
            k = read_baseline(kept)
        except FileNotFoundError:  # no copy kept (commissioned by a release before it, or none yet)
            return None
        except (OSError, ValueError) as exc:
            log.warning(
                "pipeline %s: the commissioned baseline kept in %s is unreadable (%s); not restored, %s",
                self.pipeline,
                kept,
                why_unread(exc),
                otherwise,
            )
            return None
        if not isinstance(k, dict) or k.get("format") != FORMAT or k.get("state") != "ready":
            return None
        if k.get("feature_set") != self.fid or under_changes(k.get("learned_under") or {}, self.under):
            return None  # learned on other features or settings: not this config's baseline
        try:
            return k, _fields(k)
        except ValueError as exc:
            log.warning(
                "pipeline %s: the commissioned baseline kept in %s is damaged (%s); not restored, %s",
                self.pipeline,
                kept,
                exc,
                otherwise,
            )
            return None

    def _load(self) -> None:
        if self.path is not None and self.path.parent.is_dir():
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # a write cut short by a kill
                stale.unlink(missing_ok=True)
        states_since = None
        if self.path is not None and self.under["state_tag"] is None:
            states_since = self._set_aside_states()
        # from before those states (as old as the config that had no state_tag), unless it began learning
        # after they were commissioned: an older release relearned it once state_tag was removed
        if (
            states_since is not None
            and self.path is not None
            and self.path.is_file()
            and not self._started_after(states_since)
        ):
            self._discard(
                f"baseline {self.path.name} was learned before baseline.state_tag was given (baselines "
                "per process state were learned since); not used, learning anew",
                "learned before state_tag",
            )
            return
        if self.path is None or not self.path.is_file():
            if self.path is not None:
                self._event(
                    EventKind.BASELINE_LEARNING, reason="no baseline yet", target_windows=self.s.windows
                )
            return
        try:
            d = read_baseline(self.path)
            if not isinstance(d, dict):  # valid JSON of another shape (a damaged file)
                raise ValueError(f"a JSON {type(d).__name__}, not a baseline")
            if d.get("format") not in FORMATS:
                raise ValueError(f"format {d.get('format')}")
            d, got = self._restore_kept(d)
        except (OSError, ValueError) as exc:  # a named pipe, larger than a baseline, nested past the parser
            # emptied or cut short (a power cut on a card that lost the rename's data, a file system repair):
            # the commissioned copy kept beside it serves on; before, the machine was learned anew as it is now
            kept = self._kept_copy("learning anew")
            if kept is None:
                self._discard(
                    f"unreadable baseline file {self.path} ({why_unread(exc)}); learning anew",
                    "unreadable file",
                )
                return
            d, got = kept
            log.warning(
                "pipeline %s: unreadable baseline file %s (%s); the commissioned baseline kept in %s (learned "
                "%s) is restored",
                self.pipeline,
                self.path,
                why_unread(exc),
                kept_path(self.path),
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(d.get("learned_at") or 0))),
            )
            with contextlib.suppress(OSError):  # (the disk's refusal: the copy serves, read again next start)
                atomic_write_json(self.path, d)
        if d.get("feature_set") != self.fid:
            self._event(
                EventKind.BASELINE_DISCARDED,
                reason="the feature set changed (sample rate, window, bearing or "
                "model features); learning anew",
                old=d.get("feature_set"),
                new=self.fid,
            )
            self._new_learning("feature set changed")
            self.save()
            return
        changed = under_changes(d.get("learned_under") or {}, self.under)
        if changed:
            self._discard(
                f"baseline {self.path.name} was learned under other settings ({changed}); not used, "
                "learning anew",
                "learned under other settings",
            )
            return
        done = got.pop(
            "learning_s"
        )  # saved by a release before the count: the wall clock's, as it was counted then
        for name, value in got.items():
            setattr(self, name, value)
        done = done if done is not None else max(0.0, self.clock() - self.started_at)
        self._learned = (done, self.monotonic())
        self.relative = self.state == "learning" or d.get("format") == FORMAT
        if "learned_under" not in d:
            # saved by a release before the record: loaded as learned under the settings of now (as it is
            # used) and stamped so, once; without it a baseline commissioned before the upgrade went on
            # judging through every later edit of state_tag, states or speed bands, unsaid
            d = {**d, "learned_under": self.under}
            with contextlib.suppress(OSError):
                atomic_write_json(self.path, d)
        if self.state == "ready" and self.relative and not kept_path(self.path).exists():
            # commissioned by a release that kept no copy (2026-12-02 before it): kept now, once
            with contextlib.suppress(OSError):
                atomic_write_json(kept_path(self.path), d)
        if not self.relative:
            log.warning(
                "pipeline %s: baseline %s was learned by a former version: scored on absolute levels as "
                "learned (a load change that lifts the process lines with the rest can alarm); relearn "
                "it (edge-agent baseline relearn %s) to score levels relative to the window's common level",
                self.pipeline,
                self.path,
                self.pipeline,
            )
        self._event(
            EventKind.BASELINE_LOADED,
            state=self.state,
            windows=len(self.rows) if self.state == "learning" else sum(n for *_, n in self.bands.values()),
            learned_at=self.learned_at,
            scoring="relative" if self.relative else "absolute (learned before; relearn)",
        )

    def _discard(self, reason: str, why: str) -> None:
        log.warning("pipeline %s: %s", self.pipeline, reason)
        self._event(EventKind.BASELINE_DISCARDED, reason=reason)
        self._new_learning(why)
        self.save()

    def _set_aside_states(self) -> float | None:
        """Without ``state_tag``, baselines per process state left by a former config (``state_tag`` given,
        then removed) are not this baseline: their index is set aside, so that giving ``state_tag`` again
        commissions every state anew rather than reloading them, by then as old as this config. Returns
        when their commissioning began (``inf``: not known), or None without such an index."""
        assert self.path is not None
        idx = index_path(self.path)
        if not idx.is_file():
            return None
        since = math.inf
        try:
            since = float(read_baseline(idx)["started_at"])
        except (OSError, ValueError, TypeError, KeyError):
            pass
        aside = idx.with_name(idx.name + ".unused")
        with contextlib.suppress(OSError):
            idx.replace(aside)
        reason = (
            f"baselines per process state ({idx.name}) were learned under a state_tag the config no longer "
            f"gives; not used (set aside as {aside.name}): one baseline for every state, learned anew"
        )
        log.warning("pipeline %s: %s", self.pipeline, reason)
        self._event(EventKind.BASELINE_DISCARDED, reason=reason)
        return since

    def _started_after(self, t: float) -> bool:
        """``<pipeline>.json`` began learning after ``t``. A release before ``learned_under`` left the one
        baseline beside the baselines per state; one learned after their commissioning began was learned
        once state_tag was removed (a relearn), under the config of now: kept, not discarded on upgrade."""
        assert self.path is not None
        try:
            return float(read_baseline(self.path)["started_at"]) > t
        except (OSError, ValueError, TypeError, KeyError):
            return False

    def relearn(self, reason: str = "asked") -> None:
        self._new_learning(reason)
        if self.path is not None:  # what was commissioned is no longer wanted: not restored after a rollback
            kept_path(self.path).unlink(missing_ok=True)
        self.save()
        self._event(EventKind.BASELINE_RELEARN, reason=reason, target_windows=self.s.windows)

    def check_request(self) -> None:
        """A relearn asked for through the data folder (``edge-agent baseline relearn``)."""
        if self.path is None:
            return
        req = relearn_path(self.path.parent.parent, self.pipeline)
        if req.exists():
            why = read_request(req).get("reason", "asked from the command line")
            self.relearn(str(why))
            req.unlink(missing_ok=True)

    def learning_s(self) -> float:
        """Seconds this baseline has been learning, what ``duration_s`` (and ``state_learn_s``) count: this
        process's monotonic count added to what was saved, so a wall clock stepped while learning (NTP setting
        a gateway without a battery-backed clock an hour or a day ahead) neither ends the learning at once nor
        stretches it. The time the agent is down is not counted (no window is learned meanwhile)."""
        done, mark = self._learned
        return done + max(0.0, self.monotonic() - mark)

    def progress(self) -> float:
        if self.state != "learning":
            return 1.0
        n = len(self.rows) + len(self._first)
        p = n / self.s.windows
        if self.s.duration_s and len(self.rows) >= 20:
            p = max(p, self.learning_s() / self.s.duration_s)
        return float(min(1.0, p))

    def slowest_judged_hz(self) -> float | None:
        """The slowest shaft speed (Hz) this baseline judges: half a speed band below its slowest commissioned
        speed (``_band_stats``; while learning, below the speed found from its first windows, None before that or
        with a speed tag), or None where the speed found at commissioning was noise
        (``orders`` off: a shaft one window does not resolve). Read from the pipeline's other threads while this
        one learns or relearns: what it reads is taken once (a relearn empties the spans and the bands)."""
        state, speed, spans, bands = (
            self.state,
            self.speed_hz,
            self.level_spans or self.speed_spans,
            list(self.bands),
        )
        k = 1.0 + self.s.speed_band_pct / 200.0
        if not self.orders:
            return None
        if state == "learning":  # the speed found from the first windows (no speed tag), once found
            return speed / k if speed else None
        if not bands:
            return None
        if spans:
            return spans[0][0] / k
        # learned before the record: judged up to a band beyond its lowest band
        return (1.0 + self.s.speed_band_pct / 100.0) ** (min(bands) - 1)

    def status(self) -> dict:
        d = self.to_dict()
        for k in ("rows", "speeds", "bands", "temps", "floors", "octaves", "mains_lines", "machine_lines"):
            d.pop(k)
        d["progress"] = round(self.progress(), 3)
        d["speed_bands"] = sorted(self.bands)
        d["low_since"] = None if self._spell is None else self._spell[0]  # stopped (or low) since
        d["unsteady_windows"] = self.unsteady_windows
        d["external_impulses"] = self.external_impulses
        return d

    # ---- per window ---------------------------------------------------------------------------
    def features(self, waveform: np.ndarray, scalars: dict[str, float] | None) -> dict[str, float]:
        units = self.s.units
        if units in ("mm/s", "mV"):  # a velocity sensor, an accelerometer read in mV: acceleration in g
            waveform, units = acceleration_g(waveform, self.fs, units, self.s.mv_per_g), "g"
        speed = None
        v = (scalars or {}).get("_shaft_speed")  # the speed tag's value (edge_agent.pipelines.SPEED_INPUT)
        if v is not None and v > 0:
            speed = v / 60.0 if self.s.speed_unit == "rpm" else v
        lo, hi = self.s.speed_range_rpm[0] / 60, self.s.speed_range_rpm[1] / 60
        found = None
        if speed is None and self.speed_hz:  # track: search near the learned / last speed
            lo, hi = max(lo, self.speed_hz * 0.85), min(hi, self.speed_hz * 1.15)
            x = np.asarray(waveform, dtype=np.float64).ravel()
            if x.size >= 64 and np.isfinite(x).all():  # else condition_features says what is wrong
                found = estimate_speed_hz(x - x.mean(), self.fs, lo, max(hi, lo + 1))
                # a shaft one window does not resolve: an estimate that strays from the tracked speed
                # was made of noise, and the window is taken at the tracked speed instead
                resolved = self.speed_hz >= MIN_SHAFT_BINS * self.fs / self.n
                close = abs(found - self.speed_hz) <= WINDOW_AGREE * self.speed_hz
                speed = found if resolved or close else self.speed_hz
        f = condition_features(waveform, self.fs, speed, self.bearing, units, (lo, max(hi, lo + 1)))
        if found is not None:
            f["speed_estimated"] = 1.0
            f["speed_found_hz"] = found  # what the window's spectrum said (the tracker's input)
        if not self.orders:
            for k in SPEED_FEATURES:
                f[k] = 0.0
        return f

    def knocked(self, f: dict[str, float], waveform: np.ndarray) -> bool:
        """A lone impulse (a knock from outside the machine) in a window whose shaft turns ``IMPULSE_TURNS``
        times or more: it counts towards no alarm, the baseline's nor the ISO zone's, nor ends a run."""
        return f["speed_hz"] * self.n / self.fs >= IMPULSE_TURNS and lone_impulse(waveform)

    @staticmethod
    def lone_knock(knocks: deque[bool], knock: bool, record: bool = True) -> bool:
        """Whether a window (``knock``: told as a knock) is excused as a lone knock: it is recorded in ``knocks``
        (the last windows judged, unless ``record`` is false) and excused while fewer than ``IMPULSE_REPEATS`` of
        them were knocks; knocks that keep coming are no lone event, judged as any window."""
        if record:
            knocks.append(knock)
        return knock and sum(knocks) < IMPULSE_REPEATS

    def iso_count(
        self, f: dict[str, float], waveform: np.ndarray, over: int, record: bool = True
    ) -> tuple[str, int]:
        """The window's ISO zone and the count of windows in a row at or above ``iso_alarm_zone``, from
        ``over``. ISO 10816 judges steady running: one window lifted by a transient (a door slam, a dropped
        tool) is not a zone; like the baseline's alarm, the zone must hold confirm_windows in a row, and a
        lone knock from outside (``knocked``: a hammer next door lifted 2-2.5 % of healthy windows into zone D)
        neither counts nor ends the run; knocks that keep coming (``lone_knock``, the windows' record kept here,
        not added to where ``record`` is false) count as any window: a steady 1x near 50 Hz beating with a 50-Hz
        pickup was told as a knock on most windows, and a machine in zone D held no zone."""
        zone = iso_zone(f["velocity_mm_s"], self.s.iso_class)
        at = self.s.iso_alarm_zone != "off" and "ABCD".index(zone) >= "ABCD".index(self.s.iso_alarm_zone)
        if self.lone_knock(self._iso_knocks, at and self.knocked(f, waveform), record):
            return zone, over
        return zone, over + 1 if at else 0

    def process(
        self,
        waveform: np.ndarray,
        scalars: dict[str, float] | None = None,
        features: dict[str, float] | None = None,
        span: tuple[float, float] | None = None,
    ) -> Verdict:
        """``span``: the window's first and last sample times (the pipeline's), by which a speed that
        changed across the window is told (``SPEED_STEADY``); without it the speed is not compared."""
        if self.unsaved is not None:
            self.save()
        f = features or self.features(waveform, scalars)
        unsteady = self._speed_change(scalars, span)
        iso_before = self._iso_over
        zone, self._iso_over = self.iso_count(f, waveform, self._iso_over)
        if zone != self._last_zone and self._last_zone is not None and zone in "CD":
            self._event(
                EventKind.ISO_ZONE,
                zone=zone,
                velocity_mm_s=round(f["velocity_mm_s"], 3),
                iso_class=self.s.iso_class,
            )
        self._last_zone = zone
        v = Verdict(
            self.state,
            speed_hz=f["speed_hz"],
            speed_estimated=bool(f["speed_estimated"]),
            velocity_mm_s=f["velocity_mm_s"],
            iso_zone=zone,
            iso_alarm=self._iso_over >= self.s.confirm_windows,
        )
        row = feature_vector(f)
        if self.state == "learning":
            if self._stopped(scalars):  # a stop while commissioning is not the machine's healthy state
                v.progress = self.progress()
                return v
            if unsteady is not None:  # a ramp is not the machine's healthy state at one speed
                v.unsteady, v.progress = unsteady, self.progress()
                self.unsteady_windows += 1
                return v
            if f["speed_estimated"] and self.speed_hz is None:
                self._first.append(np.asarray(waveform, dtype=np.float64))
                self._first_steps.append(window_step(waveform))
                if len(self._first) >= min(SPEED_WINDOWS, self.s.windows):
                    self._learn_speed()
                    if self.progress() >= 1.0:
                        self._finish()
                    else:
                        self.save()
                    return Verdict(
                        self.state,
                        progress=self.progress(),
                        speed_hz=self.speed_hz,
                        velocity_mm_s=v.velocity_mm_s,
                        iso_zone=zone,
                        iso_alarm=v.iso_alarm,
                    )
                v.progress = self.progress()
                return v
            self.rows.append(row.tolist())
            self.speeds.append(f["speed_hz"])
            mag = hann_spectrum(waveform)  # one transform for both
            self.floors.append(spectral_floor(waveform, mag))
            self.octaves.append(octave_floors(waveform, mag))
            self.mains_lines.append(
                grid_lines(waveform, self.fs, padded := _seen_spectrum(waveform, self.fs), f["speed_hz"])
            )
            self.machine_lines.append(window_lines(waveform, self.fs, padded))
            self.steps.append(window_step(waveform))
            self._learn_temperature(scalars)
            v.progress = self.progress()
            if v.progress >= 1.0:
                self._finish()
                v.state = "ready"
            elif len(self.rows) % max(SAVE_EVERY, len(self.rows) // 20) == 0:  # long learning: fewer rewrites
                self.save()
            return v
        if self._stopped(scalars):
            # the speed tag says the machine stands still: nothing to judge, and not the sensor's fault
            # (its vibration 1/10 of the commissioned or less was a 'low_level' sensor fault: a
            # sensor_fault episode, 'check the sensor, its cable and mounting', at every stop); a stop
            # also ends a run of windows towards an alarm
            self._iso_over = self._over = 0
            v.iso_alarm, v.stopped, v.threshold = False, True, self.threshold
            return v
        if unsteady is not None:
            # a ramp (a VFD's set point changing, a run-up, a run-down): its lines smeared over the spectrum
            # are no fault. Not judged, and not a reason to forget a run of windows towards an alarm
            v.unsteady, v.threshold = unsteady, self.threshold
            self.unsteady_windows += 1
            return v
        med, scale, extrapolated = self._band_stats(f["speed_hz"])
        level_only = extrapolated and self._in_level_spans(f["speed_hz"])  # (only the levels cover its speed)
        at = self._levels(f["speed_hz"]) if level_only else None
        found = None
        if at is not None and self.speed_levels is not None:
            # the range's bottom, left out of the pooled statistics: its levels are the line's (the floor, the ADC's
            # steps and the octaves were not learned there: not asked); 1/10 of the pooled levels or less is
            # 'low_level' as before
            found = self._sensor_suspect(row, med, scale, (row - med) / scale, True)
            med, scale, extrapolated = at, scoring_scale(self.speed_levels[2]), False
        pooled = at is None
        found = found or self._sensor_suspect(
            row,
            med,
            scale,
            (row - med) / scale,
            extrapolated,
            partial(self.floor_move, f["speed_hz"], waveform) if pooled else None,
            partial(self.quantisation_levels, f["speed_hz"], waveform) if pooled else None,
            f["speed_hz"],
            partial(octave_floors, waveform) if pooled else None,
        )
        if found is None and self.floor_octaves is not None:
            found = self._units_tilted(
                waveform, row[_FEATURE_INDEX["order_1x"]] - med[_FEATURE_INDEX["order_1x"]], f
            )
        if found is not None and found[0] == "low_level" and self.s.speed_tag is None:
            # no speed tag: a stop of a healthy machine was a 'low_level' sensor fault, an episode at
            # every stop (3 a day on a gearbox); the signal (and the temperature) tell it from a dead sensor
            stop, why = self._signal_stop(waveform, row, med, scale, scalars)
            if stop:
                self._iso_over = self._over = 0
                v.iso_alarm, v.stopped, v.stop_reason, v.threshold = False, True, why, self.threshold
                return v
            if why:
                found = ("low_level", why)
        else:
            self._spell, self._said_long_stop = None, False
        v.sensor_kind, v.sensor = found or (None, None)
        if f["speed_estimated"] and self.speed_hz and v.sensor is None:
            # tracked on the running machine only: a stopped machine's (or a dead sensor's) windows give
            # a speed from noise anywhere in the searched range; followed, the search drifted off the
            # shaft and locked on a harmonic at the restart (UNSURE or wrong orders for the rest of the day).
            # And only on estimates that agree from window to window: where the shaft's lines are
            # too weak for one window (a slow fan's 1x under its blade-pass line and the sensor's noise),
            # each estimate is noise, and followed, the speed walked 25 % off the commissioned one in a
            # day, the orders with it (47 false alarms a day on a 740-rpm fan)
            est = float(f.get("speed_found_hz", f["speed_hz"]))
            self._estimates = [*self._estimates[-(SPEED_AGREE_WINDOWS - 1) :], est]
            mid = sorted(self._estimates)[len(self._estimates) // 2]
            if len(self._estimates) == SPEED_AGREE_WINDOWS and all(
                abs(e - mid) <= SPEED_AGREE * mid for e in self._estimates
            ):
                self.speed_hz = 0.9 * self.speed_hz + 0.1 * est
        if v.sensor is not None:  # the sensor's scale, not the machine: no window in a row towards an alarm
            self._over = 0
            if self.floor_scale:
                # found through the ADC's floor (a gain, or a fault lifting every line alike): its samples'
                # velocity is no evidence either way, so the window neither counts towards nor ends an ISO
                # zone run, and an ISO alarm stands only if it stood before it (counted, a healthy machine's
                # gain x5-x30 read NG iso_zone_D with a PLC write)
                self._iso_over = iso_before
                v.iso_alarm = iso_before >= self.s.confirm_windows
                # its zone is the mis-scaled velocity's: an alarm standing is labelled with the zone of the last
                # window judged (an alarm in zone C read 'iso_zone_D' through a gain x10)
                v.iso_zone = self._judged_zone or zone
            else:
                self._iso_over = 0
                v.iso_alarm = False
            v.threshold = self.threshold
            return v
        self._judged_zone = zone
        # a load's 1.3-2x is not tens of deviations (scoring_scale), nor a line that grew with the rest
        z = self._rise(row, med, scale, f["speed_hz"], level_only)
        v.score = float(np.clip(z, 0, None).max())
        v.threshold = self.threshold
        v.extrapolated = extrapolated
        # a speed the asset was never commissioned at (a run-down, a stop, a restart, a drive set
        # elsewhere) has no reference: its window is not judged and does not count towards an alarm
        # (scored against another speed's statistics, a run-down's lines and a stopped machine's hum
        # read as a fault: NG on a healthy machine at every stop)
        v.anomalous = not extrapolated and v.score >= (self.threshold or math.inf)
        # over the threshold too: a fault's line grown there from a quarter of a gone pickup's size was told as it
        if self.grid_stood:
            self._forget_grid_gone(waveform)
        if (v.anomalous or self._iso_over > iso_before) and (
            pickup := self._mains_pickup(waveform, scalars, f, med, scale, v.score, level_only)
        ):
            # the cable's pickup, not the machine: no window in a row towards an alarm (as another sensor fault)
            self._over = self._iso_over = 0
            v.sensor_kind, v.sensor, v.anomalous, v.iso_alarm = "mains_pickup", pickup, False, False
            return v
        if v.anomalous and (
            ramp := self._ramped(waveform, scalars, f["speed_hz"], (med, scale, v.score), level_only)
        ):
            # the sensor's level sliding, not the machine: neither counted towards an alarm nor ending a run towards
            # one (a fault under it goes on), the ISO run as it was
            self._iso_over = iso_before
            v.sensor_kind, v.sensor, v.anomalous = "settling", ramp, False
            v.iso_alarm = iso_before >= self.s.confirm_windows
            return v
        # knocks that keep coming are no lone event (IMPULSE_REPEATS): judged as any window
        v.external_impulse = self.lone_knock(self._knocks, v.anomalous and self.knocked(f, waveform))
        if v.external_impulse:  # a knock from outside: not counted towards an alarm, nor ending a run (above)
            self.external_impulses += 1
        else:
            self._over = self._over + 1 if v.anomalous else 0
        v.alarm = self._over >= self.s.confirm_windows
        v.rises = {fam: float(max(z[_FEATURE_INDEX[k]] for k in ks)) for fam, ks in FAULT_FEATURES.items()}
        v.growth = growth(row, med)
        if v.anomalous:
            v.fault = diagnose(v.rises, z=z)
        return v

    def _speed_change(self, scalars: dict[str, float] | None, span: tuple[float, float] | None) -> str | None:
        """Why the window is not at one speed (``SPEED_STEADY``), or None. The speed is the speed tag's (0 at
        a stop: a run-up from it is a change); the change from the previous window's is scaled to this
        window's length (windows minutes apart at speeds a few % apart: a slow drift, steady enough).
        Without a speed tag (or while it is not GOOD) nothing is compared: a window's own estimate moves
        with a fault (a chipped tooth's impacts, a bearing's ringing, cavitation noise lift other lines than
        the shaft's), and compared, the faulty gearbox's, fan's and pump's windows were held as changing
        speed and their faults never alarmed."""
        if span is None:
            return None
        tag = (scalars or {}).get("_shaft_speed") if self.s.speed_tag else None
        speed: float | None = None
        if tag is not None and math.isfinite(tag):
            speed = max(0.0, tag / 60.0 if self.s.speed_unit == "rpm" else tag)
        last, self._last_speed = self._last_speed, None if speed is None else (speed, float(span[1]))
        if speed is None or last is None or span[1] <= last[1] or max(speed, last[0]) <= 0:
            return None
        share = abs(speed - last[0]) / max(speed, last[0])
        share *= min(1.0, max(span[1] - span[0], 0.0) / (span[1] - last[1]))
        if share <= SPEED_STEADY:
            return None
        return (
            f"baseline: the speed changed {100 * share:.0f} % across the window ({60 * last[0]:.0f} -> "
            f"{60 * speed:.0f} rpm), more than the {100 * SPEED_STEADY:g} % of a steady operating point; "
            "neither judged nor learned"
        )

    def _stopped(self, scalars: dict[str, float] | None) -> bool:
        """The speed tag says the shaft is not turning (``speed_tag_stopped``). Learned, such
        windows (a stop of a few minutes while commissioning) were taken as healthy: their noise
        widened every spread, the shaft speed was searched in it, and faults alarmed later."""
        return speed_tag_stopped(self.s, scalars)

    def _learn_temperature(self, scalars: dict[str, float] | None) -> None:
        t = (scalars or {}).get("_temperature")
        if self.s.temperature_tag is not None and t is not None and math.isfinite(t):
            self.temps.append(float(t))

    def _signal_stop(
        self,
        waveform: np.ndarray,
        row: np.ndarray,
        med: np.ndarray,
        scale: np.ndarray,
        scalars: dict[str, float] | None,
    ) -> tuple[bool, str | None]:
        """A ``low_level`` window without a speed tag: ``(True, reason)`` for a stopped machine (held,
        not judged, not the sensor's), ``(False, reason)`` for a dead sensor said more precisely, or
        ``(False, None)``: ``low_level`` as it is (a gain or units fall, a fall of one band only).

        A stop: the broadband levels fell together (each ``STOP_BAND_FALL`` times or more) and the
        spectrum lost its commissioned shape (the lines went with the machine). A dead sensor
        (besides a flat or constant line, which the sensor check finds before): a window whose spread is
        within ``DEAD_STEPS`` quantisation steps, a level ``FLOOR_FALL`` times below what the sensor read at the
        machine's stops, or, with a ``temperature_tag``, a temperature that has not fallen after
        ``TEMP_GRACE_S`` of it (the machine runs)."""
        now = self.clock()
        t = (scalars or {}).get("_temperature") if self.s.temperature_tag is not None else None
        t = float(t) if t is not None and math.isfinite(t) else None
        if self._spell is None:
            self._spell, self._spell_mono = (now, math.inf, -math.inf), self.monotonic()
        spell_s = self.monotonic() - self._spell_mono
        if t is not None:
            self._spell = (self._spell[0], min(self._spell[1], t), max(self._spell[2], t))
        fell = [row[_FEATURE_INDEX[k]] - med[_FEATURE_INDEX[k]] for k in ("rms", "hf_rms", "velocity_rms")]
        if max(fell) > -math.log(STOP_BAND_FALL):
            return False, None  # not every band fell to the floor: not a machine at rest
        amp = _AMPLITUDE_INDEX if self.orders else _FREE_AMPLITUDE_INDEX
        d = row[amp] - med[amp]
        w = 1.0 / scale[amp] ** 2
        g = float(np.dot(w, d) / w.sum())
        rest = (row - med) / scale
        rest[amp] = (d - g) / scale[amp]
        if float(np.abs(rest).max()) < min(self.threshold or math.inf, SHAPE_KEPT):
            return False, None  # the commissioned shape at a lower level: the sensor's gain or units
        x = np.asarray(waveform, dtype=np.float64).ravel()
        if x.size > 1:
            steps = np.abs(np.diff(x))
            steps = steps[steps > 0]
            if steps.size and float(x.std()) <= DEAD_STEPS * float(steps.min()):
                return False, None  # a dead input over a few codes: low_level as it is
        level = float(row[_FEATURE_INDEX["rms"]])
        if self.stop_floor is not None and level < self.stop_floor - math.log(FLOOR_FALL):
            return False, (
                f"sensor: the vibration is 1/{math.exp(self.stop_floor - level):.0f} of what the sensor "
                "reads when the machine stands still (its own noise): no live sensor (a broken cable, a "
                "dead input); not judged"
            )
        if t is not None and self.temp_running is not None:
            _, t_min, t_max = self._spell
            # one degree Celsius in the tag's counts (Fahrenheit's degrees; a PLC INT's tenths)
            deg = (DEGREES_F if self.s.temperature_unit == "F" else 1.0) / self.s.temperature_scale
            cooling = t <= t_max - TEMP_FALL * deg
            heating = t >= t_min + TEMP_FALL * deg
            cold = t <= self.temp_running - TEMP_COLD * deg
            cooled = cooling or (cold and not heating)
            if not cooled and spell_s >= TEMP_GRACE_S:
                return False, (
                    f"sensor: the vibration is 1/{math.exp(-g):.0f} of its commissioned level while the "
                    f"temperature ({t:.4g}, {self.temp_running:.4g} when commissioned) has not fallen in "
                    f"{spell_s:.0f} s: the machine runs, the sensor does not read it (dead or "
                    "detached); not judged"
                )
            why = (
                "the vibration fell to the noise floor across its bands and the temperature with it"
                if cooled
                else "the vibration fell to the noise floor across its bands (the temperature is watched)"
            )
        else:
            why = "the vibration fell to the noise floor across its bands"
            if spell_s >= STOP_SAY_S and not self._said_long_stop:
                self._said_long_stop = True
                log.warning(
                    "pipeline %s: held as stopped for %.0f h by its vibration alone (at the noise floor "
                    "across its bands): if the machine runs, check the sensor, its cable and mounting (a "
                    "temperature_tag or a speed_tag on the baseline tells a stop from a dead sensor)",
                    self.pipeline,
                    spell_s / 3600,
                )
        # the sensor's floor at rest, learned from the stops it tells (slowly: one stop moves it little)
        self.stop_floor = level if self.stop_floor is None else 0.95 * self.stop_floor + 0.05 * level
        return True, f"baseline: the machine is stopped ({why}); not judged"

    def _mains_pickup(
        self,
        waveform: np.ndarray,
        scalars: dict[str, float] | None,
        f: dict[str, float],
        med: np.ndarray,
        scale: np.ndarray,
        score: float,
        level_only: bool = False,
    ) -> str | None:
        """Why the window's rise is mains pickup (``MAINS_HZ``), or None: judged again with the grid's lines taken
        out, it is under the threshold and out of the ISO alarm's zone."""
        speed, before = f["speed_hz"], score
        if not self.threshold or not (self.orders or self.s.speed_tag) or not speed or speed <= 0:
            return None  # the shaft's orders are not known: no telling them from the grid's
        x = np.asarray(waveform, dtype=np.float64).ravel()
        if x.size < 64 or not np.isfinite(x).all():
            return None  # no waveform (features given), or one the features already refused
        t = np.arange(x.size) / self.fs
        clear = MAINS_CLEAR * self.fs / x.size
        # the shaft's orders and the machine's other lines recorded as orders at commissioning (``machine_orders``)
        orders = np.asarray([*_SHAFT_ORDERS, *(self.machine_orders or [])]) * speed
        tried: list[tuple[float, float, np.ndarray, list[float]]] = []
        padded = padded_spectrum(x, self.fs)
        seen = self.mains_seen or []  # the machine's own lines there, shown at commissioning: left in
        for mains in MAINS_HZ:
            # the shaft's lines within two bins of the grid's (a Hann line's reach), fitted beside it
            beside = [float(o) for o in orders if abs(o - mains) < 2 * clear]
            if not _stands(padded, mains, clear, MAINS_DRIFT) and not (
                beside and _stands(_without(x, t, mains, beside, self.fs), mains, clear, MAINS_DRIFT)
            ):
                # no line of the grid's own frequency stands: no pickup to tell, judged as it is; the evidence of one is
                # forgotten (a pickup seen across the speeds, gone with the cable's repair, then excused a fan's 1x grown
                # onto 50 Hz at one speed, no alarm)
                self.grid_stood.pop(mains, None)
                continue
            # the grid's frequency as the window shows it (``_grid_frequency``): its harmonics looked for at its multiples
            # (at 50 Hz's, a pickup on a grid at 49.6 Hz had its 150 Hz line taken for a shaft's, 1.2 Hz off)
            # (the shaft's lines within two bins fitted beside it: a 2x a bin off pulled the estimate to the search's end)
            grid = _grid_frequency(x, t, mains, beside)
            ks: list[int] = []  # the grid's harmonics taken out
            keep: list[float] = []  # the shaft's lines beside the grid's: fitted with them, left in
            for k in (k for k in MAINS_HARMONICS if k * mains < 0.4 * self.fs):
                h = k * grid
                if k * mains in seen:
                    continue  # the machine's line (or a pickup it was commissioned with): left in, judged
                near = orders[np.abs(orders - h) < clear]
                if k == 1 and bool(
                    (np.abs(orders - mains) < np.maximum(clear, MAINS_DRIFT + MAINS_TAG_OFF * orders)).any()
                ):
                    # a shaft's order within a bin of the grid's own frequency is never told from it: the speed tag
                    # puts it 0.5 Hz or more off only as well as the tag is right (a drive's output frequency read as
                    # the shaft's is 1-2 % off: an imbalance at 2,990 rpm, the tag at 2,960, and a 4-pole motor's
                    # misalignment at 1,497 rpm, its 2x on 50 Hz, were taken out as the pickup). Within a bin of the
                    # nominal frequency, as before the grid's was measured: the grid 0.2-0.4 Hz off put a 2x 4.6-4.8 Hz
                    # from it within the bin and a pickup told there read NG with alarms (those near the measured
                    # frequency are fitted beside it, below, and left in). However fine the bin, within the drift the
                    # grid's frequency is searched in and MAINS_TAG_OFF of the order (``MAINS_TAG_OFF``)
                    continue
                if near.size and (
                    np.abs(near - h).min() < MAINS_APART
                    or abs(line_peak(padded, h, clear) - h) > MAINS_NARROW
                ):
                    continue  # the shaft's line on the grid's, or the line there is the shaft's: left in
                ks.append(k)
                # the shaft's lines within the weighted fit's reach (a Hann line is two bins wide) fitted beside, left
                # in: one a bin or two off (a 2x at 55 Hz beside 50) was partly taken out with the grid's line
                keep += [float(o) for o in orders[np.abs(orders - h) < 2 * clear] if float(o) not in keep]
            if not ks or ks[0] != 1:
                # the fundamental is not told from the shaft's lines or the machine's: judged as it is
                continue
            _, coef, basis = _grid_lines_fit(x, t, grid, ks, keep)
            lines = [k * grid for k in ks]
            amp = float(math.hypot(coef[0], coef[1]))  # the fundamental's amplitude
            stood = self.grid_stood.setdefault(mains, [])
            moved = [
                a
                for s, a in stood
                if mains * abs(s / speed - 1.0) >= MAINS_STAYED_BINS * self.fs / x.size and a >= 0.5 * amp
            ]
            stood.append((float(speed), amp))
            del stood[:-MAINS_EVIDENCE]
            if not moved:
                continue  # not seen standing while the speed moved: may be the machine's line, judged as it is
            hum = basis[:, : 2 * len(lines)] @ coef[: 2 * len(lines)]
            tried.append((amp, mains, hum, lines))
        for amp, mains, hum, lines in sorted(tried, key=lambda c: -c[0]):
            clean = x - hum
            g = self.features(clean, scalars)
            z = self._rise(feature_vector(g), med, scale, speed, level_only)
            left = float(np.clip(z, 0, None).max())
            # a what-if: the window is recorded already
            zone, over = self.iso_count(g, clean, 0, record=False)
            if (
                left < self.threshold
                and (before < self.threshold or left <= MAINS_EXPLAINS * before)
                and over == 0
            ):
                return (
                    f"sensor: mains pickup at {mains:g} Hz ({', '.join(f'{h:.4g}' for h in lines)} Hz taken out: "
                    f"{amp:.3g} {self.s.units} at {mains:g} Hz), the shaft's orders elsewhere "
                    f"({60 * speed:.0f} rpm); without it the window scores {left:.1f} of {self.threshold:.1f}, "
                    f"ISO zone {zone}: the cable's screen or ground, not the machine; check the sensor's cable "
                    "routing (away from motor leads), its screen grounded at one end, and an isolated mount"
                )
        return None

    def _forget_grid_gone(self, waveform: np.ndarray) -> None:
        """Forget the evidence of a pickup (``grid_stood``) whose grid line this window shows under half as strong as
        when last seen, the window over the threshold or not: a pickup gone with the cable's repair left its evidence,
        and a fan's 1x grown onto 50 Hz at one speed later was taken out as that pickup, no alarm (over the threshold
        already at a quarter of the pickup's size on a quiet machine, its windows were told as the pickup all along)."""
        x = np.asarray(waveform, dtype=np.float64).ravel()
        if x.size < 64 or not np.isfinite(x).all():
            return
        w = _hann(x.size)
        t = np.arange(x.size) / self.fs
        xw = (x - x.mean()) * w
        step = min(MAINS_FIT_STEP, 0.25 * self.fs / x.size)
        for mains, stood in list(self.grid_stood.items()):
            count = np.arange(-MAINS_DRIFT, MAINS_DRIFT + step / 2, step).size
            amp = 2.0 * _dft_peak(xw, t, mains - MAINS_DRIFT, step, count) / float(w.sum())
            if not stood or amp < 0.5 * stood[-1][1]:
                del self.grid_stood[mains]

    def _ramped(
        self,
        x: np.ndarray,
        scalars: dict[str, float] | None,
        speed: float,
        stats: tuple,
        level_only: bool = False,
    ) -> str | None:
        """Why the window's rise is its level sliding (the rule above MAINS_EXPLAINS's use here), or None.
        ``stats``: the median, the spreads and the score the window was judged by."""
        med, scale, score = stats
        x = np.asarray(x, dtype=np.float64).ravel()
        if not self.threshold or not speed or speed <= 0 or x.size < 64 or not np.isfinite(x).all():
            return None
        if x.size / self.fs * speed < SETTLE_MIN_TURNS or slide_ratio(x) < SPEED_SLIDE_RATIO:
            return None
        t = np.arange(x.size) - (x.size - 1) / 2
        slope = float(np.dot(t, x - x.mean()) / np.dot(t, t))
        left = float(
            np.clip(
                self._rise(
                    feature_vector(self.features(x - slope * t, scalars)), med, scale, speed, level_only
                ),
                0,
                None,
            ).max()
        )
        if left >= self.threshold or left > MAINS_EXPLAINS * score:
            return None
        return (
            f"sensor: its level slid {slope * (x.size - 1):.3g} {self.s.units} across the window (a sensor's bias "
            f"settling or drifting); without that line the window scores {left:.1f} of {self.threshold:.1f}: not "
            "the machine; if it lasts, check the sensor, its cable and the DAQ's input coupling"
        )

    def _rise(
        self, row: np.ndarray, med: np.ndarray, scale: np.ndarray, speed_hz: float, level_only: bool = False
    ) -> np.ndarray:
        """The window's rises (``rise_z``); on a baseline with ``level_threshold``, the larger of those and its rises
        against the levels its speed gives, in the threshold's units (``level_threshold`` there is ``threshold``
        here), those alone at a speed only the levels cover (``level_only``). On one learned before it, where
        ``_sensor_suspect`` found a drive's window at an end of its range the machine's by those levels
        (``level_at``), the larger of its rises and its rises against them (the pooled threshold). Within the pooled
        spreads of a baseline commissioned across speeds, a looseness, an imbalance x3 or a misalignment scored under
        the threshold (OK) where it stands 7-13 deviations off the levels of its speed (a healthy window: 3.6 at
        most)."""
        z = rise_z(row, med, scale, self.relative)[0]
        if self.level_at is not None and self.speed_levels is not None:
            z = np.maximum(z, rise_z(row, self.level_at, self.speed_levels[2], self.relative)[0])
        if (
            self.level_threshold
            and self.threshold
            and self.speed_levels is not None
            and (at := self._levels(speed_hz)) is not None
        ):
            # over both thresholds: the levels' own (out-of-fold) and the pooled one, and LEVEL_MIN_RISE
            zl = level_rise(row, at, self.speed_levels[2], self._band_stats(speed_hz)[1])[0]
            # (a speed off every band's own statistics: the pooled threshold is of windows judged by another speed's)
            pooled = 0.0 if level_only and self._off_bands(speed_hz) else self.threshold
            zl *= self.threshold / max(pooled, self.level_threshold, LEVEL_MIN_RISE)
            return zl if level_only else np.maximum(z, zl)
        return z

    def _levels(self, speed_hz: float) -> np.ndarray | None:
        """The features' levels the commissioned line gives at ``speed_hz`` (``speed_levels``), or None."""
        if self.speed_levels is None or not speed_hz or speed_hz <= 0:
            return None
        return self.speed_levels[1] + self.speed_levels[0] * math.log(speed_hz)

    def _in_level_spans(self, speed_hz: float) -> bool:
        """Whether ``speed_hz`` lies within half a speed band of a speed the levels were learned at."""
        if self.level_threshold is None or not self.level_spans or not speed_hz or speed_hz <= 0:
            return False
        return self._near_spans(self.level_spans, speed_hz)

    def _near_spans(self, spans: list[tuple[float, float]], speed_hz: float) -> bool:
        """Whether ``speed_hz`` lies within half a speed band of one of ``spans`` (commissioned speeds, lo-hi)."""
        k = 1.0 + self.s.speed_band_pct / 200.0
        return any(lo / k <= speed_hz <= hi * k for lo, hi in spans)

    def _units_tilted(
        self, waveform: np.ndarray, rise_1x: float, f: dict[str, float]
    ) -> tuple[str, str] | None:
        """``scale`` when the window's spectrum is the commissioned one tilted by a unit's 1/f (``units_tilt``):
        a velocity signal read as acceleration, or (``TILT_1X_FALL``) an acceleration read as velocity; not the
        machine. ``rise_1x``: the shaft's 1x against the commissioned one (log)."""
        octaves = octave_floors(waveform)
        tilt = units_tilt(octaves, self.floor_octaves)
        if tilt is None or octaves is None or self.floor_octaves is None:
            return None
        speed = f["speed_hz"]
        known = bool(self.orders or self.s.speed_tag) and bool(speed) and speed > 0
        lowest = self.fs * math.sqrt(_OCTAVE_EDGES[0] * _OCTAVE_EDGES[1])  # the lowest octave's middle
        if tilt < 0:
            carried = octaves[0] - self.floor_octaves[0] + math.log(lowest / speed) if known else rise_1x
            if abs(rise_1x - carried) > TILT_1X_FALL_MATCH:
                return None  # the 1x stayed where the floor tilted (a broadband fault): judged
            return (
                "scale",
                f"sensor: the spectrum's floor is the commissioned one tilted by {math.exp(tilt):.2g}x an octave, on "
                "every octave (a unit's 1/f): a velocity signal (mm/s) read as acceleration, or a sensor of another "
                f"kind; units: {self.s.units} is set; not the machine; correct the sensor's output or "
                "baseline.units, or relearn if the new sensor is right",
            )
        if self.s.units != "mm/s" or not known:
            return None
        carried = octaves[0] - self.floor_octaves[0] + tilt * math.log2(speed / lowest)
        if rise_1x > -math.log(TILT_1X_FALL) or abs(rise_1x - carried) > TILT_1X_MATCH:
            return None  # the 1x stayed (a bearing fault grown to failure tilts the floor so too): judged
        return (
            "scale",
            f"sensor: the spectrum's floor is the commissioned one tilted by {math.exp(tilt):.2g}x an octave, on "
            f"every octave, and the shaft's 1x {math.exp(rise_1x):.2g}x with it (a unit's f): an acceleration "
            "signal (m/s2) read as velocity, or a sensor of another kind; units: mm/s is set; not the machine; "
            "correct the sensor's output or baseline.units, or relearn if the new sensor is right",
        )

    def _sensor_suspect(
        self,
        row: np.ndarray,
        med: np.ndarray,
        scale: np.ndarray,
        z: np.ndarray,
        other_speed: bool = False,
        floor: Callable[[], float | None] | None = None,
        quant: Callable[[], np.ndarray | None] | None = None,
        speed_hz: float | None = None,
        octaves: Callable[[], list[float] | None] | None = None,
    ) -> tuple[str, str] | None:
        """``scale``: every amplitude moved by one common factor of at least ``SCALE_MIN`` (up or down)
        and the window is otherwise as commissioned: the units or the sensor's gain changed (m/s2 read
        as g, a sensitivity setting), not the machine, whose faults change the spectrum's shape
        (imbalance the 1x, misalignment the 2x-3x, a bearing the high band and the envelope).
        ``low_level``: the amplitudes fell ``LOW_LEVEL`` times or more below the commissioned ones,
        whatever the shape: no running machine in the window (a dead or detached sensor, a stopped
        machine, or a units error), which would otherwise score low, as healthy. At a speed the asset
        was not commissioned at (``other_speed``) only ``low_level``: its level differs anyway. ``floor``: the
        window's ``floor_move``, asked only once a common factor is found (an FFT and a sort a window else); a
        common factor the floor did not follow (``FLOOR_FOLLOW``) is no ``scale``. ``quant``: the window's
        ``quantisation_levels``; an amplitude on the ADC's floor (``QUANT_CLEAR``) is left out of the factor and
        need only have moved between 1 and the factor. ``speed_hz``: the window's, for ``speed_levels``. ``octaves``:
        the window's ``octave_floors``, asked only where the shape check fails (``LOAD_LINES``)."""
        self.floor_scale, self.level_at = False, None
        if not self.threshold:
            return None
        amp = _AMPLITUDE_INDEX if self.orders else _FREE_AMPLITUDE_INDEX
        d = row[amp] - med[amp]
        w = 1.0 / scale[amp] ** 2  # the common factor: each amplitude weighed by its steadiness
        if float(np.abs(d).max()) < math.log(
            SCALE_MIN
        ):  # no factor of any subset reaches it (the levels cost)
            return None
        on_floor = np.zeros(amp.size, dtype=bool)
        levels = quant() if quant is not None else None
        if levels is not None:
            at = math.log(QUANT_STEPS) + levels[amp]
            on_floor = (med[amp] <= at) | (row[amp] <= at)
            if int((~on_floor).sum()) < QUANT_CLEAR:  # all but one on the floor: nothing tells a gain
                on_floor[:] = False
        g = float(np.dot(w[~on_floor], d[~on_floor]) / w[~on_floor].sum())
        if on_floor.any() and g > 0:
            rose = (d[on_floor] >= QUANT_ROSE * scale[amp][on_floor]) & (d[on_floor] >= QUANT_FOLLOW * g)
            if not bool(
                rose.any()
            ):  # no band on the ADC's floor followed: the former rule, every band weighed
                on_floor[:] = False
                g = float(np.dot(w, d) / w.sum())
        through_floor = bool(on_floor.any())
        if abs(g) < math.log(SCALE_MIN):
            return None
        k = math.exp(g)
        hint = next((why for f, why in _UNIT_FACTORS if abs(math.log(k / f)) < 0.1), None)
        if g <= -math.log(LOW_LEVEL):  # hardly any signal left to judge, whatever its shape
            return (
                "low_level",
                f"sensor or machine: the vibration is 1/{1 / k:.0f} of its commissioned level: a dead or "
                "detached sensor, a stopped machine"
                + (f", or the units ({hint})" if hint else ", or the sensor's gain")
                + "; not judged",
            )
        if other_speed:  # a machine at a speed it was not commissioned at runs at another level (a VFD at
            # 70 % speed: a third of the acceleration, the same shape): not the sensor's gain
            return None
        rest = z.copy()
        # on the ADC's floor a gain of k moves an amplitude between 1 and k: only beyond that is it a shape
        rest[amp] = np.where(on_floor, d - np.clip(d, min(g, 0.0), max(g, 0.0)), d - g) / scale[amp]
        if float(np.abs(rest).max()) >= self.threshold and not self._scaled_at_another_load(
            g, d, np.delete(rest, amp), on_floor, octaves
        ):
            return None  # the shape changed too: judged as it is
        if self.speed_levels is not None and speed_hz and speed_hz > 0:
            # commissioned across speeds: the factor and the shape against the levels the window's speed gives
            slope, level, sc = (
                a[amp][~on_floor] for a in (*self.speed_levels[:2], scoring_scale(self.speed_levels[2]))
            )
            e = row[amp][~on_floor] - level - slope * math.log(speed_hz)
            gs = float(np.dot(1 / sc**2, e) / np.sum(1 / sc**2))
            if gs * math.copysign(1.0, g) < SPEED_FIT_FACTOR * math.log(SCALE_MIN):
                # about the levels this speed gives: the machine's, judged as it is and against those levels
                self.level_at = self.speed_levels[1] + self.speed_levels[0] * math.log(speed_hz)
                return None
            k = math.exp(gs)
            hint = next((why for f, why in _UNIT_FACTORS if abs(math.log(k / f)) < 0.1), None)
        if floor is not None and g > 0 and (moved := floor()) is not None and moved < FLOOR_FOLLOW * g:
            return None  # the lines rose, the floor stayed: energy the machine added, judged as it is
        if (
            through_floor and g > 0
        ):  # a fault that lifted every line and the band under the floor alike is not ruled out
            self.floor_scale = True
            return (
                "scale",
                f"sensor or machine: every amplitude clear of the ADC's floor {k:.3g}x its commissioned level at "
                f"once, the spectrum's shape as commissioned: the sensor's gain "
                f"({hint or 'a sensitivity setting?'}), or a fault that lifted every line alike; check the "
                "sensor's setting first; an ISO zone alarm raised before stands",
            )
        return (
            "scale",
            f"sensor: every amplitude {k:.3g}x its commissioned level at once, the spectrum's shape as "
            f"commissioned: the units or the sensor's gain changed ({hint or 'a sensitivity setting?'}), "
            "not the machine; correct the setting, or relearn if the new level is right",
        )

    def _scaled_at_another_load(
        self,
        g: float,
        d: np.ndarray,
        ratios: np.ndarray,
        on_floor: np.ndarray,
        octaves: Callable[[], list[float] | None] | None,
    ) -> bool:
        """A common factor ``g`` (log) whose amplitudes (``d``, logs against the commissioned) a load moved against
        each other: the gain-invariant features (``ratios``, z) as commissioned, no amplitude more than
        ``LOAD_LINES`` off the factor, and the floor moved by it on every octave alike (``LOAD_FLOOR_EVEN``)."""
        if octaves is None or self.floor_octaves is None or bool(on_floor.any()) or not self.threshold:
            return False
        if float(np.abs(ratios).max()) >= self.threshold or float(np.abs(d - g).max()) > LOAD_LINES:
            return False
        now = octaves()
        if now is None or len(now) != len(self.floor_octaves):
            return False
        moved = np.asarray(now) - np.asarray(self.floor_octaves)
        mean = float(moved.mean())
        return abs(mean - g) <= LOAD_FLOOR_AGREE and float(np.abs(moved - mean).max()) <= LOAD_FLOOR_EVEN

    def _learn_speed(self) -> None:
        """The asset's shaft speed from the averaged spectrum of its first windows (steadier than one
        window's), then their features with that speed.

        A commissioning very often begins with the sensor's power-up, and without a speed tag nothing told its
        settling windows (the sensor check counts a shaft's turns at the speed found here): their sliding level
        outweighed the shaft's lines in the average, the speed was found at the range's low end (276 rpm on 4 of
        5 machines of 1,490-2,960 rpm with one such window of 20), the orders were left out and the threshold rose
        30-80 % (an unbalance alarmed 6-11 windows later). On the simulator one window sliding half as far as the
        settling rule's bound was enough. The windows whose slide reaches ``SPEED_SLIDE_RATIO`` are left out of it,
        unless fewer than ``SPEED_MIN_STEADY`` others are left (a shaft turning less than twice in a window
        reads up to 12: its windows are all kept; a healthy machine's site noise with a slow random walk up to
        4.9, so some windows of such machines are left out, the rest serve); and, the speed found resolved,
        those the settling rule flags at its turns are not learned."""
        lo, hi = self.s.speed_range_rpm[0] / 60, self.s.speed_range_rpm[1] / 60
        slid = [slide_ratio(w) >= SPEED_SLIDE_RATIO for w in self._first]
        use = [w for w, s in zip(self._first, slid, strict=True) if not s]
        if len(use) < SPEED_MIN_STEADY:
            use = self._first
        f0 = self.speed_hz = estimate_speed_hz(np.asarray(use), self.fs, lo, hi)
        slo, shi = max(lo, f0 * 0.85), min(hi, f0 * 1.15)
        own = [estimate_speed_hz(w - w.mean(), self.fs, slo, max(shi, slo + 1)) for w in use]
        confidence = float(np.mean([abs(e - f0) <= WINDOW_AGREE * f0 for e in own]))
        bins = f0 * self.n / self.fs
        resolved = bins >= LOST_SHAFT_BINS and (bins >= MIN_SHAFT_BINS or confidence >= MIN_CONFIDENCE)
        self.orders = resolved
        first, self._first = self._first, []
        steps, self._first_steps = self._first_steps, []
        if len(steps) != len(first):  # not expected: every first window is kept with its step
            steps = [quantisation_step(w) for w in first]
        turns = f0 * self.n / self.fs
        for w, s, q in zip(first, slid, steps, strict=True):
            if s and resolved and _settling_window(w, turns):
                continue  # a sensor settling at the commissioning's start: not the healthy machine
            f = self.features(w, None)
            self.rows.append(feature_vector(f).tolist())
            self.speeds.append(f["speed_hz"])
            mag = hann_spectrum(w)
            self.floors.append(spectral_floor(w, mag))
            self.octaves.append(octave_floors(w, mag))
            self.mains_lines.append(
                grid_lines(w, self.fs, padded := _seen_spectrum(w, self.fs), f["speed_hz"])
            )
            self.machine_lines.append(window_lines(w, self.fs, padded))
            self.steps.append(q)
        self._event(
            EventKind.BASELINE_SPEED,
            speed_rpm=round(self.speed_hz * 60, 1),
            windows=len(first),
            orders=resolved,
            confidence=round(confidence, 2),
        )
        if not resolved:  # said once, at commissioning (the file keeps it)
            log.warning(
                "pipeline %s: the shaft speed found in the spectrum, %.0f rpm, is below what one window of "
                "%d samples at %g Hz resolves (%.0f rpm), and only %.0f %% of the first windows found it "
                "on their own: a speed found there is noise, so the order and envelope features are not "
                "used; the asset is judged on its RMS, kurtosis, crest, high band and velocity (a fault "
                "is named 'unspecified'). Give the pipeline a speed_tag, or a longer window, to judge "
                "the orders",
                self.pipeline,
                self.speed_hz * 60,
                self.n,
                self.fs,
                MIN_SHAFT_BINS * self.fs / self.n * 60,
                100 * confidence,
            )

    def _near_band(self, speed_hz: float) -> int:
        b = _band(speed_hz, self.s.speed_band_pct)
        return b if b in self.bands else min(self.bands, key=lambda k: abs(k - b))

    def floor_move(self, speed_hz: float, waveform: np.ndarray) -> float | None:
        """How far (log) the window's ``spectral_floor`` moved from its speed band's commissioned one; None: a
        baseline learned before the record, or a commissioned floor within ``QUANT_STEPS`` of the floor the
        window's quantisation step alone gives (the ADC's: an analog gain leaves it, so it tells nothing)."""
        mid = self.floor_bands.get(self._near_band(speed_hz)) if self.bands else None
        if mid is None:
            if self.bands and not self.floor_bands and not self._said_no_floor:
                self._said_no_floor = True
                log.info(
                    "pipeline %s: the baseline was learned before the noise floor was recorded (no floor_bands): "
                    "a common factor of every amplitude is taken for a gain or units error whether or not the "
                    "floor followed it (the former rule); relearn to judge such windows",
                    self.pipeline,
                )
            return None
        q = quantisation_floor(waveform)
        if q is not None and mid <= q + math.log(QUANT_STEPS):
            return None
        moved = spectral_floor(waveform) - mid
        return moved if math.isfinite(moved) else None

    def quantisation_levels(self, speed_hz: float, waveform: np.ndarray) -> np.ndarray | None:
        """Each feature's level (the feature vector's) in a window of nothing but the quantisation noise of the
        ADC's commissioned step (``quant_step``; uniform within a step, white), at ``speed_hz``: the mean of
        ``QUANT_NOISE_SEEDS`` seeded noise windows, kept per step and speed band. None: not quantised, or the
        window's step is not the commissioned one (a scaling after the ADC, units: its floor moved with every
        amplitude, so none is on a floor of its own; or a window that skipped codes, judged as before)."""
        q, now = self.quant_step, window_step(waveform)
        if q is None and now is not None and self.bands and not self._said_no_step:
            self._said_no_step = True
            log.info(
                "pipeline %s: the signal is quantised (a step of %.3g) but the baseline holds no ADC step "
                "(quant_step: learned before it was recorded, or on windows that were not quantised): an "
                "amplitude on the ADC's floor is weighed in a sensor's gain as any other; relearn to leave it out",
                self.pipeline,
                now,
            )
        if q is None or now is None or abs(now / q - 1.0) > 0.01:
            return None
        key = (q, self._near_band(speed_hz) if self.bands else 0)
        if key not in self._quant_levels:
            lo, hi = self.s.speed_range_rpm[0] / 60, self.s.speed_range_rpm[1] / 60
            rows = []
            for seed in range(QUANT_NOISE_SEEDS):
                x, units = q * (np.random.default_rng(seed).random(self.n) - 0.5), self.s.units
                if units in ("mm/s", "mV"):  # as ``features`` reads the window
                    x, units = acceleration_g(x, self.fs, units, self.s.mv_per_g), "g"
                f = condition_features(x, self.fs, speed_hz, self.bearing, units, (lo, max(hi, lo + 1)))
                rows.append(feature_vector(f))
            self._quant_levels[key] = np.mean(rows, axis=0)
        return self._quant_levels[key]

    def _band_stats(self, speed_hz: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """The statistics a window at ``speed_hz`` is scored against, and whether its speed lies outside
        the commissioned ones (``extrapolated``: not judged). Outside means more than half a speed band
        (``speed_band_pct`` / 2) from every commissioned speed: one whole band off (up to 20 % from the
        nearest commissioned speed) was judged by the nearest band's statistics, and a line the speed moves
        across a fixed band edge (a gear mesh's 2x crossing the 1 kHz high band) read as a fault of a healthy
        machine. A baseline learned before the record keeps the former rule."""
        near = self._near_band(speed_hz)
        m, sc, _ = self.bands[near]
        if self.speed_spans is None:  # learned before the record: a band beyond the nearest's neighbours
            return m, sc, abs(near - _band(speed_hz, self.s.speed_band_pct)) > 1
        if self._off_bands(speed_hz):
            # the nearest band's statistics are its own speeds' (no band of this speed's own, nor pooled ones): a
            # drive commissioned 28 of 40 windows at 900-960 rpm judged its healthy 2,950 rpm by them, NG 6 of 6 and
            # 50-270 alarms a machine-day. The levels against the speed judge it where they cover it, else nothing
            return m, sc, True
        return m, sc, not self._near_spans(self.speed_spans, speed_hz)

    def _off_bands(self, speed_hz: float) -> bool:
        """Whether ``speed_hz`` lies more than ``BAND_REACH`` times beyond the speeds of the nearest band whose
        statistics are that band's own (``bands_pooled`` False; a file learned before it: ``_own_alone``, else
        pooled, the former rule)."""
        if not (self.bands_pooled is False or (self.bands_pooled is None and self._own_alone())):
            return False
        step = 1.0 + self.s.speed_band_pct / 100.0
        near = self._near_band(speed_hz)
        return not step**near / BAND_REACH <= speed_hz <= step ** (near + 1) * BAND_REACH

    def _own_alone(self) -> bool:
        """For a file learned before ``bands_pooled``: whether its bands are their own (two or more: the pooled entry
        is always alone; one: fewer windows than were learned and a spread of the speed line's, ``OWN_SPREAD``)."""
        if len(self.bands) != 1:
            return len(self.bands) >= 2
        _, sc, count = next(iter(self.bands.values()))
        if self.speed_levels is None or count >= self.s.windows - self.outliers:
            return False
        spread = np.asarray(sc, dtype=np.float64)[_AMPLITUDE_INDEX]
        line = np.asarray(self.speed_levels[2], dtype=np.float64)[_AMPLITUDE_INDEX]
        return bool(np.median(spread / np.maximum(line, 1e-12)) < OWN_SPREAD)

    def _finish(self) -> None:
        x = np.asarray(self.rows)
        sp = np.asarray(self.speeds)
        # without a speed tag nothing said a stop while commissioning was one (with a tag, _stopped):
        # its windows, vibration 1/10 of the running machine's or less, were learned as healthy, every
        # spread widened by them (a threshold of 25 deviations: no fault alarmed). Such windows are
        # left out, the running machine's kept (at least MIN_BAND_WINDOWS of them)
        # each learned window's floor (a learning resumed from a file saved before the record has none)
        fl = np.asarray(self.floors) if len(self.floors) == len(x) else None
        fl = None if fl is None or not np.isfinite(fl).all() else fl
        # each learned window's octave floors (a learning resumed from a file saved before the record has none)
        oc = list(self.octaves) if len(self.octaves) == len(x) else None
        # each learned window's ``quantisation_step`` (None: a learning resumed from a file saved before it)
        st = list(self.steps) if len(self.steps) == len(x) else None
        rms = x[:, _FEATURE_INDEX["rms"]]
        running = rms >= float(np.quantile(rms, 0.9)) - math.log(LOW_LEVEL)
        # with a speed tag a stop is told by it (``_stopped``): such windows below the running ones' slowest speed band
        # are a drive's slowest speeds, kept for the levels against the speed (``speed_levels``), judged by those. One
        # at a speed the machine ran louder at is a stop the tag did not show (a drive's speed reference read, a
        # sensor off its mount): kept in the line, 6 of 40 pulled it down and its spreads up, and a looseness or a
        # misalignment at the range's top read OK or 'scale' (NG before the bottom was kept)
        dropped = bool(running.sum() >= MIN_BAND_WINDOWS and not running.all())
        slow = dropped and bool(self.s.speed_tag)
        x0, sp0, keep = x, sp, np.arange(len(x))  # ``keep``: the windows the pooled statistics learn from
        if dropped:
            log.info(
                "pipeline %s: %d of %d commissioning windows left out of the statistics: 1/%g of the running "
                "machine's vibration or less (%s)",
                self.pipeline,
                int((~running).sum()),
                len(x),
                LOW_LEVEL,
                "the speed range's bottom: judged by the levels against the speed" if slow else "a stop",
            )
            x, sp, keep = x[running], sp[running], keep[running]
            fl = None if fl is None else fl[running]
            oc = None if oc is None else [o for o, r in zip(oc, running, strict=True) if r]
            st = None if st is None else [q for q, r in zip(st, running, strict=True) if r]
        # a knock, a dropped tool, a door slam in one window of the hour: left out, else its score set
        # the threshold (an 8-bit pump's 6 cavitation knocks put it at 17.3, 6.0 without them, and its
        # faults alarmed hours later or not at all)
        out = isolated_outliers(x, self.s.outlier_mad, self.s.outlier_max_share)
        self.outliers = int(out.sum())
        if self.outliers:
            log.info(
                "pipeline %s: %d of %d commissioning windows left out: each alone far above the others "
                "(more than %g MADs of their scores above the median; a knock, a transient)",
                self.pipeline,
                self.outliers,
                len(x),
                self.s.outlier_mad,
            )
            x, sp, keep = x[~out], sp[~out], keep[~out]
            fl = None if fl is None else fl[~out]
            oc = None if oc is None else [o for o, q in zip(oc, out, strict=True) if not q]
            st = None if st is None else [q for q, o in zip(st, out, strict=True) if not o]
        bands = np.asarray([_band(s, self.s.speed_band_pct) for s in sp])
        self.speed_spans = _speed_spans(sp, 1.0 + self.s.speed_band_pct / 100.0)
        self.bands, self.floor_bands = {}, {}
        self.speed_levels, self.level_threshold, self.level_spans = None, None, None
        line = keep  # the windows the line learns from
        if slow:
            bottom = ~running & (sp0 <= sp0[running].min() * (1.0 + self.s.speed_band_pct / 100.0))
            # ... and only one whose RMS follows the running ones' against the speed, carried to its own (within
            # LOW_LEVEL): a stop while the tag read the range's slowest speed (a drive's speed reference held at its
            # minimum) is at the sensor's floor; 6 such of 40 kept, imbalance x5 and misalignment x4 read OK everywhere
            bottom &= rms >= _running_rms(np.log(np.maximum(sp0, 1e-9)), rms, running) - math.log(LOW_LEVEL)
            line = np.sort(np.concatenate([keep, np.flatnonzero(bottom)]))  # in their order
        xl, sl = x0[line], sp0[line]
        if (self.orders or self.s.speed_tag) and sl.min() > 0 and sl.max() >= SPEED_FIT_SPAN * sl.min():
            slope, level = np.polyfit(np.log(sl), xl, 1)
            self.speed_levels = (slope, level, _stats(xl - (np.outer(np.log(sl), slope) + level))[1])
            self.level_threshold = _level_threshold(
                xl, np.log(sl), self.s.false_alarm_rate, self.s.confirm_windows
            )
            self.level_spans = _speed_spans(sl, 1.0 + self.s.speed_band_pct / 100.0)
        med_all, sc_all = _stats(x)
        top = int(np.bincount(bands - bands.min()).argmax() + bands.min())
        self.bands[top] = (med_all, sc_all, len(x))
        self.bands_pooled = int((bands == top).sum()) < MIN_BAND_WINDOWS  # else ``top`` gets its own below
        if fl is not None:
            self.floor_bands[top] = float(np.median(fl))
        for b in np.unique(bands):
            sel = bands == b
            if sel.sum() >= MIN_BAND_WINDOWS:
                m, sc = _stats(x[sel])
                self.bands[int(b)] = (m, sc, int(sel.sum()))
                if fl is not None:
                    self.floor_bands[int(b)] = float(np.median(fl[sel]))
        self.relative = True
        self.quant_step = None if st is None else _common_step(st)
        kept = [o for o in oc or [] if o is not None]
        self.floor_octaves = (
            [float(v) for v in np.median(np.asarray(kept), axis=0)] if len(kept) >= MIN_BAND_WINDOWS else None
        )
        # out-of-fold scores: contiguous blocks, each scored against the others (drift included)
        self.threshold = out_of_fold_threshold(
            x, self.s.false_alarm_rate, self.s.confirm_windows, relative=True
        )
        if self.temps:
            self.temp_running = float(np.median(self.temps))
        self.state = "ready"
        self.learned_at = self.clock()
        n = len(self.rows)
        speeds, bin_hz = list(self.speeds), self.fs / self.n
        self.rows, self.speeds, self.temps, self.floors = [], [], [], []
        # (a learning resumed from a file saved before the record: some windows have none, nothing known)
        got = [h for r in self.mains_lines for h in _not_pickup(r)]
        # a line that stayed put is the grid's only where the machine's lines are known (``machine_orders``): a learning
        # resumed from a file saved before them dropped a fan's 1x seen about 50 Hz at many speeds, recorded nowhere,
        # and its imbalance grown there read mains_pickup, no alarm
        lines_known = bool(self.machine_lines) and len(self.machine_lines) == n
        self.mains_seen = (
            sorted(
                h
                for h in set(got)
                if got.count(h) >= MAINS_SEEN * n
                and not (lines_known and _stayed(h, self.mains_lines, speeds, bin_hz))
            )
            if self.mains_lines and len(self.mains_lines) == n
            else None
        )
        self.machine_orders = (
            machine_orders(self.machine_lines, speeds, bin_hz)
            if lines_known and (self.orders or self.s.speed_tag)
            else None
        )
        self.steps, self.octaves, self.mains_lines, self.machine_lines = [], [], [], []
        self.save()
        self._event(
            EventKind.BASELINE_LEARNED,
            windows=n,
            threshold=round(self.threshold, 3),
            false_alarm_rate=self.s.false_alarm_rate,
            speed_bands=sorted(self.bands),
            speed_hz=round(float(np.median(sp)), 3),
            outliers=self.outliers,
        )
