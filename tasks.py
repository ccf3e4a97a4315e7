"""LiteFlow Testbed: the user's front door.

Tasks are thin: each parses its arguments and calls into the packages, where the logic lives and
is tested. Heavy imports (TensorFlow) happen inside the tasks so `invoke --list` stays instant.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from invoke import Collection, Exit, task
from invoke.executor import Executor

# TensorFlow's C++ info lines (oneDNN banners, converter chatter) drown the tasks' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Known and harmless here: the toolchain reads TFLite's reference kernels on purpose (see
# userspace/snapshot/verify.py), and calibration comes from the representative dataset.
warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
warnings.filterwarnings("ignore", message=r"Statistics for quantized inputs were expected")

REPO = Path(__file__).resolve().parent
BUILD_DIR = REPO / "build"


def _fail(message: str) -> Exit:
    return Exit(f"error: {message}", code=1)


@task(
    help={
        "kernel": "debian-5.10, debian-6.1 (default), debian-6.12, local:DIR (your own .debs), linux-4.15 "
                  "or source:PATH (built from source), all (4.15 and the Debian kernels) or debian",
        "strict": "fail on any compiler warning (default: true)",
    }
)
def build(c, kernel="debian-6.1", strict=True):
    """Build liteflow.ko, lf_test.ko and an example snapshot module for one kernel or all."""
    from vm.hosttools import ensure_host_tools
    from vm.kernels import KernelNameError
    from vm.matrix import build_matrix

    ensure_host_tools()
    try:
        reports = build_matrix(kernel, out_dir=BUILD_DIR / "modules", strict=strict)
    except KernelNameError as exc:
        raise _fail(str(exc)) from exc
    for report in reports:
        print(report.summary())


@task(help={"test_args": "extra arguments passed to pytest", "unit": "only the fast unit tests (no kernel builds, no VM)"})
def test(c, test_args="", unit=False):
    """Install what the tests need (apt), then run the whole suite: unit tests, snapshot exactness, the build
    matrix, and the VM integration tests (smoke, slow path, `invoke bench --quick` from a fresh clone);
    --unit runs the first two only."""
    from vm.hosttools import ensure_host_tools

    ensure_host_tools()
    selection = "-m 'not kernelbuild and not vm'" if unit else ""
    c.run(f"{sys.executable} -m pytest -q {selection} {test_args}", pty=False)


@task(help={
    "only": "comma-separated experiments (same as `invoke bench NAME…`); default: every experiment",
    "quick": "the quick profile of every experiment (what CI runs)",
    "fresh": "start new runs even where an unfinished run could be resumed",
    "list": "list the experiments with their descriptions and stop",
    "accel": "auto (probe KVM), kvm or tcg",
    "kernel": "run every experiment on this guest kernel instead of its data file's (e.g. linux-4.15)",
    "schemes": "comma-separated: run only these of the data file's schemes (experiments that have schemes)",
})
def bench(c, only="", quick=False, fresh=False, list=False, accel="auto", kernel="",  # noqa: A002 - invoke's flag name
          schemes=""):
    """Run benchmark experiments (`invoke bench` for all, `invoke bench iperf` for one) into results/<run-id>/,
    then rebuild results/REPORT.md with the figures."""
    from workloads import registry

    if list:
        for name in registry.names():
            print(f"{name:16s} {registry.description(name)}")
        return
    _run_experiments([n for n in only.split(",") if n] or registry.names(), quick=quick, fresh=fresh, accel=accel,
                     overrides=_overrides(kernel, schemes))


def _overrides(kernel: str, schemes: str) -> dict | None:
    """bench's --kernel and --schemes as overrides of the data files (checked against their schema)."""
    overrides: dict = {"kernel": kernel} if kernel else {}
    if schemes:
        overrides["schemes"] = [scheme for scheme in schemes.split(",") if scheme]
    return overrides or None


def _run_experiments(names: list[str], *, quick: bool = False, fresh: bool = False, accel: str = "auto",
                     overrides: dict | None = None, keep_vm: bool = False) -> list:
    from reports.report import build_report
    from testbed.session import SessionError
    from vm.hosttools import ensure_host_tools
    from workloads.contract import ExperimentError
    from workloads.runner import run_experiment, sessions

    if overrides and overrides.get("kernel"):
        from vm.kernels import KernelNameError, resolve_kernel

        try:
            resolve_kernel(overrides["kernel"])
        except KernelNameError as exc:
            raise _fail(str(exc)) from exc
    ensure_host_tools()
    runs = []
    failed = []
    with sessions(accel=accel, keep_vm=keep_vm) as pool:
        for name in names:
            try:
                run = run_experiment(name, pool, profile="quick" if quick else "full", fresh=fresh,
                                     overrides=overrides)
            except ExperimentError as exc:
                raise _fail(str(exc)) from exc
            except SessionError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                failed.append(name)
                continue
            runs.append(run)
            text = run.results.get("summary", {}).get("text")
            if text:  # experiments that are checks (the smoke) have a one-screen summary
                print(text)
            print(f"{name}: {run.metadata['status']}, results in {run.path}")
            if run.metadata["status"] not in ("complete", "passed"):
                failed.append(name)
    print(f"report: {build_report()}")
    if failed:
        raise _fail(f"{', '.join(failed)} did not finish cleanly; their runs keep what finished")
    return runs


@task(help={"reanalyze": "recompute the reported runs' records and summaries from their raw data first"})
def report(c, reanalyze=False):
    """Rebuild results/REPORT.md and the figures from recorded runs (nothing is re-run); with
    --reanalyze, first recompute the reported runs' records and summaries from their raw data."""
    from reports.report import build_report, latest_runs
    from testbed.store import results_root
    from workloads.runner import reanalyze as reanalyze_run

    if reanalyze:
        for (name, kernel), path in latest_runs(results_root()).items():
            reanalyze_run(path)
            print(f"reanalysed {name}{f' on {kernel}' if kernel else ''}: {path.name}")
    print(f"report: {build_report()}")


@task(help={"model": "path of a .keras model", "samples": "number of random inputs (default 2000)", "seed": "RNG seed"})
def snapshot_verify(c, model, samples=2000, seed=0):
    """Quantize a Keras model, build the snapshot, and check the engine is bit-exact with TFLite."""
    from userspace.snapshot import SnapshotError, verify
    from vm.hosttools import ensure_host_tools

    path = Path(model)
    if not path.is_file():
        raise _fail(f"no model file at {path}")
    ensure_host_tools()  # the engine's user-space build needs gcc and make
    try:
        result = verify(path, samples=int(samples), seed=int(seed))
    except SnapshotError as exc:
        raise _fail(str(exc)) from exc
    print(f"bit-exact: {result.exact}/{result.samples}")
    print(f"  engine vs TFLite built-in kernels: {result}")
    if not result.bit_exact:
        raise Exit(code=1)


@task(help={"path": "where to write the model (default: build/example.keras)"})
def snapshot_example(c, path=str(BUILD_DIR / "example.keras")):
    """Write a small example Keras model (Aurora-sized, 30-32-16-1 tanh) to try snapshot.verify on."""
    from userspace.snapshot import example_model

    written = example_model(Path(path))
    print(f"wrote {written}; try: invoke snapshot.verify --model {written}")


@task(help={"kernel": "debian-6.1 (default), debian-5.10, debian-6.12, local:DIR, linux-4.15, source:PATH"})
def provision(c, kernel="debian-6.1"):
    """Build (or reuse from the cache) the guest image for a kernel; prints its manifest summary."""
    from vm.hosttools import ensure_host_tools
    from vm.image import ProvisionError
    from vm.image import provision as provision_image
    from vm.kernels import KernelNameError

    ensure_host_tools()
    try:
        image = provision_image(kernel)
    except (KernelNameError, ProvisionError) as exc:
        raise _fail(str(exc)) from exc
    print(f"{image.kernel_name}: kernel {image.kernel_release}, image {image.path}")


@task(help={"kernel": "image to boot (default debian-6.1)", "accel": "auto (probe KVM), kvm or tcg"})
def vm_up(c, kernel="debian-6.1", accel="auto"):
    """Boot the guest (provisioning it first if needed) and wait for SSH."""
    from vm.hosttools import ensure_host_tools
    from vm.image import provision as provision_image
    from vm.qemu import VmError, up

    ensure_host_tools()
    try:
        handle = up(provision_image(kernel), accel=accel)
    except VmError as exc:
        raise _fail(str(exc)) from exc
    print(f"VM up: {handle.accel}, kernel {handle.kernel_release}, ssh port {handle.ssh_port}, "
          f"boot {handle.boot_seconds} s")


@task
def vm_down(c):
    """Power the guest off (SIGTERM, then SIGKILL by pid if it does not stop)."""
    from vm.qemu import down

    print("VM stopped cleanly" if down() else "VM stopped (was not running, or had to be killed)")


@task
def vm_status(c):
    """Whether a VM is running, its accelerator, kernel and SSH port."""
    from vm.qemu import status

    print(status())


@task
def vm_ssh(c):
    """An interactive shell in the guest (host key pinned)."""
    os.execvp("ssh", _running_vm().ssh_argv())


def _running_vm():
    from vm.qemu import status

    current = status()
    if current.state != "running":
        raise _fail(f"no VM running ({current.state}); start one with invoke vm.up")
    return current.handle


@task(iterable=["module"], help={"module": "module to load (repeatable); default: liteflow and lf_test"})
def load(c, module=None):
    """Build the modules for the guest's kernel, copy them in and load them in dependency order."""
    from testbed.modules import ModuleError, build_for
    from testbed.modules import load as load_modules
    from vm.hosttools import ensure_host_tools

    ensure_host_tools()
    handle = _running_vm()
    try:
        built = build_for(handle, BUILD_DIR / "modules")
        loaded = load_modules(handle, built, list(module or ["liteflow", "lf_test"]))
    except ModuleError as exc:
        raise _fail(str(exc)) from exc
    for entry in loaded:
        print(f"{entry.name:40s} {entry.size:8d}  used by: {entry.used_by or '-'}")


@task
def unload(c):
    """Unload every LiteFlow module from the guest (app, snapshots, core)."""
    from testbed.modules import ModuleError
    from testbed.modules import unload as unload_modules

    try:
        removed = unload_modules(_running_vm())
    except ModuleError as exc:
        raise _fail(str(exc)) from exc
    print("unloaded: " + (", ".join(removed) or "nothing was loaded"))


@task(help={
    "quick": "the quick profile (10 swaps instead of 100)",
    "accel": "auto, kvm or tcg",
    "keep_vm": "leave a VM this smoke booted running afterwards",
    "kernel": "guest kernel instead of the data file's debian-6.1 (e.g. linux-4.15)",
})
def smoke(c, quick=False, accel="auto", keep_vm=False, kernel=""):
    """Boot (or reuse) the VM, swap snapshots 100 times under load on every vCPU, check everything
    (the experiment "smoke": workloads/experiments/smoke.toml)."""
    _run_experiments(["smoke"], quick=quick, fresh=True, accel=accel, keep_vm=keep_vm,
                     overrides={"kernel": kernel} if kernel else None)


@task(help={
    "quick": "the quick profile (1,000 swaps instead of 10,000)",
    "accel": "auto, kvm or tcg",
    "keep_vm": "leave a VM this run booted running afterwards",
    "kernel": "guest kernel instead of the data file's debian-6.1 (e.g. debian-6.1-debug)",
})
def stress(c, quick=False, accel="auto", keep_vm=False, kernel=""):
    """10,000 snapshot swaps under load on every vCPU with concurrent netlink clients and standby
    rmmod races; memory back to start (the experiment "stress": workloads/experiments/stress.toml)."""
    _run_experiments(["stress"], quick=quick, fresh=True, accel=accel, keep_vm=keep_vm,
                     overrides={"kernel": kernel} if kernel else None)


@task(help={
    "app": "LiteFlow app to serve (e.g. lf_test)",
    "adapter": "your Adapter subclass as module:Class, importable in the guest (see docs/adapters.md)",
    "update": "hot (weight blob over netlink) or module (generate + build + insmod in the guest)",
    "threshold": "fidelity loss above which the snapshot is updated",
    "duration": "stop after this many seconds (default: until Ctrl-C)",
    "adapter_config": "JSON file (guest path) with keyword arguments for the adapter",
})
def liteflow_serve(c, app, adapter, update="hot", threshold=None, duration=None, adapter_config=None):
    """Run LiteFlow's slow-path service in the running guest (load the modules first: invoke load)."""
    import shlex

    from testbed.modules import GUEST_CORE_SYMVERS
    from testbed.session import GUEST_PYTHON, GUEST_SHARE

    argv = [GUEST_PYTHON, "-m", "userspace.slowpath.serve", "--app", app, "--adapter", adapter,
            "--update", update, "--symvers", GUEST_CORE_SYMVERS]
    for flag, value in (("--threshold", threshold), ("--duration", duration), ("--adapter-config", adapter_config)):
        if value is not None:
            argv += [flag, str(value)]
    command = f"cd {GUEST_SHARE} && PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2 {shlex.join(argv)}"
    ssh = _running_vm().ssh_argv(command)
    ssh.insert(1, "-t")  # a terminal, so Ctrl-C reaches the service
    os.execvp("ssh", ssh)


@task(help={
    "what": "what to train: cc (lf_cc's network, by DAgger imitation in the CC simulator) or cc-narrow "
            "(the same on cc-adapt's starting link only: cc-adapt's start)",
    "quick": "a tiny budget (seconds; for tests), written to build/train-<what>-quick/",
    "seed": "RNG seed (default: the committed model's)",
})
def train(c, what, quick=False, seed=-1):
    """Train a datapath app's network from scratch: `invoke train cc` reproduces userspace/cc/model/."""
    from userspace.cc import train as cc_train

    if what not in cc_train.NETWORKS:
        raise _fail(f"unknown training target {what!r} (known: {', '.join(cc_train.NETWORKS)})")
    cfg = cc_train.network_config(what, quick=quick, seed=int(seed) if int(seed) >= 0 else None)
    out = BUILD_DIR / f"train-{what}-quick" if quick else cc_train.network_dir(what)
    record = cc_train.train(cfg, out)
    print(f"final imitation MSE {record['final_imitation_mse']:.4f}, {record['total_seconds']} s; wrote {out}")


@task(help={"kind": "buildroots, engine, ... (default: everything)"})
def clean_cache(c, kind=""):
    """Remove cached build roots, engine builds and images from the user's cache directory."""
    from common.cache import clean

    for removed in clean(kind or None):
        print(f"removed {removed}")


def _experiment_names() -> list[str]:
    from workloads.registry import names

    return names()


EXPERIMENT_FLAGS = ("quick", "fresh", "kernel", "schemes")  # an experiment task takes these, as bench does


def _experiment_task(name: str):
    def body(c, quick=False, fresh=False, kernel="", schemes=""):
        _run_experiments([name], quick=quick, fresh=fresh, overrides=_overrides(kernel, schemes))

    body.__doc__ = (f"Run the '{name}' experiment (same as `invoke bench {name}`; --quick, --fresh, --kernel, "
                    "--schemes as bench).")
    body.__name__ = name.replace("-", "_")
    return task(body, name=name)


class BenchExecutor(Executor):
    """Reads `invoke bench --quick iperf engine` as one bench of those experiments, with bench's flags.

    Invoke's positional arguments are always required, so `invoke bench NAME` with an optional
    NAME cannot be declared; instead each experiment is also a task, and experiment tasks right
    after `bench` become bench's `only`, so they run once each, with bench's flags and their own
    (`invoke bench iperf --quick` parses --quick as iperf's).
    """

    def execute(self, *calls):
        names = [getattr(call, "name", call) for call in calls]
        experiments = set(_experiment_names())
        if "bench" not in names:
            return super().execute(*calls)
        at = names.index("bench")
        following = []
        for name in names[at + 1:]:
            if name not in experiments:
                break
            following.append(name)
        if not following:
            return super().execute(*calls)
        bench_call = calls[at]
        only = bench_call.args["only"]
        only.value = ",".join([*filter(None, str(only.value or "").split(",")), *following])
        for call in calls[at + 1:at + 1 + len(following)]:  # `invoke bench iperf --quick` means bench's --quick
            for flag in EXPERIMENT_FLAGS:
                value = call.args[flag].value if flag in call.args else None
                if value:
                    bench_call.args[flag].value = value
        kept = [*calls[:at + 1], *calls[at + 1 + len(following):]]
        return super().execute(*kept)


snapshot = Collection("snapshot")
snapshot.add_task(snapshot_verify, name="verify")
snapshot.add_task(snapshot_example, name="example")

liteflow = Collection("liteflow")
liteflow.add_task(liteflow_serve, name="serve")

vm = Collection("vm")
vm.add_task(vm_up, name="up")
vm.add_task(vm_down, name="down")
vm.add_task(vm_status, name="status")
vm.add_task(vm_ssh, name="ssh")

ns = Collection(build, test, bench, report, clean_cache, provision, load, unload, smoke, train,
                *(_experiment_task(name) for name in _experiment_names() if name != "smoke"))
ns.add_collection(vm)
ns.add_collection(liteflow)
ns.add_collection(snapshot)
