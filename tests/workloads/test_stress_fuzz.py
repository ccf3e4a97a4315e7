"""The stress and fuzz experiments' host side: data files, the swap plan, reports from fake guest
output (the guest side runs for real in `invoke bench --quick`, CI's fresh-clone test)."""

from __future__ import annotations

import pytest

from workloads import registry, stress
from workloads.contract import ExperimentError, Job, experiment_path, load_config


@pytest.mark.parametrize("name,count_key,full,quick", [("stress", "swaps", 10_000, 1_000),
                                                        ("fuzz", "messages", 10_000, 2_000)])
def test_full_and_quick_sizes_are_what_the_issue_asks(name, count_key, full, quick):
    experiment = registry.load(name)
    assert load_config(experiment_path(name), experiment.schema, "full")[count_key] >= full
    assert load_config(experiment_path(name), experiment.schema, "quick")[count_key] >= quick


def test_a_typo_in_the_stress_file_is_refused():
    experiment = registry.load("stress")
    with pytest.raises(ExperimentError, match="swapz"):
        load_config(experiment_path("stress"), experiment.schema, "quick", {"swapz": 3})


def test_swap_plan_mixes_kinds_and_never_reinserts_a_loaded_module():
    count, modules_n = 1000, 6
    ids = list(range(1, count + 2 + modules_n))
    modules, swaps = stress.swap_plan(count, 0.1, modules_n, 4, ids)
    assert len(swaps) == count and sum(s["kind"] == "module" for s in swaps) == 100
    assert len({m["snapshot_id"] for m in modules}) == modules_n
    hot_ids = [s["snapshot_id"] for s in swaps if s["kind"] == "hot"]
    assert len(set(hot_ids)) == len(hot_ids) and not set(hot_ids) & {m["snapshot_id"] for m in modules}
    # the guest's bookkeeping: a module is loaded from its insert until the swap after the one that
    # made it standby (its rmmod races that swap and is waited for)
    loaded, active, standby = set(), None, None
    for swap in swaps:
        if standby is not None:
            loaded.discard(standby)
        if swap["kind"] == "module":
            assert swap["name"] not in loaded, "inserted while still loaded"
            loaded.add(swap["name"])
        active, standby = (swap["name"] if swap["kind"] == "module" else None), active
    # consecutive snapshots are never the same id
    assert all(a["snapshot_id"] != b["snapshot_id"] for a, b in zip(swaps, swaps[1:]))


def _stress_raw(ok: bool) -> dict:
    return {"checks": [{"name": "all swaps right", "ok": ok, "detail": "" if ok else "3 wrong"}],
            "swaps": {"total": 1000, "module": 100, "hot": 900, "wrong": 0 if ok else 3},
            "stress": {"queries": 5_000_000, "errors": 0}, "stats": {"queries": 5_100_000, "errors": 0},
            "clients": {"privileged": {"requests": 900, "counts": {"evaluate": 300}, "unexpected": []}},
            "races": {"standby_rmmod_races": 98, "rmmod_lost_and_retried": 2},
            "memory": {"slab_unreclaimable_before_kb": 30000, "slab_unreclaimable_after_kb": 30100,
                       "modules_before": 40, "modules_after": 40},
            "timings_s": {"swaps": 61.0, "total": 80.0}}


def test_stress_passes_only_without_a_failed_check():
    experiment = registry.load("stress")
    good = experiment.records(Job("swaps"), _stress_raw(True))
    bad = experiment.records(Job("swaps"), _stress_raw(False))
    assert experiment.passed(experiment.summarize({}, good)) is True
    assert experiment.passed(experiment.summarize({}, bad)) is False
    assert good[0]["races"]["standby_rmmod_races"] == 98 and good[0]["wrong_swaps"] == 0


def test_fuzz_records_each_roles_tally():
    experiment = registry.load("fuzz")
    tally = {"sent": 2000, "dropped_by_netlink": 150, "accepted": 20, "refused_total": 1830,
             "refused": {"EINVAL": 1500, "EPERM": 330}, "unanswered": 0, "privileged_accepted": 0, "seconds": 9.0}
    raw = {"checks": [{"name": "answered", "ok": True, "detail": ""}], "stress": {"queries": 10, "errors": 0},
           "campaigns": {"root": tally, "unprivileged": tally}}
    (record,) = experiment.records(Job("campaigns"), raw)
    assert record["unprivileged_refused"]["EPERM"] == 330 and record["root_sent"] == 2000
    assert experiment.passed(experiment.summarize({}, [record])) is True
