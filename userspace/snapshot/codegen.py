"""C source (and Kbuild) of a snapshot kernel module, from a SnapshotSpec.

LiteFlow ships each frozen snapshot as its own small module, `lf_snap_<app>_<id>.ko`, whose
init registers the weights with the core (lf_register_model).  The source is generated from
Jinja2 templates (templates/*.j2) and is meant to read like hand-written kernel C: named sizes,
one comment per layer saying what the numbers mean, const arrays, designated initialisers.  It
is deterministic — the same spec, app and id give the same bytes — so a rebuild is a no-op and
a diff between two snapshots shows only what changed.

Files are written into a temporary directory next to the destination and renamed into place, so
a failure leaves nothing half-written behind.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import jinja2
import numpy as np

from .errors import SnapshotError
from .spec import SnapshotSpec, check_spec

TEMPLATE_DIR = Path(__file__).with_name("templates")
MODULE_NAME_MAX = 55  # MODULE_NAME_LEN (56 on 64-bit) minus the terminating NUL
_APP_RE = re.compile(r"^[a-z][a-z0-9_]*$")
TAB = 8
LINE_MAX = 80


def new_snapshot_id() -> int:
    """A fresh, non-zero snapshot id: random, because module names carry it and no run may
    reuse a name another run left behind."""
    return secrets.randbits(62) | 1


def module_name(app: str, snapshot_id: int) -> str:
    """lf_snap_<app>_<16 hex digits>: a valid kernel module name, unique per snapshot."""
    if not _APP_RE.match(app):
        raise SnapshotError(f"app name {app!r}: must match {_APP_RE.pattern}")
    if not 0 <= snapshot_id < 2**64:
        raise SnapshotError(f"snapshot id {snapshot_id}: must fit in u64")
    name = f"lf_snap_{app}_{snapshot_id:016x}"
    if len(name) > MODULE_NAME_MAX:
        raise SnapshotError(f"module name {name!r}: longer than {MODULE_NAME_MAX} characters")
    return name


def wrap_values(values: Iterable[int], indent: int = 1) -> str:
    """Comma-separated integers wrapped at 80 columns (tabs count 8), kernel style."""
    lines: list[str] = []
    current = ""
    width = indent * TAB
    for v in values:
        item = f"{int(v)},"
        candidate = f"{current} {item}" if current else item
        if current and width + len(candidate) > LINE_MAX:
            lines.append(current)
            candidate = item
        current = candidate
    if current:
        lines.append(current)
    return "\n".join("\t" * indent + line for line in lines)


def real(x: float) -> str:
    """A scale as a decimal real for comments (enough digits to identify the float32)."""
    return f"{float(x):.9g}"


def offset(zero_point: int) -> str:
    """'q - zp' written without a double minus: q - 3, q + 1, q."""
    zp = int(zero_point)
    return "q" if zp == 0 else (f"q - {zp}" if zp > 0 else f"q + {-zp}")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["wrap"] = wrap_values
    env.filters["real"] = real
    env.filters["offset"] = offset
    return env


def _layer_context(spec: SnapshotSpec) -> list[dict]:
    out = []
    for n, l in enumerate(spec.layers):
        ws = np.asarray(l.weight_scales, dtype=np.float64)
        out.append({
            "n": n,
            "prefix": f"LF_SNAP_L{n}",
            "name": l.name,
            "layer": l,
            "rows": [np.asarray(l.weights[o], np.int64).tolist() for o in range(l.out_units)],
            "weight_scale_min": float(ws.min()) if ws.size else 0.0,
            "weight_scale_max": float(ws.max()) if ws.size else 0.0,
            "act_enum": ["LF_ACT_LINEAR", "LF_ACT_RELU", "LF_ACT_TANH", "LF_ACT_SIGMOID"][l.activation],
        })
    return out


def render_source(spec: SnapshotSpec, *, app: str, snapshot_id: int, source: str) -> str:
    """The module's C source."""
    name = module_name(app, snapshot_id)
    arch = " -> ".join([str(spec.input_size)] + [
        f"{l.out_units} ({l.activation_name})" for l in spec.layers])
    return _environment().get_template("snapshot.c.j2").render(
        module=name, app=app, snapshot_id=snapshot_id, source=source, spec=spec,
        layers=_layer_context(spec), arch=arch, macs=spec.macs())


def render_kbuild(*, app: str, snapshot_id: int, include_dir: Path,
                  extra_symbols: Path | None) -> str:
    """The module's Kbuild."""
    return _environment().get_template("Kbuild.j2").render(
        module=module_name(app, snapshot_id), include_dir=str(include_dir),
        extra_symbols=str(extra_symbols) if extra_symbols else "")


def generate_module(spec: SnapshotSpec, out_dir: Path | str, *, app: str, snapshot_id: int,
                    include_dir: Path | str, source: str = "a Keras model",
                    extra_symbols: Path | str | None = None) -> Path:
    """Write <out_dir>/lf_snap_<app>_<id>/{lf_snap_<app>_<id>.c, Kbuild}; return that directory.

    `include_dir` holds liteflow.h and lf_engine.h as the build machine sees them (for a
    chroot build, the path inside the chroot).  `extra_symbols` is the core's Module.symvers,
    so modpost knows lf_register_model.  An existing directory for the same snapshot is
    replaced; on any error nothing is left in out_dir.
    """
    check_spec(spec)
    name = module_name(app, snapshot_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        (tmp / f"{name}.c").write_text(
            render_source(spec, app=app, snapshot_id=snapshot_id, source=source))
        (tmp / "Kbuild").write_text(
            render_kbuild(app=app, snapshot_id=snapshot_id, include_dir=Path(include_dir),
                          extra_symbols=Path(extra_symbols) if extra_symbols else None))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
