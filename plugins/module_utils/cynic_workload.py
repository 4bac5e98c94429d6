# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT

"""Which cell each request of a load run judges, and what the answers say about duplicate work.

Used by the load engine (cynic_load.py); like it, this file must not import Ansible.

A workload is a corpus of cells (``/judge`` bodies, each with a name) and a plan, reproducible from
a seed, of which cell request ``i`` sends:

* a **fresh** cell: the next corpus cell (in a shuffled order), made new for this run by a marker
  appended to its content (``[cynic-stress <run> <n>]``), so that a build which remembers cells
  judges it anew. Past the end of the corpus the same texts come back with other markers.
* a **repeat** (share ``repeat_share`` of the requests): a cell this run already sent. A share
  ``concurrent_share`` of the repeats follow the cell's first request immediately (one interval of
  the schedule later: in flight together whenever a judgment takes longer than that), the others
  pick one of the last ``REPEAT_WINDOW`` fresh cells.

The audit counts, from the 200 answers, how many judgments each distinct cell got: the distinct
values of the answers' id field (``judgment_id`` by default) per cell, or, for a build whose answers
carry no such id, every answer as one judgment. A cluster without duplicate work gives one judgment
per cell whatever the repeats; a build without consensus gives about one per request. A judgment that
another answer names in its ``supersedes`` list (a degraded judgment judged again on purpose, at the
level asked for) counts as an upgraded judgment, not as a duplicate.

A mix (``Mix``) is a list of request kinds, each a body template with a weight: request ``i`` sends
the kind that largest remainder gives it, so that each kind's share of the measured window (and of
the warm-up) is exact and its requests are spread evenly over the run.
"""

from __future__ import annotations

import json
import math
import random
from array import array
from fractions import Fraction

# A delayed repeat picks one of this many most recent fresh cells: close enough in time that a
# cache of recent answers would still hold it, far enough that the first answer is back.
REPEAT_WINDOW = 256
# What the marker replaces in a serialised cell (a string no JSON text of a corpus holds).
_SLOT = '\u0000cynic-stress-slot\u0000'
_SLOT_JSON = json.dumps(_SLOT)[1:-1]


class WorkloadError(ValueError):
    """An invalid corpus or workload setting."""


def load_corpus(text):
    """The cells of a JSON Lines corpus (``{"name": ..., "cell": {...}}`` per line), checked."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError as exc:
            raise WorkloadError('corpus line %d is not JSON: %s' % (number, exc)) from None
    return normalize_corpus(entries)


def normalize_corpus(entries):
    """``[{"name", "cell"}]`` from named entries or bare cells (named ``cell-<n>``), checked."""
    if not isinstance(entries, list) or not entries:
        raise WorkloadError('the corpus must be a non-empty list of cells')
    out = []
    names = set()
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, dict) and 'cell' in entry:
            name, cell = entry.get('name') or 'cell-%d' % number, entry['cell']
        else:
            name, cell = 'cell-%d' % number, entry
        if not isinstance(cell, dict) or not isinstance(cell.get('content'), str):
            raise WorkloadError('corpus cell %d (%s) must be an object with a string "content"' % (number, name))
        name = str(name)
        if name in names:
            raise WorkloadError('corpus cell %d: the name %r is used twice' % (number, name))
        names.add(name)
        if _SLOT in cell['content']:
            raise WorkloadError('corpus cell %d (%s) holds a NUL character sequence the workload reserves'
                                % (number, name))
        out.append({'name': name, 'cell': cell})
    return out


class Workload(object):
    """The plan of a run over a corpus: ``body(i)`` and ``key(i)`` for request ``i`` (warm-up included)."""

    def __init__(self, corpus, total, run_id, repeat_share=0.0, concurrent_share=0.5, mark=True, seed=None):
        self.corpus = normalize_corpus(corpus)
        if not 0.0 <= repeat_share < 1.0 or not math.isfinite(repeat_share):
            raise WorkloadError('repeat_share must be in [0, 1), got %r' % (repeat_share,))
        if not 0.0 <= concurrent_share <= 1.0 or not math.isfinite(concurrent_share):
            raise WorkloadError('concurrent_share must be in [0, 1], got %r' % (concurrent_share,))
        self.run_id = run_id
        self.mark = bool(mark)
        self.repeat_share = float(repeat_share)
        self.concurrent_share = float(concurrent_share)
        rng = random.Random(seed if seed is not None else run_id)
        self.order = list(range(len(self.corpus)))
        rng.shuffle(self.order)
        # Each corpus cell serialised once, its content followed by the slot for the marker.
        self._templates = []
        for entry in self.corpus:
            cell = dict(entry['cell'])
            cell['content'] = cell['content'] + _SLOT
            self._templates.append(json.dumps(cell, ensure_ascii=False).split(_SLOT_JSON))
        self.keys = self._plan(int(total), rng)
        self.fresh = max(self.keys) + 1 if self.keys else 0
        self.repeat_requests, self.concurrent_repeats = self._count_repeats()

    def _plan(self, total, rng):
        keys = []
        fresh = 0
        for _request in range(total):
            if fresh and rng.random() < self.repeat_share:
                if rng.random() < self.concurrent_share:
                    keys.append(fresh - 1)  # right behind the latest fresh cell's first request
                else:
                    keys.append(rng.randrange(max(0, fresh - REPEAT_WINDOW), fresh))
                continue
            keys.append(fresh)
            fresh += 1
        return keys

    def _count_repeats(self):
        seen = set()
        repeats = concurrent = 0
        previous_fresh = None
        for key in self.keys:
            if key in seen:
                repeats += 1
                if key == previous_fresh:
                    concurrent += 1
            else:
                seen.add(key)
                previous_fresh = key
        return repeats, concurrent

    def corpus_index(self, key):
        return self.order[key % len(self.order)]

    def key(self, index):
        """The cell request ``index`` sends; unmarked, a corpus text is one cell however often it comes back."""
        key = self.keys[index]
        return key if self.mark else self.corpus_index(key)

    def name_of_request(self, index):
        return self.corpus[self.corpus_index(self.keys[index])]['name']

    def body(self, index):
        key = self.keys[index]
        marker = '\\n\\n[cynic-stress %s %d]' % (self.run_id, key) if self.mark else ''
        return marker.join(self._templates[self.corpus_index(key)]).encode('utf-8')

    def describe(self):
        return {
            'corpus_cells': len(self.corpus),
            'distinct_cells': self.fresh if self.mark else len(set(self.corpus_index(k) for k in self.keys)),
            'requests': len(self.keys),
            'repeat_requests': self.repeat_requests,
            'concurrent_repeats': self.concurrent_repeats,
            'repeat_share': self.repeat_share,
            'concurrent_share': self.concurrent_share,
            'marked': self.mark,
        }


class CellAudit(object):
    """Judgments per distinct cell, from the 200 answers of a run (warm-up included)."""

    def __init__(self, workload, id_field='judgment_id'):
        self.workload = workload
        self.id_field = id_field or ''
        self.cells = {}  # key -> [answers, ids, instances, q_min, q_max]
        self.by_name = {}  # corpus name -> [count, sum of q]
        self.answers_without_id = 0
        self.superseded = set()  # ids that an answer names in its supersedes list

    def record(self, index, doc, instance):
        """One 200 answer to request ``index``; ``doc`` its parsed JSON (or None)."""
        key = self.workload.key(index)
        entry = self.cells.get(key)
        if entry is None:
            entry = self.cells[key] = [0, set(), set(), None, None]
        entry[0] += 1
        ident = doc.get(self.id_field) if isinstance(doc, dict) and self.id_field else None
        if ident is None:
            self.answers_without_id += 1
            entry[1].add(('answer', entry[0]))  # each answer without an id is a judgment of its own
        else:
            entry[1].add(str(ident))
        if instance:
            entry[2].add(instance)
        replaced = doc.get('supersedes') if isinstance(doc, dict) else None
        if isinstance(replaced, list):
            self.superseded.update(str(old) for old in replaced if old is not None)
        q = doc.get('q_score') if isinstance(doc, dict) else None
        if isinstance(q, (int, float)) and not isinstance(q, bool) and math.isfinite(q):
            entry[3] = q if entry[3] is None else min(entry[3], q)
            entry[4] = q if entry[4] is None else max(entry[4], q)
            name = self.workload.name_of_request(index)
            acc = self.by_name.setdefault(name, [0, 0.0])
            acc[0] += 1
            acc[1] += q

    def _judgments_of(self, ids):
        """(judgments, upgraded) of a cell: an id another answer superseded is an upgrade, not a
        second judgment; a cell keeps one judgment even if the superseding answer was not its own."""
        kept = len(ids - self.superseded) if self.superseded else len(ids)
        kept = max(kept, 1) if ids else 0
        return kept, len(ids) - kept

    def summary(self):
        answered = len(self.cells)
        counted = [self._judgments_of(entry[1]) for entry in self.cells.values()]
        judgments = sum(kept for kept, dummy in counted)
        upgraded = sum(extra for dummy, extra in counted)
        several_answers = [entry for entry in self.cells.values() if entry[0] > 1]
        spreads = [entry[4] - entry[3] for entry in several_answers if entry[3] is not None]
        if not self.id_field:
            counted_from = 'answers: no id field set, every 200 answer counts as one judgment'
        elif self.answers_without_id:
            counted_from = ('answers: %d of them carry no %s, each of those counts as one judgment'
                            % (self.answers_without_id, self.id_field))
        else:
            counted_from = 'distinct %s values of the 200 answers' % self.id_field
        return {
            'counted_from': counted_from,
            'id_field': self.id_field,
            'cells_answered': answered,
            'cells_answered_more_than_once': len(several_answers),
            'judgments': judgments,
            'judgments_per_cell': round(judgments / answered, 4) if answered else None,
            'duplicate_judgments': judgments - answered,
            'upgraded_judgments': upgraded,
            'cells_judged_more_than_once': sum(1 for kept, dummy in counted if kept > 1),
            'cells_on_several_instances': sum(1 for entry in self.cells.values() if len(entry[2]) > 1),
            'q_score_spread_of_repeated_cells': {
                'cells': len(spreads),
                'mean': round(sum(spreads) / len(spreads), 4) if spreads else None,
                'max': round(max(spreads), 4) if spreads else None,
            },
        }

    def q_by_name(self):
        """Mean Q-Score of each corpus text over the run: {name: [answers, mean]}."""
        return dict((name, [acc[0], round(acc[1] / acc[0], 4)]) for name, acc in sorted(self.by_name.items()))


# The engine keeps the kind of each request in 16 bits; more kinds than this are a mistake anyway.
MAX_KINDS = 1000
_MIX_KEYS = ('name', 'weight', 'body')
# The level of an answer that asked no LLM (the node's level_used).
LEVEL_REFLEX = 'REFLEX'


def normalize_mix(entries):
    """``[{"name", "weight", "body"}]`` checked: unique names, positive finite weights, object bodies."""
    if not isinstance(entries, list) or not entries:
        raise WorkloadError('mix must be a non-empty list of {name, weight, body}')
    if len(entries) > MAX_KINDS:
        raise WorkloadError('mix has %d kinds; at most %d' % (len(entries), MAX_KINDS))
    out = []
    names = set()
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise WorkloadError('mix entry %d must be an object {name, weight, body}, got %r' % (number, entry))
        unknown = sorted(str(key) for key in entry if key not in _MIX_KEYS)
        if unknown:
            raise WorkloadError('mix entry %d: unknown key(s) %s (an entry has name, weight and body)'
                                % (number, ', '.join(unknown)))
        name = entry.get('name')
        if not isinstance(name, str) or not name.strip():
            raise WorkloadError('mix entry %d needs a name (a non-empty string), got %r' % (number, name))
        if name in names:
            raise WorkloadError('mix entry %d: the name %r is used twice' % (number, name))
        names.add(name)
        weight = entry.get('weight')
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight <= 0:
            raise WorkloadError('mix entry %d (%s): weight must be a positive number, got %r' % (number, name, weight))
        body = entry.get('body')
        if not isinstance(body, dict):
            raise WorkloadError('mix entry %d (%s): body must be an object (the request body of that kind), got %r'
                                % (number, name, body))
        out.append({'name': name, 'weight': weight, 'body': body})
    return out


def load_mix(text):
    """The kinds of a mix file: a JSON list of ``{"name", "weight", "body"}``, checked."""
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise WorkloadError('the mix file is not JSON: %s' % exc) from None
    return normalize_mix(entries)


def mix_from_specs(specs, base_body):
    """Kinds from ``NAME=WEIGHT:LEVEL`` strings: ``base_body`` (a JSON object) with ``"level": LEVEL``."""
    entries = []
    for spec in specs:
        name, dummy, rest = spec.partition('=')
        weight, colon, level = rest.partition(':')
        try:
            value = float(weight)
        except ValueError:
            value = None
        if not name or not colon or not level or value is None:
            raise WorkloadError('a mix kind is NAME=WEIGHT:LEVEL (for example micro=3:MICRO), got %r' % spec)
        body = dict(base_body)
        body['level'] = level
        entries.append({'name': name, 'weight': value, 'body': body})
    return normalize_mix(entries)


def largest_remainder(weights, total, order):
    """Whole counts summing to ``total``, in proportion to ``weights`` (Hamilton's method: the
    floors, then one more for the largest remainders, ties to the kind earlier in ``order``)."""
    exact = [Fraction(weight) for weight in weights]
    whole = sum(exact)
    quotas = [total * weight / whole for weight in exact]
    counts = [int(math.floor(quota)) for quota in quotas]
    rank = dict((kind, position) for position, kind in enumerate(order))
    by_remainder = sorted(range(len(weights)), key=lambda kind: (counts[kind] - quotas[kind], rank[kind]))
    for kind in by_remainder[:total - sum(counts)]:
        counts[kind] += 1
    return counts


def spread(counts, order):
    """The kind of each of ``sum(counts)`` requests in turn: the kind furthest behind its share of
    the requests so far (largest remainder on every prefix), ties to the kind earlier in ``order``.
    Each kind ends with exactly its count, and none runs ahead or behind its share by a burst."""
    total = sum(counts)
    sent = [0] * len(counts)
    for step in range(1, total + 1):
        best = best_deficit = None
        for kind in order:
            deficit = counts[kind] * step - sent[kind] * total  # in units of 1 / total request
            if best is None or deficit > best_deficit:
                best, best_deficit = kind, deficit
        sent[best] += 1
        yield best


class Mix(object):
    """Request kinds with weights: the warm-up and the measured window are each shared out by
    largest remainder (exact counts), and ``sequence()`` interleaves the kinds evenly in time.
    Ties are broken in an order shuffled from the seed (the run id by default): reproducible."""

    def __init__(self, entries, n_warm, n_meas, run_id, seed=None):
        self.kinds = normalize_mix(entries)
        self.names = [kind['name'] for kind in self.kinds]
        rng = random.Random(seed if seed is not None else run_id)
        self.order = list(range(len(self.kinds)))
        rng.shuffle(self.order)
        weights = [kind['weight'] for kind in self.kinds]
        self.warmup_planned = largest_remainder(weights, int(n_warm), self.order)
        self.planned = largest_remainder(weights, int(n_meas), self.order)
        self.templates = [json.dumps(kind['body']) for kind in self.kinds]

    def sequence(self):
        """The kind (an index) of every request in order, warm-up first; a generator, since a run
        may plan millions of requests."""
        yield from spread(self.warmup_planned, self.order)
        yield from spread(self.planned, self.order)

    def kinds_array(self):
        """The whole sequence at once (for tests and small runs)."""
        return array('H', self.sequence())

    def describe(self):
        return dict((kind['name'], {'weight': kind['weight'], 'planned': self.planned[number],
                                    'warmup_planned': self.warmup_planned[number]})
                    for number, kind in enumerate(self.kinds))


def _quantiles(values):
    values = sorted(values)
    if not values:
        return None

    def at(pct):
        return round(values[min(len(values) - 1, int(math.ceil(pct / 100.0 * len(values))) - 1)], 3) \
            if pct > 0 else round(values[0], 3)
    return {'count': len(values), 'mean': round(sum(values) / len(values), 3), 'min': at(0), 'p10': at(10),
            'p50': at(50), 'p90': at(90), 'max': round(values[-1], 3)}


def compare_q_scores(at_rest, under_load, tolerance=0.5):
    """The Q-Score distribution of the corpus judged at rest against the same texts under load.

    Both are ``q_by_name`` results ({name: [answers, mean]}). Compared over the names in both: the
    quantiles of each side, and per text the absolute difference of its means (``moved`` counts
    the texts whose mean moved by more than ``tolerance`` points).
    """
    names = sorted(set(at_rest) & set(under_load))
    diffs = [abs(under_load[name][1] - at_rest[name][1]) for name in names]
    return {
        'texts_compared': len(names),
        'at_rest': _quantiles([at_rest[name][1] for name in names]),
        'under_load': _quantiles([under_load[name][1] for name in names]),
        'mean_abs_difference': round(sum(diffs) / len(diffs), 4) if diffs else None,
        'max_abs_difference': round(max(diffs), 4) if diffs else None,
        'moved': sum(1 for diff in diffs if diff > tolerance),
        'tolerance': tolerance,
    }
