"""A process pool for the data tools that stays quiet and leaves nothing running when interrupted."""
import contextlib
import multiprocessing
import signal


def _init_worker(initializer):
    # Ctrl-C reaches every process of the terminal's group: the parent handles it (it cleans up and stops
    # the pool), the workers ignore it instead of each printing a traceback. SIGTERM, which the pool uses to
    # stop its workers, must kill them even if the parent (a CLI) turned it into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer()


@contextlib.contextmanager
def worker_map(workers, initializer=None):
    """Yield an ordered, lazy map that runs on `workers` processes.

    With one worker everything runs in the calling process (no pool: plain tracebacks, easy debugging).
    Results come back in input order, so the output never depends on the number of workers.

    Args:
        workers (int): number of processes (≥ 1).
        initializer (callable | None): run once in each worker process (not in the calling process).

    Yields:
        callable: `imap(function, items, chunksize=1)` returning an iterator over the results; `chunksize`
        items travel to a worker together (larger: less overhead for many small tasks).
    """
    if workers < 1:
        raise ValueError(f'workers must be ≥ 1, got {workers}')
    if workers == 1:
        yield lambda function, items, chunksize=1: map(function, items)
        return
    # 'spawn', not Linux's default 'fork': a process forked while another thread holds a lock (torch's OpenMP
    # pool, a TensorBoard writer, logging) can deadlock in the child. Spawned workers start clean; they
    # re-import the worker's module, so `function` and `initializer` must be module-level.
    pool = multiprocessing.get_context('spawn').Pool(workers, initializer=_init_worker, initargs=(initializer, ))
    try:
        yield lambda function, items, chunksize=1: pool.imap(function, items, chunksize)
    finally:
        pool.terminate()
        pool.join()
