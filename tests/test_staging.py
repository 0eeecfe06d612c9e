"""staged_outputs: outputs appear complete or not at all, and nothing is lost when a run fails."""
import os
import socket
import subprocess
import sys

import pytest

from jude_arch.data.image_io import ImageDataError
from jude_arch.data.staging import staged_outputs


def contents(folder):
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_outputs_appear_only_when_the_block_completes(tmp_path):
    out = tmp_path / 'out'
    with staged_outputs(out, ['a', 'b'], overwrite=False, prefix='.stage-') as staging:
        (staging / 'a').write_text('new a')
        (staging / 'b').write_text('new b')
        assert not (out / 'a').exists()
    assert contents(out) == {'a': 'new a', 'b': 'new b'}  # and no staging folder left


def test_a_failed_block_leaves_the_outputs_and_removes_what_it_created(tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(RuntimeError), staged_outputs(out, ['a'], overwrite=True, prefix='.stage-') as staging:
        (staging / 'a').write_text('half')
        raise RuntimeError
    assert not out.exists()
    out.mkdir()
    (out / 'a').write_text('old a')
    with pytest.raises(KeyboardInterrupt), staged_outputs(out, ['a'], overwrite=True, prefix='.stage-') as staging:
        (staging / 'a').write_text('half')
        raise KeyboardInterrupt
    assert contents(out) == {'a': 'old a'}


def test_replacing_needs_overwrite_and_unstaged_names_go_with_the_set(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'a').write_text('old a')
    (out / 'b').write_text('old b')
    with pytest.raises(ImageDataError, match='already exists; pass --overwrite'), \
            staged_outputs(out, ['a'], overwrite=False, prefix='.stage-') as staging:
        (staging / 'a').write_text('new a')
    assert contents(out) == {'a': 'old a', 'b': 'old b'}
    with staged_outputs(out, ['a', 'b'], overwrite=True, prefix='.stage-') as staging:
        (staging / 'a').write_text('new a')  # b is not staged: the old b is removed with the set
    assert contents(out) == {'a': 'new a'}


def test_a_failure_during_the_swap_puts_every_output_back(tmp_path, monkeypatch):
    out = tmp_path / 'out'
    out.mkdir()
    for name in 'abc':
        (out / name).write_text(f'old {name}')
    real_rename = type(out).rename

    def rename(self, target):
        if self.name == 'c' and '.stage-' in str(self) and '.replaced' not in str(self):
            raise OSError('disk full')  # the last new output cannot be moved in
        return real_rename(self, target)

    monkeypatch.setattr(type(out), 'rename', rename)
    with pytest.raises(OSError, match='disk full'), \
            staged_outputs(out, ['a', 'b', 'c'], overwrite=True, prefix='.stage-') as staging:
        for name in 'abc':
            (staging / name).write_text(f'new {name}')
    assert contents(out) == {'a': 'old a', 'b': 'old b', 'c': 'old c'}


def test_staging_folders_of_killed_runs_are_removed(tmp_path, capsys):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    out = tmp_path / 'out'
    stale = out / f'.stage-{host}-{dead}-abc123'
    live = out / f'.stage-{host}-{os.getpid()}-def456'  # a concurrent run of this process: left alone
    elsewhere = out / '.stage-otherhost-1-ghi789'
    for folder in (stale, live, elsewhere):
        (folder / 'half.lmdb').mkdir(parents=True)
    with staged_outputs(out, ['a'], overwrite=False, prefix='.stage-') as staging:
        (staging / 'a').write_text('a')
    assert not stale.exists() and live.exists() and elsewhere.exists()
    err = capsys.readouterr().err
    assert f'removed {stale}: staging folder of an interrupted earlier run' in err
    assert f'note: {elsewhere} looks like the staging folder of an earlier or concurrent run' in err
