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
from fractions import Fraction
from urllib.parse import urlsplit

from .cynic_workload import CellAudit, Workload, WorkloadError, compare_q_scores

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
                 id_field='judgment_id', q_at_rest=None):
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
                 q_score_max=None, fail_if_saturated=False, max_duplicate_judgments=None):
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
        self._validate()

    def _validate(self):
        """Refuse limits that no run could meet, or that would silently check nothing (NaN)."""
        ranges = (('min_rate_ratio', 0.0, 1.0), ('max_error_rate', 0.0, 1.0), ('min_instance_share', 0.0, 1.0),
                  ('max_p95_ms', 0.0, math.inf), ('max_p99_ms', 0.0, math.inf),
                  ('q_score_min', -math.inf, math.inf), ('q_score_max', -math.inf, math.inf),
                  ('max_duplicate_judgments', 0, math.inf))
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
                    'min_instance_share', 'q_score_min', 'q_score_max', 'max_duplicate_judgments'):
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


class _Run(object):
    """One run: the scheduler, the request tasks and the raw samples."""

    def __init__(self, config, progress=None):
        self.cfg = config
        self.progress = progress
        self.n_warm = config.warmup_planned
        self.n_meas = config.planned
        self.total = self.n_warm + self.n_meas
        self.interval_ns = _NS_PER_S / config.rate
        self.url = config.url + config.path.replace(_PLACEHOLDER_RUN, config.run_id)
        self.path_parts = None
        if _PLACEHOLDER_I in self.url:
            self.path_parts = self.url.split(_PLACEHOLDER_I)
        self.workload = config.workload
        self.audit = CellAudit(self.workload, config.id_field) if self.workload is not None else None
        self.body_parts = None if self.workload is not None else _template_parts(config.body, config.run_id)
        self.const_body = None
        if self.body_parts is not None and len(self.body_parts) == 1:
            self.const_body = self.body_parts[0].encode('utf-8')

        n = self.n_meas
        self.state = [_PENDING] * n
        self.issue_ns = [0] * n       # when the request was sent (or dropped)
        self.end_ns = [0] * n         # when its answer (or error) was complete
        self.status = [0] * n
        self.t0 = 0
        self.t_end = 0

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

        self.in_flight = 0
        self.peak_in_flight = 0
        self.tasks = set()
        # live counters (warm-up included), for the progress line
        self.live = {'sent': 0, 'ok': 0, 'errors': 0, 'dropped': 0}
        self.window = []
        self.session = None

    # -- requests -----------------------------------------------------------------------
    def _body_for(self, index):
        if self.workload is not None:
            return self.workload.body(index)
        if self.const_body is not None or self.body_parts is None:
            return self.const_body
        return str(index).join(self.body_parts).encode('utf-8')

    def _url_for(self, index):
        if self.path_parts is None:
            return self.url
        return str(index).join(self.path_parts)

    async def _request(self, index, due):
        """Send request ``index`` (due at ``due``) and record what happened."""
        cfg = self.cfg
        data = self._body_for(index)
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
            self._record(index, due, start, end, status, payload, instance, error)

    def _record(self, index, due, start, end, status, payload, instance, error):
        j = index - self.n_warm
        live = self.live
        ok = error is None and 200 <= status < 300
        if ok:
            live['ok'] += 1
        else:
            live['errors'] += 1
        if self.progress is not None:
            self.window.append(end - due)

        judgment_id = None
        q_score = None
        doc = None
        if status == 200 and self.cfg.parse_body and payload:
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
        self.issue_ns[j] = start
        self.end_ns[j] = end
        if error is not None:
            self.state[j] = _FAILED
            self.error_classes[error] = self.error_classes.get(error, 0) + 1
            return
        self.state[j] = _ANSWERED
        self.status[j] = status
        key = str(status)
        self.status_counts[key] = self.status_counts.get(key, 0) + 1
        if not ok:
            cls = _status_class(status)
            self.error_classes[cls] = self.error_classes.get(cls, 0) + 1
        # The spread over instances counts successful answers only: an instance that answers
        # errors (fast, often) must not look as if it carried its share of the load.
        if not ok:
            if instance:
                self.instance_errors[instance] = self.instance_errors.get(instance, 0) + 1
        elif instance:
            self.instance_counts[instance] = self.instance_counts.get(instance, 0) + 1
        else:
            self.no_instance_header += 1
        q = _finite(q_score)
        if q is not None:
            self.q_sum += q
            self.q_count += 1
            if self.q_min is None or q < self.q_min:
                self.q_min = q
            if self.q_max is None or q > self.q_max:
                self.q_max = q

    def _issue(self, index, due, now):
        """Start request ``index`` now, or count it as dropped when the cap is reached."""
        if self.in_flight >= self.cfg.max_in_flight:
            self.live['dropped'] += 1
            j = index - self.n_warm
            if j >= 0:
                self.state[j] = _DROPPED
                self.issue_ns[j] = now
            return
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        self.live['sent'] += 1
        task = asyncio.ensure_future(self._request(index, due))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- schedule -----------------------------------------------------------------------
    async def _schedule(self):
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
            self._issue(index, due, now)
            index += 1
            burst += 1
            if burst >= _BURST:
                burst = 0
                await sleep(0)

    async def _ticker(self):
        second = 1
        while True:
            wake = self.t0 + second * _NS_PER_S
            delay = wake - time.perf_counter_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            self._report_progress(second)
            second += 1

    def _report_progress(self, elapsed, final=False):
        window = sorted(self.window)
        self.window = []
        warm_s = self.cfg.warmup
        if final:
            phase = 'done'
        elif elapsed <= warm_s:
            phase = 'warmup'
        elif elapsed <= warm_s + self.cfg.duration:
            phase = 'measure'
        else:
            phase = 'drain'
        snapshot = dict(self.live)
        snapshot.update({
            'elapsed_s': round(elapsed, 3),
            'phase': phase,
            'in_flight': self.in_flight,
            'planned_total': self.total,
            'p99_ms': _ms(percentile(window, 99.0)),
        })
        try:
            self.progress(snapshot)
        except Exception:  # pylint: disable=broad-except
            # a broken progress sink must not stop the run
            self.progress = None

    async def run(self):
        cfg = self.cfg
        if aiohttp is None:
            raise LoadError('the Python library aiohttp is required: %s' % AIOHTTP_IMPORT_ERROR)
        connector = aiohttp.TCPConnector(limit=cfg.max_in_flight, ssl=bool(cfg.validate_certs))
        if cfg.use_cookies:
            jar = aiohttp.CookieJar(unsafe=True)  # unsafe: also keep cookies of IP addresses
        else:
            jar = aiohttp.DummyCookieJar()
        headers = dict(cfg.headers)
        if (self.body_parts is not None or self.workload is not None) and 'content-type' not in [name.lower() for name in headers]:
            headers['Content-Type'] = 'application/json'
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        with gc_paused():
            return await self._run_session(connector, jar, headers, timeout)

    async def _run_session(self, connector, jar, headers, timeout):
        cfg = self.cfg
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar, headers=headers,
                                         timeout=timeout) as session:
            self.session = session
            self.t0 = time.perf_counter_ns() + _START_DELAY_NS
            ticker = None
            if self.progress is not None:
                ticker = asyncio.ensure_future(self._ticker())
            try:
                await self._schedule()
                # every request has its own timeout; this guard only protects the bound on time
                deadline = time.perf_counter_ns() + int((cfg.timeout + 5.0) * _NS_PER_S)
                while self.tasks:
                    left = (deadline - time.perf_counter_ns()) / 1e9
                    if left <= 0:
                        for task in list(self.tasks):
                            task.cancel()
                        await asyncio.gather(*self.tasks, return_exceptions=True)
                        break
                    await asyncio.wait(list(self.tasks), timeout=left)
            finally:
                if ticker is not None:
                    ticker.cancel()
                    await asyncio.gather(ticker, return_exceptions=True)
            self.t_end = time.perf_counter_ns()
            if self.progress is not None:
                self._report_progress((self.t_end - self.t0) / 1e9, final=True)
        return self.summarize()

    # -- statistics ---------------------------------------------------------------------
    def summarize(self):
        cfg = self.cfg
        n = self.n_meas
        t_meas0 = self.t0 + int(self.n_warm * self.interval_ns)
        sent = ok = errors = dropped = at_timeout = 0
        timeout_ns = int(round(cfg.timeout * _NS_PER_S))
        lat_int = []  # every request of the window (never sent: counted at the timeout)
        lat_act = []
        ok_int = []   # 2xx answers only
        ok_act = []
        lags = []
        last_issue = t_meas0
        seconds = int(math.ceil(cfg.duration))
        per_second = [{'sent': 0, 'ok': 0, 'errors': 0, 'dropped': 0, 'lat': [], 'lat_ok': []}
                      for dummy in range(seconds)]
        for j in range(n):
            due = self.t0 + int((j + self.n_warm) * self.interval_ns)
            bucket = per_second[min(int((due - t_meas0) // _NS_PER_S), seconds - 1)]
            state = self.state[j]
            issued = self.issue_ns[j]
            if issued > last_issue:
                last_issue = issued
            if state == _DROPPED:
                # Never sent, so never answered: counted as if it had been sent and had timed out,
                # not left out of the latency (which would hide the overload that caused the drop).
                dropped += 1
                at_timeout += 1
                bucket['dropped'] += 1
                lags.append(issued - due)
                lat_int.append(issued - due + timeout_ns)
                lat_act.append(timeout_ns)
                bucket['lat'].append(issued - due + timeout_ns)
                continue
            if state == _PENDING:  # its task was cancelled before it could start
                errors += 1
                sent += 1
                at_timeout += 1
                bucket['sent'] += 1
                bucket['errors'] += 1
                self.error_classes['cancelled'] = self.error_classes.get('cancelled', 0) + 1
                lat_int.append(timeout_ns)
                lat_act.append(timeout_ns)
                bucket['lat'].append(timeout_ns)
                continue
            sent += 1
            bucket['sent'] += 1
            lags.append(issued - due)
            latency = self.end_ns[j] - due
            lat_int.append(latency)
            lat_act.append(self.end_ns[j] - issued)
            bucket['lat'].append(latency)
            if state == _ANSWERED and 200 <= self.status[j] < 300:
                ok += 1
                bucket['ok'] += 1
                ok_int.append(latency)
                ok_act.append(self.end_ns[j] - issued)
                bucket['lat_ok'].append(latency)
            else:
                errors += 1
                bucket['errors'] += 1

        # The measured window runs from the first due time to the last actual send, plus one
        # interval (the time the last request "owns"). With an exact schedule it equals duration.
        actual_ns = max(last_issue - t_meas0, 0) + self.interval_ns
        actual_s = actual_ns / 1e9
        achieved = sent / actual_s
        issue_rate = (sent + dropped) / actual_s
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

        # Shares of the 2xx answers (with or without the header), by instance.
        answered_ok = sum(self.instance_counts.values()) + self.no_instance_header
        shares = {}
        for name, count in self.instance_counts.items():
            shares[name] = round(count / answered_ok, 4) if answered_ok else 0.0

        timeline = []
        for second, bucket in enumerate(per_second):
            lat = sorted(bucket.pop('lat'))
            lat_ok = sorted(bucket.pop('lat_ok'))
            bucket['second'] = second
            bucket['p50_ms'] = _ms(percentile(lat, 50.0))
            bucket['p99_ms'] = _ms(percentile(lat, 99.0))
            bucket['p50_ok_ms'] = _ms(percentile(lat_ok, 50.0))
            bucket['p99_ok_ms'] = _ms(percentile(lat_ok, 99.0))
            timeline.append(bucket)

        worst, median_p99 = worst_second(timeline)
        ids = sorted(self.judgment_ids)
        digest = hashlib.sha256('\n'.join(ids).encode('utf-8')).hexdigest()
        facts = _base_facts(cfg)
        facts.update({
            'check_mode': False,
            'event_loop': _loop_name(),
            'sent': sent,
            'ok': ok,
            'errors': errors,
            'dropped': dropped,
            'actual_duration_s': round(actual_s, 4),
            'wall_time_s': round((self.t_end - self.t0) / 1e9, 3),
            'achieved_rate': round(achieved, 3),
            'ok_rate': round(ok / actual_s, 3),
            'rate_ratio': round(achieved / cfg.rate, 5),
            'error_rate': round((errors + dropped) / n, 5) if n else 0.0,
            'status_codes': dict(sorted(self.status_counts.items())),
            'errors_by_class': dict(sorted(self.error_classes.items())),
            'latency_ms': {
                'intended': _latency_summary(lat_int),
                'actual': _latency_summary(lat_act),
            },
            'latency_ok_ms': {
                'intended': _latency_summary(ok_int),
                'actual': _latency_summary(ok_act),
            },
            'counted_at_timeout': at_timeout,
            'scheduler_lag_ms': lag,
            'generator_saturated': bool(reasons),
            'saturation_reasons': reasons,
            'peak_in_flight': self.peak_in_flight,
            'instances': dict(sorted(self.instance_counts.items())),
            'instance_shares': dict(sorted(shares.items())),
            'instance_errors': dict(sorted(self.instance_errors.items())),
            'instances_distinct': len(self.instance_counts),
            'responses_without_instance': self.no_instance_header,
            'q_score': {
                'count': self.q_count,
                'mean': round(self.q_sum / self.q_count, 3) if self.q_count else None,
                'min': self.q_min,
                'max': self.q_max,
            },
            'invalid_json': self.json_errors,
            'judgment_ids_count': len(ids),
            'judgment_ids_sha256': digest,
            'timeline': timeline,
            'worst_second': worst,
            'median_second_p99_ms': median_p99,
        })
        if self.audit is not None:
            facts['workload'] = self.workload.describe()
            facts['duplicates'] = self.audit.summary()
            facts['q_by_text'] = self.audit.q_by_name()
            if cfg.q_at_rest is not None:
                facts['q_vs_rest'] = compare_q_scores(cfg.q_at_rest, facts['q_by_text'])
        if cfg.return_judgment_ids:
            facts['judgment_ids'] = ids
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
        'threshold_failures': [],
    })
    workload = config.workload
    if workload is not None:
        facts['workload'] = workload.describe()
    return facts


def evaluate_thresholds(facts, thresholds):
    """Every broken limit, as one sentence each (an empty list when the run passed)."""
    failures = []
    if thresholds is None:
        return failures
    target = facts.get('target_rate') or 0
    if thresholds.min_rate_ratio is not None:
        ratio = facts.get('rate_ratio', 0.0)
        if ratio < thresholds.min_rate_ratio:
            failures.append('sent rate %.2f req/s is %.4f of the %.2f req/s target (min_rate_ratio %s)'
                            % (facts.get('achieved_rate', 0.0), ratio, target, thresholds.min_rate_ratio))
    if thresholds.max_error_rate is not None:
        rate = facts.get('error_rate', 0.0)
        if rate > thresholds.max_error_rate:
            failures.append('error rate %.5f (errors %d, dropped %d) is over max_error_rate %s'
                            % (rate, facts.get('errors', 0), facts.get('dropped', 0), thresholds.max_error_rate))
    # A latency limit holds for every request (dropped ones counted at the timeout) AND for the
    # 2xx answers alone: fast errors must not pull the figure down, nor slow errors push it up
    # unseen. Without any 2xx answer there is no service latency to meet the limit.
    every = (facts.get('latency_ms') or {}).get('intended') or {}
    good = (facts.get('latency_ok_ms') or {}).get('intended') or {}
    for key, limit in (('p95', thresholds.max_p95_ms), ('p99', thresholds.max_p99_ms)):
        if limit is None:
            continue
        value_all, value_ok = every.get(key), good.get(key)
        if value_all is None and value_ok is None:
            failures.append('no latency sample to compare with max_%s_ms %s' % (key, limit))
            continue
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
            failures.append('latency %s (from the intended start) breaks max_%s_ms %s: %s'
                            % (key, key, limit, ', '.join(broken)))
    instance_errors = facts.get('instance_errors') or {}

    def errors_of(name):
        count = instance_errors.get(name)
        return ' (and %d answers that were errors)' % count if count else ''

    shares = facts.get('instance_shares') or {}
    if thresholds.expected_instances:
        floor = thresholds.min_instance_share
        for name in thresholds.expected_instances:
            share = shares.get(name, 0.0)
            if floor is None:
                if not (facts.get('instances') or {}).get(name):
                    failures.append('instance %s never answered with a 2xx status%s' % (name, errors_of(name)))
            elif share < floor:
                failures.append('instance %s gave %.4f of the 2xx answers%s, below min_instance_share %s'
                                % (name, share, errors_of(name), floor))
    elif thresholds.min_instance_share is not None:
        # an instance that answered nothing but errors has a share of 0
        for name in sorted(set(shares) | set(instance_errors)):
            share = shares.get(name, 0.0)
            if share < thresholds.min_instance_share:
                failures.append('instance %s gave %.4f of the 2xx answers%s, below min_instance_share %s'
                                % (name, share, errors_of(name), thresholds.min_instance_share))
    q_stats = facts.get('q_score', {})
    if thresholds.q_score_min is not None or thresholds.q_score_max is not None:
        if not q_stats.get('count'):
            failures.append('no q_score was observed in any 200 response')
        else:
            if thresholds.q_score_min is not None and q_stats['min'] < thresholds.q_score_min:
                failures.append('q_score min %.3f is below q_score_min %s' % (q_stats['min'], thresholds.q_score_min))
            if thresholds.q_score_max is not None and q_stats['max'] > thresholds.q_score_max:
                failures.append('q_score max %.3f is over q_score_max %s' % (q_stats['max'], thresholds.q_score_max))
    if thresholds.max_duplicate_judgments is not None:
        audit = facts.get('duplicates')
        if not audit:
            failures.append('max_duplicate_judgments %s: the run sent no corpus of cells, so no duplicate was '
                            'audited' % thresholds.max_duplicate_judgments)
        elif audit['duplicate_judgments'] > thresholds.max_duplicate_judgments:
            failures.append('%d duplicate judgments (%d judgments of %d distinct cells, counted from %s) are over '
                            'max_duplicate_judgments %s'
                            % (audit['duplicate_judgments'], audit['judgments'], audit['cells_answered'],
                               audit['counted_from'], thresholds.max_duplicate_judgments))
    if thresholds.fail_if_saturated and facts.get('generator_saturated'):
        failures.append('the load generator was saturated: %s' % '; '.join(facts.get('saturation_reasons', [])))
    return failures


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
    failures = evaluate_thresholds(facts, thresholds)
    facts['thresholds'] = thresholds.as_dict() if thresholds is not None else {}
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
