"""The data tools' process pool: order, errors, and workers that do not inherit the parent's state."""
import sys
import types

import pytest

from jude_arch.data.parallel import worker_map

SENTINEL = '_jude_parent_only_module'


def square(x):
    return x * x


def has_sentinel(_):
    return SENTINEL in sys.modules


def fail_on_three(x):
    if x == 3:
        raise ValueError('three')
    return x


@pytest.mark.parametrize('workers', [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: spawns processes
def test_results_come_back_in_input_order(workers):
    with worker_map(workers) as imap:
        assert list(imap(square, range(10), chunksize=3)) == [x * x for x in range(10)]


@pytest.mark.slow
def test_workers_are_spawned_not_forked(monkeypatch):
    # A forked worker inherits the parent's threads' locks (torch's OpenMP pool, TensorBoard writers) and
    # can deadlock; a spawned one starts from a fresh interpreter and does not see the parent's modules.
    monkeypatch.setitem(sys.modules, SENTINEL, types.ModuleType(SENTINEL))
    with worker_map(2) as imap:
        assert list(imap(has_sentinel, range(2))) == [False, False]


@pytest.mark.slow
def test_a_worker_error_reaches_the_caller():
    with pytest.raises(ValueError, match='three'), worker_map(2) as imap:
        list(imap(fail_on_three, range(5)))


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match='workers must be ≥ 1'), worker_map(0):
        pass
