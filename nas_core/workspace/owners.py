"""Who runs a trial (host, boot, pid, process start time), and reclaiming trials whose process is gone.

Optuna's heartbeat marks a trial failed only after a grace period (120 s by default), because from
another machine a silent worker may just be slow. On the machine that ran the trial we can do better:
if its process no longer exists (or its pid now belongs to a process started later), the trial is
dead now. :func:`reclaim_dead_trials` fails such trials at once and queues their parameters again,
once, as Optuna's own ``RetryHeartbeatStaleTrialCallback`` does after the grace period.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import socket
from typing import Any

__all__ = ["device_label", "owner_record", "owner_alive", "pid_alive", "reclaim_dead_trials", "reclaim_note", "OWNER_KEY"]

log = logging.getLogger(__name__)

OWNER_KEY = "owner"


@functools.cache
def _boot_id() -> str:
    """This boot of this machine (Linux); containers on one host share it, machines and reboots do not."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc/<pid>/stat`` field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its last ")"
        return int(text[text.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


_IMPORTED_AT = datetime.datetime.now()  # about when this process started (Optuna's trial times are naive local times)


def owner_record() -> dict[str, Any]:
    """What a trial records about the process running it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _start_ticks(pid)}


def device_label(device: Any) -> str:
    """The trial's device, with the GPU a ``search --workers`` child was given (its ``CUDA_VISIBLE_DEVICES``)."""
    label = str(device)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{label} (GPU {visible})" if label.startswith("cuda") and visible else label


def _same_machine(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return False
    boot = owner.get("boot") or ""
    return not boot or not _boot_id() or boot == _boot_id()


def pid_alive(pid: int) -> bool | None:
    """Whether a process with this pid exists here: True, False, or None when the system will not say."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return None
    return True


def owner_alive(owner: dict[str, Any]) -> bool | None:
    """True/False for a process on this machine; None when it ran elsewhere (only the heartbeat can tell)."""
    if not isinstance(owner, dict) or not _same_machine(owner):
        return None
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    alive = pid_alive(pid)
    if alive is not True:
        return alive
    recorded, now = owner.get("start"), _start_ticks(pid)
    if recorded is not None and now is not None and int(recorded) != now:
        return False  # the pid was reused by a later process
    return True


def reclaim_note(numbers: list[int]) -> list[str]:
    """The warning a search reports for the trials :func:`reclaim_dead_trials` failed (none for an empty list)."""
    return [f"trial {', '.join(map(str, numbers))} belonged to a process that is gone; failed and queued again"] if numbers else []


def reclaim_dead_trials(study: Any, *, retry: bool = True) -> list[int]:
    """Fail every RUNNING trial whose process on this machine is gone, and queue its parameters once more.

    Safe with many workers: a trial another process reclaimed first is skipped. Returns the numbers failed.
    """
    import optuna
    from optuna.trial import TrialState

    me = owner_record()
    reclaimed: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER_KEY)
        if not isinstance(owner, dict):
            # A process writes its owner record right after asking for the trial; one that started before this process
            # and still has none was left by a process that died in between (e.g. the disk filled up at that write).
            if owner is None and not t.params and t.datetime_start is not None and t.datetime_start < _IMPORTED_AT:
                try:
                    optuna.trial.Trial(study, t._trial_id).set_user_attr(
                        "reason", "its process ended before it recorded who ran it (e.g. a full disk); reclaimed")
                    study.tell(t.number, state=TrialState.FAIL)
                except Exception as exc:  # noqa: BLE001 - another worker reclaimed it between our read and write
                    log.info("trial %s was reclaimed elsewhere (%s)", t.number, exc)
                    continue
                reclaimed.append(t.number)
            continue
        if owner.get("pid") == me["pid"] and owner.get("start") == me["start"] and _same_machine(owner):
            continue  # this process: another search of ours (e.g. a second study in the dashboard)
        if owner_alive(owner) is not False:
            continue
        why = f"its process (pid {owner.get('pid')} on {owner.get('host')}) ended while the trial ran; reclaimed and retried"
        try:
            optuna.trial.Trial(study, t._trial_id).set_user_attr("reason", why)
            study.tell(t.number, state=TrialState.FAIL)
        except Exception as exc:  # noqa: BLE001 - another worker reclaimed it between our read and write
            log.info("trial %s was reclaimed elsewhere (%s)", t.number, exc)
            continue
        reclaimed.append(t.number)
        if retry:
            _retry_once(study, t)
    return reclaimed


def _retry_once(study: Any, trial: Any) -> None:
    """Queue the trial's parameters again, as Optuna's ``RetryHeartbeatStaleTrialCallback(max_retry=1)`` does."""
    import optuna

    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > 1:
        return  # already a retry: a second death is a failure, not bad luck
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k not in (OWNER_KEY, "reason")},
            system_attrs={**trial.system_attrs, "failed_trial": trial.number, "retry_history": history},
        )
    )
