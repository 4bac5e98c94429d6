# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The stress corpus (roles/stress/files/stress_corpus.jsonl): well-formed cells that the reference node
accepts as /judge bodies, spread over the realities and sizes, and judged to varied Q-Scores."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter

import pytest
from cynic_node.judge import judge
from cynic_node.models import ANALYSES, REALITIES, TIME_DIMS, RequestError, parse_judge_request

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CORPUS = os.path.join(REPO_ROOT, 'roles', 'stress', 'files', 'stress_corpus.jsonl')
NAME = re.compile(r'^[a-z0-9]+(?:-[a-z0-9]+)+$')
CELL_KEYS = {'content', 'reality', 'analysis', 'time_dim', 'budget_usd'}
SHORT, LONG, MAX_CHARS = 200, 1500, 8000


def _lines():
    with open(CORPUS, encoding='utf-8') as f:
        return f.read().splitlines()


@pytest.fixture(scope='module')
def corpus():
    return [json.loads(line) for line in _lines()]


@pytest.fixture(scope='module')
def cells(corpus):
    return [entry['cell'] for entry in corpus]


def test_every_line_is_a_name_and_a_cell():
    for number, line in enumerate(_lines(), 1):
        try:
            entry = json.loads(line)
        except ValueError as exc:
            pytest.fail(f'line {number} is not JSON: {exc}')
        assert isinstance(entry, dict), f'line {number} is not an object'
        assert set(entry) == {'name', 'cell'}, f'line {number} has keys {sorted(entry)}'


def test_names_are_unique_slugs(corpus):
    names = [entry['name'] for entry in corpus]
    bad = [n for n in names if not isinstance(n, str) or not NAME.match(n)]
    assert not bad, f'not lowercase slugs: {bad}'
    duplicates = [n for n, count in Counter(names).items() if count > 1]
    assert not duplicates, f'names used twice: {duplicates}'


def test_cells_are_unique(cells):
    spelled = Counter(json.dumps(cell, sort_keys=True) for cell in cells)
    assert len(spelled) == len(cells), f'{len(cells) - len(spelled)} cells repeat another'


def test_cells_use_the_contract_fields(corpus):
    for entry in corpus:
        name, cell = entry['name'], entry['cell']
        assert isinstance(cell, dict), name
        assert {'content', 'reality', 'analysis', 'budget_usd'} <= set(cell) <= CELL_KEYS, f'{name}: {sorted(cell)}'
        assert isinstance(cell['content'], str) and cell['content'].strip(), f'{name}: empty content'
        assert cell['reality'] in REALITIES, name
        assert cell['analysis'] in ANALYSES, name
        assert cell.get('time_dim', 'PRESENT') in TIME_DIMS, name
        assert cell['budget_usd'] == 0.01, name


def test_the_node_accepts_every_cell(corpus):
    rejected = {}
    for entry in corpus:
        try:
            parse_judge_request(json.dumps(entry['cell'], ensure_ascii=False).encode('utf-8'))
        except RequestError as exc:
            rejected[entry['name']] = str(exc)
    assert not rejected, f'the node answers 422 to: {rejected}'


def test_every_reality_and_several_analyses(cells):
    realities = Counter(cell['reality'] for cell in cells)
    assert set(realities) == set(REALITIES), f'missing: {set(REALITIES) - set(realities)}'
    thin = {r: n for r, n in realities.items() if n < 5}
    assert not thin, f'realities with fewer than 5 cells: {thin}'
    analyses = Counter(cell['analysis'] for cell in cells)
    assert len(analyses) >= 3, f'analyses used: {dict(analyses)}'


def test_sizes_vary(corpus):
    sizes = {entry['name']: len(entry['cell']['content']) for entry in corpus}
    short = sum(1 for n in sizes.values() if n < SHORT)
    medium = sum(1 for n in sizes.values() if SHORT <= n <= LONG)
    long_ = sum(1 for n in sizes.values() if n > LONG)
    assert min(short, medium, long_) >= 25, f'short {short}, medium {medium}, long {long_}: want 25 of each'
    too_big = {name: n for name, n in sizes.items() if n > MAX_CHARS}
    assert not too_big, f'over {MAX_CHARS} characters: {too_big}'


async def _judge_all(corpus):
    verdicts = []
    for entry in corpus:
        req = parse_judge_request(json.dumps(entry['cell'], ensure_ascii=False).encode('utf-8'))
        verdicts.append(await judge(req, None))
    return verdicts


def test_the_node_judges_the_cells_differently(corpus):
    verdicts = asyncio.run(_judge_all(corpus))
    # budget 0.01 keeps the stress load at REFLEX: no cell of the corpus may ask for an LLM.
    levels = Counter(v.level_used for v in verdicts)
    assert levels == {'REFLEX': len(corpus)}, dict(levels)
    scores = [v.scores.q_score for v in verdicts]
    distinct = {round(q, 1) for q in scores}
    assert len(distinct) >= 30, f'only {len(distinct)} distinct Q-Scores: {sorted(distinct)}'
    assert max(scores) - min(scores) >= 15, f'Q-Scores span only {min(scores)} to {max(scores)}'
