"""`make bench`: every row, ours beside the reference, as one table and benchmarks/results.json.

Each row is timed by harness.compare (sides in their own processes, interleaved rounds, median).
Model FLOPs utilisation (MFU) divides the reference's FLOPs per step (the work the standard model does,
counted by torch) by each side's time and by this CPU's fp32 GEMM rate, a 2048³ matrix product timed in
the same rounds as the row's sides (so a busy machine slows the peak as it slows the row).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import common
from benchmarks.harness import DEFAULT_THREADS, Side, compare, configure_process, gemm_flops_per_second, gemm_side

RESULTS = Path(__file__).with_name("results.json")
WARMUP, REPEATS = 2, 5


@dataclass(frozen=True)
class Row:
    name: str
    ours: Side
    reference: Side
    reference_name: str
    unit: str  # "tokens/s" or "sequences/s": units_per_step / median step time; "s": the median itself
    units_per_step: int
    settings: str
    min_ratio: float | None = None  # target: reference time / our time
    max_seconds: float | None = None  # target for "s" rows
    bf16: Side | None = None  # ours under bf16 autocast, an extra column
    flops_from: str | None = None  # another row whose reference FLOPs apply (same model and batch)
    warmup: int = WARMUP
    repeats: int = REPEATS
    count_flops: bool = True


def rows(tiny_model_dir: str) -> list[Row]:
    def sides(module: str, name: str, **kwargs) -> dict:
        return dict(ours=Side(f"benchmarks.{module}:{name}_ours", kwargs),
                    reference=Side(f"benchmarks.{module}:{name}_reference", kwargs),
                    bf16=Side(f"benchmarks.{module}:{name}_ours", {**kwargs, "bf16": True}))

    def integer_only(reference: str) -> dict:
        # The integer model compiles its elementwise chains on its first batch: a warm-up step, not counted.
        shape = dict(batch_size=32, seq_len=128)
        return dict(ours=Side("benchmarks.quantized:integer_model", shape),
                    reference=Side(f"benchmarks.quantized:{reference}", shape), units_per_step=32,
                    unit="sequences/s", settings="b32×s128, full length", warmup=1, count_flops=False,
                    flops_from="base-size classification inference, fp32")

    return [
        Row("ALBERT-base pretraining step (MLM+SOP, AdamW)",
            **sides("pretraining", "albert", batch_size=8, seq_len=128),
            reference_name="AlbertForPreTraining", unit="tokens/s", units_per_step=8 * 128,
            settings="b8×s128", min_ratio=1.05),
        Row("ELECTRA-small pretraining step (¼ generator, 50× disc. loss)",
            **sides("pretraining", "electra", batch_size=16, seq_len=128),
            reference_name="ElectraForMaskedLM + ElectraForPreTraining", unit="tokens/s", units_per_step=16 * 128,
            settings="b16×s128", min_ratio=1.5),
        Row("GLUE fine-tuning step, ELECTRA-small", **sides("classification", "glue", batch_size=32, seq_len=128),
            reference_name="ElectraForSequenceClassification", unit="sequences/s", units_per_step=32,
            settings="b32×s128, padded pairs", min_ratio=1.2),
        Row("base-size classification inference, fp32",
            **sides("classification", "base_inference", batch_size=32, seq_len=128),
            reference_name="RobertaForSequenceClassification", unit="sequences/s", units_per_step=32,
            settings="b32×s128, padded pairs", min_ratio=1.0),
        Row("base-size classification inference, integer-only", **integer_only("ibert_reference"),
            reference_name="IBertForSequenceClassification quant_mode", min_ratio=12.0, repeats=3),
        Row("base-size classification inference, integer-only", **integer_only("dynamic_int8_reference"),
            reference_name="torch dynamic int8 (quantize_dynamic)", min_ratio=1.0),
        Row("fill-mask cold start (process start → first line)",
            ours=Side("benchmarks.cold_start:fill_mask_ours", {"model_dir": tiny_model_dir}),
            reference=Side("benchmarks.cold_start:fill_mask_reference", {"model_dir": tiny_model_dir}),
            reference_name="transformers pipeline('fill-mask')", unit="s", units_per_step=1,
            settings="tiny ALBERT, 1 line", max_seconds=1.5, warmup=1, count_flops=False),
    ]


@dataclass
class RowResult:
    row: Row
    sides: dict = field(default_factory=dict)  # side name -> harness.SideResult
    model_flops: float | None = None
    gemm_peak: float | None = None  # FLOP/s, measured in the row's rounds

    def value(self, side: str) -> float | None:
        result = self.sides.get(side)
        if result is None or result.error:
            return None
        return result.median_seconds if self.row.unit == "s" else self.row.units_per_step / result.median_seconds

    def ratio(self, side: str = "ours") -> float | None:
        ours, reference = self.sides.get(side), self.sides.get("reference")
        if ours is None or reference is None or ours.error or reference.error:
            return None
        return reference.median_seconds / ours.median_seconds

    def mfu(self, side: str) -> float | None:
        result = self.sides.get(side)
        if self.model_flops is None or self.gemm_peak is None or result is None or result.error:
            return None
        return self.model_flops / result.median_seconds / self.gemm_peak

    def meets_target(self) -> bool | None:
        if self.row.max_seconds is not None:
            return None if self.value("ours") is None else self.value("ours") <= self.row.max_seconds
        return None if self.ratio() is None else self.ratio() >= self.row.min_ratio


def run_row(row: Row, bf16_supported: bool, flops_by_row: dict[str, float]) -> RowResult:
    sides = {"ours": row.ours, "reference": row.reference}
    if row.bf16 is not None and bf16_supported:
        sides["bf16"] = row.bf16
    with_mfu = row.count_flops or row.flops_from is not None
    if with_mfu:
        sides["gemm"] = gemm_side()
    result = RowResult(row, compare(sides, row.warmup, row.repeats, flops=row.count_flops))
    if with_mfu:
        gemm = result.sides.pop("gemm")
        result.gemm_peak = None if gemm.error else gemm_flops_per_second(gemm)
    reference = result.sides["reference"]
    if row.flops_from is not None:
        result.model_flops = flops_by_row.get(row.flops_from)
    elif not reference.error and reference.flops_per_step:
        result.model_flops = reference.flops_per_step
        flops_by_row[row.name] = reference.flops_per_step
    return result


def environment() -> dict:
    import torch
    import transformers

    cpuinfo = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    cpuinfo = {key.strip(): value.strip() for key, value in cpuinfo.items()}
    flags = cpuinfo.get("flags", "").split()
    return {
        "cpu": cpuinfo.get("model name", platform.machine()),
        "cpu_flags": [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def allocation_cost_ms(size_mb: int = 50, repeats: int = 9) -> float:
    """Median time to allocate and fill a size_mb tensor, in this process as it is now."""
    import torch

    def once() -> float:
        start = time.perf_counter()
        torch.empty(size_mb * 2**20 // 4).fill_(1.0)
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats)) * 1e3


UNIT_SHORT = {"tokens/s": "tok/s", "sequences/s": "seq/s", "s": "s"}


def _rate(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} s" if unit == "s" else f"{value:,.1f} {UNIT_SHORT[unit]}"


def _pair(ours: str, reference: str) -> str:
    return f"{ours} / {reference}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _mb(result) -> str:
    return "—" if result is None or result.error else f"{result.peak_rss_bytes / 2**20:,.0f}"


def table(results: list[RowResult]) -> Table:
    out = Table(title="encoderkit (ours) vs the reference: median per step, higher is better except seconds",
                show_lines=True)
    for column in ("row", "ours", "reference", "ratio", "target", "MFU\nours / ref", "peak RSS MB\nours / ref",
                   "ours, bf16\n(ratio)"):
        out.add_column(column, overflow="fold", justify="left" if column == "row" else "right")
    for r in results:
        row = r.row
        target = f"≤ {row.max_seconds} s" if row.max_seconds is not None else f"≥ {row.min_ratio}×"
        target += {True: " [green]✓[/]", False: " [red]✗[/]", None: ""}[r.meets_target()]
        ratio, bf16 = r.ratio(), r.value("bf16")
        errors = "".join(f"\n[yellow]{name}: {s.error}[/]" for name, s in r.sides.items() if s.error)
        peak = "" if r.gemm_peak is None else f"; GEMM {r.gemm_peak / 1e9:.0f} GFLOP/s"
        out.add_row(
            f"{row.name}\n[dim]vs {row.reference_name}\n{row.settings}; warm-up {row.warmup}, median of "
            f"{row.repeats}{peak}[/]{errors}",
            _rate(r.value("ours"), row.unit),
            _rate(r.value("reference"), row.unit),
            "—" if ratio is None else f"{ratio:.2f}×",
            target,
            _pair(_pct(r.mfu("ours")), _pct(r.mfu("reference"))),
            _pair(_mb(r.sides.get("ours")), _mb(r.sides.get("reference"))),
            "—" if bf16 is None else f"{_rate(bf16, row.unit)}\n({r.ratio('bf16'):.2f}×)",
        )
    return out


def busy_warning(console: Console, load_average: float) -> None:
    if load_average > 0.5:
        console.print(f"[yellow]Other processes keep the CPU busy (load average {load_average:.1f} on "
                      f"{os.cpu_count()} CPUs): every time is slower than on an idle machine, and ratios are noisier "
                      "(a descheduled worker thread stalls every parallel region, so steps made of many small "
                      "operations suffer most).[/]")


def settings_table(settings: dict) -> Table:
    def text(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, dict):
            return ", ".join(f"{k} {text(v)}" for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return ", ".join(map(text, value))
        return str(value)

    out = Table(title="settings (the same for both sides)", show_header=False)
    for key, value in settings.items():
        out.add_row(key, text(value))
    return out


def _side_json(result) -> dict:
    if result.error:
        return {"error": result.error}
    return {"median_s": result.median_seconds, "step_s": result.step_seconds, "cpu_s": result.cpu_seconds,
            "peak_rss_bytes": result.peak_rss_bytes, "flops_per_step": result.flops_per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the rows whose name contains this text (case-insensitive)")
    parser.add_argument("--repeats", type=int, help="timed rounds per row instead of each row's own count")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="torch threads of every side (1 gives steadier ratios on a busy machine)")
    args = parser.parse_args()
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough for the table
        console = Console(width=160)
    started = time.time()
    default_alloc_ms = allocation_cost_ms()
    allocator = configure_process(args.threads)  # the sides inherit the thread count, apply the same allocator
    settings = {
        **environment(),
        "threads": args.threads,
        "dtype": "fp32 (bf16 only in its own column, autocast)",
        "allocator": allocator,
        "alloc_fill_50MB_ms": {"glibc default": default_alloc_ms, "tuned": allocation_cost_ms()},
        "timing": "sides in separate processes, one step each in turn; warm-up rounds, then the median",
        "classification_lengths": f"real tokens uniform in {common.CLASSIFICATION_LENGTHS}, padded to 128",
        "load_average_at_start": os.getloadavg(),
    }
    console.print(settings_table(settings))
    busy_warning(console, settings["load_average_at_start"][0])

    results: list[RowResult] = []
    flops_by_row: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tiny_model_dir:
        from benchmarks.cold_start import make_tiny_model

        make_tiny_model(Path(tiny_model_dir))
        for row in rows(tiny_model_dir):
            if args.only and args.only.lower() not in row.name.lower():
                continue
            if args.repeats:
                row = dataclasses.replace(row, repeats=args.repeats)
            console.print(f"[bold]{row.name}[/] …")
            results.append(run_row(row, settings["bf16_supported"], flops_by_row))
            console.print(table(results[-1:]))

    settings["load_average_at_end"] = os.getloadavg()
    settings["wall_minutes"] = (time.time() - started) / 60
    console.print(table(results))
    console.print(settings_table(settings))
    busy_warning(console, settings["load_average_at_start"][0])  # at the end our own threads count too
    RESULTS.write_text(json.dumps({
        "settings": settings,
        "rows": [{
            "name": r.row.name, "reference": r.row.reference_name, "unit": r.row.unit,
            "settings": r.row.settings, "ours": r.value("ours"), "reference_value": r.value("reference"),
            "ratio": r.ratio(), "meets_target": r.meets_target(), "model_flops_per_step": r.model_flops,
            "gemm_peak_flops": r.gemm_peak, "mfu": {side: r.mfu(side) for side in r.sides},
            "bf16": r.value("bf16"), "bf16_ratio": r.ratio("bf16") if "bf16" in r.sides else None,
            "sides": {name: _side_json(s) for name, s in r.sides.items()},
        } for r in results],
    }, indent=2) + "\n")
    console.print(f"wrote {RESULTS} ({settings['wall_minutes']:.1f} min)")


if __name__ == "__main__":
    main()
