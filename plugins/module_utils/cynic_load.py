# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT

"""Open-loop HTTP load engine shared by the ``cynic.cluster.cynic_stress`` module and the
``tools/cynic-stress`` command line.

This file must not import Ansible: the command line loads it by path.

How the schedule works (open loop, constant arrival rate):

* request ``i`` is due at ``t0 + i / rate`` (``time.perf_counter_ns``), whatever happened to the
  requests before it. The scheduler never waits for a response before sending the next request;
  when it wakes up late it issues every overdue request at once, so the schedule is kept exactly
  and the count sent over the window is ``rate * duration``.
* the first ``rate * warmup`` requests are the warm-up: they are sent like the others but left out
  of every statistic (their judgment ids are kept: every answered judgment must be stored).
* latency is measured twice, from the intended start (the due time: coordinated omission
  corrected, what a user arriving at that moment would see) and from the actual send. The
  difference is the scheduler lag, reported on its own; when it is large (or the generator could
  not keep up with the planned rate) ``generator_saturated`` says that the numbers describe the
  generator as much as the server.
* at most ``max_in_flight`` requests are outstanding. A request that is due while the cap is
  reached is not queued: it is counted as dropped (and counts as a failure in ``error_rate``).

What the figures cover:

* ``latency_ms`` (intended and actual) covers every request of the measured window: answers of any
  status, transport errors at the moment they failed, and the requests that got no answer because
  they were never sent (dropped at the in-flight cap, or cancelled before they started), which are
  counted as if they had timed out: ``timeout`` from their send (from the due time, plus the
  scheduler lag, in the intended figures). ``counted_at_timeout`` says how many there were; a run
  that drops more than 1 % of its requests therefore shows the timeout in its p99.
* ``latency_ok_ms`` covers the 2xx answers only, so that fast errors cannot make a slow service
  look fast. Latency thresholds must hold for both sets.
* ``instances`` and ``instance_shares`` count 2xx answers only (``instance_errors`` counts the
  other answers that carried the instance header): an instance that answers errors is not
  carrying its share of the load.
* ``achieved_rate`` is the rate at which requests were sent, whatever their answer; ``ok_rate``
  is the rate of 2xx answers.
* ``llm_asked`` counts the 200 answers of the window that asked an LLM (``level_used`` other than
  REFLEX, or ``degraded`` true: a MICRO/MACRO request answered below its level), ``degraded`` those
  that were degraded, and ``degraded_share`` is the one over the other.
* with a ``mix`` of request kinds, ``kinds`` gives the same figures kind by kind (cynic_workload.Mix
  says which kind each request is).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import math
import re
import secrets
import time
import traceback
from array import array
from fractions import Fraction
from urllib.parse import urlsplit

from .cynic_workload import (
    LEVEL_REFLEX,
    CellAudit,
    Mix,
    Workload,
    WorkloadError,
    compare_q_scores,
)

try:
    import aiohttp
except ImportError:  # pragma: no cover - reported by the callers
    aiohttp = None
    AIOHTTP_IMPORT_ERROR = traceback.format_exc()
else:
    AIOHTTP_IMPORT_ERROR = None

try:
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None

HAS_AIOHTTP = aiohttp is not None
HAS_UVLOOP = uvloop is not None

DEFAULT_BODY = '{"content": "Test code {i}", "reality": "CODE", "analysis": "JUDGE", "budget_usd": 0.01}'
DEFAULT_PATH = '/judge'
DEFAULT_METHOD = 'POST'
INSTANCE_HEADER = 'X-Instance-ID'
PERCENTILES = (('p50', 50.0), ('p90', 90.0), ('p95', 95.0), ('p99', 99.0), ('p99_9', 99.9))

# Requests in one run, warm-up included: every one keeps a few slots in memory (18.5 h at 150 req/s).
MAX_PLANNED = 10000000
# The schedule starts this long after the session is ready, so that t0 is never in the past.
_START_DELAY_NS = 20000000
# Issue at most this many overdue requests back to back before letting the loop run.
_BURST = 64
_NS_PER_S = 1000000000
_NS_PER_MS = 1000000.0
_MIN_SLEEP_S = 0.001

# RFC 9110 token: what a method or a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# Control characters, tab excepted: a header value or a path holding one (a CR/LF above all) is
# refused by the HTTP client on every request, so it is refused here, once, with its name.
_CONTROL = re.compile(r'[\x00-\x08\x0a-\x1f\x7f]')
# Each placeholder name, as written in a body or path template.
_PLACEHOLDER_I = '{i}'
_PLACEHOLDER_RUN = '{run}'


class LoadError(Exception):
    """An invalid configuration or a run that could not start."""


class LoadConfig(object):
    """What to send, how fast and for how long. Validated on creation (``LoadError``)."""

    def __init__(self, url, rate=100.0, duration=10.0, warmup=0.0, max_in_flight=256,
                 method=DEFAULT_METHOD, path=DEFAULT_PATH, body=DEFAULT_BODY, headers=None,
                 timeout=10.0, use_cookies=False, validate_certs=True, run_id=None,
                 parse_body=True, return_judgment_ids=True, saturation_lag_ms=20.0,
                 saturation_rate_tolerance=0.01, instance_header=INSTANCE_HEADER,
                 use_uvloop=True, cells=None, repeat_share=0.0, concurrent_share=0.5, mark_cells=True,
                 id_field='judgment_id', q_at_rest=None, mix=None):
        self.url = (url or '').rstrip('/')
        self.rate = float(rate)
        self.duration = float(duration)
        self.warmup = float(warmup or 0.0)
        self.max_in_flight = int(max_in_flight)
        self.method = (method or DEFAULT_METHOD).upper()
        self.path = path if path is not None else DEFAULT_PATH
        if body is not None and not isinstance(body, str):
            body = json.dumps(body)
        self.body = body
        self.headers = dict((str(name), str(value)) for name, value in (headers or {}).items())
        self.timeout = float(timeout)
        self.use_cookies = bool(use_cookies)
        self.validate_certs = bool(validate_certs)
        self.run_id = run_id or secrets.token_hex(4)
        self.parse_body = bool(parse_body)
        self.return_judgment_ids = bool(return_judgment_ids)
        self.saturation_lag_ms = float(saturation_lag_ms)
        self.saturation_rate_tolerance = float(saturation_rate_tolerance)
        self.instance_header = instance_header or INSTANCE_HEADER
        self.use_uvloop = bool(use_uvloop)
        # q_by_text of an earlier run of the same corpus at rest, to compare this run's Q-Scores with.
        self.q_at_rest = q_at_rest
        self.id_field = id_field if id_field is not None else 'judgment_id'
        self._validate()
        # A corpus replaces the body template: the plan of which cell each request sends
        # (cynic_workload.py), made once here, where it is checked, and used by the run.
        self.workload = None
        if cells is not None:
            try:
                self.workload = Workload(cells, self.warmup_planned + self.planned, self.run_id,
                                         repeat_share=float(repeat_share or 0.0),
                                         concurrent_share=float(0.5 if concurrent_share is None else concurrent_share),
                                         mark=bool(mark_cells))
            except WorkloadError as exc:
                raise LoadError(str(exc)) from None
            if self.method in ('GET', 'HEAD'):
                raise LoadError('cells are sent as request bodies: method %s sends none' % self.method)
        if self.q_at_rest is not None and (self.workload is None or not isinstance(self.q_at_rest, dict)):
            raise LoadError('q_at_rest is the q_by_text dict of an earlier run of the same cells, and needs cells')
        # A mix replaces the body template too: each request's kind names its body.
        self.mix = None
        if mix is not None:
            if cells is not None:
                raise LoadError('mix and cells both say what each request sends: give one of them')
            if self.method in ('GET', 'HEAD'):
                raise LoadError('the kinds of a mix are request bodies: method %s sends none' % self.method)
            try:
                self.mix = Mix(mix, self.warmup_planned, self.planned, self.run_id)
            except WorkloadError as exc:
                raise LoadError(str(exc)) from None

    def _validate(self):
        if not (self.url.startswith('http://') or self.url.startswith('https://')):
            raise LoadError('url must start with http:// or https://, got %r' % self.url)
        try:
            parts = urlsplit(self.url)
            port = parts.port  # ValueError when out of range or not a number
        except ValueError as exc:
            raise LoadError('url %r is not a valid URL: %s' % (self.url, exc)) from None
        if not parts.hostname or _CONTROL.search(self.url) or ' ' in self.url:
            raise LoadError('url %r names no host, or holds spaces or control characters' % self.url)
        if port == 0:
            raise LoadError('url %r: port 0 cannot be connected to' % self.url)
        if not self.path.startswith('/'):
            raise LoadError('path must start with "/", got %r' % self.path)
        if _CONTROL.search(self.path) or ' ' in self.path:
            raise LoadError('path %r holds a space or a control character; percent-encode it' % self.path)
        if not _TOKEN.match(self.method):
            raise LoadError('method %r is not an HTTP method (letters, digits and !#$%%&\'*+-.^_`|~ only)'
                            % self.method)
        for name, value in self.headers.items():
            if not _TOKEN.match(name):
                raise LoadError('header name %r is not valid (no spaces, colons or control characters)' % name)
            if _CONTROL.search(value):
                raise LoadError('header %s: its value holds a line break or a control character' % name)
        if not _TOKEN.match(self.instance_header):
            raise LoadError('instance_header %r is not a valid header name' % self.instance_header)
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise LoadError('rate must be a positive number of requests per second')
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise LoadError('duration must be a positive number of seconds')
        if self.warmup < 0 or not math.isfinite(self.warmup):
            raise LoadError('warmup must be zero or a positive number of seconds')
        total = self.rate * (self.warmup + self.duration)
        if not total <= MAX_PLANNED:  # also catches an overflow to infinity
            raise LoadError('rate * (warmup + duration) plans %.4g requests; at most %d in one run (each one is '
                            'tracked in memory)' % (total, MAX_PLANNED))
        if self.planned < 1:
            raise LoadError('rate * duration plans no request at all')
        if self.max_in_flight < 1:
            raise LoadError('max_in_flight must be at least 1')
        if self.timeout <= 0 or not math.isfinite(self.timeout):
            raise LoadError('timeout must be positive')
        if not (self.saturation_lag_ms > 0 and math.isfinite(self.saturation_lag_ms)):
            raise LoadError('saturation_lag_ms must be a positive number of milliseconds')
        if not 0 <= self.saturation_rate_tolerance < 1:
            raise LoadError('saturation_rate_tolerance must be in [0, 1)')

    @property
    def planned(self):
        """Requests in the measured window."""
        return int(round(self.rate * self.duration))

    @property
    def warmup_planned(self):
        """Warm-up requests, sent before the measured window."""
        return int(round(self.rate * self.warmup))


class Thresholds(object):
    """Limits that make a run fail. ``None`` disables a limit."""

    def __init__(self, min_rate_ratio=None, max_error_rate=None, max_p95_ms=None, max_p99_ms=None,
                 expected_instances=None, min_instance_share=None, q_score_min=None,
                 q_score_max=None, fail_if_saturated=False, max_duplicate_judgments=None, max_q_shift=None,
                 max_degraded_share=None):
        self.min_rate_ratio = min_rate_ratio
        self.max_error_rate = max_error_rate
        self.max_p95_ms = max_p95_ms
        self.max_p99_ms = max_p99_ms
        self.expected_instances = list(expected_instances or [])
        self.min_instance_share = min_instance_share
        self.q_score_min = q_score_min
        self.q_score_max = q_score_max
        self.fail_if_saturated = bool(fail_if_saturated)
        self.max_duplicate_judgments = max_duplicate_judgments
        # the largest mean change of a text's Q-Score against q_at_rest (q_vs_rest.mean_abs_difference)
        self.max_q_shift = max_q_shift
        # the largest share of degraded answers among those that asked an LLM (degraded_share)
        self.max_degraded_share = max_degraded_share
        self._validate()

    def _validate(self):
        """Refuse limits that no run could meet, or that would silently check nothing (NaN)."""
        ranges = (('min_rate_ratio', 0.0, 1.0), ('max_error_rate', 0.0, 1.0), ('min_instance_share', 0.0, 1.0),
                  ('max_p95_ms', 0.0, math.inf), ('max_p99_ms', 0.0, math.inf),
                  ('q_score_min', -math.inf, math.inf), ('q_score_max', -math.inf, math.inf),
                  ('max_duplicate_judgments', 0, math.inf), ('max_q_shift', 0.0, math.inf),
                  ('max_degraded_share', 0.0, 1.0))
        for key, low, high in ranges:
            value = getattr(self, key)
            if value is None:
                continue
            if _finite(value) is None:
                raise LoadError('%s must be a finite number, got %r' % (key, value))
            if not low <= value <= high:
                raise LoadError('%s must be between %g and %g, got %r' % (key, low, high, value))
        if self.q_score_min is not None and self.q_score_max is not None and self.q_score_min > self.q_score_max:
            raise LoadError('q_score_min %r is above q_score_max %r: no run could pass'
                            % (self.q_score_min, self.q_score_max))

    def as_dict(self):
        """The limits in force (only those that are set)."""
        out = {}
        for key in ('min_rate_ratio', 'max_error_rate', 'max_p95_ms', 'max_p99_ms',
                    'min_instance_share', 'q_score_min', 'q_score_max', 'max_duplicate_judgments', 'max_q_shift',
                    'max_degraded_share'):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.expected_instances:
            out['expected_instances'] = list(self.expected_instances)
        if self.fail_if_saturated:
            out['fail_if_saturated'] = True
        return out


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection while requests are timed.

    A full collection of the generator's heap (every request's record is kept) stops its event
    loop for tens of milliseconds, and that pause would be charged to the server as latency.
    Reference counting still frees almost everything; one collection runs before, and the
    collector resumes after.
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _template_parts(template, run_id):
    """Split a template on ``{i}`` once, with ``{run}`` already substituted."""
    if template is None:
        return None
    return template.replace(_PLACEHOLDER_RUN, run_id).split(_PLACEHOLDER_I)


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an already sorted list (``None`` when empty)."""
    count = len(sorted_values)
    if not count:
        return None
    # Exact arithmetic: in floats 99.9 / 100 * 1000 is 999.0000000000001, whose ceiling would make
    # the p99.9 of 1000 samples their maximum instead of the 999th value.
    rank = int(math.ceil(Fraction(str(pct)) * count / 100)) - 1
    return sorted_values[min(max(rank, 0), count - 1)]


def _ms(value_ns):
    return None if value_ns is None else round(value_ns / _NS_PER_MS, 3)


def _latency_summary(values_ns):
    """count, p50 .. p99.9, max and mean in ms of a list of nanosecond durations (None when empty)."""
    values = sorted(values_ns)
    out = {'count': len(values)}
    for name, pct in PERCENTILES:
        out[name] = _ms(percentile(values, pct))
    out['max'] = _ms(values[-1]) if values else None
    out['mean'] = _ms(sum(values) / len(values)) if values else None
    return out


def classify_error(exc):
    """A short class name for a transport error."""
    if isinstance(exc, asyncio.TimeoutError):
        return 'timeout'
    if aiohttp is not None:
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return 'disconnected'
        if isinstance(exc, aiohttp.ClientPayloadError):
            return 'payload'
        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientOSError,
                            aiohttp.ServerConnectionError)):
            return 'connection'
        if isinstance(exc, aiohttp.ClientError):
            return 'client'
    if isinstance(exc, OSError):
        return 'connection'
    return 'other'


def _status_class(status):
    if 400 <= status < 500:
        return 'http_4xx'
    if status >= 500:
        return 'http_5xx'
    return 'http_other'


# Per measured request, what became of it.
_PENDING, _ANSWERED, _FAILED, _DROPPED = 0, 1, 2, 3


def _finite(value):
    """value as a float if it is a finite JSON number, else None.

    json.loads accepts NaN and Infinity, and a NaN would make every later min/max comparison
    false (the Q-Score limits would never fire) and the facts invalid JSON: such a value is not
    a Q-Score, and the answer counts as one without it.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        return None
    return number if math.isfinite(number) else None


class _Schedule(object):
    """When request ``i`` is due (``t0 + i / rate``), and whether it is warm-up or measured.

    The first ``warmup_planned`` requests are the warm-up; request ``i`` is number
    ``i - warmup_planned`` of the measured window (negative during the warm-up).
    """

    def __init__(self, config):
        self.warmup_s = config.warmup
        self.duration_s = config.duration
        self.n_warm = config.warmup_planned
        self.n_meas = config.planned
        self.total = self.n_warm + self.n_meas
        self.interval_ns = _NS_PER_S / config.rate
        self.t0 = 0

    def start(self):
        """Fix t0 a little ahead, so that it is never in the past when the first request is due."""
        self.t0 = time.perf_counter_ns() + _START_DELAY_NS

    def due(self, index):
        return self.t0 + int(index * self.interval_ns)

    @property
    def measure_start(self):
        """When the first request of the measured window is due."""
        return self.due(self.n_warm)

    def phase(self, elapsed_s):
        if elapsed_s <= self.warmup_s:
            return 'warmup'
        if elapsed_s <= self.warmup_s + self.duration_s:
            return 'measure'
        return 'drain'

    async def run(self, issue):
        """Call ``issue(index, due, now)`` for every request, as soon as it is due, never waiting
        for an answer; overdue requests are issued back to back, ``_BURST`` at a time."""
        perf = time.perf_counter_ns
        sleep = asyncio.sleep
        t0 = self.t0
        interval = self.interval_ns
        total = self.total
        index = 0
        burst = 0
        while index < total:
            due = t0 + int(index * interval)
            now = perf()
            if now < due:
                burst = 0
                # Timers have a resolution of 1 ms (uvloop rounds a delay to whole ms and runs a
                # delay under 0.5 ms at once): sleeping less would spin the loop until the due time.
                await sleep(max((due - now) / 1e9, _MIN_SLEEP_S))
                continue
            issue(index, due, now)
            index += 1
            burst += 1
            if burst >= _BURST:
                burst = 0
                await sleep(0)


class _Record(object):
    """What became of every request: the per-request results of the measured window, and what is
    counted as the answers arrive (status codes, error classes, instances, Q-Scores, judgment ids,
    the duplicates audit, live counters for the progress line)."""

    def __init__(self, config, schedule, keep_window=False):
        self.parse_body = config.parse_body
        self.n_warm = schedule.n_warm
        self.audit = CellAudit(config.workload, config.id_field) if config.workload is not None else None
        n = schedule.n_meas
        self.state = [_PENDING] * n
        self.issue_ns = [0] * n       # when the request was sent (or dropped)
        self.end_ns = [0] * n         # when its answer (or error) was complete
        self.status = [0] * n

        self.status_counts = {}
        self.error_classes = {}
        self.instance_counts = {}     # 2xx answers by instance header
        self.instance_errors = {}     # other answers by instance header
        self.no_instance_header = 0   # 2xx answers without the header
        self.q_sum = 0.0
        self.q_count = 0
        self.q_min = None
        self.q_max = None
        self.judgment_ids = set()
        self.json_errors = 0
        # What the 200 answers of the window said about the LLM: per request, bit 1 asked an LLM,
        # bit 2 degraded (for the timeline); and the counts.
        self.llm = bytearray(n)
        self.llm_asked = 0
        self.degraded = 0
        self.mix = config.mix
        if self.mix is not None:
            kinds = len(self.mix.kinds)
            self.kind = array('H', [0]) * n  # the kind of each request of the window
            self.kind_levels = [{} for dummy in range(kinds)]
            self.kind_degraded = [0] * kinds
            self.kind_llm_calls = [0] * kinds
        # live counters (warm-up included), for the progress line
        self.live = {'sent': 0, 'ok': 0, 'errors': 0, 'dropped': 0}
        self.keep_window = keep_window
        self.window = []              # latencies since the last progress line

    def take_window(self):
        """The latencies (from the intended start) of the answers since the last call, sorted."""
        window = sorted(self.window)
        self.window = []
        return window

    def kind_of(self, index, kind):
        """Request ``index`` is of the mix's kind ``kind``."""
        j = index - self.n_warm
        if j >= 0:
            self.kind[j] = kind

    def dropped(self, index, now):
        """Request ``index`` was due while the in-flight cap was reached: never sent."""
        self.live['dropped'] += 1
        j = index - self.n_warm
        if j >= 0:
            self.state[j] = _DROPPED
            self.issue_ns[j] = now

    def sent(self):
        self.live['sent'] += 1

    def finished(self, index, due, start, end, status, payload, instance, error):
        """Request ``index`` got an answer (``status``, ``payload``) or failed (``error``)."""
        j = index - self.n_warm
        live = self.live
        ok = error is None and 200 <= status < 300
        if ok:
            live['ok'] += 1
        else:
            live['errors'] += 1
        if self.keep_window:
            self.window.append(end - due)

        judgment_id = None
        q_score = None
        doc = None
        if status == 200 and self.parse_body and payload:
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
                self.json_errors += 1
            else:
                if isinstance(doc, dict):
                    judgment_id = doc.get('judgment_id')
                    q_score = doc.get('q_score')
        if status == 200 and error is None and self.audit is not None:
            self.audit.record(index, doc, instance)
        if judgment_id is not None:
            self.judgment_ids.add(str(judgment_id))

        if j < 0:  # warm-up: kept out of the statistics
            return
        if isinstance(doc, dict):
            self._llm(j, doc)
        self.issue_ns[j] = start
        self.end_ns[j] = end
        if error is not None:
            self.state[j] = _FAILED
            _count(self.error_classes, error)
            return
        self.state[j] = _ANSWERED
        self.status[j] = status
        _count(self.status_counts, str(status))
        # The spread over instances counts successful answers only: an instance that answers
        # errors (fast, often) must not look as if it carried its share of the load.
        if not ok:
            _count(self.error_classes, _status_class(status))
            if instance:
                _count(self.instance_errors, instance)
        elif instance:
            _count(self.instance_counts, instance)
        else:
            self.no_instance_header += 1
        self._q_score(_finite(q_score))

    def _llm(self, j, doc):
        """The LLM fields of a 200 answer of the window: level_used, degraded, llm_calls."""
        level = doc.get('level_used')
        degraded = doc.get('degraded') is True
        asked = degraded or (isinstance(level, str) and level != LEVEL_REFLEX)
        if asked:
            self.llm_asked += 1
        if degraded:
            self.degraded += 1
        self.llm[j] = (1 if asked else 0) | (2 if degraded else 0)
        if self.mix is None:
            return
        kind = self.kind[j]
        if isinstance(level, str):
            _count(self.kind_levels[kind], level)
        if degraded:
            self.kind_degraded[kind] += 1
        calls = _finite(doc.get('llm_calls'))
        if calls is not None and calls > 0:
            self.kind_llm_calls[kind] += int(calls) if calls == int(calls) else calls

    def _q_score(self, q):
        if q is None:
            return
        self.q_sum += q
        self.q_count += 1
        if self.q_min is None or q < self.q_min:
            self.q_min = q
        if self.q_max is None or q > self.q_max:
            self.q_max = q


def _count(counts, key):
    counts[key] = counts.get(key, 0) + 1


class _Sender(object):
    """Sends the requests: the URL and body of request ``i``, the aiohttp call and the
    classification of its outcome, and the in-flight cap (a request due beyond it is dropped)."""

    def __init__(self, config, record):
        self.cfg = config
        self.record = record
        self.url = config.url + config.path.replace(_PLACEHOLDER_RUN, config.run_id)
        self.path_parts = None
        if _PLACEHOLDER_I in self.url:
            self.path_parts = self.url.split(_PLACEHOLDER_I)
        self.workload = config.workload
        self.body_parts = None if self.workload is not None else _template_parts(config.body, config.run_id)
        self.const_body = None
        if self.body_parts is not None and len(self.body_parts) == 1:
            self.const_body = self.body_parts[0].encode('utf-8')
        self.mix = config.mix
        self.kinds = None
        if self.mix is not None:
            self.body_parts = None
            self.kinds = self.mix.sequence()
            self.kind_bodies = [_template_parts(text, config.run_id) for text in self.mix.templates]
        self.in_flight = 0
        self.peak_in_flight = 0
        self.tasks = set()
        self.session = None

    @contextlib.asynccontextmanager
    async def connected(self):
        """The HTTP session of the run: a pool of max_in_flight connections, the configured headers
        (with a JSON Content-Type when a body is sent and none is set) and the cookie policy."""
        cfg = self.cfg
        connector = aiohttp.TCPConnector(limit=cfg.max_in_flight, ssl=bool(cfg.validate_certs))
        if cfg.use_cookies:
            jar = aiohttp.CookieJar(unsafe=True)  # unsafe: also keep cookies of IP addresses
        else:
            jar = aiohttp.DummyCookieJar()
        headers = dict(cfg.headers)
        sends_body = self.body_parts is not None or self.workload is not None or self.mix is not None
        if sends_body and 'content-type' not in [name.lower() for name in headers]:
            headers['Content-Type'] = 'application/json'
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar, headers=headers,
                                         timeout=timeout) as session:
            self.session = session
            yield session

    def _body_for(self, index, kind):
        if self.workload is not None:
            return self.workload.body(index)
        if kind is not None:
            parts = self.kind_bodies[kind]
            return (parts[0] if len(parts) == 1 else str(index).join(parts)).encode('utf-8')
        if self.const_body is not None or self.body_parts is None:
            return self.const_body
        return str(index).join(self.body_parts).encode('utf-8')

    def _url_for(self, index):
        if self.path_parts is None:
            return self.url
        return str(index).join(self.path_parts)

    def issue(self, index, due, now):
        """Start request ``index`` now, or count it as dropped when the cap is reached."""
        kind = None
        if self.kinds is not None:  # the schedule issues the requests in order, dropped ones too
            kind = next(self.kinds)
            self.record.kind_of(index, kind)
        if self.in_flight >= self.cfg.max_in_flight:
            self.record.dropped(index, now)
            return
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        self.record.sent()
        task = asyncio.ensure_future(self._request(index, due, kind))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _request(self, index, due, kind):
        """Send request ``index`` (due at ``due``, of the mix's kind ``kind``) and record what happened."""
        cfg = self.cfg
        data = self._body_for(index, kind)
        url = self._url_for(index)
        status = 0
        payload = None
        instance = None
        error = None
        start = time.perf_counter_ns()
        try:
            async with self.session.request(cfg.method, url, data=data,
                                            allow_redirects=False) as resp:
                status = resp.status
                payload = await resp.read()
                instance = resp.headers.get(cfg.instance_header)
        except asyncio.CancelledError:
            error = 'cancelled'
            raise
        except Exception as exc:  # pylint: disable=broad-except
            error = classify_error(exc)
        finally:
            end = time.perf_counter_ns()
            self.in_flight -= 1
            self.record.finished(index, due, start, end, status, payload, instance, error)

    async def drain(self):
        """Wait for the outstanding requests. Every request has its own timeout; past that plus
        5 s (a guard that only protects the bound on time) the rest are cancelled."""
        deadline = time.perf_counter_ns() + int((self.cfg.timeout + 5.0) * _NS_PER_S)
        while self.tasks:
            left = (deadline - time.perf_counter_ns()) / 1e9
            if left <= 0:
                for task in list(self.tasks):
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                break
            await asyncio.wait(list(self.tasks), timeout=left)


class _Progress(object):
    """Calls ``callback`` once a second of the schedule with a snapshot of the run."""

    def __init__(self, callback, schedule, record, sender):
        self.callback = callback
        self.schedule = schedule
        self.record = record
        self.sender = sender

    async def tick(self):
        second = 1
        while True:
            wake = self.schedule.t0 + second * _NS_PER_S
            delay = wake - time.perf_counter_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            self.report(second)
            second += 1

    def report(self, elapsed, final=False):
        window = self.record.take_window()
        if self.callback is None:
            return
        snapshot = dict(self.record.live)
        snapshot.update({
            'elapsed_s': round(elapsed, 3),
            'phase': 'done' if final else self.schedule.phase(elapsed),
            'in_flight': self.sender.in_flight,
            'planned_total': self.schedule.total,
            'p99_ms': _ms(percentile(window, 99.0)),
        })
        try:
            self.callback(snapshot)
        except Exception:  # pylint: disable=broad-except
            # a broken progress sink must not stop the run
            self.callback = None
            self.record.keep_window = False


class _Run(object):
    """One run: the schedule calls the sender, whose outcomes the record keeps; then the summary."""

    def __init__(self, config, progress=None):
        self.cfg = config
        self.schedule = _Schedule(config)
        self.record = _Record(config, self.schedule, keep_window=progress is not None)
        self.sender = _Sender(config, self.record)
        self.progress = None
        if progress is not None:
            self.progress = _Progress(progress, self.schedule, self.record, self.sender)

    async def run(self):
        if aiohttp is None:
            raise LoadError('the Python library aiohttp is required: %s' % AIOHTTP_IMPORT_ERROR)
        with gc_paused():
            async with self.sender.connected():
                t_end = await self._send_all()
            return summarise(self.cfg, self.schedule, self.record, self.sender.peak_in_flight, t_end)

    async def _send_all(self):
        """Run the schedule and wait for the answers; the time it ended."""
        schedule = self.schedule
        schedule.start()
        ticker = None
        if self.progress is not None:
            ticker = asyncio.ensure_future(self.progress.tick())
        try:
            await schedule.run(self.sender.issue)
            await self.sender.drain()
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        t_end = time.perf_counter_ns()
        if self.progress is not None:
            self.progress.report((t_end - schedule.t0) / 1e9, final=True)
        return t_end


# -- summary ---------------------------------------------------------------------------
class _Window(object):
    """The measured window request by request: counts, latency samples and per-second buckets."""

    def __init__(self, cfg, schedule, record):
        self.sent = self.ok = self.errors = self.dropped = self.at_timeout = self.cancelled = 0
        self.lat_int = []  # every request of the window (never sent: counted at the timeout)
        self.lat_act = []
        self.ok_int = []   # 2xx answers only
        self.ok_act = []
        self.lags = []
        self.start = schedule.measure_start
        self.last_issue = self.start
        self.seconds = [{'sent': 0, 'ok': 0, 'errors': 0, 'dropped': 0, 'llm_asked': 0, 'degraded': 0,
                         'lat': [], 'lat_ok': []}
                        for dummy in range(int(math.ceil(cfg.duration)))]
        # With a mix, the same counts kind by kind (and each kind's latency from the intended start).
        self.kinds = None
        if cfg.mix is not None:
            self.kinds = [{'sent': 0, 'ok': 0, 'errors': 0, 'dropped': 0, 'lat': []} for dummy in cfg.mix.kinds]
        timeout_ns = int(round(cfg.timeout * _NS_PER_S))
        for j in range(schedule.n_meas):
            kind = self.kinds[record.kind[j]] if self.kinds is not None else None
            self._add(schedule.due(j + schedule.n_warm), record.state[j], record.issue_ns[j], record.end_ns[j],
                      record.status[j], timeout_ns, kind, record.llm[j])

    def _add(self, due, state, issued, end, status, timeout_ns, kind, llm):
        last = len(self.seconds) - 1
        bucket = self.seconds[min(int((due - self.start) // _NS_PER_S), last)]
        if llm & 1:
            bucket['llm_asked'] += 1
        if llm & 2:
            bucket['degraded'] += 1
        if kind is None:
            kind = {'sent': 0, 'ok': 0, 'errors': 0, 'dropped': 0, 'lat': []}  # counted nowhere
        if issued > self.last_issue:
            self.last_issue = issued
        if state == _DROPPED:
            # Never sent, so never answered: counted as if it had been sent and had timed out,
            # not left out of the latency (which would hide the overload that caused the drop).
            self.dropped += 1
            self.at_timeout += 1
            bucket['dropped'] += 1
            kind['dropped'] += 1
            self.lags.append(issued - due)
            self._latency(bucket, kind, issued - due + timeout_ns, timeout_ns)
            return
        self.sent += 1
        bucket['sent'] += 1
        kind['sent'] += 1
        if state == _PENDING:  # its task was cancelled before it could start
            self.errors += 1
            self.at_timeout += 1
            self.cancelled += 1
            bucket['errors'] += 1
            kind['errors'] += 1
            self._latency(bucket, kind, timeout_ns, timeout_ns)
            return
        self.lags.append(issued - due)
        latency = end - due
        self._latency(bucket, kind, latency, end - issued)
        if state == _ANSWERED and 200 <= status < 300:
            self.ok += 1
            bucket['ok'] += 1
            kind['ok'] += 1
            self.ok_int.append(latency)
            self.ok_act.append(end - issued)
            bucket['lat_ok'].append(latency)
        else:
            self.errors += 1
            bucket['errors'] += 1
            kind['errors'] += 1

    def _latency(self, bucket, kind, intended, actual):
        self.lat_int.append(intended)
        self.lat_act.append(actual)
        bucket['lat'].append(intended)
        kind['lat'].append(intended)

    def timeline(self):
        timeline = []
        for second, bucket in enumerate(self.seconds):
            lat = sorted(bucket.pop('lat'))
            lat_ok = sorted(bucket.pop('lat_ok'))
            bucket['second'] = second
            bucket['p50_ms'] = _ms(percentile(lat, 50.0))
            bucket['p99_ms'] = _ms(percentile(lat, 99.0))
            bucket['p50_ok_ms'] = _ms(percentile(lat_ok, 50.0))
            bucket['p99_ok_ms'] = _ms(percentile(lat_ok, 99.0))
            timeline.append(bucket)
        return timeline


def _saturation(cfg, lags, issue_rate):
    """(the scheduler lag figures, the reasons to call the generator saturated)."""
    lags.sort()
    lag = {
        'p50': _ms(percentile(lags, 50.0)),
        'p99': _ms(percentile(lags, 99.0)),
        'max': _ms(lags[-1]) if lags else None,
    }
    reasons = []
    if lag['p99'] is not None and lag['p99'] > cfg.saturation_lag_ms:
        reasons.append('scheduler lag p99 %.1f ms is over %.1f ms' % (lag['p99'], cfg.saturation_lag_ms))
    if issue_rate < cfg.rate * (1.0 - cfg.saturation_rate_tolerance):
        reasons.append('the generator issued %.2f req/s, below the %.2f req/s target' % (issue_rate, cfg.rate))
    return lag, reasons


def _instance_facts(record):
    """The spread of the 2xx answers over the instances."""
    answered_ok = sum(record.instance_counts.values()) + record.no_instance_header
    shares = {}
    for name, count in record.instance_counts.items():
        shares[name] = round(count / answered_ok, 4) if answered_ok else 0.0
    return {
        'instances': dict(sorted(record.instance_counts.items())),
        'instance_shares': dict(sorted(shares.items())),
        'instance_errors': dict(sorted(record.instance_errors.items())),
        'instances_distinct': len(record.instance_counts),
        'responses_without_instance': record.no_instance_header,
    }


def _answer_facts(record, ids):
    """What the bodies of the 200 answers said: Q-Scores and judgment ids."""
    return {
        'q_score': {
            'count': record.q_count,
            'mean': round(record.q_sum / record.q_count, 3) if record.q_count else None,
            'min': record.q_min,
            'max': record.q_max,
        },
        'invalid_json': record.json_errors,
        'judgment_ids_count': len(ids),
        'judgment_ids_sha256': hashlib.sha256('\n'.join(ids).encode('utf-8')).hexdigest(),
    }


def _llm_facts(record):
    """What the 200 answers of the window said about the LLM tier."""
    asked = record.llm_asked
    return {
        'llm_asked': asked,
        'degraded': record.degraded,
        'degraded_share': round(record.degraded / asked, 5) if asked else 0.0,
    }


def _kind_facts(cfg, record, window):
    """With a mix, the figures of each kind of request (measured window)."""
    out = {}
    for number, name in enumerate(cfg.mix.names):
        counts = window.kinds[number]
        lat = sorted(counts['lat'])
        out[name] = {
            'planned': cfg.mix.planned[number],
            'sent': counts['sent'],
            'ok': counts['ok'],
            'errors': counts['errors'],
            'dropped': counts['dropped'],
            'latency_ms': {'p50': _ms(percentile(lat, 50.0)), 'p95': _ms(percentile(lat, 95.0)),
                           'p99': _ms(percentile(lat, 99.0)), 'max': _ms(lat[-1]) if lat else None},
            'level_used': dict(sorted(record.kind_levels[number].items())),
            'degraded': record.kind_degraded[number],
            'llm_calls': record.kind_llm_calls[number],
        }
    return out


def _corpus_facts(cfg, record, ids):
    """With a corpus, the workload and its duplicates audit; the judgment ids when asked for."""
    facts = {}
    if record.audit is not None:
        facts['workload'] = cfg.workload.describe()
        facts['duplicates'] = record.audit.summary()
        facts['q_by_text'] = record.audit.q_by_name()
        if cfg.q_at_rest is not None:
            facts['q_vs_rest'] = compare_q_scores(cfg.q_at_rest, facts['q_by_text'])
    if cfg.return_judgment_ids:
        facts['judgment_ids'] = ids
    return facts


def summarise(cfg, schedule, record, peak_in_flight, t_end):
    """The facts of a finished run (thresholds not applied)."""
    window = _Window(cfg, schedule, record)
    n = schedule.n_meas
    # The measured window runs from the first due time to the last actual send, plus one
    # interval (the time the last request "owns"). With an exact schedule it equals duration.
    actual_s = (max(window.last_issue - window.start, 0) + schedule.interval_ns) / 1e9
    achieved = window.sent / actual_s
    lag, reasons = _saturation(cfg, window.lags, (window.sent + window.dropped) / actual_s)
    errors_by_class = dict(record.error_classes)
    if window.cancelled:
        errors_by_class['cancelled'] = errors_by_class.get('cancelled', 0) + window.cancelled
    facts = _base_facts(cfg)
    facts.update({
        'check_mode': False,
        'event_loop': _loop_name(),
        'sent': window.sent,
        'ok': window.ok,
        'errors': window.errors,
        'dropped': window.dropped,
        'actual_duration_s': round(actual_s, 4),
        'wall_time_s': round((t_end - schedule.t0) / 1e9, 3),
        'achieved_rate': round(achieved, 3),
        'ok_rate': round(window.ok / actual_s, 3),
        'rate_ratio': round(achieved / cfg.rate, 5),
        'error_rate': round((window.errors + window.dropped) / n, 5) if n else 0.0,
        'status_codes': dict(sorted(record.status_counts.items())),
        'errors_by_class': dict(sorted(errors_by_class.items())),
        'latency_ms': {
            'intended': _latency_summary(window.lat_int),
            'actual': _latency_summary(window.lat_act),
        },
        'latency_ok_ms': {
            'intended': _latency_summary(window.ok_int),
            'actual': _latency_summary(window.ok_act),
        },
        'counted_at_timeout': window.at_timeout,
        'scheduler_lag_ms': lag,
        'generator_saturated': bool(reasons),
        'saturation_reasons': reasons,
        'peak_in_flight': peak_in_flight,
    })
    facts.update(_instance_facts(record))
    ids = sorted(record.judgment_ids)
    facts.update(_answer_facts(record, ids))
    facts.update(_llm_facts(record))
    if cfg.mix is not None:
        facts['kinds'] = _kind_facts(cfg, record, window)
    timeline = window.timeline()
    worst, median_p99 = worst_second(timeline)
    facts.update({'timeline': timeline, 'worst_second': worst, 'median_second_p99_ms': median_p99})
    facts.update(_corpus_facts(cfg, record, ids))
    return facts


def worst_second(timeline):
    """(the second with the highest p99, the median of the per-second p99s) of a timeline.

    Beside the whole-run figures they tell a stall from overload: one bad second with a normal
    median is a stall (a pause somewhere), a high median is a service that cannot keep up.
    Seconds without samples are left out; (None, None) when no second has one.
    """
    measured = [s for s in timeline if s.get('p99_ms') is not None]
    if not measured:
        return None, None
    worst = max(measured, key=lambda s: s['p99_ms'])
    p99s = sorted(s['p99_ms'] for s in measured)
    return dict(worst), p99s[(len(p99s) - 1) // 2]


def _loop_name():
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return 'none'
    module = type(loop).__module__
    return 'uvloop' if module.startswith('uvloop') else 'asyncio'


def _base_facts(cfg):
    return {
        'url': cfg.url,
        'method': cfg.method,
        'path': cfg.path,
        'run_id': cfg.run_id,
        'target_rate': cfg.rate,
        'duration_s': cfg.duration,
        'warmup_s': cfg.warmup,
        'planned': cfg.planned,
        'warmup_planned': cfg.warmup_planned,
        'max_in_flight': cfg.max_in_flight,
        'timeout_s': cfg.timeout,
        'use_cookies': cfg.use_cookies,
    }


def plan(config):
    """What a run would do, without sending anything (check mode)."""
    facts = _base_facts(config)
    facts.update({
        'check_mode': True,
        'sent': 0,
        'ok': 0,
        'errors': 0,
        'dropped': 0,
        'expected_wall_time_s': round(config.warmup + config.duration, 3),
        'max_wall_time_s': round(config.warmup + config.duration + config.timeout, 3),
        'generator_saturated': False,
        'checks': [],
        'threshold_failures': [],
    })
    workload = config.workload
    if workload is not None:
        facts['workload'] = workload.describe()
    if config.mix is not None:
        facts['kinds'] = config.mix.describe()
    return facts


def _check(name, limit, value, failures, passed):
    """(one entry of ``checks``, its failure sentences).

    A check over several instances (or both ends of the Q-Score range) may break with several
    sentences; ``threshold_failures`` lists each of them, the check's message joins them.
    """
    check = {'name': name, 'passed': not failures, 'limit': limit, 'value': value,
             'message': '; '.join(failures) if failures else passed}
    return check, failures


def _unjudged(name, limit, failure):
    """A check that fails because the run gave nothing to compare with its limit."""
    return _check(name, limit, None, [failure], None)


def _against(name, limit, value, broken, text, failed, passed):
    """A check of one figure: the sentence ``text`` ends with ``failed`` or ``passed`` % the limit."""
    return _check(name, limit, value, [text + failed % limit] if broken else [], text + passed % limit)


def _check_rate(facts, thresholds):
    limit = thresholds.min_rate_ratio
    ratio = facts.get('rate_ratio', 0.0)
    text = ('sent rate %.2f req/s is %.4f of the %.2f req/s target'
            % (facts.get('achieved_rate', 0.0), ratio, facts.get('target_rate') or 0))
    return _against('min_rate_ratio', limit, ratio, ratio < limit, text, ' (min_rate_ratio %s)',
                    ', at least min_rate_ratio %s')


def _check_errors(facts, thresholds):
    limit = thresholds.max_error_rate
    rate = facts.get('error_rate', 0.0)
    text = 'error rate %.5f (errors %d, dropped %d)' % (rate, facts.get('errors', 0), facts.get('dropped', 0))
    return _against('max_error_rate', limit, rate, rate > limit, text, ' is over max_error_rate %s',
                    ' is within max_error_rate %s')


def _check_latency(facts, key, limit):
    """A latency limit holds for every request (dropped ones counted at the timeout) AND for the
    2xx answers alone: fast errors must not pull the figure down, nor slow errors push it up
    unseen. Without any 2xx answer there is no service latency to meet the limit."""
    name = 'max_%s_ms' % key
    value_all = ((facts.get('latency_ms') or {}).get('intended') or {}).get(key)
    value_ok = ((facts.get('latency_ok_ms') or {}).get('intended') or {}).get(key)
    value = {'all': value_all, 'ok': value_ok}
    if value_all is None and value_ok is None:
        return _unjudged(name, limit, 'no latency sample to compare with %s %s' % (name, limit))
    broken = []
    if value_all is None:
        broken.append('no request measured')
    elif value_all > limit:
        broken.append('%.1f ms over all requests' % value_all)
    if value_ok is None:
        broken.append('no 2xx answer to measure')
    elif value_ok > limit:
        broken.append('%.1f ms over the 2xx answers' % value_ok)
    if broken:
        return _check(name, limit, value, ['latency %s (from the intended start) breaks %s %s: %s'
                                           % (key, name, limit, ', '.join(broken))], None)
    return _check(name, limit, value, [], 'latency %s (from the intended start) holds %s %s: %.1f ms over all '
                  'requests, %.1f ms over the 2xx answers' % (key, name, limit, value_all, value_ok))


def _check_instances(facts, thresholds):
    instance_errors = facts.get('instance_errors') or {}
    shares = facts.get('instance_shares') or {}
    floor = thresholds.min_instance_share

    def errors_of(name):
        count = instance_errors.get(name)
        return ' (and %d answers that were errors)' % count if count else ''

    if thresholds.expected_instances and floor is None:
        answered = facts.get('instances') or {}
        value = dict((name, answered.get(name, 0)) for name in thresholds.expected_instances)
        failures = ['instance %s never answered with a 2xx status%s' % (name, errors_of(name))
                    for name, count in value.items() if not count]
        return _check('expected_instances', list(thresholds.expected_instances), value, failures,
                      'every expected instance (%s) answered with a 2xx status' % ', '.join(value))
    # Without expected_instances, every instance that answered: one that answered nothing but
    # errors has a share of 0.
    names = thresholds.expected_instances or sorted(set(shares) | set(instance_errors))
    value = dict((name, shares.get(name, 0.0)) for name in names)
    failures = ['instance %s gave %.4f of the 2xx answers%s, below min_instance_share %s'
                % (name, share, errors_of(name), floor) for name, share in value.items() if share < floor]
    passed = ('each of %d instances gave at least min_instance_share %s of the 2xx answers (the least %.4f)'
              % (len(value), floor, min(value.values())) if value else
              'no instance answered, so none gave less than min_instance_share %s' % floor)
    return _check('min_instance_share', floor, value, failures, passed)


def _check_q_scores(facts, thresholds):
    low, high = thresholds.q_score_min, thresholds.q_score_max
    q_stats = facts.get('q_score', {})
    if not q_stats.get('count'):
        return _unjudged('q_score_range', [low, high], 'no q_score was observed in any 200 response')
    failures = []
    passed = []
    if low is not None:
        if q_stats['min'] < low:
            failures.append('q_score min %.3f is below q_score_min %s' % (q_stats['min'], low))
        passed.append('min %.3f is at least q_score_min %s' % (q_stats['min'], low))
    if high is not None:
        if q_stats['max'] > high:
            failures.append('q_score max %.3f is over q_score_max %s' % (q_stats['max'], high))
        passed.append('max %.3f is at most q_score_max %s' % (q_stats['max'], high))
    return _check('q_score_range', [low, high], [q_stats['min'], q_stats['max']], failures,
                  'q_score ' + ' and '.join(passed))


def _check_duplicates(facts, thresholds):
    limit = thresholds.max_duplicate_judgments
    audit = facts.get('duplicates')
    if not audit:
        return _unjudged('max_duplicate_judgments', limit, 'max_duplicate_judgments %s: the run sent no corpus of '
                         'cells, so no duplicate was audited' % limit)
    text = ('%d duplicate judgments (%d judgments of %d distinct cells, counted from %s)'
            % (audit['duplicate_judgments'], audit['judgments'], audit['cells_answered'], audit['counted_from']))
    count = audit['duplicate_judgments']
    return _against('max_duplicate_judgments', limit, count, count > limit, text,
                    ' are over max_duplicate_judgments %s', ' are within max_duplicate_judgments %s')


def _check_q_shift(facts, thresholds):
    limit = thresholds.max_q_shift
    compared = facts.get('q_vs_rest') or {}
    shift = compared.get('mean_abs_difference')
    if not compared.get('texts_compared') or shift is None:
        why = ('no text of this run was judged in the run at rest (q_at_rest names none of them)' if compared else
               'no Q-Score was compared with a run at rest (q_at_rest needs cells and the q_by_text of an earlier '
               'run)')
        return _unjudged('max_q_shift', limit, 'max_q_shift %s: %s' % (limit, why))
    text = ('the Q-Score of the %d texts judged in both runs moved by %.4f points on average against the run at '
            'rest (at most %.4f)' % (compared['texts_compared'], shift, compared.get('max_abs_difference')))
    return _against('max_q_shift', limit, shift, shift > limit, text, ', over max_q_shift %s',
                    ', within max_q_shift %s')


def _check_degraded(facts, thresholds):
    limit = thresholds.max_degraded_share
    asked = facts.get('llm_asked')
    if not asked:
        return _unjudged('max_degraded_share', limit, 'max_degraded_share %s: no answer asked an LLM (none had a '
                         'level_used other than REFLEX, nor degraded true), so no degraded share was measured' % limit)
    share = facts.get('degraded_share', 0.0)
    text = ('%d of the %d answers that asked an LLM were degraded (share %.4f)'
            % (facts.get('degraded', 0), asked, share))
    return _against('max_degraded_share', limit, share, share > limit, text, ', over max_degraded_share %s',
                    ', within max_degraded_share %s')


def _check_saturation(facts):
    saturated = bool(facts.get('generator_saturated'))
    failures = []
    if saturated:
        failures.append('the load generator was saturated: %s' % '; '.join(facts.get('saturation_reasons', [])))
    return _check('fail_if_saturated', True, saturated, failures, 'the load generator kept up (not saturated)')


def _judge(facts, thresholds):
    """[(check, failure sentences)] of every threshold in force, in the order of the checks."""
    if thresholds is None:
        return []
    judged = []
    if thresholds.min_rate_ratio is not None:
        judged.append(_check_rate(facts, thresholds))
    if thresholds.max_error_rate is not None:
        judged.append(_check_errors(facts, thresholds))
    for key, limit in (('p95', thresholds.max_p95_ms), ('p99', thresholds.max_p99_ms)):
        if limit is not None:
            judged.append(_check_latency(facts, key, limit))
    if thresholds.expected_instances or thresholds.min_instance_share is not None:
        judged.append(_check_instances(facts, thresholds))
    if thresholds.q_score_min is not None or thresholds.q_score_max is not None:
        judged.append(_check_q_scores(facts, thresholds))
    if thresholds.max_duplicate_judgments is not None:
        judged.append(_check_duplicates(facts, thresholds))
    if thresholds.max_q_shift is not None:
        judged.append(_check_q_shift(facts, thresholds))
    if thresholds.max_degraded_share is not None:
        judged.append(_check_degraded(facts, thresholds))
    if thresholds.fail_if_saturated:
        judged.append(_check_saturation(facts))
    return judged


def check_thresholds(facts, thresholds):
    """One check per threshold in force: {name, passed, limit, value, message}."""
    return [check for check, dummy in _judge(facts, thresholds)]


def _failures(judged):
    return [failure for dummy, failures in judged for failure in failures]


def evaluate_thresholds(facts, thresholds):
    """Every broken limit, as one sentence each (an empty list when the run passed)."""
    return _failures(_judge(facts, thresholds))


async def run_async(config, progress=None):
    """Run the load in the running event loop and return the facts (thresholds not applied)."""
    return await _Run(config, progress=progress).run()


def run_load(config, thresholds=None, progress=None):
    """Run the load in a new event loop (uvloop when importable) and return the facts.

    ``progress``, when given, is called once per second with a dict (elapsed_s, phase, sent, ok,
    errors, dropped, in_flight, p99_ms of the answers of the last second). The facts carry
    ``threshold_failures`` (a list of sentences) and ``passed``.
    """
    coro = run_async(config, progress=progress)
    if config.use_uvloop and uvloop is not None and hasattr(uvloop, 'run'):
        facts = uvloop.run(coro)
    else:
        facts = asyncio.run(coro)
    apply_thresholds(facts, thresholds)
    return facts


def apply_thresholds(facts, thresholds):
    """Store the verdict of ``thresholds`` in the facts."""
    judged = _judge(facts, thresholds)
    failures = _failures(judged)
    facts['thresholds'] = thresholds.as_dict() if thresholds is not None else {}
    facts['checks'] = [check for check, dummy in judged]
    facts['threshold_failures'] = failures
    facts['passed'] = not failures
    return facts


def format_summary(facts):
    """A human-readable table of the facts."""
    lines = []

    def row(label, value):
        lines.append('  %-26s %s' % (label, value))

    lines.append('cynic-stress %s %s%s  run %s'
                 % (facts.get('method'), facts.get('url'), facts.get('path'), facts.get('run_id')))
    if facts.get('check_mode'):
        row('planned requests', '%d (+%d warm-up)' % (facts['planned'], facts['warmup_planned']))
        row('expected wall time', '%.1f s' % facts['expected_wall_time_s'])
        return '\n'.join(lines)
    row('target rate', '%.2f req/s for %.1f s (+%.1f s warm-up)'
        % (facts['target_rate'], facts['duration_s'], facts['warmup_s']))
    row('planned / sent / dropped', '%d / %d / %d' % (facts['planned'], facts['sent'], facts['dropped']))
    row('ok / errors', '%d / %d  (error rate %.3f%%)' % (facts['ok'], facts['errors'], 100 * facts['error_rate']))
    row('sent rate', '%.2f req/s (ratio %.4f of the target, errors included), 2xx answers %.2f req/s'
        % (facts['achieved_rate'], facts['rate_ratio'], facts['ok_rate']))
    row('status codes', ', '.join('%s: %d' % kv for kv in facts['status_codes'].items()) or '-')
    row('errors by class', ', '.join('%s: %d' % kv for kv in facts['errors_by_class'].items()) or '-')
    names = [p[0] for p in PERCENTILES] + ['max']
    lines.append('  latency (ms)          %s %7s' % (' '.join('%9s' % name for name in names), 'count'))
    for label, group, kind in (('all, intended', 'latency_ms', 'intended'), ('all, actual', 'latency_ms', 'actual'),
                               ('2xx, intended', 'latency_ok_ms', 'intended'),
                               ('2xx, actual', 'latency_ok_ms', 'actual')):
        lat = (facts.get(group) or {}).get(kind) or {}
        cells = ['%9s' % ('-' if lat.get(name) is None else '%.1f' % lat[name]) for name in names]
        lines.append('    %-18s %s %7s' % (label, ' '.join(cells), lat.get('count', '-')))
    at_timeout = facts.get('counted_at_timeout', 0)
    lines.append('    all: every request of the window, errors included; 2xx: the successful answers only.')
    if at_timeout:
        lines.append('    all counts %d request(s) never sent (dropped at the in-flight cap, or not started) '
                     'as if they had timed out: %g s.' % (at_timeout, facts['timeout_s']))
    worst = facts.get('worst_second')
    if worst:
        row('worst second', 'second %d: p50 %s ms, p99 %s ms, %d sent (median second p99 %s ms)'
            % (worst['second'], worst['p50_ms'], worst['p99_ms'], worst['sent'], facts['median_second_p99_ms']))
    lag = facts['scheduler_lag_ms']
    row('scheduler lag (ms)', 'p50 %s, p99 %s, max %s' % (lag['p50'], lag['p99'], lag['max']))
    row('generator saturated', 'YES: ' + '; '.join(facts['saturation_reasons'])
        if facts['generator_saturated'] else 'no')
    row('peak in flight', '%d of %d' % (facts['peak_in_flight'], facts['max_in_flight']))
    inst = ', '.join('%s: %d (%.1f%%)' % (name, count, 100 * facts['instance_shares'].get(name, 0))
                     for name, count in facts['instances'].items())
    if facts.get('responses_without_instance'):
        inst = (inst + ', ' if inst else '') + 'no header: %d' % facts['responses_without_instance']
    row('instances (2xx answers)', inst or '-')
    inst_errors = facts.get('instance_errors') or {}
    if inst_errors:
        row('instances (error answers)', ', '.join('%s: %d' % kv for kv in inst_errors.items()))
    q_stats = facts['q_score']
    if q_stats['count']:
        row('q_score', 'mean %.3f, min %.3f, max %.3f (%d)'
            % (q_stats['mean'], q_stats['min'], q_stats['max'], q_stats['count']))
    row('judgment ids', '%d, sha256 %s' % (facts['judgment_ids_count'], facts['judgment_ids_sha256'][:16]))
    if facts.get('llm_asked') or facts.get('kinds'):
        row('LLM asked / degraded', '%d / %d (degraded share %.4f)'
            % (facts.get('llm_asked', 0), facts.get('degraded', 0), facts.get('degraded_share', 0.0)))
    for name, kind in (facts.get('kinds') or {}).items():
        lat = kind['latency_ms']
        levels = ', '.join('%s %d' % item for item in kind['level_used'].items()) or '-'
        row('kind %s' % name, '%d planned, %d ok, %d errors, %d dropped; p50 %s p99 %s ms; levels %s; %d degraded, '
            '%s LLM calls' % (kind['planned'], kind['ok'], kind['errors'], kind['dropped'], lat['p50'], lat['p99'],
                              levels, kind['degraded'], kind['llm_calls']))
    work, dup = facts.get('workload'), facts.get('duplicates')
    if work and dup:
        row('cells', '%d distinct from a corpus of %d; %d repeat requests (%d right behind the first)'
            % (work['distinct_cells'], work['corpus_cells'], work['repeat_requests'], work['concurrent_repeats']))
        row('judgments per cell', '%s: %d judgments of %d cells, %d duplicates, %d cells on several instances'
            % (dup['judgments_per_cell'], dup['judgments'], dup['cells_answered'], dup['duplicate_judgments'],
               dup['cells_on_several_instances']))
        row('', '(counted from %s)' % dup['counted_from'])
    failures = facts.get('threshold_failures') or []
    if failures:
        lines.append('  FAILED thresholds:')
        for failure in failures:
            lines.append('    - %s' % failure)
    elif facts.get('thresholds'):
        row('thresholds', 'all passed')
    return '\n'.join(lines)
