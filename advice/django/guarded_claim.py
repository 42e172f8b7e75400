# Any Django version: claim a queued request, and lock a free environment,
# with guarded updates instead of read-then-save inside atomic().
#
# What it changes: the pattern
#
#     with transaction.atomic():
#         be = BuildEnvironment.objects.filter(lock=BuildEnvironment.LOCK_FREE)[0]
#         be.lock = BuildEnvironment.LOCK_LOCK
#         be.save()
#
# reads, then writes, in one deferred transaction: busy_upgrade (or
# busy_snapshot under WAL) whenever another process writes in between, and two
# schedulers that each read before either writes can both take the same row.
# Here each claim is one UPDATE ... WHERE <still free>. SQLite runs a single
# statement as its own transaction, which waits for the write lock (up to
# OPTIONS "timeout") instead of failing. The number of rows it changed says who
# won: 1, this process has it; 0, someone else took it first, so try the next.
#
# What it costs: nothing in locks. The caller must look at the return value,
# and the row it holds in memory is stale (re-read it if needed). Locking the
# environment and linking it to the request are two statements, so two
# transactions: a crash in between leaves the environment locked with no
# request, and your cleanup must free it (Toaster's cleanup() does, after 30 s).
# Call these in autocommit (outside atomic()). Inside a deferred atomic() block
# the SELECT that lists candidates starts a read transaction, and the UPDATE is
# an upgrade again; with IMMEDIATE transactions that is no longer a problem.
#
# The model and field names are those of Toaster's orm and bldcontrol models;
# adjust the import and the names to your own.

from .models import BuildEnvironment, BuildRequest


def claim_next_request():
    """Moves the oldest queued request to in progress. Returns its pk, or None."""
    queued = (
        BuildRequest.objects.filter(state=BuildRequest.REQ_QUEUED)
        .order_by("pk")
        .values_list("pk", flat=True)[:20]
    )
    for pk in queued:
        won = BuildRequest.objects.filter(
            pk=pk, state=BuildRequest.REQ_QUEUED
        ).update(state=BuildRequest.REQ_INPROGRESS)
        if won:
            return pk
    return None


def lock_free_environment(request_pk):
    """Locks a free environment for the request. Returns its pk, or None.

    When none is free, the request goes back to the queue, guarded too: only
    if it is still in progress.
    """
    free = (
        BuildEnvironment.objects.filter(lock=BuildEnvironment.LOCK_FREE)
        .order_by("pk")
        .values_list("pk", flat=True)[:20]
    )
    for pk in free:
        won = BuildEnvironment.objects.filter(
            pk=pk, lock=BuildEnvironment.LOCK_FREE
        ).update(lock=BuildEnvironment.LOCK_LOCK)
        if won:
            BuildRequest.objects.filter(pk=request_pk).update(environment_id=pk)
            return pk
    BuildRequest.objects.filter(
        pk=request_pk, state=BuildRequest.REQ_INPROGRESS
    ).update(state=BuildRequest.REQ_QUEUED)
    return None
