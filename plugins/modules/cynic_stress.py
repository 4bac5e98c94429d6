#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cynic_stress
short_description: Open-loop HTTP load test of a CYNIC cluster, with honest latency statistics
version_added: 0.1.0
description:
  - Sends requests at a constant arrival rate (open loop) for a fixed duration and returns what happened as the
    C(cynic_stress) fact.
  - Request number C(i) is due at C(t0 + i / rate) whatever happened to the requests before it, so a slow server
    cannot slow the generator down and hide its own slowness (no coordinated omission).
  - Latency is measured from the intended start (what a user arriving at that moment sees) and from the actual send.
    The difference, the scheduler lag, is reported; when it is large or the generator could not keep the planned
    rate, RV(ansible_facts.cynic_stress.generator_saturated) is true and the numbers describe the generator as much
    as the server.
  - At most O(max_in_flight) requests are outstanding; a request that is due while the cap is reached is counted as
    dropped, never queued.
  - Two sets of latency figures are returned. RV(ansible_facts.cynic_stress.latency_ms) covers every request of the
    measured window, errors included, and counts each request that was never sent (dropped at the O(max_in_flight)
    cap, or cancelled before it started) as if it had timed out, at O(timeout); their number is
    RV(ansible_facts.cynic_stress.counted_at_timeout). Dropped requests are therefore never silently absent from the
    latency. RV(ansible_facts.cynic_stress.latency_ok_ms) covers the 2xx answers only, so that fast errors cannot
    make a slow service look fast.
  - The spread over instances (RV(ansible_facts.cynic_stress.instances),
    RV(ansible_facts.cynic_stress.instance_shares)) counts 2xx answers only.
  - Warm-up requests are sent like the others but left out of every statistic.
  - Thresholds fail the task and list every broken limit; the facts are still returned.
  - The engine is shared with the C(tools/cynic-stress) command line of the collection.
  - The event loop is uvloop when it is importable, asyncio otherwise.
author:
  - CYNIC cluster team (@cynic-cluster)
extends_documentation_fragment:
  - cynic.cluster.attributes
  - cynic.cluster.http_client
requirements:
  - aiohttp >= 3.9 on the host that runs the module
  - uvloop (optional, faster)
attributes:
  check_mode:
    details: In check mode the run is planned (the facts hold the planned request count) and nothing is sent; the plan needs no aiohttp.
notes:
  - The module reports C(changed=false), like M(ansible.builtin.uri), although the default request creates
    judgments on the server.
  - Ansible does not store the facts of a failed task as host facts. When a threshold fails, read the facts from
    the registered result (C(result.ansible_facts.cynic_stress)), from C(ansible_failed_result) in a C(rescue)
    block, or set O(fail_on_thresholds=false) and test RV(ansible_facts.cynic_stress.passed) yourself.
  - Run the generator close to the service (for example on the load balancer host against 127.0.0.1); it needs CPU
    for itself and reports when it did not get enough.
  - The module runs with the Python interpreter of the target host, which needs aiohttp; point
    C(ansible_python_interpreter) at a virtualenv that has it (for example the node's) when the system Python lacks
    it.
  - Give a few seconds of O(warmup) to a measurement, since the first requests open connections and warm the generator
    and the service up.
options:
  url:
    description:
      - Base URL of the service, for example V(http://127.0.0.1:8080). O(path) is appended to it.
    type: str
    required: true
  path:
    description:
      - Path of the request. C({i}) (request number) and C({run}) (the run id) are substituted.
    type: str
    default: /judge
  method:
    description:
      - HTTP method, an RFC 9110 token. Like O(url), O(path) and O(headers), it is checked before anything is
        sent; a value the HTTP client would refuse on every request fails the task, naming it.
    type: str
    default: POST
  body:
    description:
      - Body template. A string is used as is; a dict or a list is serialised as JSON first.
      - C({i}) is replaced by the request number (warm-up included, from 0) and C({run}) by the run id, so that a
        body with C({run}) creates new cells on every run. Null sends no body.
      - The body is sent with the header C(Content-Type) set to C(application/json) unless O(headers) sets it.
      - Mutually exclusive with O(mix), which gives each kind of request its own body.
    type: raw
    default: '{"content": "Test code {i}", "reality": "CODE", "analysis": "JUDGE", "budget_usd": 0.01}'
  cells:
    description:
      - A corpus of cells to judge instead of the O(body) template, which is then ignored. Each element is
        C({name, cell}) (C(cell) being the C(/judge) body, with a string C(content)) or a bare cell; the
        collection's corpus is C(roles/stress/files/stress_corpus.jsonl) (read it with
        C(lookup('ansible.builtin.file', ...) | split('\n') | select | map('from_json'))).
      - Each fresh cell is the next corpus text (shuffled order) with a run marker appended to its content
        (see O(mark_cells)); O(repeat_share) of the requests repeat a cell already sent. The answers are audited
        for duplicate work (RV(ansible_facts.cynic_stress.duplicates)).
    type: list
    elements: raw
  mix:
    description:
      - Kinds of requests to send in fixed shares instead of the single O(body) (for example REFLEX, MICRO and MACRO
        requests of the LLM tier). Mutually exclusive with O(body) and O(cells).
      - Each kind's share of the measured window (and of the warm-up) is exact, by largest remainder over the
        weights, and its requests are spread evenly over the run (the kind furthest behind its share goes next),
        not sent in bursts; ties go in an order drawn from O(run_id), so a run id gives the same sequence.
      - The answers are counted kind by kind in RV(ansible_facts.cynic_stress.kinds).
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Name of the kind, unique in the mix; the key of RV(ansible_facts.cynic_stress.kinds).
        type: str
        required: true
      weight:
        description:
          - Weight of the kind, a positive number; its share is the weight over the sum of the weights.
        type: float
        required: true
      body:
        description:
          - >-
            The request body of this kind, serialised as JSON, with C({i}) and C({run}) substituted as in O(body)
            (for example V({"content": "cell {i} {run}", "level": "MICRO"}), written as a YAML mapping).
        type: dict
        required: true
  repeat_share:
    description:
      - With O(cells), the share of the requests that repeat a cell this run already sent, in [0, 1).
    type: float
    default: 0
  concurrent_share:
    description:
      - With O(cells), the share of the repeats sent right behind the first request of their cell (one interval
        of the schedule later, so in flight together when a judgment takes longer); the others repeat one of the
        256 most recent fresh cells.
    type: float
    default: 0.5
  mark_cells:
    description:
      - With O(cells), append C([cynic-stress RUN N]) to the content of each fresh cell so that every run judges
        new cells. False sends the texts as they are (a build that remembers cells answers them from memory).
    type: bool
    default: true
  id_field:
    description:
      - Field of the answers that names a judgment, for the duplicates audit (C(judgment_id) for the reference
        node and the upstream kernel). An answer without it, or every answer when this is empty, counts as one
        judgment of its own.
    type: str
    default: judgment_id
  q_at_rest:
    description:
      - With O(cells), RV(ansible_facts.cynic_stress.q_by_text) of an earlier run of the same corpus at rest (at a low
        rate); this run's Q-Scores are compared with it text by text in RV(ansible_facts.cynic_stress.q_vs_rest).
    type: dict
  headers:
    description:
      - Extra request headers. Names must be RFC 9110 tokens; values must not hold line breaks or other
        control characters (a tab is fine).
    type: dict
  rate:
    description:
      - Target arrival rate, in requests per second.
    type: float
    default: 100
  duration:
    description:
      - Length of the measured window, in seconds. O(rate) times O(duration) requests are planned.
      - O(rate) times (O(warmup) + O(duration)) may plan at most 10,000,000 requests (every one is tracked in memory).
      - The run lasts at most O(warmup) + O(duration) + O(timeout) seconds.
    type: float
    default: 10
  warmup:
    description:
      - Seconds of warm-up traffic at the same rate before the measured window, excluded from the statistics.
    type: float
    default: 0
  max_in_flight:
    description:
      - Largest number of outstanding requests (and size of the connection pool). A request that is due while this
        many are outstanding is dropped and counted in RV(ansible_facts.cynic_stress.dropped).
    type: int
    default: 256
  timeout:
    default: 10
  use_cookies:
    description:
      - Keep the cookies that the servers set and send them back (one cookie jar for the run), for sticky-session
        checks. Off by default, so that every request looks like a new client.
    type: bool
    default: false
  run_id:
    description:
      - Identifier of the run, substituted for C({run}). A random one is made when omitted.
    type: str
  parse_body:
    description:
      - Parse the JSON body of every 200 answer for its C(q_score) and C(judgment_id). Turn off to spare CPU when
        neither is needed.
    type: bool
    default: true
  return_judgment_ids:
    description:
      - Return the list of judgment ids answered with 200. Their count and sha256 digest are always returned; turn
        this off for huge runs.
    type: bool
    default: true
  saturation_lag_ms:
    description:
      - The generator is reported saturated when the 99th percentile of its scheduler lag (actual send minus
        intended start) is over this many milliseconds, or when it issued requests more than 1% slower than
        O(rate).
    type: float
    default: 20
  fail_if_saturated:
    description:
      - Fail the task when the generator was saturated.
    type: bool
    default: false
  fail_on_thresholds:
    description:
      - Fail the task when a threshold is broken. When false the task succeeds, the facts are stored, and
        RV(ansible_facts.cynic_stress.passed) and RV(ansible_facts.cynic_stress.threshold_failures) tell the result.
    type: bool
    default: true
  min_rate_ratio:
    description:
      - Smallest accepted ratio of the achieved send rate to O(rate), for example V(0.99). Between 0 and 1.
      - The send rate counts every request sent, whatever its answer; O(max_error_rate) judges the answers.
    type: float
  max_error_rate:
    description:
      - Largest accepted error rate (errors and dropped requests over planned requests), for example V(0.001).
      - Between 0 and 1; V(0) accepts no error at all.
    type: float
  max_p95_ms:
    description:
      - Largest accepted 95th percentile of the latency from the intended start, in milliseconds.
      - It must hold for every request (RV(ansible_facts.cynic_stress.latency_ms), dropped requests counted at
        O(timeout)) and for the 2xx answers alone (RV(ansible_facts.cynic_stress.latency_ok_ms)); a run without any
        2xx answer breaks it.
    type: float
  max_p99_ms:
    description:
      - Largest accepted 99th percentile of the latency from the intended start, in milliseconds.
      - Judged like O(max_p95_ms), on both sets of figures.
    type: float
  expected_instances:
    description:
      - Instance ids (from the C(X-Instance-ID) response header) that must all have answered with a 2xx status.
      - With O(min_instance_share), each must have given at least that share of the 2xx answers.
    type: list
    elements: str
  min_instance_share:
    description:
      - Smallest accepted share of the 2xx answers for each instance of O(expected_instances) (or, without it, for
        each instance that answered, an instance that answered only errors having a share of 0), for example
        V(0.25) for three instances behind a balancer. Between 0 and 1.
    type: float
  q_score_min:
    description:
      - Every observed C(q_score) must be at least this. Fails when no C(q_score) was observed.
      - Must not be above O(q_score_max).
    type: float
  q_score_max:
    description:
      - Every observed C(q_score) must be at most this. Fails when no C(q_score) was observed.
    type: float
  max_duplicate_judgments:
    description:
      - With O(cells), the most judgments beyond one per distinct cell
        (C(duplicate_judgments) of RV(ansible_facts.cynic_stress.duplicates)); V(0) for a cluster that must never judge a
        cell twice. Fails when no corpus was sent.
    type: int
  max_q_shift:
    description:
      - With O(q_at_rest), the largest accepted mean change of a text's Q-Score against the run at rest, in points
        (C(mean_abs_difference) of RV(ansible_facts.cynic_stress.q_vs_rest)), for example V(2).
      - Fails when nothing was compared (no O(q_at_rest), or none of its texts was judged by this run).
      - Zero or more.
    type: float
  max_degraded_share:
    description:
      - Largest accepted share of degraded answers among the answers that asked an LLM
        (RV(ansible_facts.cynic_stress.degraded_share)), between 0 and 1, for example V(0.05).
      - Fails when no answer asked an LLM (RV(ansible_facts.cynic_stress.llm_asked) is 0), since nothing was measured.
    type: float
seealso:
  - module: cynic.cluster.cynic_cluster_facts
'''

EXAMPLES = r'''
- name: Load the cluster at 200 req/s for 30 s through the balancer
  cynic.cluster.cynic_stress:
    url: http://127.0.0.1:8080
    rate: 200
    duration: 30
    warmup: 5
    max_in_flight: 512
    min_rate_ratio: 0.99
    max_error_rate: 0.001
    max_p99_ms: 250
    expected_instances: [cynic-1, cynic-2, cynic-3]
    min_instance_share: 0.25
    q_score_min: 0
    q_score_max: 100

- name: Keep going on failure and plot the timeline
  cynic.cluster.cynic_stress:
    url: http://127.0.0.1:8080
    rate: 100
    duration: 60
    body:
      content: "Run {run} cell {i}"
      reality: CODE
      analysis: JUDGE
      budget_usd: 0.01
    max_p99_ms: 500
    fail_on_thresholds: false
    return_judgment_ids: true

- name: Judge the collection's corpus, a quarter of the requests repeating a cell, with no duplicate judgment
  cynic.cluster.cynic_stress:
    url: http://127.0.0.1:8080
    rate: 150
    duration: 60
    cells: "{{ lookup('ansible.builtin.file', 'stress_corpus.jsonl') | split('\n') | select | map('from_json') | list }}"
    repeat_share: 0.25
    max_duplicate_judgments: 0

- name: The corpus again under load, each text's Q-Score within 2 points of a run at rest on average
  cynic.cluster.cynic_stress:
    url: http://127.0.0.1:8080
    cells: "{{ corpus }}"
    q_at_rest: "{{ at_rest['ansible_facts']['cynic_stress']['q_by_text'] }}"
    max_q_shift: 2
    fail_on_thresholds: false
  register: under_load

- name: One line per threshold, passed or not
  ansible.builtin.debug:
    msg: "{{ under_load['ansible_facts']['cynic_stress']['checks'] | map(attribute='message') | list }}"

- name: Half REFLEX, a third MICRO, a sixth MACRO; at most 5% of the LLM answers degraded
  cynic.cluster.cynic_stress:
    url: http://127.0.0.1:8080
    rate: 20
    duration: 60
    mix:
      - {name: reflex, weight: 3, body: {content: "reflex {run} {i}", reality: CODE, analysis: JUDGE, level: REFLEX}}
      - {name: micro, weight: 2, body: {content: "micro {run} {i}", reality: CODE, analysis: JUDGE, level: MICRO}}
      - {name: macro, weight: 1, body: {content: "macro {run} {i}", reality: CODE, analysis: JUDGE, level: MACRO}}
    max_degraded_share: 0.05
    fail_on_thresholds: false
  register: levels

- name: Latency and levels reached, kind by kind
  ansible.builtin.debug:
    var: levels['ansible_facts']['cynic_stress']['kinds']

- name: Show the latency over time
  ansible.builtin.debug:
    msg: "{{ ansible_facts['cynic_stress']['timeline'] | map(attribute='p99_ms') | list }}"

- name: Sticky sessions keep one client on one instance
  cynic.cluster.cynic_stress:
    url: http://127.0.0.1:8080
    method: GET
    path: /health
    body: null
    rate: 50
    duration: 5
    use_cookies: true
'''

RETURN = r'''
ansible_facts:
  description: The facts of the run (the C(cynic_stress) fact).
  returned: always
  type: dict
  contains:
    cynic_stress:
      description:
        - What the run did. Latency, rate and error statistics cover the measured window only (no warm-up).
        - In check mode only the plan is returned (RV(ansible_facts.cynic_stress.planned), C(expected_wall_time_s),
          C(max_wall_time_s), zero counts).
      returned: always
      type: dict
      contains:
        url:
          description: Base URL.
          type: str
          returned: always
        method:
          description: HTTP method.
          type: str
          returned: always
        path:
          description: Request path template.
          type: str
          returned: always
        run_id:
          description: Identifier of the run (the C({run}) substitution).
          type: str
          returned: always
        check_mode:
          description: Whether this was only a plan.
          type: bool
          returned: always
        target_rate:
          description: Target rate, req/s.
          type: float
          returned: always
        duration_s:
          description: Planned measured duration, s.
          type: float
          returned: always
        warmup_s:
          description: Warm-up duration, s.
          type: float
          returned: always
        planned:
          description: Requests planned in the measured window.
          type: int
          returned: always
          sample: 1000
        warmup_planned:
          description: Warm-up requests planned.
          type: int
          returned: always
        max_in_flight:
          description: The cap on outstanding requests.
          type: int
          returned: always
        timeout_s:
          description: The timeout of each request, s (O(timeout)).
          type: float
          returned: always
        use_cookies:
          description: Whether cookies were kept across requests (O(use_cookies)).
          type: bool
          returned: always
        expected_wall_time_s:
          description: Warm-up plus measured duration, s, the time the schedule takes when nothing goes wrong.
          type: float
          returned: in check mode
        max_wall_time_s:
          description:
            - The longest the run may take by its settings, s, warm-up plus duration plus O(timeout) for the last
              answers.
            - After its last request the run waits at most O(timeout) plus 5 s for the answers, so it can take up to
              5 s more than this, plus whatever a generator that fell behind its schedule lost.
          type: float
          returned: in check mode
        sent:
          description: Requests of the measured window that were sent.
          type: int
          returned: always
        ok:
          description: Requests answered with a 2xx status.
          type: int
          returned: always
        errors:
          description: Sent requests that got a non-2xx status or a transport error.
          type: int
          returned: always
        dropped:
          description: Requests not sent because O(max_in_flight) requests were outstanding.
          type: int
          returned: always
        actual_duration_s:
          description: Measured window from the first intended start to the last send, plus one interval.
          type: float
          returned: when not in check mode
        wall_time_s:
          description: Time of the whole run, warm-up and the wait for the last answers included.
          type: float
          returned: when not in check mode
        achieved_rate:
          description:
            - The send rate, RV(ansible_facts.cynic_stress.sent) over RV(ansible_facts.cynic_stress.actual_duration_s).
            - Errors count here like answers; RV(ansible_facts.cynic_stress.ok_rate) is the rate of 2xx answers.
          type: float
          returned: when not in check mode
        ok_rate:
          description: RV(ansible_facts.cynic_stress.ok) over RV(ansible_facts.cynic_stress.actual_duration_s).
          type: float
          returned: when not in check mode
        rate_ratio:
          description: Send rate (RV(ansible_facts.cynic_stress.achieved_rate)) over target rate.
          type: float
          returned: when not in check mode
        error_rate:
          description: Errors plus dropped requests, over planned requests.
          type: float
          returned: when not in check mode
        status_codes:
          description: Count of answers by HTTP status (keys are strings).
          type: dict
          returned: when not in check mode
          sample: {"200": 998, "503": 2}
        errors_by_class:
          description:
            - Count of failed requests by class, C(http_4xx), C(http_5xx), C(http_other), C(timeout), C(connection),
              C(disconnected), C(payload), C(client), C(cancelled) or C(other).
          type: dict
          returned: when not in check mode
        latency_ms:
          description:
            - Latency of every request of the measured window, in ms, whatever its answer, with keys C(count) (the
              number of samples), C(p50), C(p90), C(p95), C(p99), C(p99_9), C(max) and C(mean) (nearest-rank
              percentiles; null without samples).
            - An answer of any status counts until it was complete, a transport error until it happened.
            - A request that was never sent (dropped at the O(max_in_flight) cap, or cancelled before it started)
              counts as if it had timed out, at O(timeout) from its send (plus the scheduler lag in C(intended));
              see RV(ansible_facts.cynic_stress.counted_at_timeout). More than 1% of them put the timeout in the p99.
          type: dict
          returned: when not in check mode
          contains:
            intended:
              description: From the intended start (coordinated omission corrected). Thresholds use these.
              type: dict
              returned: when not in check mode
            actual:
              description: From the actual send, of every request of the window.
              type: dict
              returned: when not in check mode
        latency_ok_ms:
          description:
            - Latency of the 2xx answers only, in ms, same keys as RV(ansible_facts.cynic_stress.latency_ms) (all null
              and C(count) 0 when no answer was a 2xx).
            - Errors, dropped and cancelled requests are left out, so fast error answers cannot hide a slow service.
          type: dict
          returned: when not in check mode
          contains:
            intended:
              description: From the intended start (coordinated omission corrected). Thresholds use these too.
              type: dict
              returned: when not in check mode
            actual:
              description: From the actual send, of the 2xx answers.
              type: dict
              returned: when not in check mode
        counted_at_timeout:
          description:
            - Requests in RV(ansible_facts.cynic_stress.latency_ms) whose latency is the timeout because they were never
              sent (RV(ansible_facts.cynic_stress.dropped) plus those cancelled before they started), not a measurement.
          type: int
          returned: when not in check mode
        scheduler_lag_ms:
          description: Actual send (or drop) minus intended start, C(p50), C(p99) and C(max), in ms.
          type: dict
          returned: when not in check mode
        generator_saturated:
          description: Whether the generator itself fell behind (see O(saturation_lag_ms)).
          type: bool
          returned: always
        saturation_reasons:
          description: Why the generator is considered saturated.
          type: list
          elements: str
          returned: when not in check mode
        peak_in_flight:
          description: Largest number of outstanding requests seen.
          type: int
          returned: when not in check mode
        instances:
          description: Count of the 2xx answers by C(X-Instance-ID) header.
          type: dict
          returned: when not in check mode
          sample: {"cynic-1": 334, "cynic-2": 333, "cynic-3": 333}
        instance_shares:
          description: Share of the 2xx answers (with or without the header) by instance. Error answers are not counted.
          type: dict
          returned: when not in check mode
        instance_errors:
          description: Count of the answers that were not 2xx by C(X-Instance-ID) header (those that carried it).
          type: dict
          returned: when not in check mode
          sample: {"cynic-2": 12}
        instances_distinct:
          description: Number of distinct instances that gave at least one 2xx answer.
          type: int
          returned: when not in check mode
        responses_without_instance:
          description: 2xx answers without the C(X-Instance-ID) header.
          type: int
          returned: when not in check mode
        q_score:
          description:
            - C(count), C(mean), C(min) and C(max) of the C(q_score) of the 200 answers.
            - A C(q_score) that is not a finite number (missing, a string, NaN, Infinity) is not counted.
          type: dict
          returned: when not in check mode
        invalid_json:
          description: 200 answers whose body was not JSON.
          type: int
          returned: when not in check mode
        judgment_ids:
          description:
            - Sorted distinct C(judgment_id) of every 200 answer, warm-up included (each of them must be stored).
          type: list
          elements: str
          returned: when O(return_judgment_ids=true) and not in check mode
        workload:
          description:
            - With O(cells), the plan that was sent - C(corpus_cells), C(distinct_cells), C(requests) (warm-up
              included), C(repeat_requests), C(concurrent_repeats), C(repeat_share), C(concurrent_share), C(marked).
          type: dict
          returned: when O(cells) is set
        duplicates:
          description:
            - With O(cells), the duplicates audit of the 200 answers (warm-up included) - C(cells_answered),
              C(cells_answered_more_than_once), C(judgments) (distinct O(id_field) values per cell, superseded ones
              left out, summed; an answer without one counts as one judgment), C(judgments_per_cell), C(duplicate_judgments) (judgments beyond
              one per cell), C(upgraded_judgments) (judgments that another answer names in its C(supersedes) list, a
              degraded judgment judged again at its level, counted here and not as a duplicate),
              C(cells_judged_more_than_once), C(cells_on_several_instances) (cells answered by more
              than one X-Instance-ID), C(q_score_spread_of_repeated_cells) (C(cells), C(mean), C(max) of the
              max - min Q-Score of each cell answered more than once), C(counted_from) (a sentence) and C(id_field).
          type: dict
          returned: when O(cells) is set and not in check mode
        q_by_text:
          description:
            - With O(cells), C([answers, mean Q-Score]) of each corpus text (by name) over the run, to compare the
              corpus judged at rest with the same texts under load.
          type: dict
          returned: when O(cells) is set and not in check mode
        q_vs_rest:
          description:
            - With O(q_at_rest), the Q-Scores of the texts judged in both runs - C(texts_compared), the quantiles
              (C(count), C(mean), C(min), C(p10), C(p50), C(p90), C(max)) of each text's mean C(at_rest) and
              C(under_load), C(mean_abs_difference) and C(max_abs_difference) per text, and C(moved) (texts whose
              mean moved by more than C(tolerance), 0.5 points).
          type: dict
          returned: when O(q_at_rest) is set and not in check mode
        llm_asked:
          description:
            - 200 answers of the measured window that asked an LLM - a C(level_used) other than C(REFLEX), or
              C(degraded) true (a MICRO or MACRO request answered below its level).
          type: int
          returned: when not in check mode
        degraded:
          description: 200 answers of the measured window with C(degraded) true.
          type: int
          returned: when not in check mode
        degraded_share:
          description:
            - RV(ansible_facts.cynic_stress.degraded) over RV(ansible_facts.cynic_stress.llm_asked); 0.0 when no answer
              asked an LLM.
          type: float
          returned: when not in check mode
        kinds:
          description:
            - With O(mix), one entry per kind, by name - C(planned), C(sent), C(ok), C(errors), C(dropped) (as the
              run's own counts, for the requests of that kind in the measured window), C(latency_ms) (C(p50), C(p95),
              C(p99), C(max) from the intended start, every request of the kind, dropped ones at O(timeout), as in
              RV(ansible_facts.cynic_stress.latency_ms)), C(level_used) (count of the 200 answers by the
              C(level_used) they report), C(degraded) (answers with C(degraded) true) and C(llm_calls) (the sum of
              the answers' C(llm_calls)).
            - In check mode, the plan of each kind - C(weight), C(planned) and C(warmup_planned).
          type: dict
          returned: when O(mix) is set
        judgment_ids_count:
          description: Number of distinct judgment ids.
          type: int
          returned: when not in check mode
        judgment_ids_sha256:
          description: sha256 of the sorted distinct judgment ids joined by newlines.
          type: str
          returned: when not in check mode
        timeline:
          description:
            - One entry per second of the measured window, by intended start, with C(second), C(sent), C(ok),
              C(errors), C(dropped), C(p50_ms) and C(p99_ms) (latency from the intended start of every request due in
              that second, as in RV(ansible_facts.cynic_stress.latency_ms), dropped ones at the timeout),
              C(p50_ok_ms) and C(p99_ok_ms) (of its 2xx answers only), C(llm_asked) and C(degraded) (its answers, as
              RV(ansible_facts.cynic_stress.llm_asked) and RV(ansible_facts.cynic_stress.degraded) count them). A
              percentile without samples is null.
          type: list
          elements: dict
          returned: when not in check mode
        worst_second:
          description:
            - The entry of RV(ansible_facts.cynic_stress.timeline) with the highest C(p99_ms), to read beside the
              whole-run figures (one bad second with a normal median is a stall, not overload). Null when no second
              has a sample.
          type: dict
          returned: when not in check mode
        median_second_p99_ms:
          description: Median of the per-second C(p99_ms) of the timeline; null when no second has a sample.
          type: float
          returned: when not in check mode
        event_loop:
          description: C(uvloop) or C(asyncio).
          type: str
          returned: when not in check mode
        thresholds:
          description: The thresholds in force.
          type: dict
          returned: when not in check mode
        checks:
          description:
            - One entry per threshold in force, in this order - C(min_rate_ratio), C(max_error_rate), C(max_p95_ms),
              C(max_p99_ms), C(expected_instances) (O(expected_instances) without O(min_instance_share)),
              C(min_instance_share), C(q_score_range) (O(q_score_min), O(q_score_max) or both),
              C(max_duplicate_judgments), C(max_q_shift), C(max_degraded_share) and C(fail_if_saturated).
            - Empty in check mode and when no threshold is set.
          type: list
          elements: dict
          returned: always
          contains:
            name:
              description: The threshold, one of the names above.
              type: str
              returned: always
            passed:
              description: Whether the run met it.
              type: bool
              returned: always
            limit:
              description:
                - The limit as set; C([q_score_min, q_score_max]) for C(q_score_range) (null for an end not set), the
                  instance ids for C(expected_instances), true for C(fail_if_saturated).
              type: raw
              returned: always
            value:
              description:
                - What was compared with the limit, null when there was nothing to compare.
                - C({all, ok}) (the p95 or p99 from the intended start over every request and over the 2xx answers)
                  for the latency limits; C({instance, share}) for C(min_instance_share); C({instance, 2xx answers})
                  for C(expected_instances); the observed C([min, max]) for C(q_score_range);
                  C(duplicate_judgments), C(mean_abs_difference) of RV(ansible_facts.cynic_stress.q_vs_rest),
                  RV(ansible_facts.cynic_stress.degraded_share) and
                  RV(ansible_facts.cynic_stress.generator_saturated) for the checks of those names; the ratio or the
                  rate for the others.
              type: raw
              returned: always
            message:
              description:
                - One sentence with the figures, when passed as when failed. A failed check's message is its
                  sentences of RV(ansible_facts.cynic_stress.threshold_failures), joined by C(; ).
              type: str
              returned: always
        threshold_failures:
          description:
            - One sentence per broken threshold (a check over several instances, or both ends of the Q-Score range,
              may break with several); the messages of the failed RV(ansible_facts.cynic_stress.checks).
          type: list
          elements: str
          returned: always
        passed:
          description: True when no threshold was broken.
          type: bool
          returned: when not in check mode
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.cynic.cluster.plugins.module_utils.cynic_load import (
    AIOHTTP_IMPORT_ERROR,
    DEFAULT_BODY,
    HAS_AIOHTTP,
    LoadConfig,
    LoadError,
    Thresholds,
    plan,
    run_load,
)
from ansible_collections.cynic.cluster.plugins.module_utils.cynic_module_args import http_client_spec
from ansible_collections.cynic.cluster.plugins.module_utils.cynic_stdout import whole_results

THRESHOLD_KEYS = ('min_rate_ratio', 'max_error_rate', 'max_p95_ms', 'max_p99_ms', 'expected_instances',
                  'min_instance_share', 'q_score_min', 'q_score_max', 'fail_if_saturated', 'max_duplicate_judgments',
                  'max_q_shift', 'max_degraded_share')


def argument_spec():
    spec = http_client_spec(timeout=10)
    spec.update(
        url=dict(type='str', required=True),
        path=dict(type='str', default='/judge'),
        method=dict(type='str', default='POST'),
        body=dict(type='raw', default=DEFAULT_BODY),
        cells=dict(type='list', elements='raw'),
        mix=dict(type='list', elements='dict', options=dict(
            name=dict(type='str', required=True),
            weight=dict(type='float', required=True),
            body=dict(type='dict', required=True),
        )),
        repeat_share=dict(type='float', default=0),
        concurrent_share=dict(type='float', default=0.5),
        mark_cells=dict(type='bool', default=True),
        id_field=dict(type='str', default='judgment_id'),
        q_at_rest=dict(type='dict'),
        headers=dict(type='dict'),
        rate=dict(type='float', default=100),
        duration=dict(type='float', default=10),
        warmup=dict(type='float', default=0),
        max_in_flight=dict(type='int', default=256),
        use_cookies=dict(type='bool', default=False),
        run_id=dict(type='str'),
        parse_body=dict(type='bool', default=True),
        return_judgment_ids=dict(type='bool', default=True),
        saturation_lag_ms=dict(type='float', default=20),
        fail_if_saturated=dict(type='bool', default=False),
        fail_on_thresholds=dict(type='bool', default=True),
        min_rate_ratio=dict(type='float'),
        max_error_rate=dict(type='float'),
        max_p95_ms=dict(type='float'),
        max_p99_ms=dict(type='float'),
        expected_instances=dict(type='list', elements='str'),
        min_instance_share=dict(type='float'),
        q_score_min=dict(type='float'),
        q_score_max=dict(type='float'),
        max_duplicate_judgments=dict(type='int'),
        max_q_shift=dict(type='float'),
        max_degraded_share=dict(type='float'),
    )
    return spec


def main():
    whole_results()  # the result echoes the corpus: far over a pipe's 64 KiB
    # A mix gives every request its body: a body or a corpus beside it would be silently ignored.
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[('mix', 'body'), ('mix', 'cells')])
    params = module.params

    try:
        config = LoadConfig(
            url=params['url'], rate=params['rate'], duration=params['duration'], warmup=params['warmup'],
            max_in_flight=params['max_in_flight'], method=params['method'], path=params['path'],
            body=params['body'], headers=params['headers'], timeout=params['timeout'],
            use_cookies=params['use_cookies'], validate_certs=params['validate_certs'], run_id=params['run_id'],
            parse_body=params['parse_body'], return_judgment_ids=params['return_judgment_ids'],
            saturation_lag_ms=params['saturation_lag_ms'], cells=params['cells'],
            repeat_share=params['repeat_share'], concurrent_share=params['concurrent_share'],
            mark_cells=params['mark_cells'], id_field=params['id_field'], q_at_rest=params['q_at_rest'],
            mix=params['mix'],
        )
        thresholds = Thresholds(**dict((key, params[key]) for key in THRESHOLD_KEYS))
    except LoadError as exc:
        module.fail_json(msg=str(exc))

    if module.check_mode:
        # Planning sends nothing, so it needs no aiohttp (check mode works before the generator's
        # virtualenv exists).
        module.exit_json(changed=False, ansible_facts={'cynic_stress': plan(config)})

    if not HAS_AIOHTTP:
        module.fail_json(msg=missing_required_lib('aiohttp'), exception=AIOHTTP_IMPORT_ERROR)

    try:
        facts = run_load(config, thresholds=thresholds)
    except LoadError as exc:
        module.fail_json(msg=str(exc))

    failures = facts['threshold_failures']
    if failures and params['fail_on_thresholds']:
        module.fail_json(
            msg='%d threshold(s) broken: %s' % (len(failures), '; '.join(failures)),
            threshold_failures=failures,
            ansible_facts={'cynic_stress': facts},
        )
    module.exit_json(changed=False, ansible_facts={'cynic_stress': facts})


if __name__ == '__main__':
    main()
